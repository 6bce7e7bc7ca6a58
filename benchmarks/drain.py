"""3. Backlog drain, on PostgreSQL, with one and with two payment consumer processes: N
invoices stored while the relay is paused, then the time until the last is visible in
to-pay; baseline: a plain producer and consumer moving the same N messages. Two floors
beside it: a plain consumer writing the rows the payment consumer wrote, and one recording
each invoice through eventsourcing alone. Also the memory (RSS) of the consumers, the relay
and the broker once the backlog is drained.
"""

import math
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REGIE,
    WARMUP,
    Child,
    Figure,
    Kafka,
    Pipeline,
    Run,
    cpu_seconds,
    drop_pg_schemas,
    invoice_id,
    invoice_terms,
    issue_batches,
    make_settings,
    messages_between,
    pg_connect,
    position,
    postgres_cpu,
    relay_acks,
    say,
    spawn,
)
from events import BILLING_INVOICES
from services.bootstrap import billing_app, payment_app
from services.common.messaging.outbox import Outgoing
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore


@dataclass
class Drainers:
    """Billing store + relay + ``len(consumers)`` payment consumers sharing the topic, on
    PostgreSQL; ``pipeline.consumer`` is the first of them."""

    pipeline: Pipeline
    consumers: list[Child]


# What the payment consumer writes for an invoice, by table, that the raw baseline writes
# again, and how it writes it: an ON CONFLICT clause as the consumer's own statement has it.
RAW_TABLES = {
    "payment_events": "",
    "event_chain": "",
    "payment_tracking": "",
    "view_invoices": "",
    "view_totals": "ON CONFLICT (family_id, regie) DO UPDATE SET count = excluded.count, "
                   "total_cents = excluded.total_cents",
}
Rows = dict[str, tuple[list[str], list[tuple[Any, ...]], str]]


@dataclass
class Drain:
    consumers: int
    issue_rate: float
    seconds: float
    relay_seconds: float
    first_visible: float
    cpu: dict[str, float]
    rss: dict[str, tuple[float, float]]
    # The rows the payment side wrote for the drain's invoices (``drained_rows``), kept
    # for the first drain only (the raw baseline writes them again), and where.
    rows: Rows | None
    payment_schema: str


def drained_rows(settings: Settings, payment_before: int, billing_before: int,
                 ids: list[str]) -> Rows:
    """Every row the payment consumers wrote for the drain's invoices, by table (see
    RAW_TABLES), with its columns: the stored events after ``payment_before`` and their
    chain rows, the tracking rows of billing's notifications after ``billing_before``, the
    invoices' to-pay rows and the totals of their families."""
    from psycopg import sql

    schema = sql.Identifier(settings.schema("payment"))
    where = {
        "payment_events": ("notification_id > %s ORDER BY notification_id", (payment_before,)),
        "event_chain": ("notification_id > %s ORDER BY notification_id", (payment_before,)),
        "payment_tracking": ("application_name <> '__migration__' AND notification_id > %s "
                             "ORDER BY notification_id", (billing_before,)),
        "view_invoices": ("id = ANY(%s) ORDER BY issued_position", (ids,)),
        "view_totals": ("TRUE ORDER BY family_id, regie", ()),
    }
    rows: Rows = {}
    with pg_connect() as conn:
        for table, conflict in RAW_TABLES.items():
            condition, params = where[table]
            cur = conn.execute(sql.SQL("SELECT * FROM {}.{} WHERE " + condition).format(
                schema, sql.Identifier(table)), params)
            rows[table] = ([d.name for d in cur.description or ()], cur.fetchall(), conflict)
    if len(rows["view_invoices"][1]) != len(ids):
        raise RuntimeError(f"found {len(rows['view_invoices'][1])} of {len(ids)} invoices")
    return rows


def last_id(settings: Settings, service: str, table: str) -> int:
    from psycopg import sql

    with pg_connect() as conn:
        row = conn.execute(sql.SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}.{}").format(
            sql.Identifier(settings.schema(service)), sql.Identifier(table))).fetchone()
    return int(row[0])


