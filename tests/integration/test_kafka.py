"""Relay and consumer through a real Kafka-protocol broker."""

import gc
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from events import BILLING_INVOICES
from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import TrackedConsumer
from services.common.messaging.kafka import KafkaSubscriber, end_offsets
from services.common.messaging.positions import SqlPositions
from services.common.messaging.relay import KafkaPublisher, Relay
from services.common.settings import Settings
from services.common.storage.chain import store_env
from services.common.storage.persistence import SqlStore
from services.payment.application import PaymentApp
from tests.conftest import Broker, make_settings
from tests.factories import open_regies, terms
from tests.helpers import kafka_settings, wait_for
from tests.threads import Threads

pytestmark = pytest.mark.kafka


class Pipeline(Threads):
    """Billing, its relay, the payment consumer: each part startable and stoppable."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.billing = billing_app(settings)
        self.payment = payment_app(settings)
        self.topic = settings.topic(BILLING_INVOICES.name)

    def relay(self) -> Relay:
        app = billing_app(self.settings)
        return Relay(app, make_to_wire(app, self.topic), KafkaPublisher(self.settings, self.topic),
                     SqlPositions(SqlStore(app)), name=self.topic)

    def consumer(self) -> TrackedConsumer:
        app = payment_app(self.settings)
        return TrackedConsumer(self.settings, self.topic, app.apply_billing_event,
                               SqlPositions(SqlStore(app)), on_idle=app.refresh,
                               dead_letters=app.dead_letters)

    def start(self, name: str) -> None:
        if name == "relay":
            self.run(name, self.relay().run_forever, self.settings.poll_interval)
        else:
            self.run(name, self.consumer().run_forever)

    def delivered(self, numbers: range, what: str) -> list[str]:
        """Invoices ``numbers`` issued, the relay and the consumer started, and the to-pay
        lists caught up with them: the invoices' numbers."""
        issued = issue(self.billing, numbers)
        self.start("relay")
        self.start("consumer")
        self.wait_delivered(issued, what)
        return issued

    def wait_delivered(self, numbers: list[str], what: str, timeout: float = 30.0) -> None:
        """Wait for the to-pay totals to match what billing holds for invoices ``numbers``."""
        want = expected_totals(self.billing, numbers)
        wait_for(lambda: self.totals() == want, timeout=timeout, what=what)

    def totals(self) -> dict[str, int]:
        rows = self.payment.to_pay.snapshot()["invoices"].values()
        out: dict[str, int] = {}
        for row in rows:
            if row["status"] == "open":
                out[row["family_id"]] = out.get(row["family_id"], 0) + row["amount_due_cents"]
        return out


