"""GET /metrics on both APIs: what operators alert on, in Prometheus' text format."""

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from flask import Flask
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from events import BILLING_INVOICES, Envelope
from services.billing.integration import make_to_wire as billing_to_wire
from services.billing.web import create_app as billing_api
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import TrackedConsumer
from services.common.messaging.relay import KafkaPublisher, Relay
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.gateway import FakeGateway, GatewayError
from services.payment.web import create_app as payment_api
from tests.conftest import make_settings
from tests.factories import open_regies, terms
from tests.helpers import NOW, Clock, decided, iid, letter, request, setup, wait_for
from tests.threads import Threads

TOKENS = {"reader-token": "reader", "payer-token": "payer"}


def metrics_text(app: Flask) -> str:
    """GET /metrics, asked without a token."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type == CONTENT_TYPE_LATEST
    return response.get_data(as_text=True)


def scrape(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    samples = {}
    for family in text_string_to_metric_families(metrics_text(app)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def api(payment: PaymentApp, settings: Settings | None = None) -> Flask:
    return payment_api(payment=payment, tokens=TOKENS,
                       settings=settings or Settings(metrics_dir=""))


def test_payments_are_counted_by_status(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    decided(payment, gateway, "P", "S-1")
    decided(payment, gateway, "R", "S-2")
    request(payment, "C-1", regie="CANTINE")
    app = api(payment)
    samples = scrape(app)
    assert value(samples, "regie_payments", regie="SPORTS", status="confirmed") == 1
    assert value(samples, "regie_payments", regie="SPORTS", status="refused") == 1
    assert value(samples, "regie_payments", regie="CANTINE", status="requested") == 1
    assert value(samples, "regie_payments", regie="SPORTS", status="requested") is None
    # Counted from 0 for every régie, so that the first one shows as an increase.
    assert value(samples, "regie_late_confirmations_total", regie="SPORTS") == 0
    assert value(samples, "regie_anomalies_total", regie="CANTINE") == 0
    assert value(samples, "regie_dead_letters") == 0
    # Nothing that names a family, a payer or a PayFiP operation (idop) is ever a label.
    text = metrics_text(app)
    assert "fam-1" not in text and "parent@example.org" not in text
    assert not any(idop in text for idop in gateway.orders)


def test_late_confirmations_refunds_and_anomalies_are_counted(
    any_store_settings: Settings,
) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    start = datetime.now(UTC)
    first = request(payment, "S-1", "S-2")
    clock.now = start + timedelta(minutes=25)
    payment.reconcile()  # frees S-1 and S-2
    clock.now = NOW
    second = request(payment, "S-1")
    gateway.decide(second.idop, "P")  # type: ignore[arg-type]
    clock.now = start
    payment.settle_from_payfip(second.idop)  # type: ignore[arg-type]
    # PayFiP confirms the first one at last: late, and S-1 (paid twice) needs a refund.
    gateway.decide(first.idop, "P")  # type: ignore[arg-type]
    clock.now = start + timedelta(minutes=40)
    payment.reconcile()
    # An answer for another amount: an anomaly, however often it is read.
    clock.now = NOW
    third = request(payment, "C-1", regie="CANTINE")
    gateway.decide(third.idop, "P")  # type: ignore[arg-type]
    gateway.tampered[third.idop] = {"montant": "100"}  # type: ignore[index]
    for _ in range(2):
        clock.now = start
        payment.settle_from_payfip(third.idop)  # type: ignore[arg-type]

    samples = scrape(api(payment))
    assert value(samples, "regie_payments", regie="SPORTS", status="confirmed") == 2
    assert value(samples, "regie_late_confirmations_total", regie="SPORTS") == 1
    assert value(samples, "regie_refunds_needed_total", regie="SPORTS") == 1
    assert value(samples, "regie_refunds_needed_cents_total", regie="SPORTS") == 2500
    assert value(samples, "regie_anomalies_total", regie="CANTINE") == 1
    assert value(samples, "regie_anomalies_total", regie="SPORTS") == 0


def test_dead_letters_show_on_each_api(store_settings: Settings) -> None:
    billing = billing_app(store_settings)
    payment = payment_app(store_settings)
    billing.dead_letters.park(letter(4, "payment-1", 3, topic="payment.payments"))
    billing.dead_letters.park(letter(5, None, None, topic="payment.payments"))
    payment.dead_letters.park(letter(8, None, None))
    billing_metrics = scrape(billing_api(billing=billing, tokens=TOKENS,
                                         settings=Settings(metrics_dir="")))
    assert value(billing_metrics, "regie_dead_letters") == 2
    assert value(scrape(api(payment)), "regie_dead_letters") == 1


def test_metrics_need_no_token_and_stay_out_of_the_openapi_document(
    any_store_settings: Settings,
) -> None:
    app = api(payment_app(any_store_settings))
    client = app.test_client()
    assert client.get("/families/fam-1/to-pay").status_code == 401
    assert client.get("/metrics").status_code == 200
    assert "/metrics" not in client.get("/openapi.json").get_json()["paths"]


def test_payfip_calls_are_timed_and_their_errors_counted_by_code(
    any_store_settings: Settings,
) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    app = api(payment)
    client = app.test_client()
    auth = {"Authorization": "Bearer payer-token"}
    body = {"family_id": "fam-1", "regie": "SPORTS", "email": "parent@example.org",
            "invoice_ids": [iid("S-1")]}
    gateway.fail_create = GatewayError("T2", "Le numéro de client est inconnu de PayFiP.")
    assert client.post("/payments", json=body, headers=auth).status_code >= 400
    gateway.fail_create = None
    created = client.post("/payments", json=body, headers=auth).get_json()
    # PayFiP has no result yet (P5), then cannot be reached at all.
    client.post("/payfip/notification", data={"idop": created["idop"]})
    samples = scrape(app)
    create, result = "creerPaiementSecurise", "recupererDetailPaiementSecurise"
    assert value(samples, "regie_payfip_call_seconds_count", operation=create) == 2
    assert value(samples, "regie_payfip_call_seconds_count", operation=result) == 1
    assert value(samples, "regie_payfip_errors_total", operation=create, code="T2") == 1
    assert value(samples, "regie_payfip_errors_total", operation=result, code="P5") == 1

    # The reconciler measures its calls the same way, at the gateway's edge.
    gateway.unreachable = True
    clock.now = datetime.now(UTC)
    payment.reconcile()
    samples = scrape(app)
    assert value(samples, "regie_payfip_errors_total", operation=result,
                 code="unreachable") == 1
    assert value(samples, "regie_payfip_call_seconds_count", operation=result) == 2
    # A pass that could not settle a payment is counted too.
    assert value(samples, "regie_watch_errors_total") == 0
    gateway.unreachable = False
    gateway.decide(created["idop"], "P")
    gateway.tampered[created["idop"]] = {"dattrans": ""}
    clock.now = datetime.now(UTC)
    payment.reconcile()
    assert value(scrape(app), "regie_watch_errors_total") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_reconcilers_payfip_calls_show_on_the_payment_api(tmp_path: Path) -> None:
    """Multiprocess mode: another process's calls, written under the shared folder."""
    settings = make_settings("sqlite", tmp_path)
    folder = tmp_path / "metrics"
    folder.mkdir()
    _, payment = setup(settings)
    request(payment, "S-1")  # under watch; PayFiP below cannot be reached
    env = dict(
        os.environ, REGIE_VAR_DIR=str(settings.var_dir), PERSISTENCE_MODULE=settings.persistence,
        PROMETHEUS_MULTIPROC_DIR=str(folder), PAYFIP_TIMEOUT="5",
        PAYFIP_SERVICE_URL=f"http://127.0.0.1:{free_port()}/tpa/services/securite",
    )
    done = subprocess.run([sys.executable, "-m", "services.cli", "reconcile", "--once"],
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    samples = scrape(api(payment, settings=replace(settings, metrics_dir=str(folder))))
    result = "recupererDetailPaiementSecurise"
    assert value(samples, "regie_payfip_errors_total", operation=result,
                 code="unreachable") == 1
    assert value(samples, "regie_payfip_call_seconds_count", operation=result) == 1


class Parts(Threads):
    """The consumer, run in a thread and stopped like a process."""


def end_offsets(settings: Settings, topic: str) -> dict[str, float]:
    from kafka import TopicPartition

    from services.common.messaging.kafka import consumer

    probe = consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        return {str(tp.partition): float(end) for tp, end in probe.end_offsets(tps).items()}
    finally:
        probe.close()


@pytest.fixture
def broker_settings(store_settings: Settings, kafka: Any) -> Settings:
    return replace(store_settings, kafka_bootstrap=kafka.bootstrap, kafka_broker=kafka.kind,
                   topic_prefix=f"t{uuid.uuid4().hex[:8]}.", kafka_partitions=3,
                   metrics_dir="")


@pytest.fixture
def parts() -> Iterator[Parts]:
    p = Parts()
    try:
        yield p
    finally:
        p.stop_all()


@pytest.mark.kafka
def test_relay_lag_is_what_is_not_published_yet(broker_settings: Settings) -> None:
    settings = broker_settings
    billing = billing_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("A-1"))
    billing.issue_invoice(terms("A-2"))
    topic = settings.topic(BILLING_INVOICES.name)
    app = billing_api(billing=billing, tokens=TOKENS, settings=settings)
    recorded = billing.recorder.max_notification_id()
    assert recorded is not None and recorded >= 4
    assert value(scrape(app), "regie_relay_lag", topic=topic) == recorded
    relay = Relay(billing, billing_to_wire(billing, topic), KafkaPublisher(settings, topic),
                  billing.positions, name=topic)
    try:
        while relay.run_once():
            pass
    finally:
        relay.publisher.close()
    assert value(scrape(app), "regie_relay_lag", topic=topic) == 0


