"""Payment domain: what the payment service knows of régies and invoices, and what can be paid.

The billing service owns invoices; this side keeps its own event-sourced copy, built from
billing's public events, because every payment rule (one régie, payable online, at most one
payment in flight) is checked here. Pure Python and `eventsourcing.domain` only.
"""

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from events.formats import PARIS
from services.common.errors import Conflict, DomainError, NotFound

NAMESPACE = UUID("0b8f5f7e-3d2c-4f61-a7f1-5d54c0f3b9a2")

OPEN = "open"
CANCELLED = "cancelled"
TRANSFERRED = "transferred"
PAID = "paid"

# Why an invoice still to pay cannot be paid online now.
DEADLINE_PASSED = "online_payment_deadline_passed"
IN_PROGRESS = "payment_in_progress"

# PayFiP takes at least 1 € and less than 100 000 € (eopayment's limits too): 99 999,99 €
# is the most one payment can be.
MIN_PAYMENT_CENTS = 100
MAX_PAYMENT_CENTS = 10_000_000  # excluded


class Regie(Aggregate):
    """A régie as announced by billing: its name and PayFiP account."""

    @staticmethod
    def create_id(code: str) -> UUID:
        return uuid5(NAMESPACE, f"regie/{code}")

    class Registered(Aggregate.Created):
        code: str
        name: str
        numcli: str
        saisie: str
        sequence: int

    @event(Registered)
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

    # The stored events. Their names are stored topics (services.payment.domain:Invoice.X):
    # renaming one needs eventsourcing.utils.register_topic for the old name, and a change
    # of fields a class_version and an upcast_vN_vM, so that the history stays readable.
    class Registered(Aggregate.Created):
        invoice_id: str
        regie: str
        number: str
        family_id: str
        label: str
        issued_on: date
        payable_until: date
        due_on: date
        amount_cents: int
        sequence: int

    class Reserved(Aggregate.Event):
        payment_id: str

    class Released(Aggregate.Event):
        payment_id: str

    class Paid(Aggregate.Event):
        payment_id: str
        amount_cents: int
        paid_at: str
        resultrans: str

    class SettledUpstream(Aggregate.Event):
        payment_id: str
        sequence: int

    class Cancelled(Aggregate.Event):
        reason: str
        sequence: int

    class Transferred(Aggregate.Event):
        reference: str | None
        sequence: int

    @event(Registered)
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

    def check_payable(self, today: date) -> None:
        reason = self.why_not_payable(today)
        if reason is not None:
            raise Conflict("invoice_ids", f"invoice {self.number} cannot be paid: {reason}")

    def reserve(self, payment_id: str, today: date) -> None:
        """Hold the invoice for one payment: it can be paid by no other meanwhile."""
        self.check_payable(today)
        self._reserved(payment_id=payment_id)

    @event(Reserved)
    def _reserved(self, payment_id: str) -> None:
        self.payment_id = payment_id

    @event(Released)
    def release(self, payment_id: str) -> None:
        self.payment_id = None

    @event(Paid)
    def pay(self, payment_id: str, amount_cents: int, paid_at: str, resultrans: str) -> None:
        self.amount_due_cents -= amount_cents
        self.payment_id = None
        if self.amount_due_cents <= 0:
            self.status = PAID

    @event(SettledUpstream)
    def settled_upstream(self, payment_id: str, sequence: int) -> None:
        """Billing recorded the payment: normally ours already, so only the sequence moves."""
        self.status = PAID
        self.amount_due_cents = 0
        self.payment_id = None
        self.sequence = sequence

    @event(Cancelled)
    def cancel(self, reason: str, sequence: int) -> None:
        self.status = CANCELLED
        self.sequence = sequence

    @event(Transferred)
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
# Closed, yet PayFiP may still confirm it: P5 past the watch or A can turn into a payment.
REOPENABLE = frozenset({ABANDONED, EXPIRED})
# Payments the reconciler asks PayFiP about: started (maybe stuck) or waiting for a result.
WATCHED = frozenset({STARTED, REQUESTED})

# An idop can be used on PayFiP's page for 15 minutes: past that the invoices may be paid
# again. PayFiP may still answer P5 ("in progress") long after, and then confirm: eopayment
# waits 120 minutes of P5 before calling a payment expired, and takes A within 2 minutes
# of the transaction as still waiting.
RESERVATION_MINUTES = 20.0
PENDING_MINUTES = 120.0
ABANDON_GRACE = timedelta(minutes=2)

# The fields of PayFiP's answer that must be those of the order, and the payment attribute
# each is compared with.
ORDER_FIELDS = {"montant": "amount_cents", "refdet": "refdet", "numcli": "numcli",
                "exer": "exer"}


