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
from services.common.messaging.memory import MemoryBroker, MemoryPublisher, MemorySubscriber
from services.common.messaging.ports import Record
from services.common.messaging.positions import MemoryPositions
from services.common.messaging.relay import Heads
from tests.conftest import make_settings
from tests.factories import open_regies, terms


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
    broker = MemoryBroker()
    relay = bootstrap.relay("billing", settings, app=billing,
                            publisher=MemoryPublisher(broker=broker, topic="billing.invoices"),
                            heads=Heads(MemoryPublisher(), "audit.chain-heads", "billing"))
    while relay.run_once():
        pass
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
        while relay.run_once():
            pass
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