@pytest.mark.kafka
def test_consumer_lag_per_partition(broker_settings: Settings, parts: Parts) -> None:
    settings = broker_settings
    billing = billing_app(settings)
    payment = payment_app(settings)
    topic = settings.topic(BILLING_INVOICES.name)
    to_wire = billing_to_wire(billing, topic)
    publisher = KafkaPublisher(settings, topic)
    publisher.ensure_topic(settings.kafka_partitions)
    app = api(payment, settings=settings)
    released = threading.Event()

    def publish_new() -> None:
        relay = Relay(billing, to_wire, publisher, billing.positions, name=topic)
        while relay.run_once():
            pass

    def start(handle: Any) -> None:
        parts.run("consumer", TrackedConsumer(
            settings, topic, handle, payment.positions, on_idle=payment.refresh,
            dead_letters=payment.dead_letters).run_forever)

    def stuck(message: Envelope, tracking: Tracking) -> bool:
        released.wait()  # a consumer that fetched the records but cannot get on
        return payment.apply_billing_event(message, tracking)

    def lags() -> dict[str, float]:
        return {dict(labels)["partition"]: v for (name, labels), v in scrape(app).items()
                if name == "regie_consumer_lag" and dict(labels)["topic"] == topic}

    try:
        open_regies(billing)
        publish_new()
        start(payment.apply_billing_event)
        wait_for(lambda: lags() == {"0": 0, "1": 0, "2": 0}, what="the consumer to catch up")
        parts.stop("consumer")

        before = end_offsets(settings, topic)
        for n in range(6):
            billing.issue_invoice(terms(f"L-{n}", family=f"fam-{n}"))
        publish_new()
        after = end_offsets(settings, topic)
        start(stuck)
        # Each partition lags by the records published on it while the consumer was away.
        wait_for(lambda: lags() == {p: after[p] - before[p] for p in after},
                 what="the new records to show as lag")
        assert sum(lags().values()) == 6
        released.set()
        wait_for(lambda: lags() == {"0": 0, "1": 0, "2": 0}, what="the lag to go back to 0")
    finally:
        released.set()
        publisher.close()
