"""A poll of billing.invoices applied in one transaction, and what happens when it fails.

Exactly once must hold whatever stops a batch: the batch records nothing, and the same
messages applied one by one record each event once.
"""

from dataclasses import replace
from typing import Any

import pytest
from eventsourcing.application import ProcessingEvent

from services.bootstrap import payment_app
from services.common.errors import OutOfOrder
from services.common.messaging.consumer import Intake, tracking_for
from services.common.messaging.ports import Record
from services.common.settings import Settings
from services.payment.application import PaymentApp
from tests.factories import TOPIC, decoded, issued, terms, wire_messages


def as_poll(messages: list[tuple[int, bytes]]) -> dict[int, list[Record]]:
    poll: dict[int, list[Record]] = {}
    for offset, (partition, value) in enumerate(messages):
        poll.setdefault(partition, []).append(Record(partition, offset, None, value))
    return poll


def stored(payment: PaymentApp) -> list[tuple[str, int]]:
    """Every stored event of the payment service, as (aggregate, version)."""
    return [(str(n.originator_id), n.originator_version)
            for n in payment.recorder.select_notifications(1, 100_000)]


def last_ids(messages: list[tuple[int, bytes]]) -> dict[str, int]:
    """Each subject's tracking name and its last notification id among ``messages``."""
    last: dict[str, int] = {}
    for m in decoded(messages):
        name = tracking_for(TOPIC, m).application_name
        last[name] = max(last.get(name, 0), m.notification_id)
    return last


def intake(payment: PaymentApp) -> Intake:
    return Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
                  payment.apply_billing_events)


def test_a_poll_is_one_transaction_with_one_tracking_record_per_subject(
        store_settings: Settings) -> None:
    billing, payment = issued(store_settings, *(
        terms(number=f"F-{i}", family=f"fam-{i % 3}") for i in range(9)))
    messages = wire_messages(billing)
    commits: list[int] = []
    record = payment._store_new

    def counted(processing: Any) -> Any:
        commits.append(len(processing.events))
        return record(processing)

    payment._store_new = counted  # type: ignore[method-assign,assignment]
    assert intake(payment).records(as_poll(messages)) == len(messages)
    payment.refresh()

    assert len(commits) == 1
    assert len(payment.to_pay.snapshot()["invoices"]) == 9
    # Each subject's position is its last message's notification id.
    assert payment._tracked(set(last_ids(messages))) == last_ids(messages)
    # Delivered again, in a batch or one by one: nothing new.
    events = stored(payment)
    assert intake(payment).records(as_poll(messages)) == 0
    assert Intake(TOPIC, payment.apply_billing_event, payment.dead_letters).records(
        as_poll(messages)) == 0
    assert stored(payment) == events


def test_a_batch_that_fails_half_way_records_nothing_and_each_message_goes_in_once(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    billing, payment = issued(store_settings, *(
        terms(number=f"F-{i}", family=f"fam-{i % 4}") for i in range(12)))
    first, rest = wire_messages(billing)[:6], wire_messages(billing)[6:]
    # Some of the poll was applied already (a consumer killed after its commit).
    assert intake(payment).records(as_poll(first)) == len(first)
    before = stored(payment)

    recorder: Any = payment.recorder
    insert_trackings = type(recorder)._insert_trackings
    calls: list[int] = []

    def dies_after_the_positions(self: Any, c: Any, trackings: Any) -> None:
        calls.append(len(trackings))
        insert_trackings(self, c, trackings)
        raise RuntimeError("the connection dropped in the middle of the batch")

    monkeypatch.setattr(type(recorder), "_insert_trackings", dies_after_the_positions)
    with pytest.raises(RuntimeError):
        payment.apply_billing_events(
            [(m, tracking_for(TOPIC, m)) for m in decoded(first + rest)])
    assert calls == [len(last_ids(rest))]
    assert stored(payment) == before  # the failed batch left nothing behind
    assert payment._tracked(set(last_ids(rest))) == {}
    monkeypatch.setattr(type(recorder), "_insert_trackings", insert_trackings)

    # The whole poll redelivered, and the batch killed half-way through after its first
    # half was recorded: the consumer goes on one by one.
    apply_batch = payment.apply_billing_events
    halves: list[int] = []

    def killed_half_way(batch: list[Any]) -> int:
        if not halves:
            halves.append(apply_batch(batch[: len(batch) // 2]))
            raise RuntimeError("killed half-way")
        return apply_batch(batch)

    monkeypatch.setattr(payment, "apply_billing_events", killed_half_way)
    applied = intake(payment).records(as_poll(first + rest))
    payment.refresh()

    assert halves[0] + applied == len(rest)
    assert all(not payment.apply_billing_event(m, tracking_for(TOPIC, m))
               for m in decoded(first + rest))
    # Exactly what delivering each message once makes, each event once.
    alone = payment_app(replace(store_settings, var_dir=store_settings.var_dir / "alone",
                                schema_prefix=f"{store_settings.schema_prefix}alone_"))
    Intake(TOPIC, alone.apply_billing_event, alone.dead_letters).records(
        as_poll(first + rest))
    alone.refresh()
    assert sorted(stored(payment)) == sorted(stored(alone))
    assert without_positions(payment.to_pay.snapshot()) == without_positions(
        alone.to_pay.snapshot())


# Where each store put an event in its own history (what a document's code attests): two
# stores fed the same messages in other batches number their events differently.
POSITIONS = {"issued_position", "paid_position", "position"}


def without_positions(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {table: {key: ({c: v for c, v in row.items() if c not in POSITIONS}
                          if isinstance(row, dict) else row) for key, row in rows.items()}
            if isinstance(rows, dict) else rows for table, rows in snapshot.items()}


def test_an_event_out_of_order_in_a_batch_stops_where_one_by_one_stops(
        store_settings: Settings) -> None:
    billing, payment = issued(store_settings, terms(number="F-1", family="fam-1"),
                              terms(number="F-2", family="fam-2"))
    invoice = billing.issue_invoice(terms(number="F-3", family="fam-2")).invoice
    billing.cancel_invoice(invoice.id, "erreur")
    messages = wire_messages(billing)
    # fam-2's F-3 issue is lost: its cancellation comes out of order.
    lost = next(i for i, m in enumerate(decoded(messages))
                if m.name == "InvoiceIssued" and m.data["number"] == "F-3")
    poll = as_poll(messages[:lost] + messages[lost + 1:])

    with pytest.raises(OutOfOrder):
        intake(payment).records(poll)
    payment.refresh()

    # What came before it was recorded, once; the rest waits for the topic to be read again.
    assert {r["number"] for r in payment.to_pay.snapshot()["invoices"].values()} == {
        "F-1", "F-2"}
    events = stored(payment)
    assert len(events) == len(set(events))


def test_a_poll_collects_its_aggregates_without_eventsourcing_asking_what_each_is(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ProcessingEvent.collect_events`` checks each object against runtime Protocols
    (isinstance), an eighth of the consumer's CPU: a poll's aggregates are known to be
    aggregates, and collected as such."""
    billing, payment = issued(store_settings, *(
        terms(number=f"F-{i}", family=f"fam-{i % 3}") for i in range(6)))
    messages = wire_messages(billing)
    batch = [(m, tracking_for(TOPIC, m)) for m in decoded(messages)]

    def refused(self: Any, *objs: Any, **kwargs: Any) -> None:
        raise AssertionError("collect_events called")

    monkeypatch.setattr(ProcessingEvent, "collect_events", refused)
    assert payment.apply_billing_events(batch) == len(messages)
    payment.refresh()
    assert len(payment.to_pay.snapshot()["invoices"]) == 6
