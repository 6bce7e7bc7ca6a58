"""Two `regie consume payment` processes share billing.invoices on a real broker and
PostgreSQL (REGIE_CONSUMER_INDEX 0 and 1 of REGIE_CONSUMER_COUNT 2): every message is
applied exactly once, also when either is killed with -9 in the middle of a stream and
started again."""

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events import BILLING_INVOICES
from services.billing.application import BillingApp
from services.bootstrap import billing_app, payment_app
from services.common.settings import Settings
from services.payment.domain import Invoice as PaymentInvoice
from tests.conftest import drop_schemas, make_settings
from tests.factories import open_regies, terms
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka

COUNT = 2
INVOICES = 360


class Parts:
    """The billing relay and the two payment consumers, each a `regie` process."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.logs = logs
        self.env = dict(os.environ)
        self.env.update(
            REGIE_VAR_DIR=str(settings.var_dir), PERSISTENCE_MODULE=settings.persistence,
            POSTGRES_DBNAME=settings.postgres_dbname, POSTGRES_HOST=settings.postgres_host,
            POSTGRES_PORT=settings.postgres_port, POSTGRES_USER=settings.postgres_user,
            POSTGRES_PASSWORD="", REGIE_SCHEMA_PREFIX=settings.schema_prefix,
            KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap, KAFKA_BROKER=settings.kafka_broker,
            KAFKA_TOPIC_PREFIX=settings.topic_prefix, REGIE_POLL_INTERVAL="0.05",
            REGIE_CONSUMER_COUNT=str(COUNT),
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        args = ["relay", "billing"] if name == "relay" else ["consume", "payment"]
        env = dict(self.env)
        if name != "relay":
            env["REGIE_CONSUMER_INDEX"] = name.removeprefix("consumer-")
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *args], env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def check(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} died: see {self.logs}/{name}.log"

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill9(name)


@pytest.fixture
def parts(tmp_path: Path, kafka: Any) -> Iterator[tuple[Parts, Settings]]:
    settings = make_settings("postgres", tmp_path, kafka_bootstrap=kafka.bootstrap,
                             kafka_broker=kafka.kind, topic_prefix=f"s{uuid.uuid4().hex[:8]}.")
    logs = tmp_path / "logs"
    logs.mkdir()
    p = Parts(settings, logs)
    try:
        yield p, settings
    finally:
        p.stop_all()
        drop_schemas(settings.schema_prefix)


def stream(billing: BillingApp, expected: dict[str, int], done: threading.Event) -> None:
    """Issue INVOICES invoices in small batches, cancelling every seventh: each invoice's
    id and how many events payment must record for it (1, or 2 once cancelled)."""
    try:
        for start in range(0, INVOICES, 12):
            batch = [terms(f"S-{i:04d}", family=f"fam-{i % 40:02d}")
                     for i in range(start, start + 12)]
            ids = [str(outcome.invoice.id)  # type: ignore[union-attr]
                   for outcome in billing.issue_batch(batch)]
            expected.update(dict.fromkeys(ids, 1))
            for invoice_id in ids[::7]:
                billing.cancel_invoice(uuid.UUID(invoice_id), "erreur de saisie")
                expected[invoice_id] = 2
            time.sleep(0.08)
    finally:
        done.set()


def recorded(settings: Settings, ids: list[str]) -> dict[str, int]:
    """How many events payment recorded for each invoice."""
    payment = payment_app(settings)
    try:
        wanted = {str(PaymentInvoice.create_id(i)): i for i in ids}
        counts = {i: 0 for i in ids}
        start = 1
        while True:
            page = payment.recorder.select_notifications(start, 1000)
            for n in page:
                if str(n.originator_id) in wanted:
                    counts[wanted[str(n.originator_id)]] += 1
            if len(page) < 1000:
                return counts
            start = page[-1].id + 1
    finally:
        payment.close()


def test_two_consumer_processes_apply_each_message_once_through_kill_9(
        parts: tuple[Parts, Settings]) -> None:
    p, settings = parts
    billing = billing_app(settings)
    open_regies(billing)
    for name in ("relay", "consumer-0", "consumer-1"):
        p.start(name)
    expected: dict[str, int] = {}
    done = threading.Event()
    writer = threading.Thread(target=stream, args=(billing, expected, done))
    writer.start()
    try:
        # kill -9 each consumer in turn in the middle of the stream; the other goes on.
        for victim in ("consumer-1", "consumer-0"):
            target = len(expected) + INVOICES // 3
            wait_for(lambda: len(expected) >= target, 60, "the stream")  # noqa: B023
            p.check()
            p.kill9(victim)
            time.sleep(0.5)
            p.start(victim)
        assert not done.is_set(), "the stream ended before the kills"
    finally:
        writer.join()
    ids = list(expected)

    def all_there() -> bool:
        p.check()
        return recorded(settings, ids) == expected

    wait_for(all_there, 90, "every invoice recorded once in payment")
    time.sleep(1.0)  # anything applied twice would show now
    assert recorded(settings, ids) == expected
    # Both processes read their own partitions, and only those: each kept positions.
    topic = settings.topic(BILLING_INVOICES.name)
    payment = payment_app(settings)
    try:
        offsets = {k: payment.positions.get(f"{topic}@{k}") for k in range(6)}
    finally:
        payment.close()
    assert all(offsets.values()), offsets
    for name in ("consumer-0", "consumer-1"):
        log = (p.logs / f"{name}.log").read_text()
        index = name.removeprefix("consumer-")
        assert f"(partitions p % 2 == {index})" in log, log[-2000:]
    billing.close()
