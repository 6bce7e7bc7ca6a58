"""7. Projection rebuild: `regie replay to-pay` (the payment service's read models dropped and
rebuilt from its event store) against a raw read + JSON decode of the same events, on SQLite
and on PostgreSQL.

The store is built once per size: in ``--store DIR`` when given (a SQLite file there, and a
PostgreSQL schema named after the size, both kept for the next run), else in the run's
temporary folder and a throwaway schema.
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, Run, drop_pg_schemas, make_settings, pg_connect, say
from services.bootstrap import payment_app
from services.common.settings import Settings
from services.payment import domain
from services.payment.application import PaymentApp
from services.payment.projections import REPLAY_BATCH, rebuild

GOAL_RATE = 100_000
GOAL_RATIO = 3.0
PARIS_YEAR = 8_000_000
SAVE_CHUNK = 400  # aggregates per save while building
REGIE = ("SPORTS", "Direction des sports", "000001", "T")
FAMILIES = 1000
WHEN = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def _invoices(count: int, start: int) -> Iterator[list[Any]]:
    """Aggregates with pending events, as the payment service records them in a year: every
    invoice registered; every second one paid online (reserved, payment started, requested,
    confirmed, invoice paid); every tenth cancelled. 3.6 events per invoice."""
    regie = domain.Regie(code=REGIE[0], name=REGIE[1], numcli=REGIE[2], saisie=REGIE[3],
                         sequence=1)
    known: dict[str, domain.Invoice] = {}
    chunk: list[Any] = [regie] if start == 0 else []
    for i in range(start, start + count):
        family = f"fam-{i % FAMILIES:04d}"
        invoice_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rebuild/{i}"))
        invoice = domain.Invoice(
            invoice_id=invoice_id, regie=REGIE[0], number=f"F-{i:08d}", family_id=family,
            label="Restauration scolaire", issued_on=date(2025, 2, 26),
            payable_until=date(2030, 12, 31), due_on=date(2030, 12, 31), amount_cents=2500,
            sequence=1,
            lines=[{"label": "Repas", "quantity": 10, "unit_price_cents": 250}],
        )
        chunk.append(invoice)
        if i % 2 == 1:
            known[invoice_id] = invoice
            payment = domain.Payment.start(
                family, REGIE[0], [invoice_id], "parent@example.org", WHEN, f"{i:08d}",
                lambda code: regie, known.get)
            payment.requested(idop=f"idop-{i}", answer={"idop": f"idop-{i}"})
            paid_at = WHEN.isoformat()
            payment.confirmed(resultrans="P", numauto=f"{i % 999999:06d}", paid_at=paid_at,
                              answer={"resultrans": "P"}, allocations=payment.allocations,
                              refunds=[])
            invoice.pay(str(payment.id), 2500, paid_at, "P")
            known.clear()
            chunk.append(payment)
        elif i % 10 == 0:
            invoice.cancel(reason="doublon", sequence=2)
        if len(chunk) >= SAVE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _build(app: PaymentApp, events: int) -> int:
    """Record about ``events`` events; return how many the store holds."""
    have = app.recorder.max_notification_id() or 0
    if have >= events:
        return have
    # Each invoice brings 3.6 events on average; carry on where a stopped build ended.
    invoices = int(events / 3.6) + 1
    done = sum(1 for _ in _counted(app)) if have else 0
    started = time.perf_counter()
    for chunk in _invoices(invoices - done, done):
        app.save(*chunk)
    total = app.recorder.max_notification_id() or 0
    say(f"    built {total} events in {time.perf_counter() - started:.0f}s")
    return total


def _counted(app: PaymentApp) -> Iterator[None]:
    """One item per invoice registered so far."""
    position = 0
    while True:
        page = app.recorder.select_notifications(position, 10_000, inclusive_of_start=False)
        if not page:
            return
        for n in page:
            if n.topic.endswith("Invoice.Registered"):
                yield None
        position = page[-1].id


def _raw_pages(execute: Callable[[int], list[Any]]) -> tuple[int, float]:
    """Every stored event read in keyset pages (``execute(after)``: the rows of a page of
    (notification id, topic, state)) and its state decoded by json.loads."""
    started = time.perf_counter()
    count, last, loads = 0, 0, json.loads
    while True:
        rows = execute(last)
        if not rows:
            return count, time.perf_counter() - started
        for row in rows:
            loads(row[2])
        count += len(rows)
        last = rows[-1][0]


def _raw_sqlite(path: Path, page: int) -> tuple[int, float]:
    """The pages read with sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return _raw_pages(lambda after: conn.execute(
            "SELECT rowid, topic, state FROM stored_events WHERE rowid > ? ORDER BY rowid "
            "LIMIT ?", (after, page)).fetchall())
    finally:
        conn.close()


