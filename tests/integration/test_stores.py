"""The billing and payment applications, on the in-memory store, SQLite and PostgreSQL."""

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.billing.application import BillingApp
from services.billing.domain import Conflict, DomainError, Invoice
from services.bootstrap import billing_app, payment_app, positions
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment.projections import MemoryToPayStore, catch_up
from tests.conftest import drop_schemas, make_settings
from tests.factories import deliver, open_regies, terms, wire_messages
from tests.helpers import check_rows_by_keys
from tests.threads import Threads


def test_opening_a_regie_is_idempotent(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    _, created = billing.open_regie("SPORTS", "Direction des sports", "000001", "T")
    _, again = billing.open_regie("SPORTS", "Direction des sports", "000001", "T")
    assert (created, again) == (True, False)
    with pytest.raises(Conflict):
        billing.open_regie("SPORTS", "Direction des sports", "000009", "T")
    assert [r.code for r in billing.list_regies()] == ["SPORTS"]


def test_issuing_is_idempotent_on_regie_and_number(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    open_regies(billing)
    first = billing.issue_invoice(terms())
    replay = billing.issue_invoice(terms())
    assert first.created and not replay.created
    assert replay.invoice.id == first.invoice.id
    before = billing.recorder.max_notification_id()
    with pytest.raises(Conflict):
        billing.issue_invoice(terms(unit=2600))
    assert billing.recorder.max_notification_id() == before
    # The same number in another régie is another invoice.
    assert billing.issue_invoice(terms(regie="CANTINE")).created


def test_an_unknown_regie_is_refused_and_nothing_is_stored(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    open_regies(billing)
    before = billing.recorder.max_notification_id()
    with pytest.raises(DomainError) as refused:
        billing.issue_invoice(terms(regie="PISCINE"))
    assert refused.value.field == "regie"
    assert billing.recorder.max_notification_id() == before


def test_batch_judges_each_item(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-0"))
    items = [
        terms("F-0"),  # replay of an existing one
        terms("F-1"),
        terms("F-2", regie="PISCINE"),  # unknown régie
        terms("F-3"),
        terms("F-1"),  # replay inside the batch
        terms("F-3", unit=1),  # conflict inside the batch
        replace(terms("F-4"), amount_cents=1),  # lines do not add up
    ]
    results = billing.issue_batch(items)
    kinds = [
        "created" if getattr(r, "created", False) else
        "replay" if hasattr(r, "created") else type(r).__name__
        for r in results
    ]
    assert kinds == [
        "replay", "created", "DomainError", "created", "replay", "Conflict", "DomainError"
    ]
    assert billing.get_invoice(Invoice.create_id("SPORTS", "F-3")).amount_cents == 2500


def test_a_large_batch_is_stored_whole(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    open_regies(billing)
    results = billing.issue_batch([terms(f"B-{i}", family=f"fam-{i % 7}") for i in range(1200)])
    assert all(getattr(r, "created", False) for r in results)
    assert billing.get_invoice(Invoice.create_id("SPORTS", "B-1199")).family_id == "fam-2"


def test_a_batch_of_a_thousand_new_invoices_is_one_write(
        any_store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # As the HTTP batches come (1000 at most): one transaction, one commit, for them all.
    billing = billing_app(any_store_settings)
    open_regies(billing)
    writes: list[int] = []
    insert_events = billing.recorder.insert_events

    def counted(stored_events: Any, **kwargs: Any) -> Any:
        writes.append(len(stored_events))
        return insert_events(stored_events, **kwargs)

    monkeypatch.setattr(billing.recorder, "insert_events", counted)
    results = billing.issue_batch([terms(f"W-{i}", family=f"fam-{i % 7}") for i in range(1000)])
    assert all(getattr(r, "created", False) for r in results)
    assert writes == [1000]


def test_cancel_and_transfer_are_recorded(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    open_regies(billing)
    a = billing.issue_invoice(terms("A")).invoice
    b = billing.issue_invoice(terms("B")).invoice
    billing.cancel_invoice(a.id, "doublon")
    billing.transfer_invoice(b.id, "T-2025-1")
    assert billing.get_invoice(a.id).status == "cancelled"
    assert billing.get_invoice(b.id).transfer_reference == "T-2025-1"
    with pytest.raises(Conflict):
        billing.cancel_invoice(b.id, "trop tard")


def _issue_some(billing: BillingApp) -> None:
    open_regies(billing)
    for i in range(30):
        billing.issue_invoice(terms(f"S-{i}", family=f"fam-{i % 3}", unit=1000 + i))
        billing.issue_invoice(terms(f"C-{i}", family=f"fam-{i % 3}", regie="CANTINE", unit=250))
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-0"), "doublon")
    billing.transfer_invoice(Invoice.create_id("CANTINE", "C-1"), None)


def test_to_pay_lists_follow_billing_events(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    _issue_some(billing)
    deliver(payment, wire_messages(billing))
    summary = payment.to_pay_summary("fam-0")
    # fam-0 has S-0 (cancelled), S-3, S-6 … S-27 and C-0, C-3 … C-27.
    sports = [1000 + i for i in range(3, 30, 3)]
    assert summary == [
        {"code": "CANTINE", "name": "Restauration scolaire", "count": 10, "total_cents": 2500},
        {"code": "SPORTS", "name": "Direction des sports", "count": 9,
         "total_cents": sum(sports)},
    ]
    fam1 = {e["code"]: e["count"] for e in payment.to_pay_summary("fam-1")}
    assert fam1 == {"CANTINE": 9, "SPORTS": 10}  # C-1 was transferred
    assert payment.to_pay_summary("nobody") == []


def test_redelivery_and_republish_change_nothing(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    _issue_some(billing)
    messages = wire_messages(billing)
    assert deliver(payment, messages) == len(messages)
    live = payment.to_pay.snapshot()
    events_after_first = payment.recorder.max_notification_id()
    assert deliver(payment, messages) == 0  # same positions: recognised
    assert deliver(payment, list(reversed(messages))) == 0
    assert payment.to_pay.snapshot() == live
    assert payment.recorder.max_notification_id() == events_after_first


def test_a_rebuilt_projection_equals_the_live_one(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    _issue_some(billing)
    deliver(payment, wire_messages(billing))
    live = payment.to_pay.snapshot()
    payment.to_pay.reset()
    assert not any(payment.to_pay.snapshot().values())
    catch_up(payment, payment.to_pay)
    assert payment.to_pay.snapshot() == live
    fresh = MemoryToPayStore()
    catch_up(payment, fresh, batch_size=7)
    assert fresh.snapshot() == live


def test_a_long_catch_up_reads_ever_larger_batches(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    open_regies(billing)
    billing.issue_batch([terms(number=f"R-{i}", family=f"fam-{i % 5}") for i in range(60)])
    deliver(payment, wire_messages(billing))
    live = payment.to_pay.snapshot()
    fresh = MemoryToPayStore()
    transactions: list[int] = []
    apply = fresh.apply

    def counted(changes: list[Any], expected: int, position: int) -> bool:
        transactions.append(position - expected)
        return apply(changes, expected, position)

    fresh.apply = counted  # type: ignore[method-assign]
    assert catch_up(payment, fresh, batch_size=4) == payment.recorder.max_notification_id()
    # 4, 8, 16, 32, then what is left: five transactions where fixed batches take 16.
    assert transactions[:4] == [4, 8, 16, 32]
    assert len(transactions) == 5
    assert fresh.snapshot() == live


def test_two_runners_never_apply_twice(store_settings: Settings) -> None:
    billing = billing_app(store_settings)
    payment = payment_app(store_settings)
    _issue_some(billing)
    deliver(payment, wire_messages(billing))
    live = payment.to_pay.snapshot()
    position = payment.to_pay.position()
    # A second runner that read the same batch finds the position moved and applies nothing.
    assert not payment.to_pay.apply([], position - 1, position + 5)
    assert payment.to_pay.position() == position
    other = payment_app(store_settings)
    assert catch_up(other, other.to_pay) == 0
    assert other.to_pay.snapshot() == live


def _commit_in_a_loop(stop: threading.Event, path: Path) -> None:
    """Another writer of the same SQLite file, as the consumer is while the API starts."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS other_writer (n INTEGER)")
        while not stop.is_set():
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO other_writer VALUES (1)")
            db.execute("COMMIT")
            # A real writer pauses between transactions; one that never does would starve
            # the others out of their busy timeout, which is not what is tested here.
            stop.wait(0.001)
    finally:
        db.close()


def test_starting_while_another_connection_writes_waits_for_the_lock(tmp_path: Path) -> None:
    # A write transaction that begins as a read is refused at once, without waiting, when
    # another connection commits before its first write; every one of ours must wait.
    settings = make_settings("sqlite", tmp_path)
    billing = billing_app(settings)
    open_regies(billing)
    for i in range(48):
        billing.issue_invoice(terms(f"F-{i}", family="fam-1"))
    messages = wire_messages(billing)
    assert len(messages) == 50
    first = payment_app(settings)
    positions(settings, "payment", first)
    threads = Threads()
    threads.run("writer", _commit_in_a_loop, settings.var_dir / "payment.db")
    try:
        for i, message in enumerate(messages):
            # What each part does as it starts, then a write of each kind: events with
            # their tracking and chain, a position, the read models.
            app = payment_app(settings)
            assert deliver(app, [message]) == 1
            positions(settings, "payment", app).set("started", i)
    finally:
        threads.stop_all()
    app.to_pay.reset()
    catch_up(app, app.to_pay)
    assert len(app.to_pay.open_lines("fam-1")) == 48


def test_rows_by_keys_reads_a_long_key_list_in_chunks_on_postgres(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postgres", tmp_path)
    try:
        app = billing_app(settings)
        check_rows_by_keys(SqlStore(app), monkeypatch)
    finally:
        drop_schemas(settings.schema_prefix)