def expected_totals(billing: BillingApp, numbers: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for number in numbers:
        invoice = billing.get_invoice(Invoice.create_id("SPORTS", number))
        if invoice.status == "issued":
            out[invoice.family_id] = out.get(invoice.family_id, 0) + invoice.amount_due_cents
    return out


@contextmanager
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    """A pipeline with billing's régies open, every part stopped after."""
    p = Pipeline(settings)
    try:
        open_regies(p.billing)
        yield p
    finally:
        p.stop_all()


def issue(billing: BillingApp, numbers: range, families: int = 10) -> list[str]:
    out = [f"K-{i}" for i in numbers]
    billing.issue_batch([terms(n, family=f"fam-{i % families}", unit=100 + i)
                         for i, n in zip(numbers, out, strict=True)])
    return out


def test_events_flow_from_billing_to_to_pay_and_survive_restarts(
    tmp_path: Path, kafka: Any
) -> None:
    settings = kafka_settings(tmp_path, kafka.bootstrap, kafka.kind)
    with pipeline(settings) as p:
        numbers = issue(p.billing, range(0, 200))
        p.billing.cancel_invoice(Invoice.create_id("SPORTS", "K-3"), "doublon")
        p.start("relay")
        p.start("consumer")
        p.wait_delivered(numbers, "to-pay lists to match billing")

        # Stop both, keep issuing, then restart them: nothing lost, nothing twice.
        p.stop("relay")
        p.stop("consumer")
        numbers += issue(p.billing, range(200, 300))
        p.billing.transfer_invoice(Invoice.create_id("SPORTS", "K-250"), "T-1")
        p.start("consumer")
        p.start("relay")
        p.wait_delivered(numbers, "to-pay after restart")
        fam3 = {line.number for line in p.payment.to_pay.open_lines("fam-3")}
        assert fam3 == {f"K-{i}" for i in range(13, 300, 10)}  # K-3 was cancelled


def test_a_republished_history_changes_nothing(tmp_path: Path, kafka: Any) -> None:
    settings = kafka_settings(tmp_path, kafka.bootstrap, kafka.kind)
    with pipeline(settings) as p:
        p.delivered(range(0, 100), "first delivery")
        events_before = p.payment.recorder.max_notification_id()
        snapshot = p.payment.to_pay.snapshot()
        # An operator resets the relay: the whole history is published a second time.
        p.stop("relay")
        SqlPositions(SqlStore(p.billing)).set(p.topic, 0)
        p.start("relay")
        wait_for(lambda: SqlPositions(SqlStore(p.billing)).get(p.topic)
                 == p.billing.recorder.max_notification_id(), what="republish")
        time.sleep(1.0)  # give the consumer time to (wrongly) apply anything
        assert p.payment.recorder.max_notification_id() == events_before
        assert p.payment.to_pay.snapshot() == snapshot


def test_garbage_on_the_topic_is_parked_and_the_rest_flows(tmp_path: Path, kafka: Any) -> None:
    settings = kafka_settings(tmp_path, kafka.bootstrap, kafka.kind)
    with pipeline(settings) as p:
        p.start("relay")
        wait_for(lambda: SqlPositions(SqlStore(p.billing)).get(p.topic) > 0, what="topic")
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        producer.send(p.topic, key=b"fam-0", value=b"{not an event")
        producer.flush()
        producer.close()
        numbers = issue(p.billing, range(0, 20))
        p.start("consumer")
        p.wait_delivered(numbers, "valid events after garbage")
        assert [(x.key, x.value) for x in p.payment.dead_letters.all()] == [
            (b"fam-0", b"{not an event")]


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
               ) -> Iterator[Broker]:
    b = Broker(request.param, tmp_path_factory.mktemp("own-broker"))
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.mark.parametrize("own_broker", ["noida", "tansu"], indirect=True)
def test_a_broker_that_lost_its_topics_gets_them_back(tmp_path: Path, own_broker: Broker) -> None:
    settings = kafka_settings(tmp_path, own_broker.bootstrap, own_broker.kind)
    with pipeline(settings) as p:
        numbers = p.delivered(range(0, 50), "first")
        # The broker comes back empty (memory broker restarted, or its disk lost).
        own_broker.restart(keep_data=False)
        numbers += issue(p.billing, range(50, 80))
        p.wait_delivered(numbers, "delivery after the broker lost everything", timeout=60)

    # A subscriber arriving now still finds the whole history on the topic.
    fresh = make_settings("sqlite", tmp_path / "fresh", kafka_bootstrap=own_broker.bootstrap,
                          kafka_broker=own_broker.kind, topic_prefix=settings.topic_prefix)
    late = PaymentApp(env=store_env(fresh, "payment"))
    stop = threading.Event()
    consumer = TrackedConsumer(fresh, p.topic, late.apply_billing_event,
                               SqlPositions(SqlStore(late)), on_idle=late.refresh,
                               dead_letters=late.dead_letters)
    thread = threading.Thread(target=consumer.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: late.to_pay.snapshot()["invoices"].keys()
                 == p.payment.to_pay.snapshot()["invoices"].keys(), what="late subscriber")
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.mark.parametrize("own_broker", ["noida"], indirect=True)
def test_a_publisher_closed_with_records_the_broker_never_took_leaves_nothing_running(
        tmp_path: Path, own_broker: Broker) -> None:
    """kafka-python 3.0.12's close gives up at its flush when records are still pending
    (the broker went away) and leaves the producer's network thread running, for good;
    the producer's own finaliser then fails the same way. The relay closes its publisher
    on each failure and makes a new one: each would leave a thread and its sockets."""
    from services.common.messaging.outbox import Outgoing

    settings = kafka_settings(tmp_path, own_broker.bootstrap, own_broker.kind)
    publisher = KafkaPublisher(settings, settings.topic("closing"))
    publisher.ensure_topic()
    publisher.publish([Outgoing(publisher.topic, "k", b"first")])
    producer: Any = publisher._producer
    own_broker.kill()
    pending = producer.send(publisher.topic, key=b"k", value=b"never taken")
    unraisable: list[Any] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        publisher.close()
        assert not producer._sender.is_alive()
        assert pending.is_done and pending.failed()
        del producer
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []
    own_broker.start()


