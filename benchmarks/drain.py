"""3. Backlog drain: N invoices stored while the relay is paused, then the time until the
last is visible in to-pay; baseline: a plain producer and consumer moving the same N
messages.
"""

import math
import os
import signal
import time
import uuid
from dataclasses import dataclass

from benchmarks.harness import (
    Figure,
    Kafka,
    Pipeline,
    Run,
    cpu_seconds,
    invoice_id,
    invoice_terms,
    issue_batches,
    messages_between,
    position,
    relay_acks,
    say,
)
from services.bootstrap import payment_app
from services.common.messaging.outbox import Outgoing
from services.common.storage.persistence import SqlStore


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




def run(bench: Run) -> list[Figure]:
    n = bench.options.invoices
    say(f"3. Backlog drain: {n} invoices stored while the relay is paused, then released")
    kafka, pipeline = bench.kafka(), bench.pipeline()
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
    return [Figure(f"backlog of {n:,} drained", f"{n / drain.seconds:,.0f} inv/s",
                   f"plain producer + consumer {n / drain.plain_seconds:,.0f} msg/s",
                   f"{drain.seconds / drain.plain_seconds:.1f}x", "<= 2x (>= 0.5x plain)")]
