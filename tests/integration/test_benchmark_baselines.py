"""The baselines the benchmarks measure Régie against store what they say they store."""

import pickle
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from benchmarks.batch_issue import library_alone_rate
from benchmarks.harness import drop_pg_schemas, invoice_terms, make_settings, pg_connect
from benchmarks.roles import LibraryRecorder, RawWriter
from services.common.settings import Settings


def test_the_library_alone_stores_the_invoices_as_the_library_does_without_chain_or_seal(
        tmp_path: Path) -> None:
    """The batch figure's second baseline: eventsourcing's own save of the same invoices,
    in a file of its own, with no chain rows and the e-mail addresses as given."""
    assert library_alone_rate(make_settings(tmp_path), 30) > 0
    conn = sqlite3.connect(tmp_path / "alone.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = conn.execute("SELECT topic, state FROM stored_events").fetchall()
    finally:
        conn.close()
    assert not any("chain" in t for t in tables)
    assert [t for t, _ in rows] == ["services.billing.domain:Invoice.Issued"] * 30
    assert invoice_terms(0).payer_email.encode() in rows[0][1]
    assert not (tmp_path / "billing.db").exists()


class Record(NamedTuple):
    partition: int
    offset: int
    value: bytes


def test_the_raw_drain_writes_each_messages_share_of_the_rows_and_the_offsets(
        tmp_path: Path) -> None:
    """The drain's second baseline writes, for the k-th message of the drain, the k-th share
    of each table's rows (new rows by COPY, the others by INSERT … ON CONFLICT), and each
    poll's partition offsets; warm-up messages write nothing."""
    schema = f"bench{uuid.uuid4().hex[:8]}_raw"
    with pg_connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".events (id bigint PRIMARY KEY, state bytea)')
        conn.execute(f'CREATE TABLE "{schema}".totals (family text PRIMARY KEY, n bigint)')
        conn.execute(f'CREATE TABLE "{schema}".positions (name text PRIMARY KEY, '
                     "position bigint NOT NULL)")
    try:
        events = [(i, f"state {i}".encode()) for i in range(10)]
        totals = [("fam-1", 1), ("fam-2", 2), ("fam-1", 3)]
        with open(tmp_path / "rows", "wb") as f:
            pickle.dump({
                "events": (["id", "state"], events, ""),
                "totals": (["family", "n"], totals,
                           "ON CONFLICT (family) DO UPDATE SET n = excluded.n"),
            }, f)
        writer = RawWriter({"rows": str(tmp_path / "rows"), "schema": schema, "messages": 5})
        try:
            writer.write([Record(0, 0, b"warm-up")])
            writer.write([Record(0, 1, b"x"), Record(1, 0, b"x")])
            with pg_connect() as conn:
                assert conn.execute(f'SELECT id FROM "{schema}".events ORDER BY id'
                                    ).fetchall() == [(0,), (1,), (2,), (3,)]
                assert conn.execute(f'SELECT family, n FROM "{schema}".totals').fetchall() \
                    == [("fam-1", 1)]
            writer.write([Record(0, 2, b"x"), Record(2, 0, b"x"), Record(1, 1, b"x")])
        finally:
            writer.close()
        with pg_connect() as conn:
            assert conn.execute(f'SELECT id, state FROM "{schema}".events ORDER BY id'
                                ).fetchall() == events
            assert dict(conn.execute(f'SELECT family, n FROM "{schema}".totals').fetchall()) \
                == {"fam-1": 3, "fam-2": 2}
            assert dict(conn.execute(f'SELECT name, position FROM "{schema}".positions'
                                     ).fetchall()) == {"raw@0": 3, "raw@1": 2, "raw@2": 1}
    finally:
        drop_pg_schemas([schema])


def test_the_raw_rebuild_reads_every_stored_event_in_pages_on_both_stores(
        tmp_path: Path) -> None:
    """The rebuild figure's baseline reads and parses every stored state, page after
    page, on SQLite and on PostgreSQL (there in binary, as the replay reads them)."""
    from benchmarks.rebuild import _build, _raw_postgres, _raw_sqlite
    from services.bootstrap import payment_app

    sqlite_settings = make_settings(tmp_path / "sqlite")
    pg_settings = make_settings(tmp_path / "pg", persistence="eventsourcing.postgres",
                                schema_prefix=f"bench{uuid.uuid4().hex[:8]}_")
    try:
        reads: list[tuple[Settings, Callable[[], tuple[int, float]]]] = [
            (sqlite_settings, lambda: _raw_sqlite(sqlite_settings.var_dir / "payment.db", 7)),
            (pg_settings, lambda: _raw_postgres(pg_settings.schema("payment"), 7))]
        for settings, raw in reads:
            app = payment_app(settings)
            try:
                total = _build(app, 40)
            finally:
                app.close()
            assert total >= 40
            assert raw()[0] == total
    finally:
        drop_pg_schemas([pg_settings.schema("payment")])


def test_the_library_drain_records_each_invoice_as_the_library_would(tmp_path: Path) -> None:
    """The drain's third baseline records, for each billing message of a poll, the payment
    invoice and its reminders record with eventsourcing's own construction and recorder,
    the poll in one transaction with its tracking record; no chain, nothing sealed; warm-up
    messages record nothing. Read back by the library, they are the invoices the messages
    name."""
    from benchmarks.reads import billing_polls
    from services.payment import domain

    billing = make_settings(tmp_path / "billing")
    polls = billing_polls(billing, [invoice_terms(i) for i in range(3)])
    messages = [r.value for poll in polls for records in poll.values() for r in records]
    issued = [orjson.loads(m)["data"] for m in messages
              if orjson.loads(m)["type"].startswith("fr.regie.InvoiceIssued.")]
    assert len(issued) == 3
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    schema = f"{prefix}library"
    settings = make_settings(tmp_path, persistence="eventsourcing.postgres")
    recorder: LibraryRecorder | None = None
    try:
        # Inside: a recorder that fails half-way through its start leaves its schema made.
        recorder = LibraryRecorder(
            {"prefix": prefix, "topic": "t", "out": str(tmp_path / "o")}, settings)
        recorder.write([Record(0, 0, b"warm-up")])
        library: Any = recorder.app.recorder
        assert (library.max_notification_id() or 0) == 0
        invoices = [m for m in messages if b"InvoiceIssued" in m]
        recorder.write([Record(0, 1, invoices[0]), Record(0, 2, invoices[1])])
        recorder.write([Record(1, 0, invoices[2])])
        assert library.max_notification_id() == 6
        assert library.max_tracking_id("t@0") == 3
        assert library.max_tracking_id("t@1") == 1
        for data in issued:
            invoice: Any = recorder.app.repository.get(uuid.UUID(data["invoice_id"]))
            assert isinstance(invoice, domain.Invoice)
            assert (invoice.number, invoice.amount_cents) == (data["number"],
                                                              data["amount_cents"])
        with pg_connect() as conn:
            tables = {r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,))}
            states = b"".join(bytes(r[0]) for r in conn.execute(
                f'SELECT state FROM "{schema}".{library.events_table_name}'))
        assert not any("chain" in t for t in tables)
        assert issued[0]["payer_email"].encode() in states
    finally:
        if recorder is not None:
            recorder.close()
        drop_pg_schemas([schema])
