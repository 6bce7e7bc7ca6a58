"""What one poll of the consumer writes beside what it applies: its offsets and the high
watermarks in one write, and no message read twice to find its notification id."""

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services import bootstrap
from services.common.messaging import consumer as consumer_module
from services.common.messaging.consumer import TrackedConsumer
from services.common.messaging.memory import MemorySubscriber
from services.common.messaging.ports import Record
from services.common.messaging.positions import MemoryPositions
from tests.conftest import make_settings
from tests.factories import open_regies, terms
from tests.helpers import relayed_in_memory


class CountedPositions(MemoryPositions):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[dict[str, int]] = []

    def set(self, name: str, position: int) -> None:
        self.writes.append({name: position})
        super().set(name, position)

    def set_many(self, positions: dict[str, int]) -> None:
        self.writes.append(dict(positions))
        super().set_many(positions)


class CountedSubscriber(MemorySubscriber):
    polls_with_records = 0

    def poll(self, timeout: float = 0.0) -> dict[int, list[Record]]:
        batches = super().poll(timeout)
        if batches:
            CountedSubscriber.polls_with_records += 1
        return batches


def test_a_poll_writes_its_offsets_and_high_watermarks_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("memory", tmp_path)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    for number in ("F-1", "F-2", "F-3"):
        billing.issue_invoice(terms(number, family="fam-7"))
    broker = relayed_in_memory(settings, billing).broker
    peeked: list[bytes] = []
    real_peek = consumer_module.peek

    def peek(value: bytes) -> Any:
        peeked.append(value)
        return real_peek(value)

    monkeypatch.setattr(consumer_module, "peek", peek)
    positions = CountedPositions()
    CountedSubscriber.polls_with_records = 0
    consumer = TrackedConsumer(
        settings, "billing.invoices", payment.apply_billing_event, positions,
        on_idle=payment.refresh, dead_letters=payment.dead_letters,
        subscribe=lambda: CountedSubscriber(broker, "billing.invoices"),
        handle_batch=payment.apply_billing_events, share=(0, 1), highwaters_every=3600)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run_forever, args=(stop,))
    thread.start()

    def counted() -> list[int]:
        return [r["count"] for r in payment.to_pay_summary("fam-7")]

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while counted() != [count] and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        wait_for(3)
        billing.issue_invoice(terms("F-4", family="fam-7"))
        relayed_in_memory(settings, billing, broker)
        wait_for(4)
    finally:
        stop.set()
        thread.join()
    assert counted() == [4]
    polls = CountedSubscriber.polls_with_records
    assert polls >= 2
    # The topic's shape once, at the connection, the high watermarks before the first
    # batch (a consumer stuck on it shows its lag), then its offsets.
    assert positions.writes[0] == {"billing.invoices#partitions": 6}
    assert positions.writes[1] and all(k.endswith("#highwater") for k in positions.writes[1])
    assert not any(k.endswith("#highwater") for k in positions.writes[2])
    # Then one write per poll with records: its offsets with its high watermarks.
    later = positions.writes[3:]
    assert len(later) == polls - 1
    for write in later:
        offsets = {k for k in write if "#" not in k}
        assert offsets and {f"{k}#highwater" for k in offsets} <= set(write)
    # Each message was read once, when it was applied.
    assert peeked == []


def test_the_read_models_catch_up_after_a_poll_that_applied_something_or_once_an_interval(
        tmp_path: Path) -> None:
    """An empty poll has nothing of its own to catch up: what the API records, it catches up
    itself; the consumer looks once per poll interval for anything left behind."""
    settings = make_settings("memory", tmp_path, poll_interval=30.0)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1", family="fam-7"))
    broker = relayed_in_memory(settings, billing).broker
    stop = threading.Event()
    polls = [0]

    class Scripted(MemorySubscriber):
        """Empty for four polls, then what the topic holds, then empty until stopped."""

        def poll(self, timeout: float = 0.0) -> dict[int, list[Record]]:
            polls[0] += 1
            if polls[0] >= 12:
                stop.set()
            return super().poll(timeout) if polls[0] == 5 else {}

    refreshed: list[int] = []

    def refresh() -> None:
        refreshed.append(polls[0])
        payment.refresh()

    consumer = TrackedConsumer(
        settings, "billing.invoices", payment.apply_billing_event, MemoryPositions(),
        on_idle=refresh, dead_letters=payment.dead_letters,
        subscribe=lambda: Scripted(broker, "billing.invoices"),
        handle_batch=payment.apply_billing_events, share=(0, 1))
    consumer.run_forever(stop)
    assert [r["count"] for r in payment.to_pay_summary("fam-7")] == [1]
    # Once at the start, once after the poll that applied the invoice; the empty polls
    # in between and after, within one interval, none.
    assert len(refreshed) == 2 and refreshed[1] == 5
