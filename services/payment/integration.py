"""The payment service's stored events as public messages on ``payment.payments``.

Only a payment's PayFiP life is public: its request and its outcome. The service's copies
of billing's régies and invoices, a payment's start (nothing asked of PayFiP yet), a
request PayFiP refused (no idop, nothing to pay) and the idop index stay private.
"""

from datetime import datetime
from typing import Any

import events
from services.common.messaging.outbox import Outgoing, ToWire
from services.payment.application import PaymentApp
from services.payment.domain import Payment

SOURCE = "/regie/payment"


def _allocations(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The aggregate's dicts may carry more than the contract; send what it names.
    return [
        {"invoice_id": a["invoice_id"], "number": a["number"], "amount_cents": a["amount_cents"]}
        for a in items
    ]


def make_to_wire(app: PaymentApp, topic: str) -> ToWire:
    def to_wire(event: Any, notification_id: int) -> list[Outgoing]:
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
