"""Billing domain: régies and their invoices. Pure Python and `eventsourcing.domain` only."""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from events.formats import NUMCLI as PAYFIP_NUMCLI
from events.formats import exact
from services.common.errors import Conflict, DomainError, NotFound

__all__ = ["Conflict", "DomainError", "Erasure", "Invoice", "InvoiceTerms", "Line", "NotFound",
           "Regie"]

NAMESPACE = UUID("6f1c1d2e-8a53-4b0e-9d57-2f1b1a6c0e41")
SAISIES = ("T", "X", "W")
NUMCLI = re.compile(exact(PAYFIP_NUMCLI))
MAX_AMOUNT_CENTS = 10_000_000_000


def _name_uuid(prefix: str) -> Callable[[str], UUID]:
    """uuid5(NAMESPACE, prefix + name), with the namespace and prefix hashed once
    (uuid5 is the SHA-1 of both)."""
    start = hashlib.sha1(NAMESPACE.bytes + prefix.encode())

    def name_uuid(name: str) -> UUID:
        digest = start.copy()
        digest.update(name.encode())
        return UUID(bytes=digest.digest()[:16], version=5)

    return name_uuid


_invoice_uuid = _name_uuid("invoice/")


class Regie(Aggregate):
    """A municipal service's cash office, with its own PayFiP account (numcli)."""

    @staticmethod
    def create_id(code: str) -> UUID:
        return uuid5(NAMESPACE, f"regie/{code}")

    class Opened(Aggregate.Created):
        code: str
        name: str
        numcli: str
        saisie: str

    @event(Opened)
    def __init__(self, code: str, name: str, numcli: str, saisie: str) -> None:
        self.code = code
        self.name = name
        self.numcli = numcli
        self.saisie = saisie

    @classmethod
    def open(cls, code: str, name: str, numcli: str, saisie: str) -> "Regie":
        if not NUMCLI.match(numcli):
            raise DomainError("numcli", "must be exactly 6 digits")
        if saisie not in SAISIES:
            raise DomainError("saisie", "must be T (test), X (activation) or W (production)")
        if not name.strip():
            raise DomainError("name", "must not be blank")
        return cls(code=code, name=name, numcli=numcli, saisie=saisie)

    def as_terms(self) -> dict[str, str]:
        return {"code": self.code, "name": self.name, "numcli": self.numcli, "saisie": self.saisie}


@dataclass(frozen=True)
class Line:
    label: str
    quantity: int
    unit_price_cents: int

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
        }


# Read alone, "due_on before payable_until" looks backwards: say what each date is.
DUE_BEFORE_DEADLINE = ("must not be before payable_until: the due date comes on or after "
                       "the end of online payment")


@dataclass(frozen=True)
class InvoiceTerms:
    """What an issuer asks for; two requests with equal terms are the same invoice."""

    regie: str
    number: str
    family_id: str
    payer_email: str
    label: str
    issued_on: date
    payable_until: date
    due_on: date
    lines: tuple[Line, ...]
    amount_cents: int

    def check(self) -> None:
        if not self.lines:
            raise DomainError("lines", "an invoice has at least one line")
        # One pass: checked for every invoice of a batch.
        total = 0
        for i, line in enumerate(self.lines):
            if line.quantity <= 0:
                raise DomainError(f"lines.{i}.quantity", "must be positive")
            total += line.total_cents
        if self.amount_cents <= 0:
            raise DomainError("amount_cents", "must be positive")
        if self.amount_cents > MAX_AMOUNT_CENTS:
            raise DomainError("amount_cents", f"must not exceed {MAX_AMOUNT_CENTS}")
        if total != self.amount_cents:
            raise DomainError(
                "amount_cents", f"is {self.amount_cents} but the lines add up to {total}"
            )
        if self.payable_until < self.issued_on:
            raise DomainError("payable_until", "must not be before issued_on")
        if self.due_on < self.payable_until:
            raise DomainError("due_on", DUE_BEFORE_DEADLINE)


ISSUED = "issued"
CANCELLED = "cancelled"
TRANSFERRED = "transferred"
PAID = "paid"