def _raw_postgres(schema: str, page: int) -> tuple[int, float]:
    """The same with psycopg, pages of the same size, in PostgreSQL's binary format as the
    replay reads them (as text, each state comes as hex: 1.6-2 times as long to read)."""
    from psycopg import sql

    with pg_connect() as conn:
        query = sql.SQL("SELECT notification_id, topic, state FROM {}.{} "
                        "WHERE notification_id > %s ORDER BY notification_id LIMIT %s").format(
            sql.Identifier(schema), sql.Identifier("payment_events"))
        return _raw_pages(
            lambda after: conn.execute(query, (after, page), binary=True).fetchall())


def _replay(settings: Settings) -> tuple[int, float]:
    """What `regie replay to-pay` does, timed from the drop of the read models."""
    app = payment_app(settings)
    try:
        started = time.perf_counter()
        done = rebuild(app)
        return done, time.perf_counter() - started
    finally:
        app.close()


def _one(name: str, settings: Settings, events: int,
         raw: Any) -> list[Figure]:
    app = payment_app(settings)
    try:
        total = _build(app, events)
    finally:
        app.close()
    # Warm the page cache and the interpreter once, then take the better of two of each,
    # interleaved, so that both meet the same machine.
    raw()
    best_raw = best_replay = float("inf")
    replayed = read = 0
    for _ in range(2):
        read, seconds = raw()
        best_raw = min(best_raw, seconds)
        replayed, seconds = _replay(settings)
        best_replay = min(best_replay, seconds)
    if replayed != total or read != total:
        raise RuntimeError(f"{name}: replayed {replayed} and read {read} of {total} events")
    rate, raw_rate = total / best_replay, total / best_raw
    ratio = raw_rate / rate
    year = PARIS_YEAR / rate
    say(f"    {name:8} replay {rate:9,.0f} ev/s | raw read + json.loads {raw_rate:9,.0f} ev/s "
        f"| raw is {ratio:.1f}x faster | {total:,} events in {best_replay:.1f}s; "
        f"8M events ≈ {year / 60:.1f} min (linear)")
    return [
        Figure(f"rebuild rate, {name} ({total:,} events)", f"{rate:,.0f} ev/s",
               f"raw read + decode {raw_rate:,.0f} ev/s", f"{ratio:.1f}x",
               f">= {GOAL_RATE // 1000}k ev/s, <= {GOAL_RATIO:.0f}x"),
        Figure(f"8M events replayed, {name} (linear from {total:,})", f"{year / 60:.1f} min",
               "", "", "<= 2 min"),
    ]


def run(bench: Run) -> list[Figure]:
    events = bench.options.events
    keep = bench.options.store is not None
    folder = Path(bench.options.store) if keep else bench.root / "rebuild"
    folder.mkdir(parents=True, exist_ok=True)
    say(f"7. Projection rebuild (regie replay to-pay) vs raw read + JSON decode: {events:,} "
        f"events, store in {folder}{'' if keep else ' (temporary)'}")
    figures: list[Figure] = []
    page = REPLAY_BATCH  # as the replay reads them
    sqlite_settings = make_settings(folder / f"sqlite-{events}")
    figures += _one("SQLite", sqlite_settings, events,
                    lambda: _raw_sqlite(sqlite_settings.var_dir / "payment.db", page))
    if not bench.options.postgres:
        return figures
    try:
        pg_connect().close()
    except Exception as e:
        say(f"    Postgres skipped: {e}")
        return figures
    prefix = f"rebuild{events}_" if keep else f"bench{uuid.uuid4().hex[:8]}_"
    pg_settings = make_settings(folder / f"pg-{events}", persistence="eventsourcing.postgres",
                                schema_prefix=prefix)
    if not keep:
        bench.cleanup.callback(drop_pg_schemas, [pg_settings.schema("payment")])
    schema = pg_settings.schema("payment")
    figures += _one("Postgres", pg_settings, events, lambda: _raw_postgres(schema, page))
    return figures