def wait_all(children: Sequence[Child], keys: Sequence[str], timeout: float, what: str
             ) -> dict[str, float]:
    """Wait until each key was seen by one of ``children``; when each was first seen."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    missing = set(keys)
    while True:
        for child in children:
            child.read()
            for key in missing.intersection(child.seen):
                seen[key] = min(seen.get(key, math.inf), child.seen[key])
        missing.difference_update(seen)
        if not missing:
            return seen
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {len(missing)} of {len(keys)} not seen after "
                               f"{timeout:.0f}s")
        time.sleep(0.02)


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    except OSError:
        return math.nan, math.nan
    return fields.get("VmRSS", math.nan), fields.get("VmHWM", math.nan)


def start_drainers(kafka: Kafka, root: Path, count: int) -> Drainers:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    settings = make_settings(
        root / f"drain-{count}", kafka_bootstrap=kafka.bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", poll_interval=0.02,
        persistence="eventsourcing.postgres", schema_prefix=prefix, consumer_count=str(count),
    )
    # Registered first, so dropped last: after the processes using them are stopped.
    kafka.cleanup.callback(drop_pg_schemas, [settings.schema("billing"),
                                             settings.schema("payment")])
    billing = billing_app(settings)
    kafka.cleanup.callback(billing.close)
    billing.open_regie(*REGIE)
    relay = spawn("relay", {}, kafka.folder, kafka.cleanup, settings)
    consumers = [spawn("consume", {}, kafka.folder, kafka.cleanup,
                       replace(settings, consumer_index=str(i))) for i in range(count)]
    for child in consumers:
        child.wait_for(["hooked"], 60, "payment consumer start")
    pipeline = Pipeline(settings, billing, relay, consumers[0],
                        settings.topic(BILLING_INVOICES.name))
    for i in range(WARMUP):
        billing.issue_invoice(invoice_terms(i, "W"))
    wait_all(consumers, [invoice_id(i, "W") for i in range(WARMUP)], 90, "drain warm-up")
    return Drainers(pipeline, consumers)


def bench_drain(kafka: Kafka, drainers: Drainers, n: int, keep_rows: bool
                ) -> tuple[Drain, list[Outgoing]]:
    """Pause the relay (SIGSTOP), store n invoices, let it go and time the drain; with
    ``keep_rows``, read back the rows it wrote."""
    pipeline, consumers = drainers.pipeline, drainers.consumers
    billing = pipeline.billing
    relay = pipeline.relay.proc
    # Everything issued so far is visible in to-pay, so the relay is idle: pause it.
    before = billing.recorder.max_notification_id() or 0
    payment_before = last_id(pipeline.settings, "payment", "payment_events")
    relay.send_signal(signal.SIGSTOP)
    try:
        issue_rate = n / issue_batches(billing, [invoice_terms(i, "B") for i in range(n)])
        last = billing.recorder.max_notification_id() or 0
        pids = {"relay": relay.pid, "broker": kafka.pid, "this script": os.getpid()}
        pids |= {f"consumer {i}": c.proc.pid for i, c in enumerate(consumers)}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        server0 = postgres_cpu()
        started = time.monotonic()
    finally:
        relay.send_signal(signal.SIGCONT)
    ids = [invoice_id(i, "B") for i in range(n)]
    seen = wait_all(consumers, ids, max(600.0, n / 20), "backlog drain")
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    # The server's work is part of the drain's: on one machine it shares the cores.
    cpu["PostgreSQL server"] = sum(v - server0.get(p, 0.0) for p, v in postgres_cpu().items())
    rss = {k: rss_mb(p) for k, p in pids.items() if k != "this script"}
    acked = relay_acks(pipeline, ids)
    times = [seen[k] for k in ids]
    # Cross-check with the read model itself, as a fresh PaymentApp sees it.
    payment = payment_app(pipeline.settings)
    try:
        rows = SqlStore(payment).fetchall("SELECT COUNT(*) AS n FROM {schema}view_invoices")
    finally:
        payment.close()
    if int(rows[0]["n"]) != WARMUP + n:
        raise RuntimeError(f"to-pay holds {rows[0]['n']} invoices, expected {WARMUP + n}")
    drain = Drain(
        consumers=len(consumers),
        issue_rate=issue_rate,
        seconds=max(times) - started,
        relay_seconds=max(acked[k] for k in ids) - started if acked else math.nan,
        first_visible=min(times) - started,
        cpu=cpu,
        rss=rss,
        rows=drained_rows(pipeline.settings, payment_before, before, ids) if keep_rows
        else None,
        payment_schema=pipeline.settings.schema("payment"),
    )
    return drain, messages_between(pipeline, before, last)


def plain_drain(kafka: Kafka, messages: list[Outgoing], role: str = "plain-consume",
                spec: dict[str, Any] | None = None) -> tuple[float, float, float]:
    """Seconds from the first send to the last message consumed, the consumer's CPU
    seconds and the PostgreSQL server's meanwhile."""
    topic = f"bench{uuid.uuid4().hex[:8]}.plain-drain"
    with kafka.plain(topic, "block", role, spec) as (producer, child):
        # While the consumer is there: its connection's server process ends with it.
        server0 = postgres_cpu()
        cpu0, started = cpu_seconds(child.proc.pid), time.monotonic()
        futures = [producer.send(topic, key=m.key.encode(), value=m.value) for m in messages]
        producer.flush(timeout=120)
        keys = [position(f.get(timeout=30)) for f in futures]
        seen = child.wait_for(keys, max(120.0, len(messages) / 100), "plain drain")
        cpu = cpu_seconds(child.proc.pid) - cpu0
        server = sum(v - server0.get(p, 0.0) for p, v in postgres_cpu().items())
    return max(seen[k] for k in keys) - started, cpu, server


