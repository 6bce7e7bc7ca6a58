"""A poll of billing.invoices applied in one transaction stores, row for row and byte for
byte, what applying its messages one by one stores: the same events, the same sealed
e-mails, the same hash chain, the same positions, and the same to-pay projection.

The poll takes its own way to the store (one query for what exists already, one
transaction, one tracking record per subject), so the rows it writes are compared here with
those of the ordinary path (``apply_billing_event``, one ``save`` per message). The clock
and the random bytes (the families' keys, the nonces) are fixed so that both runs draw the
same ones.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import Intake
from services.common.storage import chain
from services.common.storage.persistence import SqlStore
from services.payment import domain, projections
from services.payment.application import PaymentApp
from tests.conftest import drop_schemas, make_settings
from tests.factories import TOPIC, open_regies, terms, wire_messages
from tests.helpers import fixed_bytes_and_clock

AT = datetime(2025, 2, 26, 9, 30, 12, 345678, tzinfo=UTC)
FAMILIES = [f"fam-{i}" for i in range(4)]
POLL = 7


def billing_messages(backend: str, tmp_path: Path, request: pytest.FixtureRequest
                     ) -> list[tuple[int, bytes]]:
    """billing.invoices as the relay publishes it: new invoices, and later events of some."""
    settings = make_settings(backend, tmp_path / "billing")
    if backend == "postgres":
        request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
    billing = billing_app(settings)
    try:
        open_regies(billing)
        ids = [billing.issue_invoice(terms(f"R-{i}", family=FAMILIES[i % 4],
                                           regie=("SPORTS", "CANTINE")[i % 2],
                                           unit=100 + i)).invoice.id for i in range(16)]
        billing.cancel_invoice(ids[3], "en double")
        billing.transfer_invoice(ids[5], "T-5")
        billing.credit_invoice(ids[6], 50, "absence", "agent-1")
        billing.issue_batch([terms(f"S-{i}", family=FAMILIES[i % 4], quantity=2, unit=300)
                             for i in range(9)])
        billing.cancel_invoice(ids[7], "erreur")
        return wire_messages(billing)
    finally:
        billing.close()


def polls(messages: list[tuple[int, bytes]]) -> Iterator[dict[int, list[Any]]]:
    from services.common.messaging.ports import Record

    for start in range(0, len(messages), POLL):
        poll: dict[int, list[Record]] = {}
        for offset, (partition, value) in enumerate(messages[start:start + POLL], start):
            poll.setdefault(partition, []).append(Record(partition, offset, None, value))
        yield poll


def read_back(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many stored events each page read of the history gave, from now on."""
    pages: list[int] = []
    select = SqlStore.stored_events

    def counted(self: SqlStore, after: int, limit: int, **kwargs: Any) -> Any:
        page = select(self, after, limit, **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(SqlStore, "stored_events", counted)
    return pages


def stored(backend: str, folder: Path, request: pytest.FixtureRequest,
           messages: list[tuple[int, bytes]], batched: bool,
           monkeypatch: pytest.MonkeyPatch, from_log: bool = False,
           between: bool = False) -> dict[str, Any]:
    """The rows after applying ``messages`` one by one or (``batched``) in polls, each
    followed by a catch-up; ``from_log``: every catch-up reads the history back, even
    after a poll it could take its events from; ``between``: other writers record
    payments and credit between two polls."""
    fixed_bytes_and_clock(monkeypatch, AT)
    settings = make_settings(backend, folder)
    if backend == "postgres":
        request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
    payment = payment_app(settings)
    try:
        # Made beforehand in one order: both runs give each family the same key.
        payment.keys.keys_or_new(sorted(FAMILIES))
        # What the régie owes fam-1 in SPORTS pays its next invoice there by itself.
        credit = domain.FamilyCredit(regie="SPORTS", family_id="fam-1")
        credit.credit(amount_cents=150, source="credit_note", source_id="n-1", by="agent-1")
        payment.save(credit)
        if from_log:
            monkeypatch.setattr(PaymentApp, "refresh",
                                lambda self: projections.catch_up(self, self.to_pay))
        for number, poll in enumerate(polls(messages)):
            Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
                   payment.apply_billing_events if batched else None).records(poll)
            payment.refresh()
            if between and number == 1:
                # The counter, as its API records it (and catches up); then a credit
                # recorded by a writer that leaves the catch-up to others.
                payment.receive_at_counter(domain.CounterTerms(
                    regie="SPORTS", family_id="fam-2", means="cheque", amount_cents=2_500,
                    reference="C-1", received_on=date(2025, 2, 26), invoice_ids=None),
                    by="agent-1")
            if between and number in (1, 2):
                credit = domain.FamilyCredit(regie="CANTINE", family_id=f"fam-{number}")
                credit.credit(amount_cents=40, source="credit_note", source_id=f"m-{number}",
                              by="agent-1")
                payment.save(credit)
        found = rows(payment)
        # A replay of the whole history gives what the catch-ups built as it went.
        projections.rebuild(payment)
        assert payment.to_pay.snapshot() == found["to_pay"]
        return found
    finally:
        payment.close()
        monkeypatch.undo()


