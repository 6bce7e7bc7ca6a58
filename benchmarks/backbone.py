"""Throughput and latency of the Régie backbone, each against a raw baseline of the same run.

    .venv/bin/python benchmarks/backbone.py [--invoices N]      (or `make bench`)

1. Batch issue: invoices per second through ``BillingApp.issue_batch`` (batches of 1000) on
   SQLite, over HTTP to the billing Flask app, and on PostgreSQL; baseline: the very rows
   the application stored, inserted again with plain sqlite3 / psycopg ``executemany``, one
   transaction per 1000 rows, into a table of the same shape.
2. Issue-to-visibility delay: invoices issued one at a time at a steady pace, from
   ``issue_invoice`` returning to the invoice being committed in payment's to-pay read model,
   through the real relay and payment consumer (each its own process, as in production) and
   a noida-db broker; baseline: a plain kafka-python producer and consumer moving the same
   message bytes at the same pace.
3. Backlog drain: N invoices stored while the relay is paused, then the time until the
   last is visible in to-pay; baseline: a plain producer and consumer moving the same N
   messages.

Everything lives in a temporary folder, a broker on a free port of 127.0.0.1 and throwaway
PostgreSQL schemas; all of it is removed at the end, also on error or Ctrl-C. The relay and
the consumers run as child processes of this script (``--role``); each stops on SIGTERM, when
this script goes away, or after a time limit.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from events import BILLING_INVOICES
from services.billing.application import BillingApp, Issued
from services.billing.domain import Invoice, InvoiceTerms, Line
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.messaging import broker
from services.common.messaging.outbox import Outgoing
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment.projections import Change, InvoiceRow, ToPayStore

HOST = "127.0.0.1"
PG: dict[str, str] = {"dbname": "test", "host": HOST, "port": "5432", "user": "postgres"}
BATCH = 1000
PARTITIONS = 6
REGIE = ("SPORTS", "Direction des sports", "000001", "T")
WARMUP = 20
SCRIPT = Path(__file__).resolve()


# --- small helpers ------------------------------------------------------------------------
def say(text: str = "") -> None:
    print(text, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 2nd largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def make_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Every field the backbone reads given, so that none comes from this shell's
    environment (the payment gateway's fields, unused here, are read as usual)."""
    values: dict[str, Any] = {
        "var_dir": var_dir,
        "persistence": "eventsourcing.sqlite",
        "postgres_dbname": PG["dbname"],
        "postgres_host": HOST,
        "postgres_port": PG["port"],
        "postgres_user": PG["user"],
        "postgres_password": "",
        "schema_prefix": "",
        "kafka_bootstrap": f"{HOST}:9",
        "kafka_broker": "noida",
        "kafka_partitions": PARTITIONS,
        "topic_prefix": "",
        "kafka_session_timeout_ms": "",
        "tokens": "",
        "poll_interval": 0.02,
    }
    values.update(overrides)
    return Settings(**values)


def invoice_payload(i: int, prefix: str = "F") -> dict[str, Any]:
    """As tests/factories.py builds them: one line, 25 €, one of 1000 families."""
    return {
        "regie": REGIE[0],
        "number": f"{prefix}-{i:07d}",
        "family_id": f"fam-{i % 1000:04d}",
        "payer_email": "parent@example.org",
        "label": "Vacances sportives",
        "issued_on": "2025-02-26",
        "payable_until": "2030-12-31",
        "due_on": "2030-12-31",
        "lines": [{"label": "Séjour", "quantity": 1, "unit_price_cents": 2500}],
        "amount_cents": 2500,
    }


def invoice_terms(i: int, prefix: str = "F") -> InvoiceTerms:
    p = invoice_payload(i, prefix)
    return InvoiceTerms(
        regie=p["regie"], number=p["number"], family_id=p["family_id"],
        payer_email=p["payer_email"], label=p["label"],
        issued_on=date.fromisoformat(p["issued_on"]),
        payable_until=date.fromisoformat(p["payable_until"]),
        due_on=date.fromisoformat(p["due_on"]),
        lines=tuple(Line(**line) for line in p["lines"]),
        amount_cents=p["amount_cents"],
    )


