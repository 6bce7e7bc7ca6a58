"""1. Batch issue: invoices per second through ``BillingApp.issue_batch`` (batches of 1000) on
SQLite, over HTTP to the billing Flask app, and on PostgreSQL; baseline: the very rows the
application stored, inserted again with plain sqlite3 / psycopg ``executemany``, one
transaction per 1000 rows, into a table of the same shape.
"""

import contextlib
import sqlite3
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Mapper

from benchmarks.harness import (
    BATCH,
    HOST,
    PG,
    REGIE,
    Figure,
    Run,
    drop_pg_schemas,
    invoice_payload,
    invoice_terms,
    issue_batches,
    issued_topic,
    make_settings,
    pg_connect,
    ratio,
    say,
)
from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.bootstrap import billing_app
from services.common.messaging import broker
from services.common.settings import Settings
from services.common.storage.chain import store_env
from services.common.storage.persistence import register_transcodings, schema_lock

SQLITE_TABLE = (
    "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, "
    "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
)


def raw_sqlite_rate(rows: list[tuple[Any, ...]], folder: Path, runs: int = 3) -> float:
    """Plain sqlite3: same table shape as eventsourcing's, WAL, one transaction per 1000."""
    rates = []
    for run in range(runs):
        path = folder / f"raw-{run}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SQLITE_TABLE)
            started = time.perf_counter()
            for k in range(0, len(rows), BATCH):
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO stored_events VALUES (?,?,?,?)", rows[k:k + BATCH]
                )
                conn.execute("COMMIT")
            rates.append(len(rows) / (time.perf_counter() - started))
        finally:
            conn.close()
    return statistics.median(rates)


def issue_and_locate(app: Any, n: int) -> tuple[float, str, str]:
    """Issue n invoices in batches; the rate, and where the rows to copy for the baseline are."""
    try:
        app.open_regie(*REGIE)
        items = [invoice_terms(i) for i in range(n)]
        rate = n / issue_batches(app, items)
        return rate, issued_topic(app), app.recorder.events_table_name
    finally:
        app.close()


def bench_issue_sqlite(root: Path, n: int) -> tuple[float, float]:
    settings = make_settings(root / "issue-sqlite")
    app = billing_app(settings)
    rate, topic, events_table = issue_and_locate(app, n)
    conn = sqlite3.connect(settings.var_dir / "billing.db")
    try:
        rows = conn.execute(
            "SELECT originator_id, originator_version, topic, state "
            f"FROM {events_table} WHERE topic = ? ORDER BY rowid", (topic,)
        ).fetchall()
    finally:
        conn.close()
    if len(rows) != n:
        raise RuntimeError(f"expected {n} stored invoices, found {len(rows)}")
    state = statistics.mean(len(r[3]) for r in rows)
    say(f"    {n} invoices stored, {state:.0f} B of JSON state each")
    return rate, raw_sqlite_rate(rows, settings.var_dir)


class UnsealedBillingApp(BillingApp):
    """Billing as it was before personal fields were sealed: the figure to compare with."""

    def construct_mapper(self) -> Mapper[UUID]:
        return Mapper(transcoder=self.construct_transcoder())


def bench_issue_unsealed(root: Path, n: int) -> float:
    """issue_batch on SQLite with the e-mail addresses stored in clear (no key look-up, no
    AES-GCM): what sealing costs."""
    settings: Settings = make_settings(root / "issue-unsealed")
    with schema_lock(settings, "billing"):
        app = UnsealedBillingApp(env=store_env(settings, "billing"))
    return issue_and_locate(app, n)[0]


A = TypeVar("A", bound=Application[Any])


class LibraryAlone(Application[UUID]):
    """eventsourcing's own application storing the same invoices: its recorder (no hash
    chain), its JSON transcoder (with the dates Régie stores), no sealing."""

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)


def library_app(settings: Settings, name: str, cls: type[A]) -> A:
    """``cls`` on the store ``settings`` name, as the store of a service called ``name``
    (the schema prefix + name, or var_dir/name.db), with the library's own recorder: no
    hash chain, no chain key."""
    env = store_env(settings, name)
    for variable in ("PROCESS_RECORDER_TOPIC", "REGIE_CHAIN_KEY"):
        env.pop(variable, None)
    with schema_lock(settings, name):
        return cls(env=env)


