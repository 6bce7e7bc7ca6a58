"""The relay against the in-memory broker: positions, end offsets, lost records, lag, and
what wakes it."""

import json
from pathlib import Path

from services.billing.application import BillingApp
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.outbox import Outgoing
from services.common.messaging.positions import MemoryPositions
from services.common.messaging.relay import Relay
from services.common.messaging.wakeup import Sleep
from tests.conftest import make_settings
from tests.factories import open_regies, terms
from tests.helpers import wait_for
from tests.threads import Threads

TOPIC = "billing.invoices"


def billing(tmp_path: Path, invoices: int) -> BillingApp:
    app = billing_app(make_settings("memory", tmp_path))
    open_regies(app)
    issue(app, range(invoices))
    return app


def issue(app: BillingApp, numbers: range) -> None:
    app.issue_batch([terms(f"U-{i}", family=f"fam-{i % 10}") for i in numbers])


def relay(app: BillingApp, broker: MemoryPublisher, positions: MemoryPositions) -> Relay:
    return Relay(app, make_to_wire(app, TOPIC), broker, positions, name=TOPIC, batch_size=20)


def drain(r: Relay) -> None:
    while r.run_once():
        pass


def number(message: Outgoing) -> str:
    """The invoice number a message is about ("" for a régie)."""
    return str(json.loads(message.value)["data"].get("number", ""))


def subjects(broker: MemoryPublisher) -> list[str]:
    """Every invoice number on the topic, repeats included, in no particular order."""
    return [number(m) for p in range(broker.partition_count()) for m in broker.records(p)]


def test_the_reached_end_offsets_are_recorded_with_the_position(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 50), MemoryPublisher(partitions=6), MemoryPositions()
    r = relay(app, broker, positions)
    drain(r)
    assert positions.get(TOPIC) == app.recorder.max_notification_id()
    ends = broker.end_offsets()
    assert sum(ends.values()) == 52  # two régies and fifty invoices
    assert {p: positions.get(f"{TOPIC}#end@{p}") for p in range(6)} == ends


class CountedReads(MemoryPositions):
    """Counts the reads: each is a query to the service's database."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, name: str) -> int:
        self.reads += 1
        return super().get(name)

    def all(self) -> dict[str, int]:
        self.reads += 1
        return super().all()


def test_a_page_reads_its_positions_once_whatever_the_partitions(tmp_path: Path) -> None:
    """Its position and every partition's reached end in one read, however many
    partitions the page's messages went to; the check of the topic reads on its own."""
    app, broker, positions = billing(tmp_path, 50), MemoryPublisher(partitions=6), CountedReads()
    r = relay(app, broker, positions)
    assert r.run_once() == 20  # the topic made and checked too
    r.verify_every = float("inf")
    for covered in (20, 12, 0):
        positions.reads = 0
        assert r.run_once() == covered
        assert positions.reads == 1
    assert {p: positions.get(f"{TOPIC}#end@{p}") for p in range(6)} == broker.end_offsets()


def test_a_partition_that_lost_its_tail_gets_the_whole_history_again(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 50), MemoryPublisher(partitions=6), MemoryPositions()
    r = relay(app, broker, positions)
    drain(r)
    lost = [number(m) for m in broker.lose_tail(partition=2, count=3)]
    assert all(lost)
    r.verify_topic()
    drain(r)
    on_topic = subjects(broker)
    assert {f"U-{i}" for i in range(50)} <= set(on_topic)
    # The lost ones are on the topic once (republished), the others twice.
    assert all(on_topic.count(n) == (1 if n in lost else 2) for n in set(on_topic) - {""})
    # Once the history is back, the check is quiet: no second republish.
    r.verify_topic()
    assert r.run_once() == 0
    assert positions.get(TOPIC) == app.recorder.max_notification_id()


def test_a_loss_is_noticed_by_the_next_publish_before_any_check(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 50), MemoryPublisher(partitions=6), MemoryPositions()
    r = relay(app, broker, positions)
    drain(r)
    # The broker lost records and new ones fill the same offsets again: an end offset
    # checked now could look fine, but the offsets the new records got are too low.
    for p in range(6):
        broker.lose_tail(partition=p, count=2)
    issue(app, range(50, 80))
    drain(r)
    assert {f"U-{i}" for i in range(80)} <= set(subjects(broker))


def test_a_lost_topic_is_republished_once(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 30), MemoryPublisher(partitions=6), MemoryPositions()
    r = relay(app, broker, positions)
    drain(r)
    broker.delete_topic()
    r.verify_topic()
    drain(r)
    assert sorted(subjects(broker)) == sorted(["", ""] + [f"U-{i}" for i in range(30)])
    r.verify_topic()
    assert r.run_once() == 0
    assert sum(broker.end_offsets().values()) == 32


def test_lag_counts_the_notifications_not_yet_published(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 30), MemoryPublisher(partitions=6), MemoryPositions()
    r = relay(app, broker, positions)
    assert r.lag() == 32
    r.run_once()
    assert r.lag() == 12
    drain(r)
    assert r.lag() == 0
    issue(app, range(30, 35))
    assert r.lag() == 5


def published(app: BillingApp, positions: MemoryPositions) -> bool:
    return positions.get(TOPIC) == app.recorder.max_notification_id()


def test_a_wake_up_gets_an_event_out_without_waiting_for_the_poll(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 0), MemoryPublisher(partitions=6), MemoryPositions()
    wakeup = Sleep()
    r = Relay(app, make_to_wire(app, TOPIC), broker, positions, name=TOPIC, wakeup=wakeup)
    threads = Threads()
    threads.run("relay", r.run_forever, 3600.0)  # its poll alone would wait an hour
    try:
        wait_for(lambda: published(app, positions), 10, "the régies published at the start")
        issue(app, range(1))
        wakeup.wake()
        wait_for(lambda: "U-0" in subjects(broker), 10, "the invoice published on the wake-up")
    finally:
        threads.stop("relay")  # and a stop ends the hour's wait at once


def test_a_wake_up_that_never_comes_is_made_up_for_by_the_poll(tmp_path: Path) -> None:
    app, broker, positions = billing(tmp_path, 0), MemoryPublisher(partitions=6), MemoryPositions()
    r = Relay(app, make_to_wire(app, TOPIC), broker, positions, name=TOPIC, wakeup=Sleep())
    threads = Threads()
    threads.run("relay", r.run_forever, 0.2)
    try:
        wait_for(lambda: published(app, positions), 10, "the régies published at the start")
        issue(app, range(1))  # and nothing wakes the relay
        wait_for(lambda: "U-0" in subjects(broker), 10, "the invoice published by the poll")
    finally:
        threads.stop("relay")


def test_a_wake_up_given_while_the_relay_reads_is_kept_for_its_next_wait() -> None:
    wakeup = Sleep()
    wakeup.wake()
    assert wakeup.wait(3600.0)  # at once
    assert not wakeup.wait(0.01)  # used up
