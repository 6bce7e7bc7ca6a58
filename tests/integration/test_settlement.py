"""Payment outcomes on payment.payments, and billing settling its invoices from them.

In process on every store (the relay's messages handed to the consumer's handler), then
once through the real broker with the payment relay and the billing consumer running.
"""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from events import PAYMENT_PAYMENTS, Envelope, decode
from services.billing.application import BillingApp
from services.billing.domain import PAID, Invoice
from services.billing.web import create_app as billing_web
from services.cli import build_parser
from services.common.messaging.consumer import handle_record
from services.common.messaging.positions import SqlPositions
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment import domain
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire
from tests.factories import deliver, issued, relay_messages, terms, wire_messages
from tests.helpers import Parts, kafka_settings, wait_for

PAYMENTS = PAYMENT_PAYMENTS.name
NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")
# FakeGateway answers 26/02/2025 14:30, Paris time (winter: UTC+1).
PAID_AT = datetime(2025, 2, 26, 14, 30, tzinfo=timezone(timedelta(hours=1)))


def iid(number: str) -> UUID:
    return Invoice.create_id("SPORTS", number)


def setup(settings: Settings, gateway: FakeGateway) -> tuple[BillingApp, PaymentApp]:
    billing, payment = issued(settings, terms("S-1", family="fam-1", unit=2500),
                              terms("S-2", family="fam-1", unit=1250),
                              gateway=gateway, clock=lambda: NOW)
    deliver(payment, wire_messages(billing))
    return billing, payment


def pay(payment: PaymentApp, gateway: FakeGateway, resultrans: str | None, *numbers: str,
        family: str = "fam-1") -> domain.Payment:
    """Request a payment of the invoices, then let PayFiP answer ``resultrans`` (None: P1)."""
    p = payment.request_payment(family, "SPORTS", [str(iid(n)) for n in numbers],
                                "parent@example.org")
    assert p.idop is not None
    if resultrans is None:
        gateway.purged.add(p.idop)
    else:
        gateway.decide(p.idop, resultrans)
    settled = payment.settle_from_payfip(p.idop)
    assert settled is not None and settled.is_final
    return settled


def payment_messages(payment: PaymentApp) -> list[tuple[int, bytes]]:
    return relay_messages(payment, make_to_wire(payment, PAYMENTS))


def to_billing(billing: BillingApp, messages: list[tuple[int, bytes]]) -> int:
    return sum(handle_record(PAYMENTS, partition, value, billing.apply_payment_event,
                             billing.dead_letters, offset)
               for offset, (partition, value) in enumerate(messages))


def decoded(messages: list[tuple[int, bytes]]) -> list[Envelope]:
    return [decode(value) for _, value in messages]


def settled_messages(billing: BillingApp) -> list[Envelope]:
    return [m for m in decoded(wire_messages(billing)) if m.name == "InvoiceSettled"]


