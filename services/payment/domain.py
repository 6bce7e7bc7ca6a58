"""Payment domain: what the payment service knows of régies and invoices, and what can be paid.

The billing service owns invoices; this side keeps its own event-sourced copy, built from
billing's public events, because every payment rule (one régie, payable online, at most one
payment in flight) is checked here. Pure Python and `eventsourcing.domain` only.
"""

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
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
IN_PROGRESS = "payment_in_progress"

# PayFiP takes at least 1 € and less than 100 000 € (PAYFIP.md, eopayment's limits).
MIN_PAYMENT_CENTS = 100
MAX_PAYMENT_CENTS = 10_000_000


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
        self.payment_id: str | None = None

    def is_new(self, sequence: int) -> bool:
        return sequence > self.sequence

    def why_not_payable(self, today: date) -> str | None:
        if self.status != OPEN:
            return self.status
        if self.payment_id is not None:
            return IN_PROGRESS
        if today > self.payable_until:
            return DEADLINE_PASSED
        return None

    @event("Reserved")
    def reserve(self, payment_id: str) -> None:
        self.payment_id = payment_id

    @event("Released")
    def release(self, payment_id: str) -> None:
        self.payment_id = None

    @event("Paid")
    def pay(self, payment_id: str, amount_cents: int, paid_at: str, resultrans: str) -> None:
        self.amount_due_cents -= amount_cents
        self.payment_id = None
        if self.amount_due_cents <= 0:
            self.status = PAID

    @event("SettledUpstream")
    def settled_upstream(self, payment_id: str, sequence: int) -> None:
        """Billing recorded the payment: normally ours already, so only the sequence moves."""
        self.status = PAID
        self.amount_due_cents = 0
        self.payment_id = None
        self.sequence = sequence

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
    payment_id: str | None = None

    def why_not_payable(self, today: date) -> str | None:
        if self.payment_id is not None:
            return IN_PROGRESS
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


# --- payments -------------------------------------------------------------------------

STARTED = "started"
REQUESTED = "requested"
FAILED = "failed"
CONFIRMED = "confirmed"
REFUSED = "refused"
ABANDONED = "abandoned"
EXPIRED = "expired"
FINAL = frozenset({FAILED, CONFIRMED, REFUSED, ABANDONED, EXPIRED})

# An idop lives 15 minutes; PayFiP answers P5 ("in progress") until it is paid, and P5
# past that means it never will be. eopayment waits 20 minutes before calling it expired.
IDOP_LIFETIME_SECONDS = 20 * 60

MEANS = {"P": "card", "V": "direct_debit"}

RESULTRANS = {
    "P": CONFIRMED,  # card
    "V": CONFIRMED,  # one-off SEPA direct debit
    "R": REFUSED,  # card refused
    "Z": REFUSED,  # direct debit refused
    "A": ABANDONED,  # cancelled by the payer
}


def make_refdet(regie: str, now: datetime, token: str) -> str:
    """A fresh debt reference per attempt: PayFiP refuses a reused one (6–30 A-Z0-9)."""
    prefix = re.sub(r"[^A-Z0-9]", "", regie.upper())[:8]
    return f"{prefix}{now:%y%m%d%H%M%S}{token.upper()}"[:30]


def clean_objet(text: str) -> str:
    """PayFiP's objet: at most 100 characters of letters, digits and spaces."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    plain = re.sub(r"['-]", " ", plain)
    plain = re.sub(r"[^A-Za-z0-9 ]", "", plain)
    return re.sub(r" +", " ", plain).strip()[:100]


class Payment(Aggregate):
    """One attempt to pay one or several invoices of one régie through PayFiP."""

    @event("Started")
    def __init__(
        self,
        family_id: str,
        regie: str,
        numcli: str,
        saisie: str,
        email: str,
        refdet: str,
        exer: str,
        objet: str,
        allocations: list[dict[str, Any]],
        amount_cents: int,
    ) -> None:
        self.family_id = family_id
        self.regie = regie
        self.numcli = numcli
        self.saisie = saisie
        self.email = email
        self.refdet = refdet
        self.exer = exer
        self.objet = objet
        self.allocations = allocations
        self.amount_cents = amount_cents
        self.status = STARTED
        self.idop: str | None = None
        self.requested_at: datetime | None = None
        self.resultrans: str | None = None
        self.numauto: str | None = None
        self.paid_at: str | None = None
        self.failure: str | None = None
        self.refunds: list[dict[str, Any]] = []

    @property
    def invoice_ids(self) -> list[str]:
        return [a["invoice_id"] for a in self.allocations]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    @event("Requested")
    def requested(self, idop: str, answer: dict[str, Any]) -> None:
        self.idop = idop
        self.status = REQUESTED
        self.requested_at = self.modified_on

    @event("AnswerReceived")
    def answered(self, answer: dict[str, Any]) -> None:
        """PayFiP answered without an outcome (P5 in progress) or did not answer at all."""

    @event("RequestFailed")
    def request_failed(self, code: str, message: str) -> None:
        self.status = FAILED
        self.failure = f"{code}: {message}"

    def is_overdue(self, now: datetime) -> bool:
        assert self.requested_at is not None
        return (now - self.requested_at).total_seconds() > IDOP_LIFETIME_SECONDS

    @event("Confirmed")
    def confirmed(
        self, resultrans: str, numauto: str, paid_at: str, answer: dict[str, Any],
        allocations: list[dict[str, Any]], refunds: list[dict[str, Any]],
    ) -> None:
        self.status = CONFIRMED
        self.resultrans = resultrans
        self.numauto = numauto
        self.paid_at = paid_at
        self.allocations = allocations
        self.refunds = refunds

    @event("Refused")
    def refused(self, resultrans: str, answer: dict[str, Any]) -> None:
        self.status = REFUSED
        self.resultrans = resultrans

    @event("Abandoned")
    def abandoned(self, resultrans: str, answer: dict[str, Any]) -> None:
        self.status = ABANDONED
        self.resultrans = resultrans

    @event("Expired")
    def expired(self, reason: str, answer: dict[str, Any]) -> None:
        self.status = EXPIRED
        self.failure = reason


class IdopIndex(Aggregate):
    """Finds a payment by PayFiP's idop, the only thing a notification carries."""

    @staticmethod
    def create_id(idop: str) -> UUID:
        return uuid5(NAMESPACE, f"idop/{idop}")

    @event("Indexed")
    def __init__(self, idop: str, payment_id: str) -> None:
        self.payment_id = payment_id
