"""Topic names, their keys and their ordering guarantee."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    producer: str
    key: str
    ordering: str
    event_types: tuple[str, ...]


BILLING_INVOICES = Topic(
    name="billing.invoices",
    producer="billing",
    key="family_id of the invoice; the régie code for RegieOpened",
    ordering="in order per key: a family's invoice events arrive in the order they were stored",
    event_types=(
        "RegieOpened",
        "InvoiceIssued",
        "InvoiceCancelled",
        "InvoiceTransferred",
        "InvoiceSettled",
        "InvoiceCredited",
        "FamilyForgotten",
    ),
)

PAYMENT_PAYMENTS = Topic(
    name="payment.payments",
    producer="payment",
    key="family_id of the payment",
    ordering="in order per key",
    event_types=(
        "PaymentRequested",
        "PaymentConfirmed",
        "PaymentRefused",
        "PaymentAbandoned",
        "PaymentExpired",
        "RefundNeeded",
        "CounterPaymentReceived",
        "CreditApplied",
        "RefundPaid",
        "FamilyForgotten",
    ),
)

AUDIT_CHAIN_HEADS = Topic(
    name="audit.chain-heads",
    producer="billing and payment",
    key="the service whose chain it is: billing or payment",
    ordering="in order per key: a service's heads arrive in the order they were taken",
    event_types=("ChainHead",),
)

TOPICS: dict[str, Topic] = {
    t.name: t for t in (BILLING_INVOICES, PAYMENT_PAYMENTS, AUDIT_CHAIN_HEADS)
}