def rows(payment: PaymentApp) -> dict[str, Any]:
    store = SqlStore(payment)
    recorder: Any = payment.recorder
    tracking = getattr(recorder, "tracking_table_name", "tracking")
    events = store.stored_events(0, 10_000)
    assert chain.verify(payment) == (len(events), None)
    return {
        "events": events,
        "links": [(r["notification_id"], r["hash"]) for r in store.fetchall(
            f"SELECT notification_id, hash FROM {{schema}}{chain.TABLE} "
            "ORDER BY notification_id")],
        "positions": [(r["application_name"], r["notification_id"]) for r in store.fetchall(
            f"SELECT application_name, notification_id FROM {{schema}}{tracking} "
            "ORDER BY application_name, notification_id")],
        "to_pay": payment.to_pay.snapshot(),
        # What each catch-up counted again of the families it touched, counted whole.
        "recounted": [{k: int(v) if k.endswith(("count", "_cents")) else v
                       for k, v in r.items()} for r in store.fetchall(
            "SELECT family_id, regie, COUNT(*) AS count, SUM(amount_due_cents) AS total_cents "
            f"FROM {{schema}}view_invoices WHERE status = '{domain.OPEN}' "
            "GROUP BY family_id, regie ORDER BY family_id, regie")],
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_poll_stores_the_rows_that_applying_its_messages_one_by_one_stores(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    messages = billing_messages(backend, tmp_path, request)
    one_by_one, batched = (stored(backend, tmp_path / name, request, messages, name == "poll",
                                  monkeypatch) for name in ("single", "poll"))
    assert len(batched["events"]) > 2 * 25
    for one, other in zip(one_by_one["events"], batched["events"], strict=True):
        assert one == other
    assert one_by_one["links"] == batched["links"]
    assert one_by_one["positions"] == batched["positions"]
    # One per régie and per invoice (PostgreSQL's table has a row of its own besides).
    assert len([p for p in batched["positions"] if p[0].startswith(TOPIC)]) == 2 + 25
    assert one_by_one["to_pay"] == batched["to_pay"]
    assert batched["to_pay"]["totals"] == batched["recounted"] != []
    # The credit paid the first new invoice of fam-1 in SPORTS.
    assert any(b"PaidFromCredit" in row.topic.encode() for row in batched["events"])
    # The e-mails are sealed, not in clear.
    assert not any(b"example.org" in row.state for row in batched["events"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_positions_not_beyond_those_recorded_record_nothing(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings = make_settings(backend, tmp_path)
    if backend == "postgres":
        request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
    payment = payment_app(settings)
    try:
        recorder: Any = payment.recorder
        regie = domain.Regie(code="X", name="X", numcli="1", saisie="T", sequence=1)
        recorder.insert_events([], trackings=[Tracking("a", 5), Tracking("b", 3)])
        before = payment._tracked({"a", "b", "c"})
        stored_event = payment.mapper.to_stored_event(regie.collect_events()[0])
        for trackings in ([Tracking("c", 1), Tracking("a", 6), Tracking("b", 3)],
                          [Tracking("a", 4)]):
            with pytest.raises(IntegrityError):
                recorder.insert_events([stored_event], trackings=trackings)
            assert payment._tracked({"a", "b", "c"}) == before == {"a": 5, "b": 3}
            assert payment._get(regie.id) is None
        recorder.insert_events([stored_event], trackings=[Tracking("a", 6), Tracking("c", 1)])
        assert payment._tracked({"a", "b", "c"}) == {"a": 6, "b": 3, "c": 1}
        assert isinstance(payment._get(UUID(str(regie.id))), domain.Regie)
    finally:
        payment.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("between", [False, True])
def test_to_pay_from_the_polls_own_events_is_to_pay_read_back_from_the_history(
        backend: str, between: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    messages = billing_messages(backend, tmp_path, request)
    from_log, own = (stored(backend, tmp_path / name, request, messages, True, monkeypatch,
                            from_log=name == "log", between=between)
                     for name in ("log", "own"))
    assert own["to_pay"] == from_log["to_pay"]
    assert own["recounted"] == from_log["recounted"] == own["to_pay"]["totals"]
    assert own["events"] == from_log["events"]
    if between:
        assert any(p["means"] == "cheque" for p in own["to_pay"]["payments"].values())
        assert len(own["to_pay"]["credits"]) >= 3


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_catch_up_after_a_poll_recorded_alone_reads_no_event_back(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    messages = billing_messages(backend, tmp_path, request)
    settings = make_settings(backend, tmp_path / "payment")
    if backend == "postgres":
        request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
    payment = payment_app(settings)
    try:
        payment.refresh()
        pages = read_back(monkeypatch)
        recorder: Any = payment.recorder
        for number, poll in enumerate(polls(messages)):
            Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
                   payment.apply_billing_events).records(poll)
            del pages[:]
            assert payment.refresh() > 0
            # Only the look past the poll's last event, which finds nothing.
            assert sum(pages) == 0, number
            assert payment.to_pay.position() == recorder.max_notification_id()
        # Another writer between two polls: the next catch-up reads the history.
        credit = domain.FamilyCredit(regie="CANTINE", family_id="fam-3")
        credit.credit(amount_cents=40, source="credit_note", source_id="m-3", by="agent-1")
        payment.save(credit)
        Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
               payment.apply_billing_events).records(next(polls(messages)))
        del pages[:]
        payment.refresh()
        assert sum(pages) == 2  # the credit's two events
        assert payment.to_pay.credits("fam-3")[0]["balance_cents"] == 40
    finally:
        payment.close()


def test_a_gap_in_the_ids_sends_the_catch_up_to_the_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    messages = billing_messages("postgres", tmp_path, request)
    settings = make_settings("postgres", tmp_path / "payment")
    request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
    payment = payment_app(settings)
    try:
        all_polls = list(polls(messages))
        Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
               payment.apply_billing_events).records(all_polls[0])
        payment.refresh()
        recorder: Any = payment.recorder
        last = recorder.max_notification_id()
        # A write that rolls back (an event recorded already) takes an id all the same.
        first = SqlStore(payment).stored_events(0, 1)[0]
        with pytest.raises(IntegrityError):
            recorder.insert_events([StoredEvent(
                originator_id=UUID(first.originator_id),
                originator_version=first.originator_version, topic=first.topic,
                state=first.state)])
        pages = read_back(monkeypatch)
        Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
               payment.apply_billing_events).records(all_polls[1])
        assert SqlStore(payment).stored_events(last, 1)[0].id > last + 1
        del pages[:]
        payment.refresh()
        assert sum(pages) > 0
        assert payment.to_pay.position() == recorder.max_notification_id()
        rebuilt = payment.to_pay.snapshot()
        projections.rebuild(payment)
        assert payment.to_pay.snapshot() == rebuilt
    finally:
        payment.close()
