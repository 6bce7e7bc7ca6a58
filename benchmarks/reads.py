"""4. Consumer apply, one transaction per poll against one per message; 5. the family's
reads (summary, a régie's list, history) with 20 and with 2,000 invoices per family,
against /health. Both on PostgreSQL, in this process, without a broker.
"""

import contextlib
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Figure,
    Run,
    drop_pg_schemas,
    invoice_terms,
    make_settings,
    percentile,
    say,
)
from services.billing.domain import InvoiceTerms
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import Intake
from services.common.messaging.ports import Record
from services.common.messaging.relay import Relay
from services.common.settings import Settings
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.web import create_app

POLL = 500  # records per poll, as the Kafka subscriber gets them
TOKEN = "tok-reader"
URLS = ReturnUrls("http://127.0.0.1:9/payfip/notification", "http://127.0.0.1:9/payfip/return")


def _settings(root: Path, name: str, cleanup: contextlib.ExitStack) -> Settings:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    settings = make_settings(root / name, persistence="eventsourcing.postgres",
                             schema_prefix=prefix)
    cleanup.callback(drop_pg_schemas, [settings.schema("billing"), settings.schema("payment")])
    return settings


def _polls(settings: Settings, families: int, per_family: int) -> list[dict[int, list[Record]]]:
    """billing.invoices as the relay would publish it, cut in polls."""
    return billing_polls(settings, [replace(invoice_terms(i), family_id=f"fam-{i % families}")
                                    for i in range(families * per_family)])


def billing_polls(settings: Settings, terms: list[InvoiceTerms]) -> list[dict[int, list[Record]]]:
    """Issue ``terms`` in billing, and return billing.invoices as the relay would publish
    them, cut in polls."""
    from services.common.messaging.memory import MemoryBroker, MemoryPublisher
    from services.common.messaging.positions import MemoryPositions

    billing = billing_app(settings)
    billing.open_regie("SPORTS", "Direction des sports", "000001", "T")
    for start in range(0, len(terms), 1000):
        billing.issue_batch(terms[start:start + 1000])
    broker = MemoryBroker()
    publisher = MemoryPublisher(broker=broker, topic="bench")
    sent: list[tuple[int, bytes]] = []
    relay = Relay(billing, make_to_wire(billing, "billing.invoices"), publisher,
                  MemoryPositions(), name="bench")
    original = publisher.publish

    def noted(messages: Any) -> Any:
        acks = original(messages)
        sent.extend((a.partition, m.value) for a, m in zip(acks, messages, strict=True))
        return acks

    publisher.publish = noted  # type: ignore[method-assign]
    while relay.run_once():
        pass
    billing.close()
    polls: list[dict[int, list[Record]]] = []
    for start in range(0, len(sent), POLL):
        poll: dict[int, list[Record]] = {}
        for offset, (partition, value) in enumerate(sent[start:start + POLL], start):
            poll.setdefault(partition, []).append(Record(partition, offset, None, value))
        polls.append(poll)
    return polls


def apply_polls(payment: PaymentApp, polls: list[dict[int, list[Record]]], batched: bool) -> float:
    """Messages per second into the payment store, to-pay included."""
    count = sum(len(r) for poll in polls for r in poll.values())
    started = time.perf_counter()
    for poll in polls:
        Intake("billing.invoices", payment.apply_billing_event, payment.dead_letters,
               payment.apply_billing_events if batched else None).records(poll)
        payment.refresh()
    return count / (time.perf_counter() - started)


def _rate(client: Any, path: str, n: int) -> tuple[float, float]:
    """Requests per second and p99 (s) of n GETs."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, headers=headers)
        times.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.get_data(as_text=True)[:200]}")
    return n / (time.perf_counter() - started), percentile(times, 99)


def run(bench: Run) -> list[Figure]:
    root, cleanup = bench.root, bench.cleanup
    n = min(bench.options.invoices, 4000)
    figures: list[Figure] = []
    say(f"4. Consumer apply on PostgreSQL: {n} invoices, polls of {POLL}, with to-pay")
    source = _settings(root, "apply-source", cleanup)
    polls = _polls(source, 50, max(1, n // 50))
    rates = {}
    for batched in (False, True):
        payment = payment_app(_settings(root, f"apply-{batched}", cleanup))
        rates[batched] = apply_polls(payment, polls, batched)
        payment.close()
    say(f"    one transaction per message {rates[False]:7.0f} msg/s | per poll "
        f"{rates[True]:7.0f} msg/s | per poll is {rates[True] / rates[False]:.1f}x faster")
    figures.append(Figure("consumer apply, one transaction per poll",
                          f"{rates[True]:,.0f} msg/s",
                          f"one per message {rates[False]:,.0f} msg/s",
                          f"{rates[False] / rates[True]:.2f}x"))

    say("5. Family reads (in-process Flask client), against /health")
    requests = 200
    for per_family in (20, 2000):
        settings = _settings(root, f"reads-{per_family}", cleanup)
        payment = payment_app(settings)
        apply_polls(payment, _polls(_settings(root, f"reads-src-{per_family}", cleanup), 2,
                               per_family), True)
        client = create_app(payment=payment, tokens={TOKEN: "reader"},
                            settings=settings).test_client()
        health, _ = _rate(client, "/health", requests)
        for what, path in (("summary", "/families/fam-0/to-pay"),
                           ("régie list, first page", "/families/fam-0/to-pay/SPORTS"),
                           ("history, first page", "/families/fam-0/history")):
            rate, p99 = _rate(client, path, requests)
            say(f"    {per_family:5d} per family  {what:24s} {rate:7.0f} req/s  p99 "
                f"{p99 * 1000:6.1f} ms | /health {health:7.0f} req/s")
            figures.append(Figure(f"{what}, {per_family:,} invoices per family",
                                  f"{rate:,.0f} req/s (p99 {p99 * 1000:.1f} ms)",
                                  f"/health {health:,.0f} req/s", f"{health / rate:.1f}x"))
        payment.close()
    return figures