@dataclass(frozen=True)
class Watch:
    """The two clocks of a payment: how long its invoices stay reserved, how long PayFiP
    may keep it pending before it is called expired."""

    reservation: timedelta = timedelta(minutes=RESERVATION_MINUTES)
    pending: timedelta = timedelta(minutes=PENDING_MINUTES)

    @classmethod
    def of_minutes(cls, reservation: float, pending: float) -> "Watch":
        return cls(timedelta(minutes=reservation), timedelta(minutes=pending))

    @property
    def abandon_grace(self) -> timedelta:
        # Never longer than the watch itself.
        return min(ABANDON_GRACE, self.pending)


def transaction_time(dattrans: str, heurtrans: str) -> datetime:
    """PayFiP's DDMMYYYY and HHMM, local time in Paris; ValueError if malformed."""
    return datetime.strptime(dattrans + heurtrans, "%d%m%Y%H%M").replace(tzinfo=PARIS)


def mismatches(payment: "Payment", answer: dict[str, Any]) -> list[str]:
    """The fields of PayFiP's answer that differ from what the payment asked for."""
    wrong = []
    for name, attribute in ORDER_FIELDS.items():
        given = answer.get(name)
        if given is None or str(given).strip() != str(getattr(payment, attribute)):
            wrong.append(name)
    return wrong

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

    # The stored events; see Invoice's about renaming and versioning them.
    class Started(Aggregate.Created):
        family_id: str
        regie: str
        numcli: str
        saisie: str
        email: str
        refdet: str
        exer: str
        objet: str
        allocations: list[dict[str, Any]]
        amount_cents: int

    class Requested(Aggregate.Event):
        idop: str
        answer: dict[str, Any]

    class AnswerReceived(Aggregate.Event):
        answer: dict[str, Any]

    class AnswerMismatched(Aggregate.Event):
        fields: list[str]
        answer: dict[str, Any]

    class ReservationEnded(Aggregate.Event):
        reason: str

    class RequestFailed(Aggregate.Event):
        code: str
        message: str

    class Confirmed(Aggregate.Event):
        # v2 has ``late``. Version 1 is stored both with it (written before the version
        # was counted) and without it (written before the field): the latter were never late.
        class_version = 2

        resultrans: str
        numauto: str
        paid_at: str
        answer: dict[str, Any]
        allocations: list[dict[str, Any]]
        refunds: list[dict[str, Any]]
        late: bool = False

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("late", False)

    class Refused(Aggregate.Event):
        resultrans: str
        answer: dict[str, Any]

    class Abandoned(Aggregate.Event):
        resultrans: str
        answer: dict[str, Any]

    class Expired(Aggregate.Event):
        reason: str
        answer: dict[str, Any]

    @classmethod
    def start(
        cls,
        family_id: str,
        regie: str,
        invoice_ids: Sequence[str],
        email: str,
        now: datetime,
        token: str,
        find_regie: Callable[[str], Regie | None],
        find_invoice: Callable[[str], Invoice | None],
    ) -> "Payment":
        """A payment of the family's ``invoice_ids``, all of one régie, for what they owe,
        with the invoices reserved for it; ``token`` makes its refdet unique."""
        known = find_regie(regie)
        if known is None:
            raise DomainError("regie", f"unknown régie {regie!r}")
        if len(set(invoice_ids)) != len(invoice_ids):
            raise DomainError("invoice_ids", "an invoice is listed twice")
        today = now.astimezone(PARIS).date()
        invoices: list[Invoice] = []
        for invoice_id in invoice_ids:
            invoice = find_invoice(invoice_id)
            # Another family's invoice is answered exactly like a missing one.
            if invoice is None or invoice.family_id != family_id:
                raise NotFound("invoice_ids", f"no invoice {invoice_id} for this family")
            if invoice.regie != regie:
                raise DomainError(
                    "invoice_ids", f"invoice {invoice.number} belongs to régie {invoice.regie}: "
                    "each régie is paid separately")
            invoice.check_payable(today)
            invoices.append(invoice)
        amount = sum(i.amount_due_cents for i in invoices)
        if amount < MIN_PAYMENT_CENTS:
            raise DomainError("invoice_ids", "PayFiP takes payments of 1,00 € or more")
        if amount >= MAX_PAYMENT_CENTS:
            raise DomainError("invoice_ids", "PayFiP takes payments under 100 000,00 €")
        payment = cls(
            family_id=family_id, regie=regie, numcli=known.numcli, saisie=known.saisie,
            email=email, refdet=make_refdet(regie, now.astimezone(PARIS), token),
            exer=str(now.astimezone(PARIS).year),
            objet=clean_objet("Factures " + " ".join(i.number for i in invoices)),
            allocations=[{"invoice_id": str(i.id), "number": i.number,
                          "amount_cents": i.amount_due_cents} for i in invoices],
            amount_cents=amount,
        )
        for invoice in invoices:
            invoice.reserve(payment_id=str(payment.id), today=today)
        return payment

    @event(Started)
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
        # The invoices are this payment's until the reservation ends or it closes.
        self.reserved = True
        self.late = False
        self.last_answer: dict[str, Any] | None = None

    @property
    def invoice_ids(self) -> list[str]:
        return [a["invoice_id"] for a in self.allocations]

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    @property
    def is_watched(self) -> bool:
        return self.status in WATCHED

    def may_still_be_paid(self) -> bool:
        """PayFiP's answer can still change what this payment is: ask it again."""
        return self.is_watched or self.status in REOPENABLE

    def reserved_until(self, watch: Watch) -> datetime | None:
        if not self.reserved or not self.is_watched:
            return None
        return self.created_on + watch.reservation

    def reservation_over(self, now: datetime, watch: Watch) -> bool:
        until = self.reserved_until(watch)
        return until is not None and now > until

    def is_stuck(self, now: datetime, watch: Watch) -> bool:
        """Started, PayFiP's idop never recorded, and the reservation over: nobody can pay
        it through us any more."""
        return self.status == STARTED and now > self.created_on + watch.reservation

    def is_overdue(self, now: datetime, watch: Watch) -> bool:
        """P5 for longer than PayFiP takes to decide: it never will."""
        assert self.requested_at is not None
        return now - self.requested_at > watch.pending

    def abandon_is_final(self, transaction_at: datetime, now: datetime, watch: Watch) -> bool:
        """PayFiP's A may still turn into a payment shortly after the transaction."""
        return now - transaction_at > watch.abandon_grace

    def confirmation_is_late(self) -> bool:
        """The invoices were free again, or the payment already closed, when it came."""
        return not self.reserved or self.status in REOPENABLE

    def is_new_answer(self, answer: dict[str, Any]) -> bool:
        return answer != self.last_answer

    @event(Requested)
    def requested(self, idop: str, answer: dict[str, Any]) -> None:
        self.idop = idop
        self.status = REQUESTED
        self.requested_at = self.modified_on

    @event(AnswerReceived)
    def answered(self, answer: dict[str, Any]) -> None:
        """PayFiP answered without an outcome (P5 in progress) or did not answer at all."""
        self.last_answer = answer

    @event(AnswerMismatched)
    def mismatched(self, fields: list[str], answer: dict[str, Any]) -> None:
        """PayFiP's answer names another amount, debt, client or year: nothing is paid,
        and an operator must look (regie anomalies)."""
        self.last_answer = answer

    @event(ReservationEnded)
    def reservation_ended(self, reason: str) -> None:
        """The invoices may be paid again; PayFiP is still asked about this payment."""
        self.reserved = False

    @event(RequestFailed)
    def request_failed(self, code: str, message: str) -> None:
        self.status = FAILED
        self.failure = f"{code}: {message}"
        self.reserved = False

    @event(Confirmed)
    def confirmed(
        self, resultrans: str, numauto: str, paid_at: str, answer: dict[str, Any],
        allocations: list[dict[str, Any]], refunds: list[dict[str, Any]], late: bool = False,
    ) -> None:
        self.status = CONFIRMED
        self.resultrans = resultrans
        self.numauto = numauto
        self.paid_at = paid_at
        self.allocations = allocations
        self.refunds = refunds
        self.late = late
        self.reserved = False
        self.last_answer = answer

    @event(Refused)
    def refused(self, resultrans: str, answer: dict[str, Any]) -> None:
        self.status = REFUSED
        self.resultrans = resultrans
        self.reserved = False
        self.last_answer = answer

    @event(Abandoned)
    def abandoned(self, resultrans: str, answer: dict[str, Any]) -> None:
        self.status = ABANDONED
        self.resultrans = resultrans
        self.reserved = False
        self.last_answer = answer

    @event(Expired)
    def expired(self, reason: str, answer: dict[str, Any]) -> None:
        self.status = EXPIRED
        self.failure = reason
        self.reserved = False
        self.last_answer = answer


class IdopIndex(Aggregate):
    """Finds a payment by PayFiP's idop, the only thing a notification carries."""

    @staticmethod
    def create_id(idop: str) -> UUID:
        return uuid5(NAMESPACE, f"idop/{idop}")

    class Indexed(Aggregate.Created):
        idop: str
        payment_id: str

    @event(Indexed)
    def __init__(self, idop: str, payment_id: str) -> None:
        self.payment_id = payment_id