@pytest.mark.parametrize("own_broker", ["noida"], indirect=True)
@pytest.mark.parametrize("case", ["relay restarted", "relay running", "consumer ahead"])
def test_a_broker_that_lost_acknowledged_records_gets_them_again(
    tmp_path: Path, own_broker: Broker, case: str
) -> None:
    """noida-db killed with -9 right after a publish can come back without the last
    records it acknowledged. Restarting it on a copy of its data taken before the second
    hundred invoices were published makes that loss certain.

    The consumer is stopped before them, and the relay is stopped before the loss and
    started after it ("relay restarted") or runs through it ("relay running"). Or the
    consumer had read them all, so that its offsets lie past the shortened partitions,
    and more invoices are issued while both are stopped ("consumer ahead")."""
    settings = kafka_settings(tmp_path, own_broker.bootstrap, own_broker.kind)
    with pipeline(settings) as p:
        relay_positions = SqlPositions(SqlStore(p.billing))
        numbers = p.delivered(range(0, 100), "the first hundred")
        earlier = own_broker.save_data()
        if case != "consumer ahead":
            p.stop("consumer")
        numbers += issue(p.billing, range(100, 200))
        last = p.billing.recorder.max_notification_id()
        wait_for(lambda: relay_positions.get(p.topic) == last, what="the second hundred acked")
        if case == "consumer ahead":
            p.wait_delivered(numbers, "the second hundred")
            p.stop("consumer")
        if case != "relay running":
            p.stop("relay")
        before = end_offsets(settings, p.topic)
        own_broker.restart_from(earlier)
        after = end_offsets(settings, p.topic)
        assert sum(after.values()) < sum(before.values()), "the broker lost nothing"
        if case == "consumer ahead":
            numbers += issue(p.billing, range(200, 250))
        if case != "relay running":
            p.start("relay")
        p.start("consumer")
        p.wait_delivered(numbers, "every invoice after the broker lost some", timeout=60)
        assert len(p.payment.to_pay.snapshot()["invoices"]) == len(numbers)


@pytest.mark.parametrize("broker", ["kafka", pytest.param("tansu", marks=pytest.mark.tansu)])
def test_a_broker_that_lost_nothing_gets_nothing_again(
    tmp_path: Path, request: pytest.FixtureRequest, broker: str
) -> None:
    """Tansu reports a partition's end as the base offset of its last batch + 1: read
    that way, every partition would look shorter than what the relay reached."""
    b = request.getfixturevalue(broker)
    settings = kafka_settings(tmp_path, b.bootstrap, b.kind)
    with pipeline(settings) as p:
        issue(p.billing, range(0, 100))
        relay = p.relay()
        relay.batch_size = 7  # batches of several records in each partition
        while relay.run_once():
            pass
        ends = end_offsets(settings, p.topic)
        for _ in range(3):
            relay.verify_topic()
        assert relay.lag() == 0
        assert relay.run_once() == 0
        assert end_offsets(settings, p.topic) == ends


@pytest.mark.tansu
def test_smoke_on_tansu(tmp_path: Path, tansu: Broker) -> None:
    settings = kafka_settings(tmp_path, tansu.bootstrap, "tansu")
    with pipeline(settings) as p:
        p.delivered(range(0, 100), "tansu")


def test_the_pipeline_on_postgresql(tmp_path: Path, kafka: Any) -> None:
    from tests.conftest import drop_schemas

    settings = kafka_settings(tmp_path, kafka.bootstrap, kafka.kind, backend="postgres")
    try:
        with pipeline(settings) as p:
            p.delivered(range(0, 100), "pg")
    finally:
        drop_schemas(settings.schema_prefix)


def test_garbage_as_the_last_message_does_not_make_the_consumer_reread(
    tmp_path: Path, kafka: Any
) -> None:
    settings = kafka_settings(tmp_path, kafka.bootstrap, kafka.kind)
    with pipeline(settings) as p:
        p.delivered(range(0, 10), "delivery")
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        for partition in range(6):  # the last message of every partition is not an event
            producer.send(p.topic, value=b"{not an event", partition=partition)
        producer.flush()
        producer.close()
        positions = SqlPositions(SqlStore(p.payment))
        probe = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        ends = probe.end_offsets([TopicPartition(p.topic, n) for n in range(6)])
        probe.close()
        wait_for(lambda: all(positions.get(f"{p.topic}@{tp.partition}") == end
                             for tp, end in ends.items()), what="the garbage to be read")
        p.stop("consumer")
        consumer = p.consumer()
        app_positions = consumer.positions
        # Resuming checks the record before each stored offset: garbage remembered as 0
        # must be recognised as the same garbage, not as a different log to read again.
        subscriber = KafkaSubscriber(settings, p.topic)
        consumer.subscribe = lambda: subscriber
        connected = consumer._connect(from_start=False)
        assert connected is not None
        _, partitions = connected
        try:
            reader = subscriber._get()  # where the Kafka client itself now stands
            starts = {n: reader.position(TopicPartition(p.topic, n)) for n in partitions}
        finally:
            subscriber.close()
        assert all(starts[n] == app_positions.get(f"{p.topic}@{n}") for n in partitions)
