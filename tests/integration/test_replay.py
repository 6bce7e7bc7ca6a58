"""Rebuilding the payment service's read models from its history, on SQLite and PostgreSQL:
the replay reads stored events without making domain events, applies a batch's changes
together, and counts the totals once at the end; none of it may change what it builds."""

import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.billing.domain import Invoice
from services.bootstrap import payment_app
from services.common.settings import Settings
from services.common.storage import persistence
from services.common.storage.persistence import SqlStore, uuid_text
from services.common.storage.transcoder import FastJSONTranscoder
from services.payment import domain
from services.payment.application import PaymentApp
from services.payment.gateway import FakeGateway
from services.payment.projections import (
    HANDLERS,
    INDEXES,
    STATE_HANDLERS,
    AnomalyRow,
    CreditRow,
    InvoiceRow,
    MemoryToPayStore,
    PaymentRow,
    as_new_row,
    catch_up,
    changes_for,
    rebuild,
    stored_changes,
)
from services.payment.web import create_app
from tests.factories import deliver, issued, terms, wire_messages
from tests.fixtures.make_stores import HERE, settings
from tests.helpers import CASHIER, NOW, TOKENS, cheque


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def history(settings: Settings) -> PaymentApp:
    """Online payments (one confirmed after an invoice was cancelled: a refund due, paid),
    counter payments in part and in excess (the family's credit, asked back), a cancelled
    and a transferred invoice, over two families and two régies."""
    gateway = FakeGateway()
    billing, payment = issued(
        settings, terms("S-1", unit=2500), terms("S-2", unit=1250), terms("S-3", unit=4000),
        terms("S-4", family="fam-2", unit=900), terms("C-1", regie="CANTINE", unit=300),
        terms("C-2", family="fam-2", regie="CANTINE", unit=700),
        gateway=gateway, clock=lambda: NOW)
    deliver(payment, wire_messages(billing))
    paid = payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("S-2")],
                                   "parent@example.org")
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-2"), "erreur de tarif")
    billing.transfer_invoice(Invoice.create_id("CANTINE", "C-2"), "T-2025-1")
    deliver(payment, wire_messages(billing))
    gateway.decide(paid.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(paid.idop)  # type: ignore[arg-type]
    refused = payment.request_payment("fam-2", "SPORTS", [iid("S-4")], "parent@example.org")
    gateway.decide(refused.idop, "R")  # type: ignore[arg-type]
    payment.settle_from_payfip(refused.idop)  # type: ignore[arg-type]
    client = create_app(payment, tokens=TOKENS).test_client()
    for body in (cheque(1000, invoice_ids=[iid("S-3")]), cheque(5000, reference="7654321")):
        assert client.post("/counter-payments", json=body, headers=CASHIER).status_code == 201
    asked = client.post("/families/fam-1/credits/SPORTS/refund", json={}, headers=CASHIER)
    assert asked.status_code == 201, asked.json
    for refund in client.get("/refunds?status=due", headers=CASHIER).json["refunds"]:  # type: ignore[index]
        assert client.post(f"/refunds/{refund['id']}/paid", headers=CASHIER, json={
            "means": "transfer", "reference": "REMB", "paid_on": "2025-03-05"}).status_code == 200
    payment.refresh()
    return payment


def notifications(app: PaymentApp) -> list[Any]:
    return list(app.recorder.select_notifications(0, 100_000, inclusive_of_start=False))


def made(changes: list[Any]) -> list[Any]:
    """``changes`` with their new rows as ``NewRow``s, as the state handlers make them
    and ``_write`` takes them."""
    rows = (InvoiceRow, PaymentRow, AnomalyRow, CreditRow)
    return [as_new_row(c) if isinstance(c, rows) else c for c in changes]


def both_histories(store_settings: Settings, tmp_path: Path) -> tuple[PaymentApp, PaymentApp]:
    """This version's history, and the kept one of earlier versions (older class versions,
    upcast on the way)."""
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copy(HERE / "payment.db", kept / "payment.db")
    return history(store_settings), payment_app(settings(kept))


# The handled classes neither history holds.
UNTRIED = {"Invoice.SettledUpstream", "Invoice.Credited", "Invoice.PaidFromCredit",
           "FamilyCredit.Applied"}


def test_each_stored_event_changes_what_its_domain_event_changes(
        store_settings: Settings, tmp_path: Path) -> None:
    seen: set[type] = set()
    for app in both_histories(store_settings, tmp_path):
        changes = stored_changes(app)
        for n in notifications(app):
            event = app.mapper.to_domain_event(n)
            assert made(changes(n)) == made(changes_for(event, n.id)), \
                type(event).__qualname__
            seen.add(type(event))
    # Every handler met at least one event, so that none is left untried.
    untried = {cls.__qualname__ for cls in HANDLERS} - {cls.__qualname__ for cls in seen}
    assert untried <= UNTRIED


def test_the_ids_a_replay_reads_as_stored_are_written_as_the_library_writes_them(
        store_settings: Settings, tmp_path: Path) -> None:
    # The replay reads the originators' ids as the store keeps them (on SQLite 32 hex
    # digits) and puts the hyphens in itself: the text of str(UUID), and the same changes.
    for app in both_histories(store_settings, tmp_path):
        store = SqlStore(app)
        written = store.stored_events(0, 100_000)
        stored = store.stored_events(0, 100_000, ids_as_stored=True)
        live = notifications(app)
        assert [r.originator_id for r in written] == [str(n.originator_id) for n in live]
        assert [uuid_text(r.originator_id) for r in stored] == [
            r.originator_id for r in written]
        changes = stored_changes(app)
        assert [made(changes(r)) for r in stored] == [
            made(changes_for(app.mapper.to_domain_event(n), n.id)) for n in live]


def test_a_replay_reads_postgresql_pages_in_binary_as_the_text_reads_them(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL sends a bytea state as hex text unless asked for its binary format: twice
    the bytes to send and to decode; a replay's pages took 1.6-2 times as long to read. The
    rows read either way are the same values, of the same types."""
    import psycopg

    payment = history(store_settings)
    store = SqlStore(payment)
    formats: list[bool | None] = []
    execute = psycopg.Cursor.execute

    def noted(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        formats.append(kwargs.get("binary"))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", noted)
    rows = store.stored_events(0, 100_000)
    monkeypatch.undo()
    live = notifications(payment)
    assert [(r.id, r.originator_id, r.originator_version, r.topic, bytes(r.state))
            for r in rows] == [(n.id, str(n.originator_id), n.originator_version, n.topic,
                                n.state) for n in live]
    assert all(type(r.state) is bytes for r in rows)
    if store_settings.is_postgres():
        assert formats == [True]


def test_an_id_is_written_as_str_writes_its_uuid() -> None:
    some = uuid.uuid4()
    assert uuid_text(some.hex) == uuid_text(str(some)) == uuid_text(some) == str(some)


def test_each_state_handler_changes_what_its_live_handler_changes(
        store_settings: Settings, tmp_path: Path) -> None:
    # The second handlers read the stored state as orjson parses it, registered values
    # still {"_type_", "_data_"}: called here directly, not through the replay's fallback.
    seen: set[type] = set()
    for app in both_histories(store_settings, tmp_path):
        for n in notifications(app):
            event = app.mapper.to_domain_event(n)
            state = orjson.loads(n.state)
            handler = STATE_HANDLERS.get(type(event))
            version = getattr(type(event), "class_version", 1)
            if handler is None or state.pop("class_version", 1) != version:
                continue
            state["originator_version"] = n.originator_version
            assert made(handler(state, str(n.originator_id), n.id)) == made(
                changes_for(event, n.id)), type(event).__qualname__
            seen.add(type(event))
    assert set(STATE_HANDLERS) <= set(HANDLERS)
    assert seen == set(STATE_HANDLERS)


def test_a_state_a_state_handler_cannot_read_alike_is_read_by_the_live_one() -> None:
    # An integer beyond 64 bits, which orjson reads as a float: the state handler refuses it.
    state = {"amount_cents": 2**70, "family_id": "fam-1", "regie": "SPORTS",
             "number": "S-1", "label": "x", "issued_on": {"_type_": "date_iso",
                                                          "_data_": "2025-01-01"},
             "payable_until": {"_type_": "date_iso", "_data_": "2025-02-01"},
             "due_on": {"_type_": "date_iso", "_data_": "2025-02-01"}}
    with pytest.raises(ValueError):
        STATE_HANDLERS[domain.Invoice.Registered](
            orjson.loads(json.dumps(state)), "id", 1)


def test_each_stored_state_reads_as_the_library_reads_it(
        store_settings: Settings, tmp_path: Path) -> None:
    # The replay's orjson reader against eventsourcing's decoder, on every stored event.
    topics: set[str] = set()
    for app in both_histories(store_settings, tmp_path):
        transcoder = app.mapper.transcoder
        assert isinstance(transcoder, FastJSONTranscoder)
        read = transcoder.reader()
        for n in notifications(app):
            assert repr(read(n.state)) == repr(transcoder.decode(n.state)), n.topic
            topics.add(n.topic)
    assert {t.rsplit(":", 1)[1] for t in topics} >= {c.__qualname__ for c in HANDLERS} - UNTRIED


def test_a_replay_opens_no_sealed_field(store_settings: Settings) -> None:
    payment = history(store_settings)
    live = payment.to_pay.snapshot()

    def no_key(family: str) -> bytes:
        raise AssertionError(f"the replay asked for {family}'s key")

    payment.keys.key = no_key  # type: ignore[method-assign,assignment]
    assert rebuild(payment) == payment.recorder.max_notification_id()
    assert payment.to_pay.snapshot() == live


def test_a_batch_applied_at_once_builds_what_its_events_build_one_by_one(
        store_settings: Settings) -> None:
    payment = history(store_settings)
    changes = stored_changes(payment)
    together, one_by_one = MemoryToPayStore(), MemoryToPayStore()
    everything = [(n.id, changes(n)) for n in notifications(payment)]
    together.apply([c for _, cs in everything for c in cs], 0, everything[-1][0])
    position = 0
    for nid, cs in everything:
        for change in cs:
            assert one_by_one.apply([change], position, position)
        assert one_by_one.apply([], position, nid)
        position = nid
    together.settle()
    one_by_one.settle()
    assert together.snapshot() == one_by_one.snapshot() == payment.to_pay.snapshot()


class Stop(Exception):
    pass


def test_a_replay_stopped_half_way_ends_with_the_right_totals(
        store_settings: Settings) -> None:
    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    assert live["totals"]
    batches = 0

    def stop_after_two(count: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise Stop

    payment.to_pay.reset()
    with pytest.raises(Stop):
        catch_up(payment, payment.to_pay, batch_size=3, progress=stop_after_two)
    assert 0 < payment.to_pay.position() < payment.recorder.max_notification_id()  # type: ignore[operator]
    assert not set(INDEXES) & indexes(payment)
    # Whoever carries on (here the consumer's refresh) ends with the totals counted and
    # the reads' indexes made.
    payment.refresh()
    assert payment.to_pay.snapshot() == live
    assert set(INDEXES) <= indexes(payment)


def indexes(app: PaymentApp) -> set[str]:
    store = app.to_pay.store  # type: ignore[attr-defined]
    if store.postgres:
        rows = store.fetchall("SELECT indexname AS name FROM pg_indexes WHERE schemaname = ?",
                              (store.datastore.schema,))
    else:
        rows = store.fetchall("SELECT name FROM sqlite_master WHERE type = 'index'")
    return {r["name"] for r in rows}


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables written by COPY, from any number of rows on."""
    monkeypatch.setattr(persistence, "COPY_FROM", 1)
    written: list[str] = []
    real = persistence._Cursor.insert_new

    def insert_new(self: Any, table: str, columns: Any, rows: Any) -> None:
        if self.store.postgres:
            written.append(table)
        real(self, table, columns, rows)

    monkeypatch.setattr(persistence._Cursor, "insert_new", insert_new)
    return written


def test_a_replay_written_by_copy_builds_what_executemany_builds(
        store_settings: Settings, copies: list[str]) -> None:
    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    assert rebuild(payment) == payment.recorder.max_notification_id()
    assert payment.to_pay.snapshot() == live
    if store_settings.is_postgres():
        assert {"view_invoices", "view_payments", "view_credits"} <= set(copies)


def test_rows_copied_leave_those_already_there(store_settings: Settings,
                                               copies: list[str]) -> None:
    payment = history(store_settings)
    store = payment.to_pay.store  # type: ignore[attr-defined]
    columns = ("id", "payment_id")
    for _ in range(2):
        with store.transaction() as c:
            c.insert_new("view_anomalies", columns, [("a", "first"), ("b", "first")])
            c.insert_new("view_anomalies", columns, [("b", "second"), ("c", "second")])
    rows = store.fetchall("SELECT id, payment_id FROM {schema}view_anomalies WHERE id IN "
                          "('a', 'b', 'c') ORDER BY id")
    assert [(r["id"], r["payment_id"]) for r in rows] == [
        ("a", "first"), ("b", "first"), ("c", "second")]


def test_a_catch_up_that_reached_the_end_of_the_history_reads_it_no_further(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catch-up after each poll of the consumer: a page shorter than asked is the end of
    the history when it was read; what was recorded since is for the next catch-up."""
    from services.bootstrap import billing_app
    from services.payment import projections
    from tests.factories import open_regies

    billing, payment = billing_app(store_settings), payment_app(store_settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1", family="fam-7"))
    deliver(payment, wire_messages(billing))
    billing.issue_invoice(terms("F-2", family="fam-7"))
    messages = wire_messages(billing)
    pages: list[int] = []
    real_reader = projections._reader

    def reader(app: Any) -> Any:
        read = real_reader(app)

        def counted(after: int, limit: int) -> Any:
            page = read(after, limit)
            pages.append(len(page))
            return page

        return counted

    monkeypatch.setattr(projections, "_reader", reader)
    deliver(payment, messages)
    assert [r["count"] for r in payment.to_pay_summary("fam-7")] == [2]
    assert len(pages) == 1 and pages[0] > 0
    # Nothing new: one read, which finds nothing.
    payment.refresh()
    assert pages[1:] == [0]


def test_a_rebuild_commits_unsynced_and_leaves_the_commits_as_they_were(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild's batches may be lost to a power cut and applied again: SQLite's log is
    synced once, at the end, and the application's other commits are synced as before."""
    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    store = payment.to_pay.store  # type: ignore[attr-defined]

    def level() -> int | None:
        if store.postgres:
            return None
        with store.datastore.get_connection(commit=False) as conn:
            return int(conn._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0])

    syncs: list[int] = []
    real_sync = os.fdatasync

    def fdatasync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    before = level()
    during: list[int | None] = []
    assert rebuild(payment, progress=lambda count: during.append(level())) == \
        payment.recorder.max_notification_id()
    assert payment.to_pay.snapshot() == live
    if store.postgres:
        assert syncs == [] and set(during) == {None}
        return
    assert before == 2  # FULL: an API's commits
    assert set(during) == {1}  # NORMAL
    assert level() == before
    assert len(syncs) == 1


@pytest.mark.parametrize("batch", [1, 2, 5, 50_000])
def test_a_replay_builds_the_same_whatever_its_batches(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    """Where the batches end decides which changes fold into a row's INSERT and which are
    UPDATEs of a row an earlier batch wrote; never what the rows end up holding."""
    from services.payment import projections

    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    monkeypatch.setattr(projections, "REPLAY_BATCH", batch)
    payment.to_pay.reset()
    assert catch_up(payment, payment.to_pay, batch_size=batch) == \
        payment.recorder.max_notification_id()
    assert payment.to_pay.snapshot() == live


def test_a_long_catch_up_on_postgresql_writes_a_batch_while_it_reads_the_next(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL a batch's statements wait on the server: they run in a thread of
    their own while the next batch is read and decoded. SQLite writes in the caller's
    thread, where a second thread only slowed a replay down."""
    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    store = type(payment.to_pay)
    apply = store.apply
    threads: list[str] = []

    def traced(self: Any, changes: list[Any], expected: int, position: int) -> bool:
        threads.append(threading.current_thread().name)
        return apply(self, changes, expected, position)

    monkeypatch.setattr(store, "apply", traced)
    payment.to_pay.reset()
    assert catch_up(payment, payment.to_pay, batch_size=2) == \
        payment.recorder.max_notification_id()
    assert payment.to_pay.snapshot() == live
    behind = [name for name in threads if name.startswith("catch-up-write")]
    assert len(threads) > 2
    if store_settings.is_postgres():
        # Every batch but the last, read at the end of the history, which has no next.
        assert len(behind) == len(threads) - 1
    else:
        assert not behind


def test_a_catch_up_overtaken_by_another_runner_carries_on_from_its_position(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose expected position another runner has moved is not applied, nor any
    sent after it; the catch-up carries on from the position the store holds, and no event
    is applied twice."""
    payment = history(store_settings)
    other = payment_app(store_settings)
    live = payment.to_pay.snapshot()
    store = type(payment.to_pay)
    apply = store.apply
    calls = 0

    def overtaken(self: Any, changes: list[Any], expected: int, position: int) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            # The other runner goes to the end before this runner's second batch.
            catch_up(other, other.to_pay, batch_size=3)
        return apply(self, changes, expected, position)

    monkeypatch.setattr(store, "apply", overtaken)
    payment.to_pay.reset()
    done = catch_up(payment, payment.to_pay, batch_size=2)
    total = payment.recorder.max_notification_id()
    assert 0 < done < total  # type: ignore[operator]
    assert payment.to_pay.position() == total
    assert payment.to_pay.snapshot() == live


def test_a_batch_that_fails_in_a_catch_up_stops_it_and_the_next_one_finishes(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error of a batch written behind is the catch-up's; the batches before it stand
    with their position, and a later catch-up applies the rest."""
    payment = history(store_settings)
    live = payment.to_pay.snapshot()
    store = type(payment.to_pay)
    apply = store.apply
    positions: list[int] = []

    class Lost(Exception):
        pass

    def failing(self: Any, changes: list[Any], expected: int, position: int) -> bool:
        if len(positions) == 2:
            raise Lost
        positions.append(position)
        return apply(self, changes, expected, position)

    monkeypatch.setattr(store, "apply", failing)
    payment.to_pay.reset()
    with pytest.raises(Lost):
        catch_up(payment, payment.to_pay, batch_size=2)
    assert payment.to_pay.position() == positions[-1]
    monkeypatch.setattr(store, "apply", apply)
    catch_up(payment, payment.to_pay, batch_size=2)
    assert payment.to_pay.snapshot() == live
