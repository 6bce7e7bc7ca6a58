"""Payment domain: what the payment service knows of régies and invoices, and what can be paid.

The billing service owns invoices; this side keeps its own event-sourced copy, built from
billing's public events, because every payment rule (one régie, payable online, at most one
payment in flight) is checked here. Pure Python and `eventsourcing.domain` only.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = UUID("0b8f5f7e-3d2c-4f61-a7f1-5d54c0f3b9a2")

OPEN = "open"
CANCELLED = "cancelled"
TRANSFERRED = "transferred"
PAID = "paid"

# Why an invoice still to pay cannot be paid online now.
DEADLINE_PASSED = "online_payment_deadline_passed"


class Regie(Aggregate):
    """A régie as announced by billing: its name and PayFiP account."""

    @staticmethod
    def create_id(code: str) -> UUID:
        return uuid5(NAMESPACE, f"regie/{code}")

    @event("Registered")
    def __init__(self, code: str, name: str, numcli: str, saisie: str, sequence: int) -> None:
        self.code = code
        self.name = name
        self.numcli = numcli
        self.saisie = saisie
        self.sequence = sequence


class Invoice(Aggregate):
    """An invoice as announced by billing, with what remains to pay online.

    ``sequence`` is the version of billing's invoice last applied: billing events carry it,
    and one already applied (redelivered or republished) changes nothing.
    """

    @staticmethod
    def create_id(invoice_id: str) -> UUID:
        # The billing id, so that both services name an invoice alike.
        return UUID(invoice_id)

    @event("Registered")
    def __init__(
        self,
        invoice_id: str,
        regie: str,
        number: str,
        family_id: str,
        label: str,
        issued_on: date,
        payable_until: date,
        due_on: date,
        amount_cents: int,
        sequence: int,
    ) -> None:
        self.regie = regie
        self.number = number
        self.family_id = family_id
        self.label = label
        self.issued_on = issued_on
        self.payable_until = payable_until
        self.due_on = due_on
        self.amount_cents = amount_cents
        self.amount_due_cents = amount_cents
        self.status = OPEN
        self.sequence = sequence

    def is_new(self, sequence: int) -> bool:
        return sequence > self.sequence

    @event("Cancelled")
    def cancel(self, reason: str, sequence: int) -> None:
        self.status = CANCELLED
        self.sequence = sequence

    @event("Transferred")
    def transfer(self, reference: str | None, sequence: int) -> None:
        self.status = TRANSFERRED
        self.sequence = sequence


@dataclass(frozen=True)
class ToPayLine:
    id: str
    regie: str
    number: str
    label: str
    issued_on: date
    payable_until: date
    amount_due_cents: int
    total_cents: int

    def why_not_payable(self, today: date) -> str | None:
        if today > self.payable_until:
            return DEADLINE_PASSED
        return None


def summarise(lines: list[ToPayLine], names: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per régie: what the family has to pay there."""
    by_regie: dict[str, dict[str, Any]] = {}
    for line in lines:
        entry = by_regie.setdefault(
            line.regie,
            {"code": line.regie, "name": names.get(line.regie, line.regie), "count": 0,
             "total_cents": 0},
        )
        entry["count"] += 1
        entry["total_cents"] += line.amount_due_cents
    return [by_regie[code] for code in sorted(by_regie)]