def library_alone_rate(settings: Settings, n: int) -> float:
    """The invoices made by ``Invoice.issue`` and saved by the library's ``save``, 1000 to a
    call, on the store ``settings`` name: what the library alone costs for them, without
    what Régie adds (the chain, the sealing) or changed (its batch path)."""
    app = library_app(settings, "alone", LibraryAlone)
    try:
        items = [invoice_terms(i) for i in range(n)]
        started = time.perf_counter()
        for k in range(0, n, BATCH):
            app.save(*[Invoice.issue(terms) for terms in items[k:k + BATCH]])
        elapsed = time.perf_counter() - started
        stored = app.recorder.max_notification_id() or 0
        if stored != n:
            raise RuntimeError(f"eventsourcing alone stored {stored} of {n} invoices")
        return n / elapsed
    finally:
        app.close()


def bench_issue_http(root: Path, n: int) -> float:
    """POST /invoices/batch with 1000 invoices a request, to the Flask app on a werkzeug
    server in a thread of this process (the client mostly waits on the socket meanwhile)."""
    import logging

    import requests
    from werkzeug.serving import make_server

    from services.billing.web import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = billing_app(make_settings(root / "issue-http"))
    token = f"bench-{uuid.uuid4().hex}"
    server = make_server(HOST, broker.free_port(), create_app(app, {token: "issuer"}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{HOST}:{server.server_port}"
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        r = session.post(f"{url}/regies", json=dict(zip(
            ("code", "name", "numcli", "saisie"), REGIE, strict=True)), timeout=30)
        r.raise_for_status()
        payloads = [invoice_payload(i) for i in range(n)]
        created = 0
        started = time.perf_counter()
        for k in range(0, n, BATCH):
            r = session.post(
                f"{url}/invoices/batch", json={"invoices": payloads[k:k + BATCH]}, timeout=120
            )
            r.raise_for_status()
            created += sum(1 for x in r.json()["results"] if x["status"] == 201)
        elapsed = time.perf_counter() - started
        if created != n:
            raise RuntimeError(f"HTTP: {created} of {n} invoices created")
        return n / elapsed
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.close()



def bench_issue_postgres(root: Path, n: int, cleanup: contextlib.ExitStack
                         ) -> tuple[float, float, float]:
    from psycopg import sql

    prefix = f"bench{uuid.uuid4().hex[:10]}_"
    raw_schema = f"{prefix}raw"
    settings = make_settings(
        root / "issue-pg", persistence="eventsourcing.postgres", schema_prefix=prefix
    )
    # Registered before anything is created, so that an error half-way still drops them.
    cleanup.callback(drop_pg_schemas,
                     [settings.schema("billing"), settings.schema("alone"), raw_schema])
    app = billing_app(settings)
    rate, topic, events_table = issue_and_locate(app, n)
    alone = library_alone_rate(settings, n)
    with pg_connect() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state FROM {}.{} "
                "WHERE topic = %s ORDER BY notification_id"
            ).format(sql.Identifier(settings.schema("billing")), sql.Identifier(events_table)),
            (topic,),
        ).fetchall()
        if len(rows) != n:
            raise RuntimeError(f"expected {n} stored invoices in PostgreSQL, found {len(rows)}")
        schema = sql.Identifier(raw_schema)
        rates = []
        for run in range(3):
            table = sql.Identifier(f"events_{run}")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL(
                "CREATE TABLE {}.{} (originator_id uuid NOT NULL, originator_version bigint "
                "NOT NULL, topic text, state bytea, notification_id bigserial, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(schema, table))
            conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {}.{} (notification_id)").format(
                schema, table))
            insert = sql.SQL(
                "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
                "VALUES (%s, %s, %s, %s)"
            ).format(schema, table)
            started = time.perf_counter()
            with conn.cursor() as cur:
                for k in range(0, n, BATCH):
                    with conn.transaction():
                        cur.executemany(insert, rows[k:k + BATCH])
            rates.append(n / (time.perf_counter() - started))
    return rate, statistics.median(rates), alone