def invoice_id(i: int, prefix: str = "F") -> str:
    return str(Invoice.create_id(REGIE[0], f"{prefix}-{i:07d}"))


def issue_batches(app: BillingApp, items: list[InvoiceTerms]) -> float:
    """Issue ``items`` in batches of 1000; return the seconds it took. Checks every result."""
    outcomes: list[Any] = []
    started = time.perf_counter()
    for k in range(0, len(items), BATCH):
        outcomes.extend(app.issue_batch(items[k:k + BATCH]))
    elapsed = time.perf_counter() - started
    bad = [o for o in outcomes if not (isinstance(o, Issued) and o.created)]
    if bad:
        raise RuntimeError(f"{len(bad)} invoices were not issued, e.g. {bad[0]!r}")
    return elapsed


def issued_topic(app: BillingApp) -> str:
    """The stored-event topic of Invoice.Issued, to read back exactly what was written."""
    probe = Invoice.issue(invoice_terms(0, "PROBE"))
    return app.mapper.to_stored_event(probe.collect_events()[0]).topic


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- part 1: batch issue throughput -------------------------------------------------------
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


def pg_connect() -> Any:
    import psycopg

    return psycopg.connect(**PG, autocommit=True, connect_timeout=3)  # type: ignore[arg-type]


def drop_pg_schemas(names: list[str]) -> None:
    from psycopg import sql

    with pg_connect() as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def bench_issue_postgres(root: Path, n: int, cleanup: contextlib.ExitStack) -> tuple[float, float]:
    from psycopg import sql

    prefix = f"bench{uuid.uuid4().hex[:10]}_"
    raw_schema = f"{prefix}raw"
    settings = make_settings(
        root / "issue-pg", persistence="eventsourcing.postgres", schema_prefix=prefix
    )
    # Registered before anything is created, so that an error half-way still drops them.
    cleanup.callback(drop_pg_schemas, [settings.schema("billing"), raw_schema])
    app = billing_app(settings)
    rate, topic, events_table = issue_and_locate(app, n)
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
    return rate, statistics.median(rates)


# --- child processes ----------------------------------------------------------------------
def child_stop(lifetime: float) -> threading.Event:
    """Set on SIGTERM/SIGINT, when the parent goes away, or after ``lifetime`` seconds."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    deadline = time.monotonic() + lifetime

    def watch() -> None:
        while not stop.wait(0.25):
            if os.getppid() != parent or time.monotonic() > deadline:
                stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


class VisibilityClock:
    """The payment consumer's to-pay store, timestamping what each commit makes visible.

    ``apply`` returns once its transaction has committed, so the time taken right after it
    is the first instant a reader of to-pay can see those invoices (to within microseconds).
    Polling the read model from another process would add the polling period and compete
    for the 2 cores. time.monotonic() is CLOCK_MONOTONIC, one clock for every process here.
    """

    def __init__(self, inner: ToPayStore, out: Any) -> None:
        self.inner = inner
        self.out = out

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        done = self.inner.apply(changes, expected, position)
        if done:
            now = time.monotonic()
            ids = [c.id for c in changes if isinstance(c, InvoiceRow)]
            if ids:
                self.out.write("".join(f"{i} {now!r}\n" for i in ids))
                self.out.flush()
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def exit_with_parent(lifetime: float) -> None:
    """SIGTERM ourselves (the CLI's way to stop) when the parent goes or after ``lifetime``."""
    parent = os.getppid()
    deadline = time.monotonic() + lifetime

    def watch() -> None:
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.25)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def role_relay(spec: dict[str, Any]) -> int:
    """`regie relay billing` itself, noting when the broker acknowledged each message."""
    from services import cli
    from services.common.messaging import relay

    exit_with_parent(spec["lifetime"])
    publish = relay.KafkaPublisher.publish
    with open(spec["out"], "a") as out:

        def timed_publish(self: Any, messages: list[Outgoing]) -> list[relay.Ack]:
            acks = publish(self, messages)  # returns once every message is acknowledged
            now = time.monotonic()
            out.write("".join(f"{json.loads(m.value)['subject']} {now!r}\n" for m in messages))
            out.flush()
            return acks

        setattr(relay.KafkaPublisher, "publish", timed_publish)  # noqa: B010
        return cli.main(["relay", "billing"])