def raw_drain(kafka: Kafka, messages: list[Outgoing], drain: Drain
              ) -> tuple[float, float, float]:
    """``plain_drain`` with a consumer that writes, for each message, an invoice's share of
    the rows ``drain`` wrote, with plain psycopg (roles.RawWriter), into tables made like
    the payment schema's (columns, keys, indexes); and the PostgreSQL server's CPU seconds
    meanwhile."""
    import pickle

    from psycopg import sql

    rows = drain.rows
    if rows is None:
        raise ValueError("this drain kept no rows")
    schema = f"bench{uuid.uuid4().hex[:8]}_raw"
    kafka.cleanup.callback(drop_pg_schemas, [schema])
    with pg_connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in (*rows, "positions"):
            conn.execute(sql.SQL("CREATE TABLE {}.{} (LIKE {}.{} INCLUDING ALL)").format(
                sql.Identifier(schema), sql.Identifier(table),
                sql.Identifier(drain.payment_schema), sql.Identifier(table)))
    path = kafka.folder / f"{schema}.rows"
    with open(path, "wb") as f:
        pickle.dump(rows, f)
    return plain_drain(kafka, messages, "raw-consume", {
        "rows": str(path), "schema": schema, "messages": len(messages)})


def library_drain(kafka: Kafka, messages: list[Outgoing]) -> tuple[float, float, float]:
    """``plain_drain`` with a consumer that records what the payment consumer records for
    each new invoice, with eventsourcing alone (roles.LibraryRecorder), into a schema of
    its own; and the PostgreSQL server's CPU seconds meanwhile."""
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    kafka.cleanup.callback(drop_pg_schemas, [f"{prefix}library"])
    return plain_drain(kafka, messages, "library-consume", {"prefix": prefix})


def bench_memory(kafka: Kafka, messages: list[Outgoing], total: int
                 ) -> tuple[tuple[float, float], tuple[float, float], float]:
    """RSS (now, peak) of the payment consumer's Kafka reader after reading a topic of
    ``total`` billing messages from the start (``messages`` over and over), of the
    broker holding it; and the reader's seconds."""
    from services.common.messaging.kafka import producer as relay_producer

    topic = f"bench{uuid.uuid4().hex[:8]}.memory"
    kafka.create_topic(topic)
    producer = relay_producer(make_settings(kafka.folder, kafka_bootstrap=kafka.bootstrap))
    try:
        for i in range(total):
            m = messages[i % len(messages)]
            producer.send(topic, key=m.key.encode(), value=m.value)
        producer.flush(timeout=600)
    finally:
        producer.close(timeout=5)
    settings = make_settings(kafka.folder, kafka_bootstrap=kafka.bootstrap)
    child = spawn("subscribe", {"topic": topic}, kafka.folder, kafka.cleanup, settings)
    started = time.monotonic()
    seen = child.wait_for(["done"], max(300.0, total / 100), "reading the topic")
    reader = rss_mb(child.proc.pid)
    broker = rss_mb(kafka.pid)
    child.stop()
    return reader, broker, seen["done"] - started