class Invoice(Aggregate):
    """A facture of one régie to one family (the payer)."""

    @staticmethod
    def create_id(regie: str, number: str) -> UUID:
        # = uuid5(NAMESPACE, f"invoice/{regie}/{number}"), a third cheaper.
        return _invoice_uuid(f"{regie}/{number}")

    # The stored events. Their names are stored topics (services.billing.domain:Invoice.X):
    # renaming one needs eventsourcing.utils.register_topic for the old name, and a change
    # of fields a class_version and an upcast_vN_vM, so that the history stays readable.
    class Issued(Aggregate.Created):
        # Stored sealed with the family's key (services.common.privacy): erasable.
        personal_fields = ("payer_email",)

        regie: str
        number: str
        family_id: str
        payer_email: str
        label: str
        issued_on: date
        payable_until: date
        due_on: date
        lines: list[dict[str, Any]]
        amount_cents: int

    class Cancelled(Aggregate.Event):
        reason: str

    class Transferred(Aggregate.Event):
        reference: str | None

    class Settled(Aggregate.Event):
        payment_id: str
        amount_cents: int
        paid_at: datetime

    class PaidAfterClose(Aggregate.Event):
        payment_id: str
        amount_cents: int

    class Credited(Aggregate.Event):
        """A credit note (avoir): ``applied_cents`` lowered what was due, ``credit_cents``
        is the family's credit in the régie (the invoice was paid already)."""

        credit_note_id: str
        amount_cents: int
        reason: str
        applied_cents: int
        credit_cents: int
        by: str

    # Set on an invoice's first credit note only, so that the state of invoices without
    # one stays what earlier versions read from the same history.
    credited_cents = 0
    credit_notes: tuple[dict[str, Any], ...] = ()

    @event(Issued)
    def __init__(
        self,
        regie: str,
        number: str,
        family_id: str,
        payer_email: str,
        label: str,
        issued_on: date,
        payable_until: date,
        due_on: date,
        lines: list[dict[str, Any]],
        amount_cents: int,
    ) -> None:
        self.regie = regie
        self.number = number
        self.family_id = family_id
        self.payer_email = payer_email
        self.label = label
        self.issued_on = issued_on
        self.payable_until = payable_until
        self.due_on = due_on
        self.lines = lines
        self.amount_cents = amount_cents
        self.amount_due_cents = amount_cents
        self.status = ISSUED
        self.cancel_reason: str | None = None
        self.transfer_reference: str | None = None
        # Money received for this invoice that it no longer owes: paid after it was
        # cancelled or transferred, or paid twice. Operators refund or reallocate it.
        self.refund_due_cents = 0
        self.paid_at: datetime | None = None
        # Every payment applied here, settled or not: a confirmation is redelivered
        # (Kafka is at least once) and must then change nothing.
        self.payment_ids: list[str] = []

    @classmethod
    def issue(cls, terms: InvoiceTerms) -> "Invoice":
        terms.check()
        return cls(
            regie=terms.regie,
            number=terms.number,
            family_id=terms.family_id,
            payer_email=terms.payer_email,
            label=terms.label,
            issued_on=terms.issued_on,
            payable_until=terms.payable_until,
            due_on=terms.due_on,
            lines=[line.as_dict() for line in terms.lines],
            amount_cents=terms.amount_cents,
        )

    @classmethod
    def issue_new(cls, terms: InvoiceTerms, invoice_id: UUID) -> "Invoice":
        """What ``issue`` makes, the same event and the same state, for a batch.

        ``issue`` goes through eventsourcing's generic construction (the metaclass call,
        parameter filtering by signature, a frozen dataclass set field by field), which
        was a third of a batch's time. This builds the ``Issued`` event as that path
        does, then applies it as replaying it would (``__base_init__``, then ``__init__``).
        ``invoice_id`` is ``create_id(terms.regie, terms.number)``, which the batch has.
        """
        terms.check()
        fields: dict[str, Any] = {
            "regie": terms.regie,
            "number": terms.number,
            "family_id": terms.family_id,
            "payer_email": terms.payer_email,
            "label": terms.label,
            "issued_on": terms.issued_on,
            "payable_until": terms.payable_until,
            "due_on": terms.due_on,
            "lines": [line.as_dict() for line in terms.lines],
            "amount_cents": terms.amount_cents,
        }
        timestamp = cls.Issued.create_timestamp()
        issued = object.__new__(cls.Issued)
        # The dataclass's field order, which is the stored state's key order.
        object.__setattr__(issued, "__dict__", {
            "originator_id": invoice_id, "originator_version": cls.INITIAL_VERSION,
            "timestamp": timestamp, "originator_topic": _INVOICE_TOPIC, **fields})
        invoice = object.__new__(cls)
        invoice.__base_init__(invoice_id, cls.INITIAL_VERSION, timestamp)
        cls.__init__(invoice, **fields)
        invoice.pending_events.append(issued)
        return invoice

    def terms(self) -> InvoiceTerms:
        return InvoiceTerms(
            regie=self.regie,
            number=self.number,
            family_id=self.family_id,
            payer_email=self.payer_email,
            label=self.label,
            issued_on=self.issued_on,
            payable_until=self.payable_until,
            due_on=self.due_on,
            lines=tuple(Line(**line) for line in self.lines),
            amount_cents=self.amount_cents,
        )

    def _require_open(self, action: str) -> None:
        if self.status != ISSUED:
            raise Conflict("status", f"cannot {action} an invoice that is {self.status}")

    def cancel(self, reason: str) -> None:
        if not reason.strip():
            raise DomainError("reason", "must not be blank")
        self._require_open("cancel")
        self._cancelled(reason=reason)

    @event(Cancelled)
    def _cancelled(self, reason: str) -> None:
        self.status = CANCELLED
        self.cancel_reason = reason

    def transfer(self, reference: str | None) -> None:
        self._require_open("transfer")
        self._transferred(reference=reference)

    @event(Transferred)
    def _transferred(self, reference: str | None) -> None:
        self.status = TRANSFERRED
        self.transfer_reference = reference

    def settle(self, payment_id: str, amount_cents: int, paid_at: datetime) -> None:
        """Apply a payment confirmed by PayFiP; once per payment, whatever the invoice's state.

        The money is in the régie's account already: an invoice that no longer owes it
        (cancelled, transferred, already paid) records it as to be refunded rather than
        refusing it, so that it is never lost.
        """
        if amount_cents <= 0:
            raise DomainError("amount_cents", "must be positive")
        if payment_id in self.payment_ids:
            return
        if self.status != ISSUED:
            self._paid_after_close(payment_id=payment_id, amount_cents=amount_cents)
        else:
            self._settled(payment_id=payment_id, amount_cents=amount_cents, paid_at=paid_at)

    @event(Settled)
    def _settled(self, payment_id: str, amount_cents: int, paid_at: datetime) -> None:
        # The payment service asks for exactly the amount due; should it ever be more,
        # the excess is refundable rather than a negative amount due.
        applied = min(amount_cents, self.amount_due_cents)
        self.amount_due_cents -= applied
        self.refund_due_cents += amount_cents - applied
        self.payment_ids.append(payment_id)
        self.paid_at = paid_at
        if self.amount_due_cents == 0:
            self.status = PAID

    @event(PaidAfterClose)
    def _paid_after_close(self, payment_id: str, amount_cents: int) -> None:
        self.refund_due_cents += amount_cents
        self.payment_ids.append(payment_id)

    def credit(self, amount_cents: int, reason: str, by: str) -> dict[str, Any]:
        """Issue a credit note on this invoice; return it.

        On an invoice still to pay it lowers what is due; what it gives back of an amount
        already paid is the family's credit in the régie.
        """
        if not reason.strip():
            raise DomainError("reason", "must not be blank")
        if self.status in (CANCELLED, TRANSFERRED):
            raise Conflict("status", f"cannot credit an invoice that is {self.status}")
        left = self.amount_cents - self.credited_cents
        if not 0 < amount_cents <= left:
            raise DomainError("amount_cents", f"must be from 1 to {left}: the invoice's "
                              "amount less its credit notes")
        applied = min(amount_cents, self.amount_due_cents) if self.status == ISSUED else 0
        self._credited(credit_note_id=str(uuid4()), amount_cents=amount_cents, reason=reason,
                       applied_cents=applied, credit_cents=amount_cents - applied, by=by)
        return self.credit_notes[-1]

    @event(Credited)
    def _credited(self, credit_note_id: str, amount_cents: int, reason: str,
                  applied_cents: int, credit_cents: int, by: str) -> None:
        self.amount_due_cents -= applied_cents
        self.credited_cents += amount_cents
        self.credit_notes = (*self.credit_notes, {
            "id": credit_note_id, "amount_cents": amount_cents, "reason": reason,
            "applied_cents": applied_cents, "credit_cents": credit_cents, "by": by})
        if self.status == ISSUED and self.amount_due_cents == 0:
            self.status = PAID


# What eventsourcing stores as the aggregate's topic (its get_topic), for issue_new.
_INVOICE_TOPIC = f"{Invoice.__module__}:{Invoice.__qualname__}"


class Erasure(Aggregate):
    """An erasure of a family's personal data, on request or at the end of retention.

    Its event holds no personal data: the erasure itself is destroying the family's key,
    which the application does beside recording this.
    """

    class Recorded(Aggregate.Created):
        family_id: str
        reason: str

    @event(Recorded)
    def __init__(self, family_id: str, reason: str) -> None:
        self.family_id = family_id
        self.reason = reason
