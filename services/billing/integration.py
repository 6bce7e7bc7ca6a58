"""Billing's stored events as public messages on ``billing.invoices``."""

from typing import Any

import events
from services.billing.application import BillingApp
from services.billing.domain import Erasure, Invoice, Regie
from services.common.messaging.outbox import Outgoing, ToWire

SOURCE = "/regie/billing"


def family_forgotten(event: Any, common: dict[str, Any], topic: str) -> Outgoing:
    """An erasure's record on the wire: the family and when, nothing personal."""
    value = events.encode(
        "FamilyForgotten", {"family_id": event.family_id, "forgotten_at": event.timestamp},
        subject=event.family_id, key=event.family_id, **common,
    )
    return Outgoing(topic, event.family_id, value)


def make_to_wire(app: BillingApp, topic: str) -> ToWire:
    def to_wire(event: Any, notification_id: int) -> list[Outgoing]:
        common = {
            "id": f"{SOURCE}/{event.originator_id}/{event.originator_version}",
            "source": SOURCE,
            "time": event.timestamp,
            "notification_id": notification_id,
            "sequence": event.originator_version,
        }
        if isinstance(event, Regie.Opened):
            data = {k: getattr(event, k) for k in ("code", "name", "numcli", "saisie")}
            value = events.encode(
                "RegieOpened", data, subject=event.code, key=event.code, **common
            )
            return [Outgoing(topic, event.code, value)]
        if isinstance(event, Erasure.Recorded):
            return [family_forgotten(event, common, topic)]
        if isinstance(event, Invoice.Issued):
            data = {
                "invoice_id": str(event.originator_id),
                **{
                    k: getattr(event, k)
                    for k in (
                        "regie",
                        "number",
                        "family_id",
                        "payer_email",
                        "label",
                        "issued_on",
                        "payable_until",
                        "due_on",
                        "lines",
                        "amount_cents",
                    )
                },
                # v2: the payer as one object; the flat fields above stay for v1 readers.
                "payer": {"family_id": event.family_id, "email": event.payer_email},
            }
            value = events.encode(
                "InvoiceIssued",
                data,
                subject=data["invoice_id"],
                key=event.family_id,
                **common,
            )
            return [Outgoing(topic, event.family_id, value)]
        if isinstance(event, Invoice.Cancelled | Invoice.Transferred):
            invoice: Invoice = app.repository.get(
                event.originator_id, version=event.originator_version
            )
            data = {
                "invoice_id": str(invoice.id),
                "regie": invoice.regie,
                "number": invoice.number,
                "family_id": invoice.family_id,
            }
            if isinstance(event, Invoice.Cancelled):
                name, data["reason"] = "InvoiceCancelled", event.reason
            else:
                name, data["reference"] = "InvoiceTransferred", event.reference
            value = events.encode(
                name, data, subject=data["invoice_id"], key=invoice.family_id, **common
            )
            return [Outgoing(topic, invoice.family_id, value)]
        if isinstance(event, Invoice.Settled):
            invoice = app.repository.get(event.originator_id, version=event.originator_version)
            data = {
                "invoice_id": str(invoice.id),
                "regie": invoice.regie,
                "number": invoice.number,
                "family_id": invoice.family_id,
                "payment_id": event.payment_id,
                "amount_cents": event.amount_cents,
                "paid_at": event.paid_at,
            }
            value = events.encode(
                "InvoiceSettled", data, subject=data["invoice_id"], key=invoice.family_id,
                **common,
            )
            return [Outgoing(topic, invoice.family_id, value)]
        if isinstance(event, Invoice.Credited):
            invoice = app.repository.get(event.originator_id, version=event.originator_version)
            data = {
                "invoice_id": str(invoice.id),
                "regie": invoice.regie,
                "number": invoice.number,
                "family_id": invoice.family_id,
                **{k: getattr(event, k) for k in ("credit_note_id", "amount_cents", "reason",
                                                  "applied_cents", "credit_cents", "by")},
            }
            value = events.encode(
                "InvoiceCredited", data, subject=data["invoice_id"], key=invoice.family_id,
                **common,
            )
            return [Outgoing(topic, invoice.family_id, value)]
        # PaidAfterClose stays private: operators see it as refund_due_cents on the invoice;
        # publishing it would be a new event type in the contract.
        return []

    return to_wire