def test_a_confirmed_payment_settles_its_invoices(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    p = pay(payment, gateway, "P", "S-1", "S-2")
    messages = payment_messages(payment)
    requested, confirmed = decoded(messages)  # nothing for the invoice copies, Started…

    pid = str(p.id)
    assert (requested.name, confirmed.name) == ("PaymentRequested", "PaymentConfirmed")
    for m in (requested, confirmed):
        assert (m.key, m.subject, m.source) == ("fam-1", pid, "/regie/payment")
        assert m.id == f"/regie/payment/{pid}/{m.sequence}"
    allocations = [{"invoice_id": str(iid("S-1")), "number": "S-1", "amount_cents": 2500},
                   {"invoice_id": str(iid("S-2")), "number": "S-2", "amount_cents": 1250}]
    assert requested.data == {"payment_id": pid, "family_id": "fam-1", "regie": "SPORTS",
                              "idop": p.idop, "refdet": p.refdet, "amount_cents": 3750,
                              "invoices": allocations}
    assert confirmed.data == {"payment_id": pid, "family_id": "fam-1", "regie": "SPORTS",
                              "idop": p.idop, "refdet": p.refdet, "amount_cents": 3750,
                              "resultrans": "P", "numauto": p.numauto, "paid_at": PAID_AT,
                              "allocations": allocations, "late": False,
                              "received_at": confirmed.time}
    assert confirmed.version == 2
    assert confirmed.data["paid_at"].utcoffset() == timedelta(hours=1)

    assert to_billing(billing, messages) == 2
    for number in ("S-1", "S-2"):
        invoice = billing.get_invoice(iid(number))
        assert (invoice.status, invoice.amount_due_cents, invoice.refund_due_cents) == (PAID, 0, 0)
    settled = settled_messages(billing)
    assert [(m.data["number"], m.data["amount_cents"]) for m in settled] == [("S-1", 2500),
                                                                          ("S-2", 1250)]
    assert settled[0].data == {"invoice_id": str(iid("S-1")), "regie": "SPORTS", "number": "S-1",
                               "family_id": "fam-1", "payment_id": pid, "amount_cents": 2500,
                               "paid_at": PAID_AT}
    assert (settled[0].key, settled[0].subject, settled[0].sequence) == ("fam-1",
                                                                        str(iid("S-1")), 2)

    # Redelivered, or the whole topic republished: nothing changes.
    events_before = billing.recorder.max_notification_id()
    assert to_billing(billing, messages) == 0
    assert to_billing(billing, payment_messages(payment)) == 0
    assert billing.recorder.max_notification_id() == events_before


def test_only_a_confirmation_settles(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    outcomes: list[str | None] = ["R", "A", None, "Z", "V"]
    attempts = [pay(payment, gateway, outcome, "S-1") for outcome in outcomes]
    messages = payment_messages(payment)
    names = [(m.name, m.data.get("resultrans"), m.data.get("reason")) for m in decoded(messages)]
    assert names == [
        ("PaymentRequested", None, None), ("PaymentRefused", "R", None),
        ("PaymentRequested", None, None), ("PaymentAbandoned", None, None),
        ("PaymentRequested", None, None), ("PaymentExpired", None, "P1"),
        ("PaymentRequested", None, None), ("PaymentRefused", "Z", None),
        ("PaymentRequested", None, None), ("PaymentConfirmed", "V", None),
    ]
    assert [m.data["idop"] for m in decoded(messages)][::2] == [a.idop for a in attempts]

    # Up to the last attempt, every message is tracked and nothing is settled.
    events_before = billing.recorder.max_notification_id()
    assert to_billing(billing, messages[:-1]) == 9
    assert billing.recorder.max_notification_id() == events_before
    assert billing.get_invoice(iid("S-1")).amount_due_cents == 2500
    assert to_billing(billing, messages) == 1
    invoice = billing.get_invoice(iid("S-1"))
    assert (invoice.status, invoice.payment_ids) == (PAID, [str(attempts[-1].id)])
    assert billing.get_invoice(iid("S-2")).status == "issued"


def test_paid_after_billing_cancelled_the_invoice(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    p = payment.request_payment("fam-1", "SPORTS", [str(iid("S-1")), str(iid("S-2"))],
                                "parent@example.org")
    # Billing cancels S-2 while the family is on PayFiP, and the payment service has not
    # heard of it yet when PayFiP confirms: the payment allocates both.
    billing.cancel_invoice(iid("S-2"), "erreur de tarif")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert to_billing(billing, payment_messages(payment)) == 2

    cancelled = billing.get_invoice(iid("S-2"))
    assert (cancelled.status, cancelled.amount_due_cents, cancelled.refund_due_cents) == (
        "cancelled", 1250, 1250)
    assert billing.get_invoice(iid("S-1")).status == PAID
    topics = [n.topic.rsplit(".", 1)[-1] for n in billing.recorder.select_notifications(
        0, 1000, inclusive_of_start=False) if n.originator_id == iid("S-2")]
    assert topics == ["Issued", "Cancelled", "PaidAfterClose"]
    # PaidAfterClose is billing's own record: nothing new on billing.invoices for S-2.
    assert [m.data["number"] for m in settled_messages(billing)] == ["S-1"]

    client = billing_web(billing=billing, tokens={"r": "reader"}).test_client()
    body = client.get(f"/invoices/{iid('S-2')}", headers={"Authorization": "Bearer r"}).json
    assert body is not None
    assert (body["status"], body["refund_due_cents"]) == ("cancelled", 1250)

    events_before = billing.recorder.max_notification_id()
    assert to_billing(billing, payment_messages(payment)) == 0
    assert billing.recorder.max_notification_id() == events_before
    assert billing.get_invoice(iid("S-2")).refund_due_cents == 1250


def test_a_refund_the_payment_service_saw_coming(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    p = payment.request_payment("fam-1", "SPORTS", [str(iid("S-1")), str(iid("S-2"))],
                                "parent@example.org")
    billing.cancel_invoice(iid("S-2"), "erreur de tarif")
    deliver(payment, wire_messages(billing))  # this time the payment service knows
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]

    messages = payment_messages(payment)
    confirmed, refund = decoded(messages)[1:]
    pid = str(p.id)
    assert [a["number"] for a in confirmed.data["allocations"]] == ["S-1"]
    assert confirmed.data["amount_cents"] == 3750  # what PayFiP collected
    assert refund.name == "RefundNeeded"
    assert (refund.subject, refund.key) == (f"{pid}/refunds", "fam-1")
    assert refund.id == f"/regie/payment/{pid}/{confirmed.sequence}/refunds" != confirmed.id
    assert refund.notification_id == confirmed.notification_id
    assert refund.data == {
        "payment_id": pid, "family_id": "fam-1", "regie": "SPORTS", "idop": p.idop,
        "refunds": [{"invoice_id": str(iid("S-2")), "number": "S-2", "amount_cents": 1250,
                     "reason": "cancelled"}],
    }
    # Both are applied, each once: the refund is not taken for a repeat of the confirmation.
    assert to_billing(billing, messages) == 3
    assert to_billing(billing, messages) == 0
    assert billing.get_invoice(iid("S-1")).status == PAID
    assert billing.get_invoice(iid("S-2")).status == "cancelled"


def test_a_cancel_racing_the_settlement_is_not_lost(
    any_store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    pay(payment, gateway, "P", "S-1")
    messages = payment_messages(payment)
    read = billing.get_invoice
    raced: list[UUID] = []

    def stale_read(invoice_id: UUID) -> Invoice:
        # The issuer cancels the invoice just after the consumer read it.
        invoice = read(invoice_id)
        if not raced:
            raced.append(invoice_id)
            billing.cancel_invoice(invoice_id, "annulée pendant le paiement")
        return invoice

    monkeypatch.setattr(billing, "get_invoice", stale_read)
    assert to_billing(billing, messages) == 2
    invoice = read(iid("S-1"))
    assert (invoice.status, invoice.refund_due_cents) == ("cancelled", 2500)


def test_the_commands_exist() -> None:
    parser = build_parser()
    assert parser.parse_args(["relay", "payment"]).service == "payment"
    assert parser.parse_args(["consume", "billing"]).service == "billing"


# --- through the broker --------------------------------------------------------------


@pytest.fixture
def parts(tmp_path: Path, kafka: Any) -> Iterator[Parts]:
    p = Parts(kafka_settings(tmp_path, kafka.bootstrap, kafka.kind))
    try:
        yield p
    finally:
        p.stop_all()


@pytest.mark.kafka
def test_payments_settle_invoices_through_the_broker(parts: Parts) -> None:
    families = [f"fam-{i}" for i in range(8)]
    gateway = FakeGateway()
    billing, payment = issued(parts.settings, *(terms(f"B-{i}", family=family, unit=1000 + i)
                                                for i, family in enumerate(families)),
                              gateway=gateway, clock=lambda: NOW)
    deliver(payment, wire_messages(billing))
    billing.cancel_invoice(iid("B-7"), "doublon")  # payment has not heard of it
    for i, family in enumerate(families):
        pay(payment, gateway, "A" if i == 6 else "P", f"B-{i}", family=family)

    def done() -> bool:
        return all(billing.get_invoice(iid(f"B-{i}")).status == PAID for i in range(6)) and (
            billing.get_invoice(iid("B-7")).refund_due_cents == 1007)

    parts.start("consumer")  # before the topic exists: it waits for the relay
    parts.start("relay")
    wait_for(done, what="billing to settle what payment confirmed")
    assert billing.get_invoice(iid("B-6")).amount_due_cents == 1006  # abandoned
    assert sorted(m.data["number"] for m in settled_messages(billing)) == [
        f"B-{i}" for i in range(6)]

    # Restarted consumer, republished history: nothing applied twice.
    events_before = billing.recorder.max_notification_id() or 0
    parts.stop("consumer")
    parts.stop("relay")
    SqlPositions(SqlStore(payment)).set(parts.topic, 0)
    pay(payment, gateway, "V", "B-6", family="fam-6")  # and one more since
    parts.start("relay")
    parts.start("consumer")
    wait_for(lambda: billing.get_invoice(iid("B-6")).status == PAID, what="the late payment")
    wait_for(lambda: SqlPositions(SqlStore(payment)).get(parts.topic)
             == payment.recorder.max_notification_id(), what="the republish")
    time.sleep(1.0)  # give the consumer time to (wrongly) apply a repeat
    assert billing.recorder.max_notification_id() == events_before + 1  # B-6 settled