def role_consume(spec: dict[str, Any]) -> int:
    """`regie consume payment` itself, its payment app's to-pay store wrapped in a clock."""
    import services.bootstrap
    from services import cli
    from services.payment.application import PaymentApp

    exit_with_parent(spec["lifetime"])
    make_app = services.bootstrap.payment_app
    with open(spec["out"], "a") as out:

        def timed_payment_app(settings: Settings | None = None) -> PaymentApp:
            app = make_app(settings)
            app.to_pay = VisibilityClock(app.to_pay, out)
            out.write(f"hooked {time.monotonic()!r}\n")
            out.flush()
            return app

        # cmd_consume imports payment_app from services.bootstrap when it runs.
        services.bootstrap.payment_app = timed_payment_app
        return cli.main(["consume", "payment"])


def role_plain_consume(spec: dict[str, Any]) -> int:
    """A plain kafka-python consumer: every partition of the topic from the start, no group.

    mode "block": poll(timeout_ms=100), the usual loop; mode "sleep": poll(0) and sleep the
    poll interval when nothing came, as TrackedConsumer does. Writes "partition offset time".
    """
    from kafka import KafkaConsumer, TopicPartition

    stop = child_stop(spec["lifetime"])
    consumer = KafkaConsumer(
        bootstrap_servers=spec["bootstrap"], group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(spec["topic"])
        while not partitions and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
            partitions = consumer.partitions_for_topic(spec["topic"])
        if not partitions:
            raise RuntimeError(f"topic {spec['topic']} has no partitions")
        consumer.assign([TopicPartition(spec["topic"], p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        with open(spec["out"], "a") as out:
            while not stop.is_set():
                if spec["mode"] == "block":
                    batches = consumer.poll(timeout_ms=100)
                else:
                    batches = consumer.poll(timeout_ms=0)
                now = time.monotonic()
                if batches:
                    out.write("".join(
                        f"{r.partition} {r.offset} {now!r}\n"
                        for records in batches.values() for r in records
                    ))
                    out.flush()
                elif spec["mode"] != "block":
                    stop.wait(spec["poll_interval"])
    finally:
        consumer.close()
    return 0


ROLES: dict[str, Callable[[dict[str, Any]], int]] = {
    "relay": role_relay,
    "consume": role_consume,
    "plain-consume": role_plain_consume,
}


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    out: Path
    offset: int = 0
    pending: bytes = b""
    seen: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def read(self) -> list[str]:
        """Take in the lines written since the last call (into ``seen``: key -> first time
        seen); return their keys."""
        keys: list[str] = []
        with contextlib.suppress(FileNotFoundError), open(self.out, "rb") as f:
            f.seek(self.offset)
            data = f.read()
            self.offset += len(data)
            *lines, self.pending = (self.pending + data).split(b"\n")
            for line in lines:
                key, _, t = line.decode().rpartition(" ")
                self.seen.setdefault(key, float(t))
                keys.append(key)
        return keys

    def wait_for(self, keys: Sequence[str], timeout: float, what: str) -> dict[str, float]:
        """Wait until every key was seen; bounded by ``timeout`` and the child's life."""
        deadline = time.monotonic() + timeout
        self.read()
        missing = set(keys).difference(self.seen)
        while missing:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {len(missing)} of {len(keys)} not seen after "
                                   f"{timeout:.0f}s")
            time.sleep(0.02)
            missing.difference_update(self.read())
        return self.seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment under which the `regie` command builds exactly these settings."""
    return {
        "REGIE_VAR_DIR": str(settings.var_dir),
        "PERSISTENCE_MODULE": settings.persistence,
        "POSTGRES_DBNAME": settings.postgres_dbname,
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": settings.postgres_port,
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password,
        "REGIE_SCHEMA_PREFIX": settings.schema_prefix,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
        "KAFKA_BROKER": settings.kafka_broker,
        "KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "KAFKA_TOPIC_PREFIX": settings.topic_prefix,
        "KAFKA_SESSION_TIMEOUT_MS": settings.kafka_session_timeout_ms,
        "REGIE_TOKENS": settings.tokens,
        "REGIE_POLL_INTERVAL": repr(settings.poll_interval),
        "REGIE_LOG_LEVEL": "WARNING",
    }


def spawn(
    role: str,
    spec: dict[str, Any],
    folder: Path,
    cleanup: contextlib.ExitStack,
    settings: Settings | None = None,
) -> Child:
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    log, out = folder / f"{name}.log", folder / f"{name}.out"
    spec = {"lifetime": 900.0, **spec, "out": str(out)}
    env = {**os.environ, **(settings_env(settings) if settings else {})}
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--role", role, "--spec", json.dumps(spec)],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    child = Child(name, proc, log, out)
    cleanup.callback(child.stop)
    return child


# --- parts 2 and 3: through Kafka -------------------------------------------------------
@dataclass
class Kafka:
    bootstrap: str
    pid: int
    folder: Path
    cleanup: contextlib.ExitStack

    def create_topic(self, name: str) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        try:
            admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
        finally:
            admin.close()

    @contextlib.contextmanager
    def plain(self, topic: str, mode: str) -> Iterator[tuple[Any, Child]]:
        """A fresh topic, a plain producer and a plain consumer on it, warmed up.

        The producer has the relay's settings (services.common.kafka.producer: acks=all,
        linger 5 ms, 256 KiB batches, one request in flight), so that the baselines differ
        from the service path by Régie's code only, not by Kafka tuning. One producer per
        topic: a kafka-python 3.0.12 producer that moves on to a second topic spins its
        network thread ("Unknown leaders exist, requesting metadata update").
        """
        from services.common.messaging.kafka import producer as relay_producer

        self.create_topic(topic)
        child = spawn("plain-consume", {
            "bootstrap": self.bootstrap, "topic": topic, "mode": mode, "poll_interval": 0.02,
        }, self.folder, self.cleanup)
        producer = relay_producer(make_settings(self.folder, kafka_bootstrap=self.bootstrap))
        try:
            futures = [producer.send(topic, key=f"w{i}".encode(), value=b"warm-up")
                       for i in range(WARMUP)]
            producer.flush(timeout=30)
            child.wait_for([position(f.get(timeout=30)) for f in futures], 60, "plain warm-up")
            yield producer, child
        finally:
            producer.close(timeout=5)
            child.stop()


def position(metadata: Any) -> str:
    return f"{metadata.partition} {metadata.offset}"


@dataclass
class Pipeline:
    """Billing store + relay + payment consumer, as `make run` has them, on one broker."""

    settings: Settings
    billing: BillingApp
    relay: Child
    consumer: Child
    topic: str


def start_pipeline(kafka: Kafka, root: Path) -> Pipeline:
    settings = make_settings(
        root / "pipeline", kafka_bootstrap=kafka.bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", poll_interval=0.02,
    )
    billing = billing_app(settings)
    kafka.cleanup.callback(billing.close)
    billing.open_regie(*REGIE)
    relay = spawn("relay", {}, kafka.folder, kafka.cleanup, settings)
    consumer = spawn("consume", {}, kafka.folder, kafka.cleanup, settings)
    pipeline = Pipeline(settings, billing, relay, consumer, settings.topic(BILLING_INVOICES.name))
    consumer.wait_for(["hooked"], 60, "payment consumer start (to-pay clock not installed?)")
    # Warm-up: imports, topic creation, the consumer assigning itself every partition
    # (it waits for the relay to create the topic), first connections.
    for i in range(WARMUP):
        billing.issue_invoice(invoice_terms(i, "W"))
    consumer.wait_for([invoice_id(i, "W") for i in range(WARMUP)], 90, "pipeline warm-up")
    return pipeline


def paced(count: int, pace: float, action: Callable[[int], None]) -> None:
    """Run action(i) at start + i * pace (not pace after the previous one ended)."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        action(i)


def messages_between(pipeline: Pipeline, after: int, upto: int) -> list[Outgoing]:
    """The exact messages the relay published for notifications after..upto."""
    app = pipeline.billing
    to_wire = make_to_wire(app, pipeline.topic)
    out: list[Outgoing] = []
    start = after
    while start < upto:
        page = app.recorder.select_notifications(start, 1000, stop=upto, inclusive_of_start=False)
        if not page:
            break
        for n in page:
            out.extend(to_wire(app.mapper.to_domain_event(n), n.id))
        start = page[-1].id
    return out


@dataclass
class Plain:
    delays: list[float]
    seconds: float
    consumer_cpu: float


def plain_latency(kafka: Kafka, messages: list[Outgoing], pace: float, mode: str) -> Plain:
    topic = f"bench{uuid.uuid4().hex[:8]}.plain-latency-{mode}"
    sent: list[tuple[Any, float]] = []
    with kafka.plain(topic, mode) as (producer, child):

        def send(i: int) -> None:
            m = messages[i]
            handed_over = time.monotonic()  # the counterpart of "the save returned"
            future = producer.send(topic, key=m.key.encode(), value=m.value)
            producer.flush(timeout=30)  # as the relay's publish(): no linger, wait for acks
            sent.append((future, handed_over))

        cpu0, started = cpu_seconds(child.proc.pid), time.monotonic()
        paced(len(messages), pace, send)
        producer.flush(timeout=30)
        keys = [position(f.get(timeout=30)) for f, _ in sent]
        seen = child.wait_for(keys, 60, f"plain latency ({mode})")
        cpu = cpu_seconds(child.proc.pid) - cpu0
    delays = [seen[k] - t for k, (_, t) in zip(keys, sent, strict=True)]
    return Plain(delays, time.monotonic() - started, cpu)


def relay_acks(pipeline: Pipeline, ids: list[str]) -> dict[str, float] | None:
    """When the broker acknowledged each invoice's message, as the relay's wrapped
    KafkaPublisher.publish noted it; None if the relay no longer publishes through it."""
    try:
        return pipeline.relay.wait_for(ids, 5, "relay acknowledgements")
    except RuntimeError:
        pipeline.relay.check()
        return None


@dataclass
class Latency:
    total: list[float]
    relay: list[float]  # save returned -> broker acknowledged the relay's send ([] if unknown)
    consumer: list[float]  # acknowledged -> committed in to-pay
    block: Plain
    sleep: Plain


def bench_latency(kafka: Kafka, pipeline: Pipeline, count: int, pace: float) -> Latency:
    billing = pipeline.billing
    before = billing.recorder.max_notification_id() or 0
    saved: list[float] = []

    def issue(i: int) -> None:
        billing.issue_invoice(invoice_terms(i, "L"))
        saved.append(time.monotonic())

    paced(count, pace, issue)
    ids = [invoice_id(i, "L") for i in range(count)]
    seen = pipeline.consumer.wait_for(ids, 60, "issue-to-visibility")
    acked = relay_acks(pipeline, ids)
    messages = messages_between(pipeline, before, billing.recorder.max_notification_id() or 0)
    if len(messages) != count:
        raise RuntimeError(f"expected {count} messages, the relay's log has {len(messages)}")
    return Latency(
        total=[seen[k] - t for k, t in zip(ids, saved, strict=True)],
        relay=[acked[k] - t for k, t in zip(ids, saved, strict=True)] if acked else [],
        consumer=[seen[k] - acked[k] for k in ids] if acked else [],
        block=plain_latency(kafka, messages, pace, "block"),
        sleep=plain_latency(kafka, messages, pace, "sleep"),
    )


@dataclass
class Drain:
    issue_rate: float
    seconds: float
    relay_seconds: float
    first_visible: float
    cpu: dict[str, float]
    plain_seconds: float
    plain_consumer_cpu: float


def bench_drain(kafka: Kafka, pipeline: Pipeline, n: int) -> Drain:
    """Pause the relay (SIGSTOP), store n invoices, let it go and time the drain."""
    billing = pipeline.billing
    relay = pipeline.relay.proc
    # Everything issued so far is visible in to-pay, so the relay is idle: pause it.
    before = billing.recorder.max_notification_id() or 0
    relay.send_signal(signal.SIGSTOP)
    try:
        issue_rate = n / issue_batches(billing, [invoice_terms(i, "B") for i in range(n)])
        last = billing.recorder.max_notification_id() or 0
        pids = {"relay": relay.pid, "consumer": pipeline.consumer.proc.pid, "broker": kafka.pid,
                "this script": os.getpid()}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        started = time.monotonic()
    finally:
        relay.send_signal(signal.SIGCONT)
    ids = [invoice_id(i, "B") for i in range(n)]
    timeout = max(120.0, n / 100)
    seen = pipeline.consumer.wait_for(ids, timeout, "backlog drain")
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    acked = relay_acks(pipeline, ids)
    times = [seen[k] for k in ids]
    # Cross-check with the read model itself, as a fresh PaymentApp sees it.
    payment = payment_app(pipeline.settings)
    try:
        rows = SqlStore(payment).fetchall("SELECT COUNT(*) AS n FROM {schema}view_invoices")
    finally:
        payment.close()
    expected = len(pipeline.consumer.seen) - 1  # warm-up, delay and backlog invoices
    if int(rows[0]["n"]) != expected:
        raise RuntimeError(f"to-pay holds {rows[0]['n']} invoices, expected {expected}")
    plain_seconds, plain_cpu = plain_drain(kafka, messages_between(pipeline, before, last))
    return Drain(
        issue_rate=issue_rate,
        seconds=max(times) - started,
        relay_seconds=max(acked[k] for k in ids) - started if acked else math.nan,
        first_visible=min(times) - started,
        cpu=cpu,
        plain_seconds=plain_seconds,
        plain_consumer_cpu=plain_cpu,
    )


def plain_drain(kafka: Kafka, messages: list[Outgoing]) -> tuple[float, float]:
    """Seconds from the first send to the last message consumed, and the consumer's CPU."""
    topic = f"bench{uuid.uuid4().hex[:8]}.plain-drain"
    with kafka.plain(topic, "block") as (producer, child):
        cpu0, started = cpu_seconds(child.proc.pid), time.monotonic()
        futures = [producer.send(topic, key=m.key.encode(), value=m.value) for m in messages]
        producer.flush(timeout=120)
        keys = [position(f.get(timeout=30)) for f in futures]
        seen = child.wait_for(keys, 120, "plain drain")
        cpu = cpu_seconds(child.proc.pid) - cpu0
    return max(seen[k] for k in keys) - started, cpu


# --- the whole run ------------------------------------------------------------------------
def ratio(slow: float, fast: float) -> str:
    return f"{fast / slow:.1f}x" if slow > 0 else "n/a"


def run(args: argparse.Namespace, root: Path, cleanup: contextlib.ExitStack) -> None:
    n = args.invoices
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"Régie backbone benchmark: {n} invoices, {os.cpu_count()} CPUs, load average {load}")
    say()
    say(f"1. Batch issue (BillingApp.issue_batch, batches of {BATCH}) vs plain INSERTs")
    t = time.monotonic()
    app_rate, raw_rate = bench_issue_sqlite(root, n)
    say(f"    SQLite   issue_batch {app_rate:9.0f} inv/s | raw sqlite3 {raw_rate:9.0f} rows/s"
        f" | raw is {ratio(app_rate, raw_rate)} faster   ({time.monotonic() - t:.1f}s)")
    if args.http:
        t = time.monotonic()
        http_n = max(BATCH, n // 2)
        http_rate = bench_issue_http(root, http_n)
        say(f"    HTTP     POST /invoices/batch {http_rate:9.0f} inv/s ({http_n} invoices)"
            f" | raw is {ratio(http_rate, raw_rate)} faster, application path "
            f"{ratio(http_rate, app_rate)}   ({time.monotonic() - t:.1f}s)")
    if args.postgres:
        t = time.monotonic()
        try:
            pg_connect().close()
        except Exception as e:
            say(f"    PostgreSQL skipped: nothing at {HOST}:{PG['port']} ({e})")
        else:
            pg_n = max(BATCH, n // 2)
            pg_app, pg_raw = bench_issue_postgres(root, pg_n, cleanup)
            say(f"    Postgres issue_batch {pg_app:9.0f} inv/s | raw executemany {pg_raw:9.0f}"
                f" rows/s | raw is {ratio(pg_app, pg_raw)} faster ({pg_n} invoices,"
                f" {time.monotonic() - t:.1f}s)")

    folder = root / "kafka"
    port = broker.free_port()
    proc = broker.start("noida", port, folder / "data", folder / "broker.log")

    def kill_broker() -> None:
        proc.kill()
        proc.wait()

    cleanup.callback(kill_broker)
    kafka = Kafka(f"{HOST}:{port}", proc.pid, folder, cleanup)
    say()
    pace = args.pace_ms / 1000
    count = args.latency_count
    say(f"2. Issue-to-visibility delay: {count} invoices, one every {args.pace_ms:g} ms "
        f"(noida-db on {kafka.bootstrap}, poll interval 0.02 s)")
    t = time.monotonic()
    pipeline = start_pipeline(kafka, root)
    say(f"    relay and payment consumer up and warm in {time.monotonic() - t:.1f}s")
    lat = bench_latency(kafka, pipeline, count, pace)

    def line(label: str, values: list[float], extra: str = "") -> None:
        say(f"    {label:56s} median {ms(statistics.median(values)):>8s}"
            f"  p99 {ms(percentile(values, 99)):>8s}  max {ms(max(values)):>8s}{extra}")

    def cpu_note(plain: Plain) -> str:
        return f"  (consumer CPU {100 * plain.consumer_cpu / plain.seconds:.0f}%)"

    line("issue_invoice -> relay -> Kafka -> consumer -> to-pay", lat.total)
    if lat.relay:
        line("  of which saved -> acknowledged by the broker", lat.relay)
        line("  of which acknowledged -> committed in to-pay", lat.consumer)
    line("plain producer -> plain consumer, poll(100 ms)", lat.block.delays,
         cpu_note(lat.block))
    line("plain producer -> plain consumer, poll(0) + 20 ms sleep", lat.sleep.delays,
         cpu_note(lat.sleep))
    say(f"    service / plain poll(100 ms): median "
        f"{statistics.median(lat.total) / statistics.median(lat.block.delays):.0f}x, p99 "
        f"{percentile(lat.total, 99) / percentile(lat.block.delays, 99):.0f}x"
        f"   service / plain poll(0)+sleep: median "
        f"{statistics.median(lat.total) / statistics.median(lat.sleep.delays):.1f}x, p99 "
        f"{percentile(lat.total, 99) / percentile(lat.sleep.delays, 99):.1f}x")
    say()
    say(f"3. Backlog drain: {n} invoices stored while the relay is paused, then released")
    t = time.monotonic()
    drain = bench_drain(kafka, pipeline, n)
    say(f"    (stored with issue_batch at {drain.issue_rate:.0f} inv/s while broker and "
        f"consumer idled)")
    relay_note = "" if math.isnan(drain.relay_seconds) else (
        f"; relay done after {drain.relay_seconds:.1f}s ({n / drain.relay_seconds:.0f} msg/s)")
    say(f"    relay + consumer          {n / drain.seconds:7.0f} inv/s: last visible after "
        f"{drain.seconds:.1f}s, first after {drain.first_visible:.2f}s{relay_note}")
    say(f"    plain producer + consumer {n / drain.plain_seconds:7.0f} msg/s "
        f"({drain.plain_seconds:.1f}s, consumer CPU {drain.plain_consumer_cpu:.1f}s)"
        f" | plain is {drain.seconds / drain.plain_seconds:.1f}x faster"
        f"   ({time.monotonic() - t:.1f}s)")
    say("    CPU seconds during the drain: " + ", ".join(
        f"{k} {v:.1f}" for k, v in drain.cpu.items()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--invoices", type=int, default=20000,
                        help="invoices for the batch and backlog figures (default 20000)")
    parser.add_argument("--latency-count", type=int, default=200,
                        help="invoices for the delay figure (default 200)")
    parser.add_argument("--pace-ms", type=float, default=5.0,
                        help="milliseconds between two invoices for the delay figure")
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip the HTTP batch figure")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false",
                        help="skip the PostgreSQL batch figure")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        import logging

        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return ROLES[args.role](json.loads(args.spec))
    if args.invoices < 1 or args.latency_count < 1:
        parser.error("counts must be positive")

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    import logging

    logging.getLogger("kafka").setLevel(logging.ERROR)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="regie-bench-"))
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, root, ignore_errors=True)
            run(args, root, cleanup)
    except KeyboardInterrupt:
        say("interrupted; cleaned up")
        return 130
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    say()
    say(f"done in {time.monotonic() - started:.0f}s, load average {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
