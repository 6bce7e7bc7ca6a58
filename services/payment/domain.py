"""Payment domain: what the payment service knows of régies and invoices, and what can be paid.

The billing service owns invoices; this side keeps its own event-sourced copy, built from
billing's public events, because every payment rule (one régie, payable online, at most one
payment in flight) is checked here. Pure Python and `eventsourcing.domain` only.
"""

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar
from uuid import UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from events.formats import PARIS
from services.common.errors import Conflict, DomainError, NotFound

NAMESPACE = UUID("0b8f5f7e-3d2c-4f61-a7f1-5d54c0f3b9a2")
A = TypeVar("A", bound=Aggregate)

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


def _created(cls: type[A], event_class: type[Aggregate.Created], aggregate_id: UUID,
             fields: dict[str, Any]) -> A:
    """What ``cls(**fields)`` makes, the same event and the same state, for a poll.

    The constructor goes through eventsourcing's generic construction (the metaclass call,
    parameter filtering by signature, a frozen dataclass set field by field), which was a
    sixth of the payment consumer's poll. As billing's ``Invoice.issue_new``, this builds
    the created event as that path does, then applies it as replaying it would
    (``__base_init__``, then ``__init__``). ``fields`` are every field of
    ``event_class`` in its order, which is the stored state's key order.
    """
    timestamp = event_class.create_timestamp()
    created = object.__new__(event_class)
    object.__setattr__(created, "__dict__", {
        "originator_id": aggregate_id, "originator_version": cls.INITIAL_VERSION,
        "timestamp": timestamp, "originator_topic": f"{cls.__module__}:{cls.__qualname__}",
        **fields})
    aggregate = object.__new__(cls)
    aggregate.__base_init__(aggregate_id, cls.INITIAL_VERSION, timestamp)
    cls.__init__(aggregate, **fields)
    aggregate.pending_events.append(created)
    return aggregate


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
        # v2 keeps billing's lines, which the invoice's PDF prints. Invoices registered
        # before have none here (None): their PDF prints the total alone.
        class_version = 2

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
        lines: list[dict[str, Any]] | None = None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            # Nothing to add: the class's None stands for lines not kept, and leaving the
            # state as stored keeps the export of the old history what it was.
            pass

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

    class PaidAtCounter(Aggregate.Event):
        # What is still due after it: a counter payment may pay part of an invoice.
        payment_id: str
        amount_cents: int
        means: str
        received_on: date
        amount_due_cents: int

    class Credited(Aggregate.Event):
        """A credit note of billing's: ``amount_cents`` came off what is due here."""

        credit_note_id: str
        amount_cents: int
        amount_due_cents: int
        sequence: int

    class PaidFromCredit(Aggregate.Event):
        """The family's credit in the régie paid it, in full or in part."""

        credit_id: str
        amount_cents: int
        amount_due_cents: int

    class SettlementAcknowledged(Aggregate.Event):
        """Billing recorded a part payment of ours: the invoice stays open here."""

        payment_id: str
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
        lines: list[dict[str, Any]] | None = None,
    ) -> None:
        self.regie = regie
        if lines is not None:
            self.lines = lines
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

    # Billing's lines, kept from v2 of Registered on; set only then, so that the state of
    # invoices registered before stays what earlier versions read from the same history.
    lines: list[dict[str, Any]] | None = None

    # Paid without PayFiP (at the counter, from the family's credit), which comes back as
    # credit if billing cancels the invoice. Set on the first such payment only, so that
    # the state of other invoices stays what earlier versions read from the same history.
    paid_here_cents = 0

    @classmethod
    def register_new(cls, invoice_id: UUID, issued: Mapping[str, Any], sequence: int
                     ) -> "Invoice":
        """``Invoice(...)`` from billing's InvoiceIssued data, ``invoice_id`` its id
        (``create_id(issued["invoice_id"])``), built as ``_created`` says."""
        return _created(cls, cls.Registered, invoice_id, {
            "invoice_id": issued["invoice_id"], "regie": issued["regie"],
            "number": issued["number"], "family_id": issued["family_id"],
            "label": issued["label"], "issued_on": issued["issued_on"],
            "payable_until": issued["payable_until"], "due_on": issued["due_on"],
            "amount_cents": issued["amount_cents"], "sequence": sequence,
            "lines": [dict(line) for line in issued["lines"]],
        })

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

    def pay_at_counter(self, payment_id: str, amount_cents: int, means: str,
                       received_on: date) -> None:
        """Money taken at the counter for this invoice: at most what it still owes."""
        if self.status != OPEN:
            raise Conflict("invoice_ids", f"invoice {self.number} is {self.status}")
        if self.payment_id is not None:
            # PayFiP may yet confirm the whole amount: paying it here too would take it twice.
            raise Conflict("invoice_ids", f"invoice {self.number} is being paid online")
        if not 0 < amount_cents <= self.amount_due_cents:
            raise DomainError("amount_cents", f"invoice {self.number} owes "
                              f"{self.amount_due_cents}, not {amount_cents}")
        self._paid_at_counter(payment_id=payment_id, amount_cents=amount_cents, means=means,
                              received_on=received_on,
                              amount_due_cents=self.amount_due_cents - amount_cents)

    @event(PaidAtCounter)
    def _paid_at_counter(self, payment_id: str, amount_cents: int, means: str,
                         received_on: date, amount_due_cents: int) -> None:
        self.paid_here_cents += amount_cents
        self.amount_due_cents = amount_due_cents
        if amount_due_cents == 0:
            self.status = PAID

    def credit(self, credit_note_id: str, applied_cents: int, sequence: int) -> int:
        """Take a credit note off what is due; return what it could not take off (paid
        here already, billing not knowing yet): that is the family's credit."""
        here = min(applied_cents, self.amount_due_cents) if self.status == OPEN else 0
        self._credited(credit_note_id=credit_note_id, amount_cents=here,
                       amount_due_cents=self.amount_due_cents - here, sequence=sequence)
        return applied_cents - here

    @event(Credited)
    def _credited(self, credit_note_id: str, amount_cents: int, amount_due_cents: int,
                  sequence: int) -> None:
        self.amount_due_cents = amount_due_cents
        self.sequence = sequence
        if self.status == OPEN and amount_due_cents == 0:
            self.status = PAID

    @event(PaidFromCredit)
    def paid_from_credit(self, credit_id: str, amount_cents: int, amount_due_cents: int
                         ) -> None:
        self.paid_here_cents += amount_cents
        self.amount_due_cents = amount_due_cents
        if amount_due_cents == 0:
            self.status = PAID

    @event(SettlementAcknowledged)
    def settlement_acknowledged(self, payment_id: str, sequence: int) -> None:
        self.sequence = sequence

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


