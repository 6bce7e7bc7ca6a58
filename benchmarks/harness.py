"""What every benchmark shares: the settings and invoices it uses, its child processes, the
broker and the billing → relay → payment consumer pipeline, and the table closing a run.

Timing is ``time.perf_counter()`` within a process and ``time.monotonic()`` across processes
(CLOCK_MONOTONIC, one clock for the whole machine). Each figure is measured next to its
baseline in the same run, so that the ratio holds when the machine's speed changes.
"""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
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
from services.bootstrap import billing_app
from services.common.messaging import broker
from services.common.messaging.outbox import Outgoing
from services.common.settings import Settings

HOST = "127.0.0.1"
PG: dict[str, str] = {"dbname": "test", "host": HOST, "port": "5432", "user": "postgres"}
BATCH = 1000
PARTITIONS = 6
REGIE = ("SPORTS", "Direction des sports", "000001", "T")
WARMUP = 20
ROOT = Path(__file__).resolve().parents[1]


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
        "consumer_index": "0",
        "consumer_count": "1",
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


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL server process on this machine, by pid: the
    server the benchmarks write to is local, and nothing else uses it while they run."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                found[int(entry.name)] = cpu_seconds(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def pg_connect() -> Any:
    import psycopg

    return psycopg.connect(**PG, autocommit=True, connect_timeout=3)  # type: ignore[arg-type]


def drop_pg_schemas(names: list[str]) -> None:
    from psycopg import sql

    with pg_connect() as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


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


def exit_with_parent(lifetime: float) -> None:
    """SIGTERM ourselves (the CLI's way to stop) when the parent goes or after ``lifetime``."""
    parent = os.getppid()
    deadline = time.monotonic() + lifetime

    def watch() -> None:
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.25)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


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
        "REGIE_CONSUMER_INDEX": settings.consumer_index,
        "REGIE_CONSUMER_COUNT": settings.consumer_count,
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
            [sys.executable, "-m", "benchmarks", "--role", role, "--spec", json.dumps(spec)],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
        )
    child = Child(name, proc, log, out)
    cleanup.callback(child.stop)
    return child


# --- through Kafka: the delay and the drain ----------------------------------------------
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
    def plain(self, topic: str, mode: str, role: str = "plain-consume",
              spec: dict[str, Any] | None = None) -> Iterator[tuple[Any, Child]]:
        """A fresh topic, a plain producer and a plain consumer on it, warmed up.

        The producer has the relay's settings (services.common.kafka.producer: acks=all,
        linger 5 ms, 256 KiB batches, one request in flight), so that the baselines differ
        from the service path by Régie's code only, not by Kafka tuning. One producer per
        topic: a kafka-python 3.0.12 producer that moves on to a second topic spins its
        network thread ("Unknown leaders exist, requesting metadata update").
        """
        from services.common.messaging.kafka import producer as relay_producer

        self.create_topic(topic)
        child = spawn(role, {
            "bootstrap": self.bootstrap, "topic": topic, "mode": mode, "poll_interval": 0.02,
            **(spec or {}),
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


def start_pipeline(kafka: Kafka, root: Path, poll_interval: float = 0.1) -> Pipeline:
    settings = make_settings(
        root / "pipeline", kafka_bootstrap=kafka.bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", poll_interval=poll_interval,
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


# --- the whole run ------------------------------------------------------------------------
def ratio(slow: float, fast: float) -> str:
    return f"{fast / slow:.1f}x" if slow > 0 else "n/a"



def relay_acks(pipeline: Pipeline, ids: list[str]) -> dict[str, float] | None:
    """When the broker acknowledged each invoice's message, as the relay's wrapped
    KafkaPublisher.publish noted it; None if the relay no longer publishes through it."""
    try:
        return pipeline.relay.wait_for(ids, 5, "relay acknowledgements")
    except RuntimeError:
        pipeline.relay.check()
        return None


# --- one run ------------------------------------------------------------------------------
@dataclass
class Figure:
    """A line of the table that closes a run: a figure of Régie's path, its baseline from
    the same run, how many times better the baseline is, and the goal for that ratio or
    figure (empty for figures kept for information)."""

    name: str
    value: str
    baseline: str
    ratio: str
    goal: str = ""
    # Not measured, or measured wrong (errors answered): the run ends with a failure.
    failed: bool = False


class Run:
    """What the benchmarks of one run share: the options, a temporary folder, the clean-up,
    and a broker and a warm pipeline, started for the first benchmark that asks."""

    def __init__(self, options: Any, root: Path, cleanup: contextlib.ExitStack) -> None:
        self.options = options
        self.root = root
        self.cleanup = cleanup
        self._kafka: Kafka | None = None
        self._pipeline: Pipeline | None = None

    def kafka(self) -> "Kafka":
        if self._kafka is None:
            folder = self.root / "kafka"
            port = broker.free_port()
            proc = broker.start("noida", port, folder / "data", folder / "broker.log")

            def kill_broker() -> None:
                proc.kill()
                proc.wait()

            self.cleanup.callback(kill_broker)
            self._kafka = Kafka(f"{HOST}:{port}", proc.pid, folder, self.cleanup)
        return self._kafka

    def pipeline(self) -> "Pipeline":
        """The pipeline, warm: the drain uses the one the delay figure warmed further."""
        if self._pipeline is None:
            t = time.monotonic()
            self._pipeline = start_pipeline(self.kafka(), self.root,
                                            getattr(self.options, "poll_interval", 0.1))
            say(f"    relay and payment consumer up and warm in {time.monotonic() - t:.1f}s")
        return self._pipeline


def table(figures: Sequence[Figure]) -> str:
    """The figures as one Markdown table."""
    rows = [("figure", "value", "baseline", "ratio", "goal"),
            ("---", "---:", "---", "---:", "---")]
    rows += [(f.name, f.value, f.baseline, f.ratio, f.goal or "-") for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        + " |"
        for row in rows
    )
