"""Builders shared by the tests."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from events import decode
from services.billing.application import BillingApp
from services.billing.domain import InvoiceTerms, Line
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import handle_record
from services.common.messaging.memory import MemoryBroker, MemoryPublisher
from services.common.messaging.outbox import Outgoing, ToWire
from services.common.messaging.ports import Ack
from services.common.messaging.positions import MemoryPositions
from services.common.messaging.relay import Relay
from services.common.settings import Settings
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.gateway import Gateway

TOPIC = "billing.invoices"
# Where PayFiP would call the payment API back, in the tests that need no real address.
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")


def invoice_payload(number: str = "F-1", family: str = "fam-1", regie: str = "SPORTS",
                    quantity: int = 1, unit: int = 2500, **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "regie": regie,
        "number": number,
        "family_id": family,
        "payer_email": "parent@example.org",
        "label": "Vacances sportives",
        "issued_on": "2025-02-26",
        "payable_until": "2030-12-31",
        "due_on": "2030-12-31",
        "lines": [{"label": "Séjour", "quantity": quantity, "unit_price_cents": unit}],
        "amount_cents": quantity * unit,
    }
    payload.update(overrides)
    return payload


def terms(number: str = "F-1", family: str = "fam-1", regie: str = "SPORTS",
          quantity: int = 1, unit: int = 2500, **overrides: Any) -> InvoiceTerms:
    p = invoice_payload(number, family, regie, quantity, unit)
    values: dict[str, Any] = {
        **p,
        "issued_on": date.fromisoformat(p["issued_on"]),
        "payable_until": date.fromisoformat(p["payable_until"]),
        "due_on": date.fromisoformat(p["due_on"]),
        "lines": tuple(Line(**line) for line in p["lines"]),
    }
    values.update(overrides)
    return InvoiceTerms(**values)


def open_regies(billing: BillingApp) -> None:
    billing.open_regie("SPORTS", "Direction des sports", "000001", "T")
    billing.open_regie("CANTINE", "Restauration scolaire", "000002", "T")


def issued(settings: Settings, *invoices: InvoiceTerms, gateway: Gateway | None = None,
           clock: Callable[[], datetime] | None = None) -> tuple[BillingApp, PaymentApp]:
    """Billing, with its régies open and ``invoices`` issued, and a payment service that has
    not heard of them yet (paying through ``gateway`` at ``clock``'s time, if given)."""
    billing = billing_app(settings)
    payment = payment_app(settings, gateway=gateway, urls=URLS, clock=clock)
    open_regies(billing)
    for invoice in invoices:
        billing.issue_invoice(invoice)
    return billing, payment


class NotedPublisher(MemoryPublisher):
    """The in-memory broker, noting each record in the order the relay published it."""

    def __init__(self, topic: str) -> None:
        super().__init__(broker=MemoryBroker(), topic=topic)
        self.sent: list[tuple[int, bytes]] = []

    def publish(self, messages: list[Outgoing]) -> list[Ack]:
        acks = super().publish(messages)
        self.sent += [(ack.partition, m.value) for ack, m in zip(acks, messages, strict=True)]
        return acks


def relay_messages(app: Any, to_wire: ToWire) -> list[tuple[int, bytes]]:
    """What the relay publishes of ``app``'s whole history, in its order, as (partition,
    value): the real relay, from its first position, over the in-memory broker."""
    # Each message carries its topic; the relay's name only keys its positions.
    publisher = NotedPublisher("relayed")
    relay = Relay(app, to_wire, publisher, MemoryPositions(), name="relayed")
    while relay.run_once():
        pass
    return publisher.sent


def wire_messages(billing: BillingApp, topic: str = TOPIC) -> list[tuple[int, bytes]]:
    """What billing's relay would publish on ``topic``."""
    return relay_messages(billing, make_to_wire(billing, topic))


def deliver(payment: PaymentApp, messages: list[tuple[int, bytes]], topic: str = TOPIC) -> int:
    applied = sum(
        handle_record(topic, partition, value, payment.apply_billing_event,
                      payment.dead_letters, offset)
        for offset, (partition, value) in enumerate(messages)
    )
    payment.refresh()
    return applied


def decoded(messages: list[tuple[int, bytes]]) -> list[Any]:
    return [decode(value) for _, value in messages]