class Reminders(Aggregate):
    """Who to remind of an invoice, and of which online-payment deadlines it was reminded.

    Billing's InvoiceIssued names the payer's e-mail; the payment side keeps it here, apart
    from ``Invoice``, so that the invoice's state and the read models built from it stay
    what earlier versions read from the same history. One reminder per deadline: if the
    deadline moves, the new one gets its own.
    """

    @staticmethod
    def create_id(invoice_id: str) -> UUID:
        return uuid5(NAMESPACE, f"reminders/{invoice_id}")

    class Opened(Aggregate.Created):
        # Stored sealed with the family's key (services.common.privacy): erasable.
        personal_fields = ("payer_email",)

        invoice_id: str
        family_id: str
        payer_email: str

    class Sent(Aggregate.Event):
        """A reminder of ``payable_until`` was handed to the mail server."""

        payable_until: date

    @event(Opened)
    def __init__(self, invoice_id: str, family_id: str, payer_email: str) -> None:
        self.invoice_id = invoice_id
        self.family_id = family_id
        self.payer_email = payer_email
        self.deadlines: list[date] = []

    @classmethod
    def open_new(cls, invoice_id: str, family_id: str, payer_email: str) -> "Reminders":
        """``Reminders(...)`` for a poll, built as ``_created`` says."""
        return _created(cls, cls.Opened, cls.create_id(invoice_id), {
            "invoice_id": invoice_id, "family_id": family_id, "payer_email": payer_email})

    def was_sent_for(self, payable_until: date) -> bool:
        return payable_until in self.deadlines

    @event(Sent)
    def sent(self, payable_until: date) -> None:
        self.deadlines.append(payable_until)


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
        # Stored sealed with the family's key (services.common.privacy): erasable.
        personal_fields = ("email",)

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


# --- the counter: money the régisseur takes in hand ---------------------------------------

# The means of payment a régisseur takes at the counter, as the journal names them.
COUNTER_MEANS = ("cash", "cheque", "cesu", "ancv", "transfer")
# A reference (cheque number, CESU or ANCV voucher numbers, transfer label) is what makes
# a counter payment recognisable when it is entered twice; cash may come without one.
REFERENCE_OPTIONAL = frozenset({"cash"})


