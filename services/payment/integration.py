"""The payment service's stored events as public messages on ``payment.payments``.

Public are a payment's PayFiP life (its request and its outcome) and money taken at the
counter, from which billing settles its invoices as it does from online payments. The
service's copies of billing's régies and invoices, a payment's start (nothing asked of
PayFiP yet), a request PayFiP refused (no idop, nothing to pay), the idop index and the
families' credit stay private.
"""

from datetime import date, datetime
from typing import Any

import events
from services.common.messaging.outbox import Outgoing, ToWire
from services.payment.application import PaymentApp
from services.payment.domain import CounterPayment, Erasure, FamilyCredit, Payment, Refund

SOURCE = "/regie/payment"


def _allocations(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The aggregate's dicts may carry more than the contract; send what it names.
    return [
        {"invoice_id": a["invoice_id"], "number": a["number"], "amount_cents": a["amount_cents"]}
        for a in items
    ]


def _counter_payment(event: CounterPayment.Received, notification_id: int,
                     topic: str) -> Outgoing:
    terms = event.terms
    payment_id = str(event.originator_id)
    value = events.encode(
        "CounterPaymentReceived",
        {"payment_id": payment_id, "family_id": terms["family_id"], "regie": terms["regie"],
         "means": terms["means"], "reference": terms["reference"],
         "amount_cents": terms["amount_cents"],
         "received_on": date.fromisoformat(terms["received_on"]),
         "recorded_at": event.timestamp, "allocations": _allocations(event.allocations),
         "unallocated_cents": event.unallocated_cents, "by": event.by},
        id=f"{SOURCE}/{payment_id}/{event.originator_version}", source=SOURCE,
        time=event.timestamp, subject=payment_id, key=terms["family_id"],
        notification_id=notification_id, sequence=event.originator_version,
    )
    return Outgoing(topic, terms["family_id"], value)


def _credit_applied(event: FamilyCredit.Applied, credit: FamilyCredit, notification_id: int,
                    topic: str) -> Outgoing:
    credit_id = str(event.originator_id)
    # One id per application: billing settles an invoice once per payment id.
    payment_id = f"{credit_id}/{event.originator_version}"
    value = events.encode(
        "CreditApplied",
        {"payment_id": payment_id, "credit_id": credit_id, "family_id": credit.family_id,
         "regie": credit.regie, "applied_at": event.timestamp,
         "allocations": [{"invoice_id": event.invoice_id, "number": event.number,
                          "amount_cents": event.amount_cents}],
         "balance_cents": event.balance_cents, "by": "automatic"},
        id=f"{SOURCE}/{payment_id}", source=SOURCE, time=event.timestamp,
        subject=credit_id, key=credit.family_id, notification_id=notification_id,
        sequence=event.originator_version,
    )
    return Outgoing(topic, credit.family_id, value)


def make_to_wire(app: PaymentApp, topic: str) -> ToWire:
    def to_wire(event: Any, notification_id: int) -> list[Outgoing]:
        if isinstance(event, CounterPayment.Received):
            return [_counter_payment(event, notification_id, topic)]
        if isinstance(event, Erasure.Recorded):
            value = events.encode(
                "FamilyForgotten",
                {"family_id": event.family_id, "forgotten_at": event.timestamp},
                id=f"{SOURCE}/{event.originator_id}/{event.originator_version}", source=SOURCE,
                time=event.timestamp, subject=event.family_id, key=event.family_id,
                notification_id=notification_id, sequence=event.originator_version,
            )
            return [Outgoing(topic, event.family_id, value)]
        if isinstance(event, Refund.Paid):
            refund_id = str(event.originator_id)
            value = events.encode(
                "RefundPaid",
                {"refund_id": refund_id, **{k: getattr(event, k) for k in (
                    "family_id", "regie", "amount_cents", "source", "source_id", "means",
                    "reference", "paid_on", "by")}},
                id=f"{SOURCE}/{refund_id}/{event.originator_version}", source=SOURCE,
                time=event.timestamp, subject=refund_id, key=event.family_id,
                notification_id=notification_id, sequence=event.originator_version,
            )
            return [Outgoing(topic, event.family_id, value)]
        if isinstance(event, FamilyCredit.Applied):
            credit: FamilyCredit = app.repository.get(event.originator_id,
                                                      version=event.originator_version)
            return [_credit_applied(event, credit, notification_id, topic)]
        if not isinstance(
            event,
            Payment.Requested
            | Payment.Confirmed
            | Payment.Refused
            | Payment.Abandoned
            | Payment.Expired,
        ):
            return []
        # The payment as it was right after this event: later events (a retry's idop,
        # say) must not leak into what this message says.
        payment: Payment = app.repository.get(
            event.originator_id, version=event.originator_version
        )
        payment_id = str(payment.id)
        base = {
            "payment_id": payment_id,
            "family_id": payment.family_id,
            "regie": payment.regie,
            "idop": payment.idop,
        }

        def message(name: str, data: dict[str, Any], suffix: str = "") -> Outgoing:
            # Keyed by family, like billing's invoices: a family's events stay in order.
            value = events.encode(
                name,
                data,
                # One stored event may give two messages: the suffix keeps ids unique,
                # as CloudEvents requires per source.
                id=f"{SOURCE}/{event.originator_id}/{event.originator_version}{suffix}",
                source=SOURCE,
                time=event.timestamp,
                # A subject of its own for the refund, so that a consumer tracking
                # positions per subject does not take it for a repeat of the confirmation,
                # which has the same notification id.
                subject=payment_id + suffix,
                key=payment.family_id,
                notification_id=notification_id,
                sequence=event.originator_version,
            )
            return Outgoing(topic, payment.family_id, value)

        if isinstance(event, Payment.Requested):
            return [message("PaymentRequested", {
                **base, "refdet": payment.refdet, "amount_cents": payment.amount_cents,
                "invoices": _allocations(payment.allocations),
            })]
        if isinstance(event, Payment.Confirmed):
            out = [message("PaymentConfirmed", {
                **base, "refdet": payment.refdet, "amount_cents": payment.amount_cents,
                "resultrans": event.resultrans, "numauto": event.numauto,
                "paid_at": datetime.fromisoformat(event.paid_at),
                "allocations": _allocations(event.allocations),
                "late": event.late, "received_at": event.timestamp,
            })]
            if event.refunds:
                refunds = [
                    {**a, "reason": r["reason"]}
                    for a, r in zip(_allocations(event.refunds), event.refunds, strict=True)
                ]
                out.append(message("RefundNeeded", {**base, "refunds": refunds}, "/refunds"))
            return out
        if isinstance(event, Payment.Refused):
            return [message("PaymentRefused", {**base, "resultrans": event.resultrans})]
        if isinstance(event, Payment.Abandoned):
            return [message("PaymentAbandoned", base)]
        return [message("PaymentExpired", {**base, "reason": event.reason})]

    return to_wire
