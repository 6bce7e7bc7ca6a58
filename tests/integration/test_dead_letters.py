"""A consumed message that cannot be read is parked, never skipped, and its aggregate's
later messages wait behind it until an operator retries them."""

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from events import BILLING_INVOICES, REGISTRY
from services import bootstrap, cli
from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import TrackedConsumer, handle_record
from services.common.messaging.kafka import KafkaPublisher
from services.common.messaging.outbox import Outgoing
from services.common.messaging.positions import SqlPositions
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment.application import PaymentApp
from tests.factories import open_regies, terms, wire_messages
from tests.helpers import letter, wait_for
from tests.threads import Threads

GARBAGE = b"{not an event"


def invoice_id(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def as_version(value: bytes, version: int) -> bytes:
    """The same message as a producer speaking a newer schema version would send it."""
    message = json.loads(value)
    name = message["type"].rsplit(".", 1)[0]
    message["type"] = f"{name}.v{version}"
    return json.dumps(message).encode()


def test_the_dead_letter_store(any_store_settings: Settings) -> None:
    app = payment_app(any_store_settings)
    parked = app.dead_letters
    assert parked.park(letter(5, "inv-1", 10))
    assert parked.park(letter(3, None, None, partition=1))  # bytes with no envelope
    assert parked.park(letter(9, "inv-1", 12))
    assert parked.park(letter(7, "inv-2", 11, topic="other"))
    # Redelivered at the same place, or republished elsewhere on the topic: kept once.
    assert not parked.park(replace(letter(5, "inv-1", 10), error="again"))
    assert not parked.park(letter(40, "inv-1", 10, partition=2))
    assert parked.count() == 4

    if not app.in_memory():  # what a restarted service finds in its database
        app = payment_app(any_store_settings)
        parked = app.dead_letters
    letters = parked.all()
    assert [(x.topic, x.partition, x.offset) for x in letters] == [
        ("billing.invoices", 0, 5), ("billing.invoices", 1, 3), ("billing.invoices", 0, 9),
        ("other", 0, 7)]
    first = letters[0]
    assert (first.key, first.value, first.error, first.subject, first.notification_id) == (
        b"fam-\xff", b"\x00raw\xff\x05", "error 5", "inv-1", 10)
    assert first.first_seen is not None and first.first_seen.tzinfo is not None
    assert parked.held_subjects("billing.invoices") == {"inv-1": 10}

    parked.set_error(first, "still unknown")
    parked.remove(letters[1])
    assert [(x.offset, x.error) for x in parked.all()] == [
        (5, "still unknown"), (9, "error 9"), (7, "error 7")]
    assert parked.count() == 3


def test_only_later_messages_of_a_parked_invoice_wait_behind_it(
    any_store_settings: Settings,
) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    open_regies(billing)
    billing.issue_invoice(terms("A-1", family="fam-a"))
    billing.issue_invoice(terms("B-1", family="fam-a"))
    billing.cancel_invoice(Invoice.create_id("SPORTS", "A-1"), "doublon")
    billing.cancel_invoice(Invoice.create_id("SPORTS", "B-1"), "doublon")
    messages = [value for _, value in wire_messages(billing)]
    # régies, A issued, B issued, A cancelled, B cancelled
    assert len(messages) == 6
    topic = "billing.invoices"

    def feed(offset: int, value: bytes) -> bool:
        return handle_record(topic, 0, value, payment.apply_billing_event,
                             payment.dead_letters, offset, b"fam-a")

    for offset, value in enumerate(messages[:4]):
        assert feed(offset, value)
    # B's cancellation arrives as a version this code does not know yet: parked, though
    # the invoice's earlier events were applied, and nothing of A waits behind it.
    assert not feed(5, as_version(messages[5], 7))
    assert feed(4, messages[4])  # A's cancellation (offsets need not be in order here)
    payment.refresh()
    statuses = {k: v["status"] for k, v in payment.to_pay.snapshot()["invoices"].items()}
    assert statuses == {invoice_id("A-1"): "cancelled", invoice_id("B-1"): "open"}
    # An earlier event of B read again (the topic re-read from the start) is not held.
    assert not feed(3, messages[3])
    assert [(x.offset, x.subject) for x in payment.dead_letters.all()] == [
        (5, invoice_id("B-1"))]


class Consumer(Threads):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.topic = settings.topic(BILLING_INVOICES.name)

    def start(self) -> None:
        app = payment_app(self.settings)
        self.run("consumer", TrackedConsumer(
            self.settings, self.topic, app.apply_billing_event, SqlPositions(SqlStore(app)),
            on_idle=app.refresh, dead_letters=app.dead_letters).run_forever)


@pytest.fixture
def broker_settings(store_settings: Settings, kafka: Any) -> Settings:
    return replace(store_settings, kafka_bootstrap=kafka.bootstrap, kafka_broker=kafka.kind,
                   topic_prefix=f"t{uuid.uuid4().hex[:8]}.", kafka_partitions=3)


@pytest.fixture
def consumer(broker_settings: Settings) -> Iterator[Consumer]:
    c = Consumer(broker_settings)
    try:
        yield c
    finally:
        c.stop_all()


def history(billing: BillingApp) -> list[bytes]:
    """Régies open; A-1 issued then cancelled, B-1 and C-1 issued: what the relay sends."""
    open_regies(billing)
    billing.issue_invoice(terms("A-1", family="fam-a"))
    billing.issue_invoice(terms("B-1", family="fam-b", unit=1000))
    billing.issue_invoice(terms("C-1", family="fam-a", unit=700))
    billing.cancel_invoice(Invoice.create_id("SPORTS", "A-1"), "doublon")
    return [value for _, value in wire_messages(billing)]


def open_invoices(payment: PaymentApp) -> dict[str, str]:
    payment.refresh()
    return {k: v["status"] for k, v in payment.to_pay.snapshot()["invoices"].items()}


@pytest.mark.kafka
def test_unreadable_messages_are_parked_until_a_retry_can_apply_them(
    broker_settings: Settings, consumer: Consumer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.payment.web import create_app

    settings = broker_settings
    billing = billing_app(settings)
    payment = payment_app(settings)
    sports, cantine, issued_a, issued_b, issued_c, cancelled_a = history(billing)
    publisher = KafkaPublisher(settings, consumer.topic)
    publisher.ensure_topic(settings.kafka_partitions)
    # A-1 is issued by a billing already upgraded to a v99 schema; then a broken producer
    # writes bytes that are no event at all; C-1 (same family, same partition) and B-1
    # are fine; A-1's cancellation comes last.
    publisher.publish([Outgoing(consumer.topic, key, value) for key, value in [
        ("SPORTS", sports), ("CANTINE", cantine),
        ("fam-a", as_version(issued_a, 99)), ("fam-a", GARBAGE), ("fam-a", issued_c),
        ("fam-b", issued_b), ("fam-a", cancelled_a),
    ]])
    publisher.close()
    consumer.start()

    wait_for(lambda: payment.dead_letters.count() == 3, what="three parked messages")
    wait_for(lambda: open_invoices(payment) == {
        invoice_id("B-1"): "open", invoice_id("C-1"): "open"}, what="the other invoices")
    parked = payment.dead_letters.all()
    assert [(x.subject, x.key) for x in parked] == [
        (invoice_id("A-1"), b"fam-a"), (None, b"fam-a"), (invoice_id("A-1"), b"fam-a")]
    assert {x.partition for x in parked} == {parked[0].partition}
    # In the partition's order, with C-1's message (applied) between the last two.
    assert parked[0].offset + 1 == parked[1].offset == parked[2].offset - 2
    assert "InvoiceIssued has no version 99" in parked[0].error
    assert "not JSON" in parked[1].error
    assert "held behind" in parked[2].error
    assert parked[0].value == as_version(issued_a, 99)

    # Read again from the start (a crash before the offsets were saved): parked once.
    consumer.stop("consumer")
    positions = SqlPositions(SqlStore(payment))
    part = f"{consumer.topic}@{parked[0].partition}"
    positions.set_many({f"{consumer.topic}#partitions": 0, part: 0})
    consumer.start()
    # A-1's cancellation is the partition's last message.
    wait_for(lambda: positions.get(part) == parked[2].offset + 1,
             what="the partition to be read again")
    assert payment.dead_letters.count() == 3

    health: FlaskClient = create_app(payment=payment, tokens={}).test_client()
    assert health.get("/health").get_json() == {"status": "ok", "dead_letters": 3}

    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(settings))
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(settings))
    assert cli.main(["dead-letters", "list", "--service", "payment"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "payment: 3 dead letter(s)"
    assert out[1].startswith(f"  {parked[0].where}  subject={invoice_id('A-1')}  first seen 20")
    assert out[2].startswith(f"  {parked[1].where}  subject=-  first seen ")
    assert "not JSON" in out[2]
    assert "held behind" in out[3]

    # Before the upgrade, a retry changes nothing and says so.
    assert cli.main(["dead-letters", "retry", "--service", "payment"]) == 1
    assert capsys.readouterr().out.startswith("payment: 0 applied, 3 still parked\n")
    assert payment.dead_letters.all() == parked

    # The consumer's code now knows v99 (an upgrade): A-1 is issued, then cancelled.
    upgrade(monkeypatch, 99)
    assert cli.main(["dead-letters", "retry", "--service", "payment"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "payment: 2 applied, 1 still parked"
    assert out[1].startswith(f"  {parked[1].where}  subject=-")
    assert open_invoices(payment) == {invoice_id("A-1"): "cancelled",
                                      invoice_id("B-1"): "open", invoice_id("C-1"): "open"}
    assert [x.offset for x in payment.dead_letters.all()] == [parked[1].offset]
    assert health.get("/health").get_json() == {"status": "ok", "dead_letters": 1}

    # Bytes that are no event will never apply: the operator drops them, by their place.
    nowhere = f"{consumer.topic}[9]@0"
    assert cli.main(["dead-letters", "drop", nowhere]) == 1
    assert capsys.readouterr().err == f"regie dead-letters: no dead letter at {nowhere}\n"
    assert cli.main(["dead-letters", "drop", parked[1].where]) == 0
    assert capsys.readouterr().out == f"payment: dropped {parked[1].where}\n"
    assert health.get("/health").get_json() == {"status": "ok", "dead_letters": 0}
    assert cli.main(["dead-letters", "retry"]) == 0
    assert capsys.readouterr().out == (
        "payment: 0 applied, 0 still parked\nbilling: 0 applied, 0 still parked\n")


def upgrade(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """InvoiceIssued gets a version ``version``, the same as the latest one we know."""
    event_type = REGISTRY["InvoiceIssued"]
    latest = event_type.latest
    monkeypatch.setattr(event_type, "versions", {**event_type.versions,
                                                 version: event_type.versions[latest]})
    upcasters = {**event_type.upcasters, **{v: (lambda d: d) for v in range(latest, version)}}
    monkeypatch.setattr(event_type, "upcasters", upcasters)
    monkeypatch.setattr(event_type, "_schemas", {})


def test_the_dead_letters_command_refuses_bad_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, why in (
        (["dead-letters"], "the following arguments are required: action"),
        (["dead-letters", "purge"], "invalid choice: 'purge'"),
        (["dead-letters", "list", "--service", "ledger"], "invalid choice: 'ledger'"),
        (["dead-letters", "drop", "billing.invoices@3"], "not a place as list shows it"),
    ):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 2
        assert why in capsys.readouterr().err
    # Checked before any store is opened.
    for argv in (["dead-letters", "drop"], ["dead-letters", "list", "billing.invoices[0]@3"]):
        assert cli.main(argv) == 1
        assert capsys.readouterr().err.startswith("regie dead-letters: drop needs the place")


def test_each_consuming_service_counts_its_own_dead_letters_in_health(
    store_settings: Settings,
) -> None:
    from services.billing.web import create_app as billing_api
    from services.payment.web import create_app as payment_api

    billing = billing_app(store_settings)
    payment = payment_app(store_settings)
    billing.dead_letters.park(letter(4, "payment-1", 3, topic="payment.payments"))
    billing.dead_letters.park(letter(5, None, None, topic="payment.payments"))
    payment.dead_letters.park(letter(8, None, None))
    for api, count in ((billing_api(billing=billing, tokens={}), 2),
                       (payment_api(payment=payment, tokens={}), 1)):
        response = api.test_client().get("/health")
        assert (response.status_code, response.get_json()) == (
            200, {"status": "ok", "dead_letters": count})