@dataclass(frozen=True)
class CounterTerms:
    """What the cashier entered; the same terms again are the same payment."""

    regie: str
    family_id: str
    means: str
    amount_cents: int
    reference: str | None
    received_on: date
    invoice_ids: tuple[str, ...] | None

    def check(self) -> None:
        if self.means not in COUNTER_MEANS:
            raise DomainError("means", f"one of {', '.join(COUNTER_MEANS)}")
        if self.amount_cents <= 0:
            raise DomainError("amount_cents", "must be positive")
        if not (self.reference or "").strip() and self.means not in REFERENCE_OPTIONAL:
            raise DomainError("reference", f"required for {self.means}")
        if self.invoice_ids is not None and len(set(self.invoice_ids)) != len(self.invoice_ids):
            raise DomainError("invoice_ids", "an invoice is listed twice")

    def as_dict(self) -> dict[str, Any]:
        return {"regie": self.regie, "family_id": self.family_id, "means": self.means,
                "amount_cents": self.amount_cents, "reference": self.reference,
                "received_on": self.received_on.isoformat(),
                "invoice_ids": None if self.invoice_ids is None else list(self.invoice_ids)}


def allocate(amount_cents: int, invoices: Sequence[Invoice]) -> tuple[list[dict[str, Any]], int]:
    """Spread an amount over invoices in the order given, each up to what it owes; return
    the allocations and what is left over."""
    allocations = []
    left = amount_cents
    for invoice in invoices:
        if left == 0:
            break
        share = min(left, invoice.amount_due_cents)
        if share > 0:
            allocations.append({"invoice_id": str(invoice.id), "number": invoice.number,
                                "amount_cents": share})
            left -= share
    return allocations, left


def oldest_due_first(invoices: Sequence[Invoice]) -> list[Invoice]:
    return sorted(invoices, key=lambda i: (i.due_on, i.issued_on, i.number))


class CounterPayment(Aggregate):
    """Money a cashier received for a family in one régie: cash, cheque, vouchers, transfer.

    Recorded once per reference: the same reference entered again is the same payment.
    """

    @staticmethod
    def create_id(regie: str, means: str, reference: str | None) -> UUID:
        return uuid5(NAMESPACE, f"counter/{regie}/{means}/{reference}")

    class Received(Aggregate.Created):
        terms: dict[str, Any]
        allocations: list[dict[str, Any]]
        unallocated_cents: int
        by: str

    @event(Received)
    def __init__(self, terms: dict[str, Any], allocations: list[dict[str, Any]],
                 unallocated_cents: int, by: str) -> None:
        self.terms = terms
        self.allocations = allocations
        self.unallocated_cents = unallocated_cents
        self.by = by

    @classmethod
    def receive(cls, terms: CounterTerms, by: str, open_invoices: Sequence[Invoice],
                find_invoice: Callable[[str], Invoice | None]) -> "CounterPayment":
        """The payment, with the invoices it pays paid: those named, or the family's open
        ones of the régie, oldest due date first; money left over is the family's credit."""
        terms.check()
        if terms.invoice_ids is None:
            # Invoices being paid online are passed over: PayFiP may yet take their amount.
            targets = oldest_due_first([i for i in open_invoices if i.payment_id is None])
        else:
            targets = []
            for invoice_id in terms.invoice_ids:
                invoice = find_invoice(invoice_id)
                if invoice is None or invoice.family_id != terms.family_id:
                    raise NotFound("invoice_ids", f"no invoice {invoice_id} for this family")
                if invoice.regie != terms.regie:
                    raise DomainError("invoice_ids",
                                      f"invoice {invoice.number} belongs to régie "
                                      f"{invoice.regie}")
                if invoice.status != OPEN:
                    raise Conflict("invoice_ids", f"invoice {invoice.number} is {invoice.status}")
                if invoice.payment_id is not None:
                    raise Conflict("invoice_ids", f"invoice {invoice.number} is being paid online")
                targets.append(invoice)
        allocations, left = allocate(terms.amount_cents, targets)
        reference = terms.reference if (terms.reference or "").strip() else None
        payment = cls._create(
            cls.Received,
            id=cls.create_id(terms.regie, terms.means, reference) if reference else uuid4(),
            terms=terms.as_dict(), allocations=allocations, unallocated_cents=left, by=by,
        )
        by_id = {str(i.id): i for i in targets}
        for allocation in allocations:
            by_id[allocation["invoice_id"]].pay_at_counter(
                payment_id=str(payment.id), amount_cents=allocation["amount_cents"],
                means=terms.means, received_on=terms.received_on)
        return payment

    @property
    def regie(self) -> str:
        return str(self.terms["regie"])

    @property
    def family_id(self) -> str:
        return str(self.terms["family_id"])

    def same_terms(self, terms: CounterTerms) -> bool:
        return bool(self.terms == terms.as_dict())


