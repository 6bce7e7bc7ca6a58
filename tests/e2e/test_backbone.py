"""The whole backbone as separate processes: APIs under gunicorn, relay, consumer, broker.

Issue invoices over HTTP, watch them reach the to-pay lists, kill -9 the relay and the
consumer in the middle of a stream, and rebuild the read model from the history.
"""

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from events import BILLING_INVOICES
from services.bootstrap import billing_app, positions
from services.common.messaging.broker import free_port
from services.common.storage.chain import store_env
from services.payment.application import PaymentApp
from tests.conftest import Broker, drop_schemas, make_settings
from tests.e2e.system import ISSUER, READER, System, wait_until
from tests.factories import invoice_payload

pytestmark = pytest.mark.kafka

FAMILIES = [f"fam-{i:02d}" for i in range(50)]
REGIES = {"SPORTS": "Direction des sports", "CANTINE": "Restauration scolaire"}


@pytest.fixture(params=["sqlite", "postgres"])
def system(request: pytest.FixtureRequest, tmp_path: Path, kafka: Any) -> Iterator[System]:
    with backbone(request.param, tmp_path, kafka) as s:
        yield s


@contextmanager
def backbone(backend: str, tmp_path: Path, kafka: Any) -> Iterator[System]:
    """Both APIs, the billing relay and the payment consumer on ``kafka``, all stopped
    after."""
    prefix = f"e{uuid.uuid4().hex[:8]}."
    settings = make_settings(backend, tmp_path, kafka_bootstrap=kafka.bootstrap,
                             kafka_broker=kafka.kind, topic_prefix=prefix)
    env = dict(os.environ)
    env.update(
        REGIE_VAR_DIR=str(settings.var_dir), PERSISTENCE_MODULE=settings.persistence,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap, KAFKA_BROKER=kafka.kind,
        KAFKA_TOPIC_PREFIX=prefix, REGIE_TOKENS=f"{ISSUER}:issuer,{READER}:reader",
        BILLING_PORT=str(free_port()), PAYMENT_PORT=str(free_port()),
        REGIE_POLL_INTERVAL="0.05",
    )
    if settings.is_postgres():
        env.update(POSTGRES_DBNAME=settings.postgres_dbname, POSTGRES_HOST=settings.postgres_host,
                   POSTGRES_PORT=settings.postgres_port, POSTGRES_USER=settings.postgres_user,
                   POSTGRES_PASSWORD="", REGIE_SCHEMA_PREFIX=settings.schema_prefix)
    logs = tmp_path / "logs"
    logs.mkdir()
    s = System(settings, env, logs)
    try:
        for name in ("billing-api", "payment-api", "relay", "consumer"):
            s.start(name)
        s.wait_up()
        yield s
    finally:
        s.stop_all()
        if settings.is_postgres():
            drop_schemas(settings.schema_prefix)


