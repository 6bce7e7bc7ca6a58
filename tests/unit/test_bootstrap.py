"""The composition root assembles the relays and consumers `regie` runs; a caller (a test, a
benchmark) can hand it the application and the publishers instead of patching classes."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services import bootstrap
from services.billing.domain import Invoice
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.relay import Heads
from services.payment.gateway import FakeGateway
from tests.conftest import make_settings
from tests.factories import deliver, open_regies, terms, wire_messages
from tests.helpers import consume_in_memory, relayed_in_memory


def test_a_relay_publishes_through_the_publisher_it_is_given(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path, topic_prefix="acme.")
    billing = bootstrap.billing_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1"))
    events, heads = MemoryPublisher(), MemoryPublisher()
    relay = bootstrap.relay("billing", settings, app=billing, publisher=events,
                            heads=Heads(heads, "acme.audit.chain-heads", "billing"))
    while relay.run_once():
        pass
    assert relay.name == "acme.billing.invoices"
    published = [m for p in range(events.partition_count()) for m in events.records(p)]
    assert sorted(json.loads(m.value)["type"] for m in published) == [
        "fr.regie.InvoiceIssued.v2", "fr.regie.RegieOpened.v1", "fr.regie.RegieOpened.v1"]
    assert {m.topic for m in published} == {"acme.billing.invoices"}
    assert relay.heads is not None and relay.heads.publisher is heads


def test_a_consumer_applies_to_the_application_it_is_given(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path, topic_prefix="acme.")
    payment = bootstrap.payment_app(settings)
    consumer = bootstrap.consumer("payment", settings, app=payment)
    assert consumer.topic == "acme.billing.invoices"
    assert consumer.handle == payment.apply_billing_event
    assert consumer.dead_letters is payment.dead_letters
    billing = bootstrap.billing_app(settings)
    assert bootstrap.consumer("billing", settings, app=billing).topic == "acme.payment.payments"


def test_relay_and_consumer_wired_over_one_in_memory_broker(tmp_path: Path) -> None:
    """What `regie relay billing` and `regie consume payment` run, over the in-memory
    broker instead of Kafka: an invoice issued in billing reaches the family's to-pay list."""
    settings = make_settings("memory", tmp_path)
    billing, payment = bootstrap.billing_app(settings), bootstrap.payment_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1", family="fam-7"))
    broker = relayed_in_memory(settings, billing).broker
    consume_in_memory(settings, broker, payment, lambda: bool(payment.to_pay_summary("fam-7")))
    assert [(r["code"], r["count"], r["total_cents"]) for r in
            payment.to_pay_summary("fam-7")] == [("SPORTS", 1, 2500)]


def test_the_payment_app_receives_payfip_its_urls_and_clock_once(tmp_path: Path) -> None:
    """Given once by the composition root, PayFiP is what every payment method uses: the
    web layer, the reconciler and the tests pass it no gateway, URL or time."""
    settings = make_settings("memory", tmp_path,
                             payment_public_url="https://paiement.example.org/")
    billing = bootstrap.billing_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1"))
    gateway = FakeGateway()
    payment = bootstrap.payment_app(settings, gateway=gateway,
                                    clock=lambda: datetime(2024, 12, 31, 12, tzinfo=UTC))
    deliver(payment, wire_messages(billing))

    p = payment.request_payment("fam-1", "SPORTS", [str(Invoice.create_id("SPORTS", "F-1"))],
                                "parent@example.org")
    assert p.idop is not None
    order = gateway.orders[p.idop]
    assert order.exer == "2024"  # dated by the clock given, not by the time now
    assert (order.urlnotif, order.urlredirect) == (
        "https://paiement.example.org/payfip/notification",
        "https://paiement.example.org/payfip/return")
    gateway.decide(p.idop, "P")
    settled = payment.notified(p.idop)
    assert settled is not None and settled.status == "confirmed"
    # Measured at the gateway's edge as the API's calls were: one create, one read-back.
    measured = CollectorRegistry()
    measured.register(payment.meters.payfip_seconds)
    assert [measured.get_sample_value("regie_payfip_call_seconds_count", {"operation": o})
            for o in ("creerPaiementSecurise", "recupererDetailPaiementSecurise")] == [1, 1]


def test_a_payment_app_built_without_payfip_says_so(tmp_path: Path) -> None:
    payment = bootstrap.payment_app(make_settings("memory", tmp_path))
    with pytest.raises(RuntimeError, match="without PayFiP"):
        payment.reconcile()