def run(bench: Run) -> list[Figure]:
    options, root = bench.options, bench.root
    n = options.invoices
    say(f"1. Batch issue (BillingApp.issue_batch, batches of {BATCH}) vs plain INSERTs")
    t = time.monotonic()
    app_rate, raw_rate = bench_issue_sqlite(root, n)
    say(f"    SQLite   issue_batch {app_rate:9.0f} inv/s | raw sqlite3 {raw_rate:9.0f} rows/s"
        f" | raw is {ratio(app_rate, raw_rate)} faster   ({time.monotonic() - t:.1f}s)")
    raw = f"raw sqlite3 {raw_rate:,.0f} rows/s"
    figures = [Figure("SQLite issue_batch", f"{app_rate:,.0f} inv/s", raw,
                      ratio(app_rate, raw_rate), "<= 3x")]
    t = time.monotonic()
    unsealed_rate = bench_issue_unsealed(root, n)
    say(f"    SQLite   issue_batch, e-mails in clear {unsealed_rate:9.0f} inv/s | sealed "
        f"(above) is {ratio(app_rate, unsealed_rate)} slower   ({time.monotonic() - t:.1f}s)")
    figures.append(Figure("SQLite issue_batch, personal data sealed", f"{app_rate:,.0f} inv/s",
                          f"in clear {unsealed_rate:,.0f} inv/s",
                          ratio(app_rate, unsealed_rate)))
    t = time.monotonic()
    alone_rate = library_alone_rate(make_settings(root / "issue-alone"), n)
    say(f"    SQLite   eventsourcing alone (Invoice.issue, save) {alone_rate:9.0f} inv/s | "
        f"raw is {ratio(alone_rate, raw_rate)} faster; issue_batch, with the chain and the "
        f"sealing, {app_rate / alone_rate:.2f}x its rate   ({time.monotonic() - t:.1f}s)")
    figures.append(Figure("SQLite, eventsourcing alone (no chain, no sealing)",
                          f"{alone_rate:,.0f} inv/s", raw, ratio(alone_rate, raw_rate)))
    if options.http:
        t = time.monotonic()
        http_n = max(BATCH, n // 2)
        http_rate = bench_issue_http(root, http_n)
        say(f"    HTTP     POST /invoices/batch {http_rate:9.0f} inv/s ({http_n} invoices)"
            f" | raw is {ratio(http_rate, raw_rate)} faster, application path "
            f"{ratio(http_rate, app_rate)}   ({time.monotonic() - t:.1f}s)")
        figures.append(Figure("HTTP POST /invoices/batch", f"{http_rate:,.0f} inv/s", raw,
                              ratio(http_rate, raw_rate)))
    if options.postgres:
        t = time.monotonic()
        try:
            pg_connect().close()
        except Exception as e:
            say(f"    PostgreSQL skipped: nothing at {HOST}:{PG['port']} ({e})")
        else:
            pg_n = max(BATCH, n // 2)
            pg_app, pg_raw, pg_alone = bench_issue_postgres(root, pg_n, bench.cleanup)
            say(f"    Postgres issue_batch {pg_app:9.0f} inv/s | raw executemany {pg_raw:9.0f}"
                f" rows/s | raw is {ratio(pg_app, pg_raw)} faster ({pg_n} invoices,"
                f" {time.monotonic() - t:.1f}s)")
            say(f"    Postgres eventsourcing alone (Invoice.issue, save) {pg_alone:9.0f} inv/s"
                f" | raw is {ratio(pg_alone, pg_raw)} faster; issue_batch, with the chain and"
                f" the sealing, {pg_app / pg_alone:.2f}x its rate")
            raw_pg = f"raw executemany {pg_raw:,.0f} rows/s"
            figures.append(Figure("PostgreSQL issue_batch", f"{pg_app:,.0f} inv/s", raw_pg,
                                  ratio(pg_app, pg_raw), "<= 2x"))
            figures.append(Figure("PostgreSQL, eventsourcing alone (no chain, no sealing)",
                                  f"{pg_alone:,.0f} inv/s", raw_pg, ratio(pg_alone, pg_raw)))
    return figures
