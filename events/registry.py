"""(event type, version) -> schema, and the chain of upcasters between versions."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema

from events import schemas

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(LookupError):
    pass


@dataclass
class EventType:
    name: str
    topic: str
    versions: dict[int, type[Schema]]
    # upcasters[n] turns the data of version n into the data of version n + 1
    upcasters: dict[int, Upcaster] = field(default_factory=dict)
    _schemas: dict[int, Schema] = field(default_factory=dict, repr=False, compare=False)
    # Other topics that carry it too (FamilyForgotten goes out from both services).
    also_on: tuple[str, ...] = ()

    @property
    def latest(self) -> int:
        return max(self.versions)

    def schema(self, version: int) -> Schema:
        # One instance per version: building a marshmallow schema costs more than using it.
        if version not in self._schemas:
            try:
                self._schemas[version] = self.versions[version]()
            except KeyError:
                raise UnknownEventType(f"{self.name} has no version {version}") from None
        return self._schemas[version]

    def upcast(self, data: dict[str, Any], version: int) -> dict[str, Any]:
        while version < self.latest:
            data = self.upcasters[version](data)
            version += 1
        return data


class Registry:
    def __init__(self, types: list[EventType]) -> None:
        self._types = {t.name: t for t in types}

    def __getitem__(self, name: str) -> EventType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownEventType(f"unknown event type {name!r}") from None

    def __iter__(self) -> Any:
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types


BILLING = "billing.invoices"
PAYMENT = "payment.payments"
AUDIT = "audit.chain-heads"

REGISTRY = Registry(
    [
        EventType("RegieOpened", BILLING, {1: schemas.RegieOpenedV1}),
        EventType(
            "InvoiceIssued",
            BILLING,
            {1: schemas.InvoiceIssuedV1, 2: schemas.InvoiceIssuedV2},
            {1: schemas.invoice_issued_v1_to_v2},
        ),
        EventType("InvoiceCancelled", BILLING, {1: schemas.InvoiceCancelledV1}),
        EventType("InvoiceTransferred", BILLING, {1: schemas.InvoiceTransferredV1}),
        EventType("InvoiceSettled", BILLING, {1: schemas.InvoiceSettledV1}),
        EventType("InvoiceCredited", BILLING, {1: schemas.InvoiceCreditedV1}),
        EventType("PaymentRequested", PAYMENT, {1: schemas.PaymentRequestedV1}),
        EventType(
            "PaymentConfirmed",
            PAYMENT,
            {1: schemas.PaymentConfirmedV1, 2: schemas.PaymentConfirmedV2},
            {1: schemas.payment_confirmed_v1_to_v2},
        ),
        EventType("PaymentRefused", PAYMENT, {1: schemas.PaymentRefusedV1}),
        EventType("PaymentAbandoned", PAYMENT, {1: schemas.PaymentAbandonedV1}),
        EventType("PaymentExpired", PAYMENT, {1: schemas.PaymentExpiredV1}),
        EventType("RefundNeeded", PAYMENT, {1: schemas.RefundNeededV1}),
        EventType("CounterPaymentReceived", PAYMENT, {1: schemas.CounterPaymentReceivedV1}),
        EventType("CreditApplied", PAYMENT, {1: schemas.CreditAppliedV1}),
        EventType("RefundPaid", PAYMENT, {1: schemas.RefundPaidV1}),
        EventType("FamilyForgotten", BILLING, {1: schemas.FamilyForgottenV1},
                  also_on=(PAYMENT,)),
        EventType("ChainHead", AUDIT, {1: schemas.ChainHeadV1}),
    ]
)
