"""A poll of billing.invoices applied in one transaction stores, row for row and byte for
byte, what applying its messages one by one stores: the same events, the same sealed
e-mails, the same hash chain, the same positions, and the same to-pay projection.

The poll takes its own way to the store (one query for what exists already, one
transaction, one tracking record per subject), so the rows it writes are compared here with
those of the ordinary path (``apply_billing_event``, one ``save`` per message). The clock
and the random bytes (the families' keys, the nonces) are fixed so that both runs draw the
same ones.
"""

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import CanCreateTimestamp
from eventsourcing.persistence import IntegrityError, Tracking

from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import Intake
from services.common.privacy import keys, sealing
from services.common.storage import chain
from services.common.storage.persistence import SqlStore
from services.payment import domain
from services.payment.application import PaymentApp
from tests.conftest import drop_schemas, make_settings
from tests.factories import TOPIC, open_regies, terms, wire_messages

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


def stored(backend: str, folder: Path, request: pytest.FixtureRequest,
           messages: list[tuple[int, bytes]], batched: bool,
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    counter = itertools.count()

    def urandom(n: int) -> bytes:
        return bytes((next(counter) * 7 + k) % 256 for k in range(n))

    fixed = SimpleNamespace(urandom=urandom)
    monkeypatch.setattr(keys, "os", fixed)
    monkeypatch.setattr(sealing, "os", fixed)
    monkeypatch.setattr(CanCreateTimestamp, "create_timestamp", staticmethod(lambda: AT))
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
        for poll in polls(messages):
            Intake(TOPIC, payment.apply_billing_event, payment.dead_letters,
                   payment.apply_billing_events if batched else None).records(poll)
            payment.refresh()
        return rows(payment)
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