class FamilyCredit(Aggregate):
    """What a régie owes a family: money paid beyond what was due, credit notes on paid
    invoices. Its ``balance_cents`` is after each event, so a read model needs no sums."""

    @staticmethod
    @lru_cache(maxsize=4096)
    def create_id(regie: str, family_id: str) -> UUID:
        # Remembered: each new invoice asks for its family's credit twice in a poll (is it
        # there, then what it pays), and each uuid5 was a fiftieth of its CPU per message.
        return uuid5(NAMESPACE, f"credit/{regie}/{family_id}")

    class Opened(Aggregate.Created):
        regie: str
        family_id: str

    class Credited(Aggregate.Event):
        amount_cents: int
        source: str  # counter_payment, credit_note, cancelled_invoice
        source_id: str
        by: str
        balance_cents: int

    @event(Opened)
    def __init__(self, regie: str, family_id: str) -> None:
        self.regie = regie
        self.family_id = family_id
        self.balance_cents = 0

    def credit(self, amount_cents: int, source: str, source_id: str, by: str) -> None:
        if amount_cents <= 0:
            raise DomainError("amount_cents", "must be positive")
        self._credited(amount_cents=amount_cents, source=source, source_id=source_id, by=by,
                       balance_cents=self.balance_cents + amount_cents)

    @event(Credited)
    def _credited(self, amount_cents: int, source: str, source_id: str, by: str,
                  balance_cents: int) -> None:
        self.balance_cents = balance_cents

    class Applied(Aggregate.Event):
        invoice_id: str
        number: str
        amount_cents: int
        balance_cents: int

    def apply_to(self, invoice: Invoice) -> None:
        """Pay what it can of a new invoice of the family in the régie."""
        amount = min(self.balance_cents, invoice.amount_due_cents)
        if amount <= 0 or invoice.status != OPEN:
            return
        self._applied(invoice_id=str(invoice.id), number=invoice.number, amount_cents=amount,
                      balance_cents=self.balance_cents - amount)
        invoice.paid_from_credit(credit_id=str(self.id), amount_cents=amount,
                                 amount_due_cents=invoice.amount_due_cents - amount)

    @event(Applied)
    def _applied(self, invoice_id: str, number: str, amount_cents: int,
                 balance_cents: int) -> None:
        self.balance_cents = balance_cents

    class RefundAsked(Aggregate.Event):
        refund_id: str
        amount_cents: int
        by: str
        balance_cents: int

    def ask_refund(self, amount_cents: int | None, by: str) -> str:
        """Take money off the credit to be paid back to the family; return the refund's id."""
        amount = self.balance_cents if amount_cents is None else amount_cents
        if self.balance_cents <= 0:
            raise Conflict("amount_cents", "the régie owes this family nothing")
        if not 0 < amount <= self.balance_cents:
            raise DomainError("amount_cents", f"must be from 1 to {self.balance_cents}")
        refund_id = str(Refund.create_id("credit", f"{self.id}/{self.version + 1}"))
        self._refund_asked(refund_id=refund_id, amount_cents=amount, by=by,
                           balance_cents=self.balance_cents - amount)
        return refund_id

    @event(RefundAsked)
    def _refund_asked(self, refund_id: str, amount_cents: int, by: str,
                      balance_cents: int) -> None:
        self.balance_cents = balance_cents


# Where a refund comes from: a PayFiP confirmation for invoices closed meanwhile
# (RefundNeeded), or a family's credit it asked back.
ONLINE_PAYMENT = "online_payment"
CREDIT = "credit"
REFUND_MEANS = ("cash", "cheque", "transfer")


class Refund(Aggregate):
    """Money paid back to a family: recorded once, when the régisseur pays it."""

    @staticmethod
    def create_id(source: str, source_id: str) -> UUID:
        return uuid5(NAMESPACE, f"refund/{source}/{source_id}")

    class Paid(Aggregate.Created):
        regie: str
        family_id: str
        amount_cents: int
        source: str
        source_id: str
        means: str
        reference: str | None
        paid_on: date
        by: str

    @event(Paid)
    def __init__(self, regie: str, family_id: str, amount_cents: int, source: str,
                 source_id: str, means: str, reference: str | None, paid_on: date,
                 by: str) -> None:
        self.regie = regie
        self.family_id = family_id
        self.amount_cents = amount_cents
        self.source = source
        self.source_id = source_id
        self.means = means
        self.reference = reference
        self.paid_on = paid_on
        self.by = by

    @classmethod
    def pay(cls, due: dict[str, Any], means: str, reference: str | None, paid_on: date,
            by: str) -> "Refund":
        """Record that a refund due (a row of the refunds list) was paid."""
        if means not in REFUND_MEANS:
            raise DomainError("means", f"one of {', '.join(REFUND_MEANS)}")
        if not (reference or "").strip() and means != "cash":
            raise DomainError("reference", f"required for {means}")
        return cls(regie=due["regie"], family_id=due["family_id"],
                   amount_cents=due["amount_cents"], source=due["source"],
                   source_id=due["source_id"], means=means, reference=reference,
                   paid_on=paid_on, by=by)


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