class Ledger:
    """What billing accepted, to compare the to-pay lists with, to the cent."""

    def __init__(self) -> None:
        self.open: dict[str, dict[str, Any]] = {}  # invoice id -> payload

    def expected(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for family in FAMILIES:
            per: dict[str, list[int]] = {}
            for p in self.open.values():
                if p["family_id"] == family:
                    per.setdefault(p["regie"], []).append(p["amount_cents"])
            out[family] = {"regies": [
                {"code": code, "name": REGIES[code], "count": len(a), "total_cents": sum(a)}
                for code, a in sorted(per.items())
            ]}
        return out


def payloads(rng: random.Random, start: int, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + count):
        regie = rng.choice(sorted(REGIES))
        out.append(invoice_payload(
            number=f"E-{i:05d}", family=FAMILIES[i % len(FAMILIES)], regie=regie,
            quantity=rng.randint(1, 9), unit=rng.randint(100, 4999),
        ))
    return out


def issue(s: System, ledger: Ledger, batch: list[dict[str, Any]], single: bool) -> None:
    if single:
        for p in batch:
            r = s.post("/invoices", p)
            assert r.status_code == 201, r.text
            ledger.open[r.json()["id"]] = p
        return
    r = s.post("/invoices/batch", {"invoices": batch})
    assert r.status_code == 200, r.text
    for p, result in zip(batch, r.json()["results"], strict=True):
        assert result["status"] == 201, result
        ledger.open[result["invoice"]["id"]] = p


def wait_until_equal(s: System, want: dict[str, Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    got: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = s.all_to_pay(FAMILIES)
        if got == want:
            return
        time.sleep(0.2)
    wrong = [f for f in FAMILIES if got.get(f) != want[f]]
    raise AssertionError(f"to-pay differs for {wrong[:5]}: {got.get(wrong[0])} != {want[wrong[0]]}")


def test_issue_kill_restart_rebuild(system: System) -> None:
    s, ledger, rng = system, Ledger(), random.Random(2025)
    for code, name in REGIES.items():
        r = s.post("/regies", {"code": code, "name": name, "numcli": "000123", "saisie": "T"})
        assert r.status_code == 201, r.text

    # 1. 500 invoices for 50 families: 100 one by one, 400 in batches.
    first = payloads(rng, 0, 500)
    issue(s, ledger, first[:100], single=True)
    for k in range(100, 500, 100):
        issue(s, ledger, first[k:k + 100], single=False)
    wait_until_equal(s, ledger.expected())

    # 2. A second stream with cancellations and transfers; kill -9 the relay and the
    #    consumer in the middle of it, then restart them.
    second = payloads(rng, 500, 500)
    errors: list[BaseException] = []
    midway = threading.Event()

    def stream() -> None:
        try:
            for k in range(0, 500, 25):
                issue(s, ledger, second[k:k + 25], single=False)
                if k == 125:
                    midway.set()
                time.sleep(0.1)  # a steady stream, so the kills land in the middle of it
                victim = rng.choice(sorted(ledger.open))
                action = rng.choice(["cancel", "transfer"])
                body = {"reason": "erreur"} if action == "cancel" else {"reference": "T-1"}
                r = s.post(f"/invoices/{victim}/{action}", body)
                assert r.status_code == 200, r.text
                del ledger.open[victim]
        except BaseException as e:
            errors.append(e)

    writer = threading.Thread(target=stream)
    writer.start()
    assert midway.wait(timeout=60)
    s.kill9("relay")
    s.kill9("consumer")
    assert writer.is_alive(), "the stream ended before the kills"
    time.sleep(0.5)
    s.start("consumer")
    s.start("relay")
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert not errors, errors
    wait_until_equal(s, ledger.expected())
    live = s.all_to_pay(FAMILIES)

    # Nothing counted twice: the payment store holds exactly one copy of each invoice.
    payment = PaymentApp(env=store_env(s.settings, "payment"))
    snapshot = payment.to_pay.snapshot()
    assert len(snapshot["invoices"]) == 1000
    open_ids = {i for i, row in snapshot["invoices"].items() if row["status"] == "open"}
    assert open_ids == set(ledger.open)
    lines = s.regie_lines(FAMILIES[7], "SPORTS")
    assert sum(line["amount_due_cents"] for line in lines) == sum(
        p["amount_cents"] for p in ledger.open.values()
        if p["family_id"] == FAMILIES[7] and p["regie"] == "SPORTS"
    )

    # 3. Drop the projection and rebuild it from the history: identical to the live one.
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "replay", "to-pay", "--quiet"],
        env=s.env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "rebuilt from" in done.stdout
    assert payment.to_pay.snapshot() == snapshot
    assert s.all_to_pay(FAMILIES) == live


@pytest.fixture
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A noida-db of this test's own, to be killed and restarted on older data."""
    b = Broker("noida", tmp_path_factory.mktemp("lossy-broker"))
    b.start()
    try:
        yield b
    finally:
        b.kill()


def test_a_broker_killed_right_after_a_publish_loses_nothing_for_good(
    tmp_path: Path, lossy: Broker
) -> None:
    """noida-db acknowledges before its data is on disk: killed with -9 right after a
    publish, it can come back without the last invoices. Restarting it on a copy of its
    data from before them makes that loss certain; the consumer was stopped meanwhile,
    so only a republish can bring them to it."""
    with backbone("sqlite", tmp_path, lossy) as s:
        ledger, rng = Ledger(), random.Random(7)
        for code, name in REGIES.items():
            r = s.post("/regies", {"code": code, "name": name, "numcli": "000123", "saisie": "T"})
            assert r.status_code == 201, r.text
        batch = payloads(rng, 0, 200)
        issue(s, ledger, batch[:100], single=False)
        wait_until_equal(s, ledger.expected())

        earlier = lossy.save_data()
        s.kill9("consumer")
        issue(s, ledger, batch[100:], single=False)
        billing = billing_app(s.settings)
        relay_positions = positions(s.settings, "billing", billing)
        topic = s.settings.topic(BILLING_INVOICES.name)
        last = billing.recorder.max_notification_id()
        wait_until(lambda: relay_positions.get(topic) == last, "the relay to publish them")

        s.kill9("relay")
        lossy.restart_from(earlier)  # kill -9, and the last hundred are gone from the broker
        s.start("relay")
        s.start("consumer")
        wait_until_equal(s, ledger.expected())
        payment = PaymentApp(env=store_env(s.settings, "payment"))
        assert len(payment.to_pay.snapshot()["invoices"]) == 200
        assert "the broker lost records of partitions" in (s.logs / "relay.log").read_text()
