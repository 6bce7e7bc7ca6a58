"""2. Issue-to-visibility delay: invoices issued one at a time at a steady pace, from
``issue_invoice`` returning to the invoice being committed in payment's to-pay read model,
through the real relay and payment consumer (each its own process, as in production) and a
noida-db broker; baseline: a plain kafka-python producer and consumer moving the same
message bytes at the same pace. Then the same relay and consumer are left idle and their CPU
is read from /proc: what the two cost while nothing happens.
"""

import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import (
    Figure,
    Kafka,
    Pipeline,
    Run,
    cpu_seconds,
    invoice_id,
    invoice_terms,
    messages_between,
    ms,
    paced,
    percentile,
    position,
    relay_acks,
    say,
)
from services.common.messaging.outbox import Outgoing


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


@dataclass
class Latency:
    total: list[float]
    relay: list[float]  # save returned -> broker acknowledged the relay's send ([] if unknown)
    consumer: list[float]  # acknowledged -> committed in to-pay
    block: Plain
    sleep: Plain
    # CPU seconds the relay and the consumer used from the first invoice to the last one
    # visible: unlike the delays, it barely moves with the machine's load.
    cpu: dict[str, float]


def bench_latency(kafka: Kafka, pipeline: Pipeline, count: int, pace: float) -> Latency:
    billing = pipeline.billing
    before = billing.recorder.max_notification_id() or 0
    saved: list[float] = []
    children = {"relay": pipeline.relay, "consumer": pipeline.consumer}
    cpu0 = {name: cpu_seconds(child.proc.pid) for name, child in children.items()}

    def issue(i: int) -> None:
        billing.issue_invoice(invoice_terms(i, "L"))
        saved.append(time.monotonic())

    paced(count, pace, issue)
    ids = [invoice_id(i, "L") for i in range(count)]
    seen = pipeline.consumer.wait_for(ids, 60, "issue-to-visibility")
    cpu = {name: cpu_seconds(child.proc.pid) - cpu0[name] for name, child in children.items()}
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
        cpu=cpu,
    )


def idle_cpu(pipeline: Pipeline, seconds: float) -> dict[str, float]:
    """The share of a core the relay and the consumer each use over ``seconds`` of quiet."""
    children = {"relay": pipeline.relay, "consumer": pipeline.consumer}
    before = {name: cpu_seconds(child.proc.pid) for name, child in children.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    for child in children.values():
        child.check()
    return {name: (cpu_seconds(child.proc.pid) - before[name]) / elapsed
            for name, child in children.items()}


def run(bench: Run) -> list[Figure]:
    options = bench.options
    kafka = bench.kafka()
    pace = options.pace_ms / 1000
    count = options.latency_count
    say(f"2. Issue-to-visibility delay: {count} invoices, one every {options.pace_ms:g} ms "
        f"(noida-db on {kafka.bootstrap}, REGIE_POLL_INTERVAL {options.poll_interval:g} s)")
    pipeline = bench.pipeline()
    lat = bench_latency(kafka, pipeline, count, pace)

    def line(label: str, values: list[float], extra: str = "") -> None:
        say(f"    {label:56s} median {ms(statistics.median(values)):>8s}"
            f"  p99 {ms(percentile(values, 99)):>8s}  max {ms(max(values)):>8s}{extra}")

    def cpu_note(plain: Plain) -> str:
        return f"  (consumer CPU {100 * plain.consumer_cpu / plain.seconds:.0f}%)"

    line("issue_invoice -> relay -> Kafka -> consumer -> to-pay", lat.total)
    say(f"    CPU per invoice: relay {1000 * lat.cpu['relay'] / count:.2f} ms, payment "
        f"consumer {1000 * lat.cpu['consumer'] / count:.2f} ms")
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

    figures = []
    for stat, of, goal in (("median", statistics.median, "<= 20 ms"),
                           ("p99", lambda values: percentile(values, 99), "<= 100 ms")):
        service = of(lat.total)
        for plain, label in ((lat.block, "poll(100 ms)"), (lat.sleep, "poll(0) + 20 ms sleep")):
            baseline = of(plain.delays)
            figures.append(Figure(
                f"issue -> visible in to-pay, {stat}", ms(service),
                f"plain {label} {ms(baseline)}", f"{service / baseline:.1f}x", goal))
    # After the figures above: a relay or consumer still busy with them would not be idle.
    time.sleep(1.0)
    idle = idle_cpu(pipeline, options.idle_seconds)
    say(f"    idle for {options.idle_seconds:g}s: relay {100 * idle['relay']:.2f}% of a core, "
        f"payment consumer {100 * idle['consumer']:.2f}%")
    for name, share in idle.items():
        # For information: the issue sets no goal for it (see docs/benchmarks.md).
        figures.append(Figure(f"idle CPU, {name}", f"{100 * share:.2f}% of a core", "-", "-"))
    return figures