def run(bench: Run) -> list[Figure]:
    n = bench.options.invoices
    counts = bench.options.drain_consumers
    say(f"3. Backlog drain on PostgreSQL: {n} invoices stored while the relay is paused, then "
        f"released, with {' and '.join(map(str, counts))} payment consumer process(es)")
    kafka = bench.kafka()
    drains: list[Drain] = []
    messages: list[Outgoing] = []
    for count in counts:
        t = time.monotonic()
        drainers = start_drainers(kafka, bench.root, count)
        drain, messages = bench_drain(kafka, drainers, n, keep_rows=not drains)
        # Stopped before the next: their idle polling would be the next run's load.
        for child in (drainers.pipeline.relay, *drainers.consumers):
            child.stop()
        drains.append(drain)
        relay_note = "" if math.isnan(drain.relay_seconds) else (
            f"; relay done after {drain.relay_seconds:.1f}s "
            f"({n / drain.relay_seconds:.0f} msg/s)")
        say(f"    {count} consumer(s): {n / drain.seconds:7.0f} inv/s: last visible after "
            f"{drain.seconds:.1f}s, first after {drain.first_visible:.2f}s{relay_note}"
            f"   ({time.monotonic() - t:.1f}s; stored with issue_batch at "
            f"{drain.issue_rate:.0f} inv/s)")
        say("      CPU seconds during the drain: " + ", ".join(
            f"{k} {v:.1f}" for k, v in drain.cpu.items()))
        say("      RSS once drained (peak), MB: " + ", ".join(
            f"{k} {now:.0f} ({peak:.0f})" for k, (now, peak) in drain.rss.items()))
    plain_seconds, plain_cpu, _ = plain_drain(kafka, messages)
    say(f"    plain producer + consumer {n / plain_seconds:7.0f} msg/s "
        f"({plain_seconds:.1f}s, consumer CPU {plain_cpu:.1f}s)")
    raw_seconds, raw_cpu, raw_server = raw_drain(kafka, messages, drains[0])
    written = sum(len(r) for _, r, _ in (drains[0].rows or {}).values())
    say(f"    plain producer + consumer writing the same rows with psycopg "
        f"{n / raw_seconds:7.0f} msg/s ({raw_seconds:.1f}s, {written:,} rows; consumer CPU "
        f"{raw_cpu:.1f}s, PostgreSQL server {raw_server:.1f}s): "
        f"{raw_seconds / plain_seconds:.1f}x the plain drain's time")
    library_seconds, library_cpu, library_server = library_drain(kafka, messages)
    say(f"    plain producer + consumer recording each invoice with eventsourcing alone "
        f"{n / library_seconds:7.0f} msg/s ({library_seconds:.1f}s; consumer CPU "
        f"{library_cpu:.1f}s, PostgreSQL server {library_server:.1f}s): "
        f"{library_seconds / plain_seconds:.1f}x the plain drain's time")
    figures = []
    if bench.options.rss_messages:
        total = bench.options.rss_messages
        (reader, reader_peak), (broker, broker_peak), seconds = bench_memory(
            kafka, messages, total)
        say(f"    a topic of {total} billing messages read from the start by the consumer's "
            f"Kafka reader in {seconds:.1f}s: reader RSS {reader:.0f} MB (peak "
            f"{reader_peak:.0f}), broker RSS {broker:.0f} MB (peak {broker_peak:.0f})")
        figures.append(Figure(f"consumer's Kafka reader, {total:,} messages from the start",
                              f"RSS {reader:.0f} MB, peak {reader_peak:.0f} MB",
                              f"broker RSS {broker:.0f} MB, peak {broker_peak:.0f} MB", "-",
                              "bounded, whatever the topic"))
    return figures + [Figure(f"backlog of {n:,} drained, PostgreSQL, {d.consumers} consumer"
                   f"{'s' if d.consumers > 1 else ''}", f"{n / d.seconds:,.0f} inv/s",
                   f"plain producer + consumer {n / plain_seconds:,.0f} msg/s",
                   f"{d.seconds / plain_seconds:.1f}x", "<= 2x (>= 0.5x plain)")
            for d in drains] + [
        Figure(f"backlog of {n:,}, plain consumer writing the same rows (psycopg)",
               f"{n / raw_seconds:,.0f} msg/s",
               f"plain producer + consumer {n / plain_seconds:,.0f} msg/s",
               f"{raw_seconds / plain_seconds:.1f}x"),
        Figure(f"backlog of {n:,}, plain consumer recording through eventsourcing alone",
               f"{n / library_seconds:,.0f} msg/s",
               f"plain producer + consumer {n / plain_seconds:,.0f} msg/s",
               f"{library_seconds / plain_seconds:.1f}x")]
