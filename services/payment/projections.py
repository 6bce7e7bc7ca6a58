"""The payment service's read models: to-pay lists, history, payments (for the journal).

Built only from the payment service's own event history, so that they can be dropped and
rebuilt at any time. Each batch of changes commits together with the position it reached,
so a crash or a second runner never applies an event twice. The same SQL runs on SQLite,
PostgreSQL and, for applications on the in-memory event store, an in-memory SQLite.
"""

import gc
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, fields
from datetime import date, datetime
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification
from eventsourcing.utils import resolve_topic

from events.formats import PARIS
from services.common.storage.persistence import SqlStore, unsynced_while, uuid_text
from services.common.storage.transcoder import FastJSONTranscoder
from services.payment import domain

NAME = "to-pay"
# The most events a catch-up reads and applies in one transaction. Larger batches fold
# more of a row's changes into its INSERT (a payment started in one batch and confirmed
# in the next is an UPDATE) and rewrite the tables' pages fewer times: 50,000 took 1-19%
# less CPU than 10,000 (three alternated replays of 200,000 events on SQLite, 7-21% on
# PostgreSQL). A batch's pages and changes are held in memory.
REPLAY_BATCH = 50_000
# Set (1) while the totals per family and régie are left to ``settle``: from a store's
# creation or reset until its first catch-up ends. Counting them per batch costs, over a
# replay, the square of a family's invoices.
RECOUNT = f"{NAME}#recount"
# Raised whenever the tables change shape: a store built by an older version is then
# dropped and rebuilt from the history, which is what event sourcing is for.
VERSION = 10


@dataclass(frozen=True)
class RegieRow:
    code: str
    name: str


# Not frozen: made once per event in a replay, and a frozen dataclass costs three times
# as much to make (a call of object.__setattr__ per field). Nothing changes one once made.
@dataclass
class InvoiceRow:
    id: str
    family_id: str
    regie: str
    number: str
    label: str
    # ISO text, as the tables hold them and the stored states have them.
    issued_on: str
    payable_until: str
    due_on: str
    total_cents: int
    amount_due_cents: int
    status: str
    payment_id: str | None = None
    paid_at: str | None = None
    paid_by: str | None = None  # the means: PayFiP's resultrans, card or direct debit
    paid_by_payment_id: str | None = None  # the payment that paid it
    # Where in the history the invoice was registered and was paid in full: the events
    # its PDF and its certificate attest, which their verification codes name.
    issued_position: int = 0
    paid_position: int | None = None


class RowChange(NamedTuple):
    """Columns to set on an existing row of ``table``.

    A tuple: a replay makes one for most events, and a frozen dataclass cost twice as
    much to make (0.38 against 0.17 µs, timeit). ``values`` is never changed once made.
    """

    table: str
    id: str
    values: dict[str, Any]


class NewRow(NamedTuple):
    """A row made in ``table``: ``values`` has every column of the table, in its order.

    What the state handlers make instead of an ``InvoiceRow`` or ``PaymentRow`` and the
    copy of its fields ``_write`` would merge the later changes of its batch into (a
    microsecond a row, a twentieth of a replay). ``_write`` takes ``values`` over.
    """

    table: str
    id: str
    values: dict[str, Any]


@dataclass  # not frozen, as InvoiceRow
class PaymentRow:
    id: str
    family_id: str
    regie: str
    status: str
    amount_cents: int
    refdet: str
    invoices: str
    started_at: str
    # Taken at the counter: cash, cheque, cesu, ancv, transfer. Online payments have
    # PayFiP's resultrans instead.
    means: str | None = None
    paid_at: str | None = None
    day: str | None = None
    # A counter payment's event in the history: what its receipt attests.
    position: int | None = None
    # Who took the money in or paid it back: the role or the staff member of the event's
    # ``by``; none for what PayFiP took.
    acted_by: str | None = None


@dataclass(frozen=True)
class CreditRow:
    """What a régie owes a family."""

    id: str
    family_id: str
    regie: str
    balance_cents: int = 0


@dataclass(frozen=True)
class AnomalyRow:
    """One PayFiP answer that did not match its payment's order."""

    id: str  # the payment's id and the event's version: recorded once
    payment_id: str


@dataclass(frozen=True)
class NewRefund:
    """A refund due, for the family and régie of ``owner_id``'s row in ``owner_table`` (the
    event asking it does not name them)."""

    id: str
    source: str
    source_id: str
    amount_cents: int
    asked_at: str
    owner_table: str
    owner_id: str


Change = (RegieRow | InvoiceRow | PaymentRow | AnomalyRow | CreditRow | NewRefund | RowChange
          | NewRow)

INVOICE_COLUMNS = tuple(InvoiceRow.__dataclass_fields__)
PAYMENT_COLUMNS = (*PaymentRow.__dataclass_fields__, "idop", "resultrans", "numauto",
                   "closed_at", "late", "refunds", "refund_cents")
NEW_ROW_TABLES = {InvoiceRow: "view_invoices", PaymentRow: "view_payments",
                  AnomalyRow: "view_anomalies", CreditRow: "view_credits"}
_COLUMNS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in NEW_ROW_TABLES}


def _paris_day(moment: datetime | str) -> str:
    at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return at.astimezone(PARIS).date().isoformat()


# What each kind of event changes, by event class. A handler reads the event's fields as
# attributes: from a domain event, or from one a replay made from its stored state
# (``stored_changes``). It gets the originator's id as text and
# the event's place in the history.
Handler = Callable[[Any, str, int], list[Change]]
D = domain


def _regie_registered(e: Any, oid: str, position: int) -> list[Change]:
    return [RegieRow(e.code, e.name)]


def _invoice_registered(e: Any, oid: str, position: int) -> list[Change]:
    return [InvoiceRow(
        id=oid, family_id=e.family_id, regie=e.regie, number=e.number, label=e.label,
        issued_on=e.issued_on.isoformat(), payable_until=e.payable_until.isoformat(),
        due_on=e.due_on.isoformat(), total_cents=e.amount_cents,
        amount_due_cents=e.amount_cents, status=D.OPEN, issued_position=position,
    )]


def _invoice(values: Callable[[Any], dict[str, Any]]) -> Handler:
    def handle(e: Any, oid: str, position: int) -> list[Change]:
        invoice = values(e)
        if invoice.get("status") == D.PAID:
            invoice["paid_position"] = position
        return [RowChange("view_invoices", oid, invoice)]

    return handle


def _payment_started(e: Any, oid: str, position: int) -> list[Change]:
    return [PaymentRow(
        id=oid, family_id=e.family_id, regie=e.regie, status=D.STARTED,
        amount_cents=e.amount_cents, refdet=e.refdet,
        invoices=" ".join(a["number"] for a in e.allocations),
        started_at=e.timestamp.isoformat(),
    )]


def _counter_payment_received(e: Any, oid: str, position: int) -> list[Change]:
    terms = e.terms
    return [PaymentRow(
        id=oid, family_id=terms["family_id"], regie=terms["regie"], status=D.CONFIRMED,
        amount_cents=terms["amount_cents"], refdet=terms["reference"] or "",
        invoices=" ".join(a["number"] for a in e.allocations),
        started_at=e.timestamp.isoformat(), means=terms["means"],
        paid_at=e.timestamp.isoformat(), day=terms["received_on"], position=position,
        acted_by=e.by,
    )]


def _credit_opened(e: Any, oid: str, position: int) -> list[Change]:
    return [CreditRow(id=oid, family_id=e.family_id, regie=e.regie)]


def _credit_balance(e: Any, oid: str, position: int) -> list[Change]:
    return [RowChange("view_credits", oid, {"balance_cents": e.balance_cents})]


def _credit_refund_asked(e: Any, oid: str, position: int) -> list[Change]:
    return [RowChange("view_credits", oid, {"balance_cents": e.balance_cents}),
            NewRefund(id=e.refund_id, source=D.CREDIT, source_id=f"{oid}/{e.originator_version}",
                      amount_cents=e.amount_cents, asked_at=e.timestamp.isoformat(),
                      owner_table="view_credits", owner_id=oid)]


def _refund_paid(e: Any, oid: str, position: int) -> list[Change]:
    return [
        RowChange("view_refunds", oid, {
            "status": "paid", "paid_on": e.paid_on.isoformat(), "means": e.means,
            "reference": e.reference, "paid_by": e.by}),
        # In the day's journal, as money going out.
        PaymentRow(
            id=oid, family_id=e.family_id, regie=e.regie, status=D.CONFIRMED,
            amount_cents=-e.amount_cents, refdet=f"{e.means} {e.reference or ''}".strip(),
            invoices="", started_at=e.timestamp.isoformat(), means="refund",
            paid_at=e.timestamp.isoformat(), day=e.paid_on.isoformat(), acted_by=e.by),
    ]


def _closed(e: Any) -> dict[str, Any]:
    return {"closed_at": e.timestamp.isoformat(), "day": _paris_day(e.timestamp)}


def _payment(values: Callable[[Any], dict[str, Any]]) -> Handler:
    def handle(e: Any, oid: str, position: int) -> list[Change]:
        return [RowChange("view_payments", oid, values(e))]

    return handle


def _payment_confirmed(e: Any, oid: str, position: int) -> list[Change]:
    changes: list[Change] = [RowChange("view_payments", oid, {
        "status": D.CONFIRMED, "resultrans": e.resultrans, "numauto": e.numauto,
        "paid_at": e.paid_at, "day": _paris_day(e.paid_at),
        "closed_at": e.timestamp.isoformat(),
        "amount_cents": sum(a["amount_cents"] for a in e.allocations)
        + sum(r["amount_cents"] for r in e.refunds),
        # Counted by /metrics: confirmations after the payment was given up on, and
        # invoices paid twice (or cancelled meanwhile) whose money must go back.
        "late": 1 if e.late else 0, "refunds": len(e.refunds),
        "refund_cents": sum(r["amount_cents"] for r in e.refunds)})]
    if e.refunds:
        changes.append(NewRefund(
            id=str(D.Refund.create_id(D.ONLINE_PAYMENT, oid)), source=D.ONLINE_PAYMENT,
            source_id=oid, amount_cents=sum(r["amount_cents"] for r in e.refunds),
            asked_at=e.timestamp.isoformat(), owner_table="view_payments", owner_id=oid))
    return changes


def _answer_mismatched(e: Any, oid: str, position: int) -> list[Change]:
    return [AnomalyRow(id=f"{oid}#{e.originator_version}", payment_id=oid)]


HANDLERS: dict[type, Handler] = {
    D.Regie.Registered: _regie_registered,
    D.Invoice.Registered: _invoice_registered,
    D.Invoice.Cancelled: _invoice(lambda e: {"status": D.CANCELLED}),
    D.Invoice.Transferred: _invoice(lambda e: {"status": D.TRANSFERRED}),
    D.Invoice.Reserved: _invoice(lambda e: {"payment_id": e.payment_id}),
    D.Invoice.Released: _invoice(lambda e: {"payment_id": None}),
    # Whole invoices only, for now: what was due is paid.
    D.Invoice.Paid: _invoice(lambda e: {
        "status": D.PAID, "amount_due_cents": 0, "payment_id": None,
        "paid_at": e.paid_at, "paid_by": e.resultrans, "paid_by_payment_id": e.payment_id}),
    D.Invoice.SettledUpstream: _invoice(lambda e: {
        "status": D.PAID, "amount_due_cents": 0, "payment_id": None,
        "paid_by_payment_id": e.payment_id}),
    D.Invoice.PaidAtCounter: _invoice(lambda e: {"amount_due_cents": e.amount_due_cents} | (
        {"status": D.PAID, "paid_at": e.received_on.isoformat(), "paid_by": e.means,
         "paid_by_payment_id": e.payment_id} if e.amount_due_cents == 0 else {})),
    D.Invoice.Credited: _invoice(lambda e: {"amount_due_cents": e.amount_due_cents} | (
        {"status": D.PAID} if e.amount_cents and e.amount_due_cents == 0 else {})),
    D.Invoice.PaidFromCredit: _invoice(lambda e: {"amount_due_cents": e.amount_due_cents} | (
        {"status": D.PAID, "paid_at": e.timestamp.isoformat(), "paid_by": "credit",
         "paid_by_payment_id": e.credit_id} if e.amount_due_cents == 0 else {})),
    D.Payment.Started: _payment_started,
    D.CounterPayment.Received: _counter_payment_received,
    D.FamilyCredit.Opened: _credit_opened,
    D.FamilyCredit.Credited: _credit_balance,
    D.FamilyCredit.Applied: _credit_balance,
    D.FamilyCredit.RefundAsked: _credit_refund_asked,
    D.Refund.Paid: _refund_paid,
    D.Payment.Requested: _payment(lambda e: {"status": D.REQUESTED, "idop": e.idop}),
    D.Payment.RequestFailed: _payment(lambda e: {"status": D.FAILED, **_closed(e)}),
    D.Payment.Confirmed: _payment_confirmed,
    D.Payment.Refused: _payment(lambda e: {"status": D.REFUSED, "resultrans": e.resultrans,
                                           **_closed(e)}),
    D.Payment.Abandoned: _payment(lambda e: {"status": D.ABANDONED,
                                             "resultrans": e.resultrans, **_closed(e)}),
    D.Payment.Expired: _payment(lambda e: {"status": D.EXPIRED, **_closed(e)}),
    D.Payment.AnswerMismatched: _answer_mismatched,
}
_handlers: dict[type, Handler | None] = {}


# A second handler for the most frequent classes, reading the stored state as orjson
# parses it: registered values are still their {"_type_", "_data_"} dicts, whose text is
# what the value's isoformat gives, which is all the rows want. It skips the walk that
# makes dates and datetimes (a fifth of a replay) and the event object. A value it cannot
# take as the live handler would read it (an integer orjson read as a float, an
# unexpected shape) raises ValueError, and the replay then goes the live way. Each is
# checked against its live handler, over stored histories, by the replay tests. ``_invoice``
# and ``_payment`` make either kind: their ``values`` read the event or the state.
_ISO = frozenset({"date_iso", "datetime_iso"})


def _iso(value: Any) -> str:
    if type(value) is dict and len(value) == 2 and value.get("_type_") in _ISO:
        text = value["_data_"]
        if type(text) is str:
            return text
    raise ValueError(f"not a stored date or datetime: {value!r}")


def _int(value: Any) -> int:
    if type(value) is int:
        return value
    raise ValueError(f"not an integer: {value!r}")


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    raise ValueError(f"not text: {value!r}")


# The rows of the two state handlers that make one, as ``NewRow``s: every column, the
# defaults of ``InvoiceRow`` and ``PaymentRow`` and the payment's ``_EXTRA`` included.
def _state_invoice_registered(s: Any, oid: str, position: int) -> list[Change]:
    amount = _int(s["amount_cents"])
    return [NewRow("view_invoices", oid, {
        "id": oid, "family_id": s["family_id"], "regie": s["regie"],
        "number": s["number"], "label": s["label"],
        "issued_on": _iso(s["issued_on"]), "payable_until": _iso(s["payable_until"]),
        "due_on": _iso(s["due_on"]), "total_cents": amount, "amount_due_cents": amount,
        "status": D.OPEN, "payment_id": None, "paid_at": None, "paid_by": None,
        "paid_by_payment_id": None, "issued_position": position, "paid_position": None,
    })]


def _state_payment_started(s: Any, oid: str, position: int) -> list[Change]:
    return [NewRow("view_payments", oid, {
        "id": oid, "family_id": s["family_id"], "regie": s["regie"],
        "status": D.STARTED, "amount_cents": _int(s["amount_cents"]),
        "refdet": s["refdet"],
        "invoices": " ".join(a["number"] for a in s["allocations"]),
        "started_at": _iso(s["timestamp"]), "means": None, "paid_at": None, "day": None,
        "position": None, "acted_by": None, "idop": None, "resultrans": None,
        "numauto": None, "closed_at": None, "late": 0, "refunds": 0, "refund_cents": 0,
    })]


def _state_closed(s: Any) -> dict[str, Any]:
    at = _iso(s["timestamp"])
    return {"closed_at": at, "day": _paris_day(at)}


def _state_payment_confirmed(s: Any, oid: str, position: int) -> list[Change]:
    allocated = sum(_int(a["amount_cents"]) for a in s["allocations"])
    refunds = s["refunds"]
    refunded = sum(_int(r["amount_cents"]) for r in refunds)
    at = _iso(s["timestamp"])
    changes: list[Change] = [RowChange("view_payments", oid, {
        "status": D.CONFIRMED, "resultrans": s["resultrans"], "numauto": s["numauto"],
        "paid_at": s["paid_at"], "day": _paris_day(_text(s["paid_at"])), "closed_at": at,
        "amount_cents": allocated + refunded,
        "late": 1 if s["late"] else 0, "refunds": len(refunds), "refund_cents": refunded})]
    if refunds:
        changes.append(NewRefund(
            id=str(D.Refund.create_id(D.ONLINE_PAYMENT, oid)), source=D.ONLINE_PAYMENT,
            source_id=oid, amount_cents=refunded, asked_at=at,
            owner_table="view_payments", owner_id=oid))
    return changes


STATE_HANDLERS: dict[type, Handler] = {
    D.Invoice.Registered: _state_invoice_registered,
    D.Invoice.Cancelled: _invoice(lambda s: {"status": D.CANCELLED}),
    D.Invoice.Transferred: _invoice(lambda s: {"status": D.TRANSFERRED}),
    D.Invoice.Reserved: _invoice(lambda s: {"payment_id": s["payment_id"]}),
    D.Invoice.Released: _invoice(lambda s: {"payment_id": None}),
    D.Invoice.Paid: _invoice(lambda s: {
        "status": D.PAID, "amount_due_cents": 0, "payment_id": None,
        "paid_at": s["paid_at"], "paid_by": s["resultrans"],
        "paid_by_payment_id": s["payment_id"]}),
    D.Payment.Started: _state_payment_started,
    D.Payment.Requested: _payment(lambda s: {"status": D.REQUESTED, "idop": s["idop"]}),
    D.Payment.RequestFailed: _payment(lambda s: {"status": D.FAILED,
                                                       **_state_closed(s)}),
    D.Payment.Confirmed: _state_payment_confirmed,
    D.Payment.Refused: _payment(lambda s: {
        "status": D.REFUSED, "resultrans": s["resultrans"], **_state_closed(s)}),
    D.Payment.Abandoned: _payment(lambda s: {
        "status": D.ABANDONED, "resultrans": s["resultrans"], **_state_closed(s)}),
    D.Payment.Expired: _payment(lambda s: {"status": D.EXPIRED, **_state_closed(s)}),
}


def handler_of(cls: type) -> Handler | None:
    """The handler of an event class (or of the nearest class it derives from); None for
    the events that change nothing here, which a replay then need not even decode."""
    try:
        return _handlers[cls]
    except KeyError:
        found = next((HANDLERS[c] for c in cls.__mro__ if c in HANDLERS), None)
        _handlers[cls] = found
        return found


def changes_for(event: Any, position: int = 0) -> list[Change]:
    """What one payment-side domain event changes in the read models; ``position`` is the
    event's place in the history."""
    handler = handler_of(type(event))
    return [] if handler is None else handler(event, str(event.originator_id), position)


class ToPayStore(Protocol):
    # Whether applying a batch mostly waits on a database server: a long catch-up then
    # reads and decodes the next batch meanwhile (``_WriteBehind``).
    remote: bool

    def position(self) -> int: ...

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        """Apply and move from ``expected`` to ``position`` atomically; False if another
        runner moved first (nothing applied)."""

    def settle(self) -> None:
        """Bring up to date what a catch-up from the start leaves for its end: the totals
        per family and régie, counted once from the invoices rather than per batch."""

    def open_lines(self, family_id: str, regie: str | None = None) -> list[domain.ToPayLine]: ...

    def regie_names(self) -> dict[str, str]: ...

    def open_invoice_ids(self, payable_from: date, payable_until: date) -> list[str]:
        """The open invoices whose online-payment deadline is between the two days."""


    def totals(self, family_id: str) -> list[dict[str, Any]]:
        """Per régie, the family's open invoices: ``regie``, ``count``, ``total_cents``;
        kept as the invoices change, so reading it costs the régies, not the invoices."""

    def summary(self, family_id: str) -> list[dict[str, Any]]:
        """``totals`` with each régie's ``name``, in one query: what GET to-pay answers."""

    def history(self, family_id: str, limit: int | None = None,
                after: list[str] | None = None) -> list[dict[str, Any]]:
        """Newest issued first, each row with its ``regie_name``; ``limit`` rows from after
        the row keyed ``after`` (``history_key``)."""

    def open_page(self, family_id: str, regie: str, limit: int,
                  after: list[str] | None = None) -> list[domain.ToPayLine]:
        """``open_lines`` of one régie, ``limit`` of them after the one keyed ``after``
        ([issued_on, number])."""

    def payments(self, regie: str, day: date) -> list[dict[str, Any]]: ...

    def watched_payments(self) -> list[dict[str, Any]]:
        """Payments PayFiP may still decide, or stuck before it was asked."""

    def figures(self) -> list[dict[str, Any]]:
        """Per régie and status: how many payments, late confirmations, refunds needed
        (count and cents) and anomalies; for /metrics."""

    def reset(self) -> None:
        """Forget everything, position included."""

    def credits(self, family_id: str) -> list[dict[str, Any]]:
        """The régies that owe the family something, and how much."""

    def refunds(self, status: str | None = None, regie: str | None = None,
                refund_id: str | None = None) -> list[dict[str, Any]]:
        """Refunds due or paid, oldest asked first."""

    def snapshot(self) -> dict[str, Any]:
        """Every table as plain data, for comparing a rebuild with the live one."""

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """One invoice as the history lists it."""

    def counter_payment(self, payment_id: str) -> dict[str, Any] | None:
        """One payment taken at the counter, as the journal lists it."""

    def attested(self, kind: str, position: int) -> dict[str, Any] | None:
        """The invoice (kind ``invoice`` or ``certificate``) or counter payment (``receipt``)
        whose document attests the event at ``position``."""


# Every column a new row of each table gets, and the value of those its change leaves out
# (the table's defaults): a row made and changed in one batch is inserted as it ends up.
_ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    NEW_ROW_TABLES[cls]: _COLUMNS[cls] for cls in NEW_ROW_TABLES}
_ROW_COLUMNS["view_payments"] = PAYMENT_COLUMNS
_EXTRA: dict[str, dict[str, Any]] = {table: {} for table in _ROW_COLUMNS}
_EXTRA["view_payments"] = {"idop": None, "resultrans": None, "numauto": None,
                           "closed_at": None, "late": 0, "refunds": 0, "refund_cents": 0}
_EXTRA_OF = {cls: _EXTRA[table] for cls, table in NEW_ROW_TABLES.items()}
_CHANGED_TABLES = (*_ROW_COLUMNS, "view_refunds")


def as_new_row(row: InvoiceRow | PaymentRow | AnomalyRow | CreditRow) -> NewRow:
    """The row as a ``NewRow``: its fields, and the defaults of its table's other
    columns."""
    kind = type(row)
    return NewRow(NEW_ROW_TABLES[kind], row.id, {**_EXTRA_OF[kind], **vars(row)})


def _write(c: Any, changes: list[Change]) -> None:
    """Apply ``changes`` as one ``executemany`` per table and kind of statement.

    Applying them one by one in order gives the same rows: a row made in this batch takes
    the later changes of the batch before it is inserted; a row made before gets each of
    its columns' last value in the batch (changes to different rows commute); refunds are
    inserted from their owner's row, whose family and régie never change, before the
    changes to them. The rows are copied from their ``__dict__``: they hold only flat
    values, which ``asdict`` would deep-copy for nothing; a ``NewRow``'s values are taken
    as they are.
    """
    regies: dict[str, str] = {}
    # The rows made in this batch, by table: every table a change may name, so that a
    # change finds its table without a test (none is made in view_refunds here).
    new: dict[str, dict[str, dict[str, Any]]] = {table: {} for table in _CHANGED_TABLES}
    refunds: dict[str, dict[str, NewRefund]] = {}
    updates: dict[tuple[str, str], dict[str, Any]] = {}
    for change in changes:
        if type(change) is RowChange:
            table, row_id, values = change
            pending = new[table].get(row_id)
            if pending is not None:
                pending.update(values)
            elif values:
                key = table, row_id
                known = updates.get(key)
                if known is None:
                    updates[key] = dict(values)
                else:
                    known.update(values)
        elif type(change) is NewRow:
            rows = new[change.table]
            if change.id not in rows:
                rows[change.id] = change.values
        elif isinstance(change, (InvoiceRow, PaymentRow, AnomalyRow, CreditRow)):
            rows = new[NEW_ROW_TABLES[type(change)]]
            if change.id not in rows:  # as ON CONFLICT DO NOTHING would
                rows[change.id] = as_new_row(change).values
        elif isinstance(change, RegieRow):
            regies[change.code] = change.name
        elif isinstance(change, NewRefund):
            refunds.setdefault(change.owner_table, {}).setdefault(change.id, change)
    if regies:
        c.executemany("INSERT INTO {schema}view_regies (code, name) VALUES (?, ?) "
                      "ON CONFLICT (code) DO UPDATE SET name = excluded.name",
                      list(regies.items()))
    for table, rows in new.items():
        if not rows:
            continue
        columns = _ROW_COLUMNS[table]
        c.insert_new(table, columns, list(map(itemgetter(*columns), rows.values())))
    for owner, asked in refunds.items():
        c.executemany(
            "INSERT INTO {schema}view_refunds (id, family_id, regie, amount_cents, source, "
            "source_id, status, asked_at) SELECT ?, family_id, regie, ?, ?, ?, 'due', ? "
            f"FROM {{schema}}{owner} WHERE id = ? ON CONFLICT (id) DO NOTHING",
            [(r.id, r.amount_cents, r.source, r.source_id, r.asked_at, r.owner_id)
             for r in asked.values()])
    # One statement per table and set of columns.
    grouped: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = {}
    for (table, row_id), values in updates.items():
        grouped.setdefault((table, tuple(values)), []).append((*values.values(), row_id))
    for (table, columns), params in grouped.items():
        assignments = ", ".join(f"{k} = ?" for k in columns)
        c.executemany(f"UPDATE {{schema}}{table} SET {assignments} WHERE id = ?", params)


# The indexes that serve the reads, by name.
INDEXES = {
    "view_invoices_family": "view_invoices (family_id, status, regie, issued_on, number)",
    "view_invoices_history": "view_invoices (family_id, issued_on DESC, regie, number)",
    "view_payments_day": "view_payments (regie, day)",
}


def _index(c: Any) -> None:
    for name, on in INDEXES.items():
        c.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {{schema}}{on}")


def _recount_pending(c: Any) -> bool:
    rows = c.query("SELECT position FROM {schema}view_positions WHERE name = ?", (RECOUNT,))
    return bool(rows and rows[0]["position"])


def _recount_pending_read(store: SqlStore) -> bool:
    rows = store.fetchall("SELECT position FROM {schema}view_positions WHERE name = ?",
                          (RECOUNT,))
    return bool(rows and rows[0]["position"])


def made_invoices(changes: Iterable[Change]) -> list[tuple[str, str, str]]:
    """The id, family and régie of each invoice ``changes`` make."""
    made: list[tuple[str, str, str]] = []
    for ch in changes:
        if isinstance(ch, InvoiceRow):
            made.append((ch.id, ch.family_id, ch.regie))
        elif type(ch) is NewRow and ch.table == "view_invoices":
            made.append((ch.id, ch.values["family_id"], ch.values["regie"]))
    return made


def _count_again(c: Any, changes: list[Change]) -> None:
    """Count again the open invoices of each family and régie ``changes`` touched."""
    pairs = {(family, regie) for _, family, regie in made_invoices(changes)}
    rows = c.rows_by_keys(
        "SELECT DISTINCT family_id, regie FROM {schema}view_invoices WHERE id IN ({keys})",
        (ch.id for ch in changes if isinstance(ch, RowChange) and ch.table == "view_invoices"))
    pairs.update((r["family_id"], r["regie"]) for r in rows)
    if not pairs:
        return
    ordered = sorted(pairs)
    if c.store.postgres:
        # The pairs as two arrays, one statement each: psycopg's executemany costs a
        # round of Python per pair, and a drain's poll touches hundreds of families.
        families, regies = [f for f, _ in ordered], [r for _, r in ordered]
        c.execute("DELETE FROM {schema}view_totals t "
                  "USING unnest(?::text[], ?::text[]) AS p (family_id, regie) "
                  "WHERE t.family_id = p.family_id AND t.regie = p.regie", (families, regies))
        c.execute(
            "INSERT INTO {schema}view_totals (family_id, regie, count, total_cents) "
            "SELECT i.family_id, i.regie, COUNT(*), SUM(i.amount_due_cents) "
            "FROM unnest(?::text[], ?::text[]) AS p (family_id, regie) "
            "JOIN {schema}view_invoices i ON i.family_id = p.family_id AND i.regie = p.regie "
            f"WHERE i.status = '{domain.OPEN}' GROUP BY i.family_id, i.regie",
            (families, regies))
        return
    c.executemany("DELETE FROM {schema}view_totals WHERE family_id = ? AND regie = ?", ordered)
    c.executemany(
        "INSERT INTO {schema}view_totals (family_id, regie, count, total_cents) "
        "SELECT family_id, regie, COUNT(*), SUM(amount_due_cents) FROM {schema}view_invoices "
        f"WHERE family_id = ? AND regie = ? AND status = '{domain.OPEN}' "
        "GROUP BY family_id, regie", ordered)


def history_key(row: dict[str, Any]) -> list[str]:
    """Where a page of the history ends, as ``history`` takes it."""
    return [row["issued_on"], row["regie"], row["number"]]


def _line(r: dict[str, Any]) -> domain.ToPayLine:
    return domain.ToPayLine(
        id=r["id"], regie=r["regie"], number=r["number"], label=r["label"],
        issued_on=date.fromisoformat(r["issued_on"]),
        payable_until=date.fromisoformat(r["payable_until"]),
        amount_due_cents=int(r["amount_due_cents"]), total_cents=int(r["total_cents"]),
        payment_id=r.get("payment_id"),
    )


def _order(lines: Iterable[domain.ToPayLine]) -> list[domain.ToPayLine]:
    return sorted(lines, key=lambda line: (line.regie, line.issued_on, line.number))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if k.endswith("_cents") and v is not None else v) for k, v in row.items()}


class SqlToPayStore:
    """The read models in the payment service's own database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.remote = store.postgres
        self.create()
        if self._version() != VERSION:
            self.reset()

    def _version(self) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}view_positions WHERE name = ?", (f"{NAME}#version",)
        )
        return int(rows[0]["position"]) if rows else 0

    def create(self) -> None:
        with self.store.transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_regies "
                      "(code TEXT PRIMARY KEY, name TEXT NOT NULL)")
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}view_invoices ("
                "id TEXT PRIMARY KEY, family_id TEXT NOT NULL, regie TEXT NOT NULL, "
                "number TEXT NOT NULL, label TEXT NOT NULL, issued_on TEXT NOT NULL, "
                "payable_until TEXT NOT NULL, due_on TEXT NOT NULL, "
                "total_cents BIGINT NOT NULL, amount_due_cents BIGINT NOT NULL, "
                "status TEXT NOT NULL, payment_id TEXT, paid_at TEXT, paid_by TEXT, "
                "paid_by_payment_id TEXT, issued_position BIGINT NOT NULL DEFAULT 0, "
                "paid_position BIGINT)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}view_payments ("
                "id TEXT PRIMARY KEY, family_id TEXT NOT NULL, regie TEXT NOT NULL, "
                "status TEXT NOT NULL, amount_cents BIGINT NOT NULL, refdet TEXT NOT NULL, "
                "invoices TEXT NOT NULL, started_at TEXT NOT NULL, idop TEXT, "
                "resultrans TEXT, numauto TEXT, paid_at TEXT, day TEXT, closed_at TEXT, "
                "late INTEGER NOT NULL DEFAULT 0, refunds INTEGER NOT NULL DEFAULT 0, "
                "refund_cents BIGINT NOT NULL DEFAULT 0, means TEXT, position BIGINT, "
                "acted_by TEXT)"
            )
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_refunds ("
                      "id TEXT PRIMARY KEY, family_id TEXT NOT NULL, regie TEXT NOT NULL, "
                      "amount_cents BIGINT NOT NULL, source TEXT NOT NULL, "
                      "source_id TEXT NOT NULL, status TEXT NOT NULL, asked_at TEXT NOT NULL, "
                      "paid_on TEXT, means TEXT, reference TEXT, paid_by TEXT)")
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_credits ("
                      "id TEXT PRIMARY KEY, family_id TEXT NOT NULL, regie TEXT NOT NULL, "
                      "balance_cents BIGINT NOT NULL)")
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_totals ("
                      "family_id TEXT NOT NULL, regie TEXT NOT NULL, count BIGINT NOT NULL, "
                      "total_cents BIGINT NOT NULL, PRIMARY KEY (family_id, regie))")
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_anomalies "
                      "(id TEXT PRIMARY KEY, payment_id TEXT NOT NULL)")
            c.execute("CREATE TABLE IF NOT EXISTS {schema}view_positions "
                      "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)")
            c.execute(
                "INSERT INTO {schema}view_positions (name, position) VALUES (?, 0), (?, ?), "
                "(?, 1) ON CONFLICT (name) DO NOTHING",
                (NAME, f"{NAME}#version", VERSION, RECOUNT),
            )
            _index(c)

    def reset(self) -> None:
        with self.store.transaction() as c:
            for table in ("view_regies", "view_invoices", "view_payments", "view_anomalies",
                          "view_credits", "view_refunds", "view_totals", "view_positions"):
                c.execute(f"DROP TABLE IF EXISTS {{schema}}{table}")
        self.create()
        # Empty, the tables fill up faster without the indexes that only reads use; the
        # catch-up from the start makes them at its end (``settle``), from sorted rows.
        with self.store.transaction() as c:
            for name in INDEXES:
                c.execute(f"DROP INDEX IF EXISTS {{schema}}{name}")

    def position(self) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}view_positions WHERE name = ?", (NAME,)
        )
        return int(rows[0]["position"]) if rows else 0

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        with self.store.transaction() as c:
            moved = c.execute(
                "UPDATE {schema}view_positions SET position = ? WHERE name = ? AND position = ?",
                (position, NAME, expected),
            )
            if moved != 1:
                return False
            _write(c, changes)
            # Read after the position's row is held, so that a recount committing meanwhile
            # is seen (and then this batch is counted here), or waits for this one.
            if not _recount_pending(c):
                _count_again(c, changes)
        return True

    def settle(self) -> None:
        if not _recount_pending_read(self.store):
            return
        with self.store.transaction() as c:
            # Holds the position's row, as apply does: no batch commits half counted.
            c.execute("UPDATE {schema}view_positions SET position = position WHERE name = ?",
                      (NAME,))
            if not _recount_pending(c):
                return
            c.execute("DELETE FROM {schema}view_totals")
            c.execute(
                "INSERT INTO {schema}view_totals (family_id, regie, count, total_cents) "
                "SELECT family_id, regie, COUNT(*), SUM(amount_due_cents) "
                f"FROM {{schema}}view_invoices WHERE status = '{domain.OPEN}' "
                "GROUP BY family_id, regie")
            _index(c)
            c.execute("UPDATE {schema}view_positions SET position = 0 WHERE name = ?",
                      (RECOUNT,))

    def open_lines(self, family_id: str, regie: str | None = None) -> list[domain.ToPayLine]:
        query = "SELECT * FROM {schema}view_invoices WHERE family_id = ? AND status = ?"
        params: tuple[Any, ...] = (family_id, domain.OPEN)
        if regie is not None:
            query += " AND regie = ?"
            params += (regie,)
        return _order(_line(r) for r in self.store.fetchall(query, params))

    def open_invoice_ids(self, payable_from: date, payable_until: date) -> list[str]:
        rows = self.store.fetchall(
            "SELECT id FROM {schema}view_invoices WHERE status = ? "
            "AND payable_until BETWEEN ? AND ? ORDER BY payable_until, regie, number",
            (domain.OPEN, payable_from.isoformat(), payable_until.isoformat()),
        )
        return [r["id"] for r in rows]

    def totals(self, family_id: str) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT regie, count, total_cents FROM {schema}view_totals WHERE family_id = ? "
            "ORDER BY regie", (family_id,))
        return [_plain(r) for r in rows]

    def summary(self, family_id: str) -> list[dict[str, Any]]:
        # One statement, so one read of one snapshot: the names and the totals agree.
        rows = self.store.fetchall(
            "SELECT t.regie, COALESCE(r.name, t.regie) AS name, t.count, t.total_cents "
            "FROM {schema}view_totals t LEFT JOIN {schema}view_regies r ON r.code = t.regie "
            "WHERE t.family_id = ? ORDER BY t.regie", (family_id,))
        return [_plain(r) for r in rows]

    def regie_names(self) -> dict[str, str]:
        rows = self.store.fetchall("SELECT code, name FROM {schema}view_regies")
        return {r["code"]: r["name"] for r in rows}

    def history(self, family_id: str, limit: int | None = None,
                after: list[str] | None = None) -> list[dict[str, Any]]:
        # The régie's name joined in: a page is one statement.
        query = ("SELECT i.*, COALESCE(r.name, i.regie) AS regie_name "
                 "FROM {schema}view_invoices i LEFT JOIN {schema}view_regies r "
                 "ON r.code = i.regie WHERE family_id = ?")
        params: tuple[Any, ...] = (family_id,)
        if after is not None:
            # Keyset: after the row keyed (issued_on, regie, number) in this order.
            issued_on, regie, number = [*after, "", "", ""][:3]
            query += (" AND (issued_on < ? OR (issued_on = ? AND (regie > ? OR "
                      "(regie = ? AND number > ?))))")
            params += (issued_on, issued_on, regie, regie, number)
        query += " ORDER BY issued_on DESC, regie, number"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [_plain(r) for r in self.store.fetchall(query, params)]

    def open_page(self, family_id: str, regie: str, limit: int,
                  after: list[str] | None = None) -> list[domain.ToPayLine]:
        query = ("SELECT * FROM {schema}view_invoices WHERE family_id = ? AND status = ? "
                 "AND regie = ?")
        params: tuple[Any, ...] = (family_id, domain.OPEN, regie)
        if after is not None:
            issued_on, number = [*after, "", ""][:2]
            query += " AND (issued_on > ? OR (issued_on = ? AND number > ?))"
            params += (issued_on, issued_on, number)
        query += f" ORDER BY issued_on, number LIMIT {int(limit)}"
        return [_line(r) for r in self.store.fetchall(query, params)]

    def payments(self, regie: str, day: date) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT * FROM {schema}view_payments WHERE regie = ? AND day = ? "
            "ORDER BY COALESCE(paid_at, closed_at), id", (regie, day.isoformat())
        )
        return [_plain(r) for r in rows]

    def watched_payments(self) -> list[dict[str, Any]]:
        statuses = sorted(domain.WATCHED)
        rows = self.store.fetchall(
            "SELECT id, idop, started_at FROM {schema}view_payments WHERE status IN "
            f"({', '.join('?' for _ in statuses)}) ORDER BY started_at", tuple(statuses)
        )
        return [dict(r) for r in rows]

    def figures(self) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT p.regie, p.status, COUNT(*) AS payments, SUM(p.late) AS late, "
            "SUM(p.refunds) AS refunds, SUM(p.refund_cents) AS refund_cents, "
            "SUM(COALESCE(a.n, 0)) AS anomalies FROM {schema}view_payments p "
            "LEFT JOIN (SELECT payment_id, COUNT(*) AS n FROM {schema}view_anomalies "
            "GROUP BY payment_id) a ON a.payment_id = p.id "
            # Refunds paid sit in the table for the journal: they are not payments.
            "WHERE COALESCE(p.means, '') <> 'refund' "
            "GROUP BY p.regie, p.status ORDER BY p.regie, p.status"
        )
        return [{k: v if k in ("regie", "status") else int(v or 0) for k, v in r.items()}
                for r in rows]

    def snapshot(self) -> dict[str, Any]:
        def table(name: str) -> dict[str, Any]:
            rows = self.store.fetchall(f"SELECT * FROM {{schema}}{name} ORDER BY id")
            return {r["id"]: _plain(r) for r in rows}

        return {
            "regies": dict(sorted(self.regie_names().items())),
            "invoices": table("view_invoices"),
            "payments": table("view_payments"),
            "anomalies": table("view_anomalies"),
            "credits": table("view_credits"),
            "refunds": table("view_refunds"),
            "totals": [_plain(r) for r in self.store.fetchall(
                "SELECT * FROM {schema}view_totals ORDER BY family_id, regie")],
        }

    def refunds(self, status: str | None = None, regie: str | None = None,
                refund_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM {schema}view_refunds WHERE 1 = 1"
        params: tuple[Any, ...] = ()
        for column, value in (("status", status), ("regie", regie), ("id", refund_id)):
            if value is not None:
                query += f" AND {column} = ?"
                params += (value,)
        return [_plain(r) for r in self.store.fetchall(query + " ORDER BY asked_at, id",
                                                        params)]

    def credits(self, family_id: str) -> list[dict[str, Any]]:
        rows = self.store.fetchall(
            "SELECT regie, balance_cents FROM {schema}view_credits WHERE family_id = ? "
            "AND balance_cents <> 0 ORDER BY regie", (family_id,))
        return [_plain(r) for r in rows]


    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        rows = self.store.fetchall("SELECT * FROM {schema}view_invoices WHERE id = ?",
                                   (invoice_id,))
        return _plain(rows[0]) if rows else None

    def counter_payment(self, payment_id: str) -> dict[str, Any] | None:
        rows = self.store.fetchall(
            "SELECT * FROM {schema}view_payments WHERE id = ? AND position IS NOT NULL",
            (payment_id,))
        return _plain(rows[0]) if rows else None

    def attested(self, kind: str, position: int) -> dict[str, Any] | None:
        table, column = {"invoice": ("view_invoices", "issued_position"),
                         "certificate": ("view_invoices", "paid_position"),
                         "receipt": ("view_payments", "position")}[kind]
        rows = self.store.fetchall(
            f"SELECT * FROM {{schema}}{table} WHERE {column} = ?", (position,))
        return _plain(rows[0]) if rows else None


class MemoryToPayStore(SqlToPayStore):
    """The same read models in a private in-memory SQLite database."""

    def __init__(self) -> None:
        super().__init__(SqlStore.in_memory())


# How many originators' ids ``stored_changes`` keeps written: a batch's worth.
_TEXTS_KEPT = REPLAY_BATCH


def stored_changes(app: Any) -> Callable[[Any], list[Change]]:
    """``changes_for`` of a stored event (a notification of ``app``'s history), read
    straight from its stored state.

    The event is made as the application's mapper makes it, less two steps no read model
    needs: its personal fields stay sealed (opening them costs a key look-up per event),
    and its originator's id stays the text the handlers want. Events that change nothing
    here are not even decoded. One stored at an older version of its class goes through
    the mapper, whose upcasting brings it to the current version. The classes with a
    ``STATE_HANDLERS`` entry are read by it from the parsed state, when it can.
    """
    mapper = app.mapper
    transcoder = mapper.transcoder
    fast = isinstance(transcoder, FastJSONTranscoder)
    decode = transcoder.reader() if fast else transcoder.decode
    cipher, compressor = mapper.cipher, mapper.compressor
    new = object.__new__
    parse = orjson.loads
    # Per stored topic: its class, the class's handler, its state handler (with the
    # orjson reader only) and its current version.
    kinds: dict[str, tuple[type, Handler | None, Handler | None, int]] = {}
    # The originators' ids as the handlers write them, by the id as stored: most
    # originators have several events, close together in the history.
    texts: dict[Any, str] = {}

    def changes(n: Any) -> list[Change]:
        try:
            cls, handler, plain, version = kinds[n.topic]
        except KeyError:
            cls = resolve_topic(n.topic)
            handler, version = handler_of(cls), getattr(cls, "class_version", 1)
            plain = STATE_HANDLERS.get(cls) if fast else None
            kinds[n.topic] = cls, handler, plain, version
        if handler is None:
            return []
        stored = n.originator_id
        oid = texts.get(stored)
        if oid is None:
            if len(texts) >= _TEXTS_KEPT:
                texts.clear()
            oid = texts[stored] = uuid_text(stored)
        data = n.state
        if cipher is not None:
            data = cipher.decrypt(data)
        if compressor is not None:
            data = compressor.decompress(data)
        if plain is not None:
            try:
                state = parse(data)
                if state.get("class_version", 1) == version:
                    return plain(state, oid, n.id)
            except (ValueError, KeyError, TypeError):
                pass  # read the live way, which reads it or says why not
        state = decode(data)
        if state.pop("class_version", 1) != version:
            event = mapper.to_domain_event(_notification(n))
            return handler(event, str(event.originator_id), n.id)
        state["originator_id"] = oid
        state["originator_version"] = n.originator_version
        event = new(cls)
        object.__setattr__(event, "__dict__", state)
        return handler(event, oid, n.id)

    return changes


@dataclass(frozen=True)
class Recorded:
    """Events one transaction committed, in order, and the notification ids they got."""

    ids: Sequence[int]
    events: Sequence[Any]


def _apply_recorded(store: ToPayStore, recorded: Recorded) -> int:
    """Apply ``recorded``'s events as they are in memory, instead of reading them back,
    when they are exactly what the history holds next: the store's position is the id
    just before the first of theirs, and their ids follow each other without a gap.
    Nothing else can then lie between the position and their last id, which ``apply``
    checks and moves in one transaction. Return how many were applied; 0 when not sure
    (then the history is read, as always).

    They give the rows reading them back gives: each is the object that was stored, at
    its class's current version (nothing to upcast), its dates and numbers the values
    their stored text is read into, and no handler reads a sealed field
    (tests/integration/test_poll_rows.py compares the two, and with a replay)."""
    ids, events = recorded.ids, recorded.events
    count = len(ids)
    if not count or count != len(events) or list(ids) != list(range(ids[0], ids[0] + count)):
        return 0
    position = store.position()
    if position != ids[0] - 1:
        return 0
    changes = [c for event, at in zip(events, ids, strict=True)
               for c in changes_for(event, at)]
    return count if store.apply(changes, position, ids[-1]) else 0


def catch_up(
    app: Any,
    store: ToPayStore,
    batch_size: int = 1000,
    progress: Callable[[int], object] | None = None,
    until: datetime | None = None,
    recorded: Recorded | None = None,
) -> int:
    """Apply every event recorded since the store's position; return how many were read.

    With ``until``, stop at the first event recorded after that instant: the read models
    are then as they were at that moment (events are recorded in time order).

    ``recorded``: events this process has just committed (a consumed poll), applied from
    memory when they are the next ones in the history (``_apply_recorded``); the history
    after them is then read as usual.
    """
    done = 0
    if recorded is not None and until is None:
        done = _apply_recorded(store, recorded)
        if done and progress is not None:
            progress(done)
    if until is not None:
        return done + _catch_up_until(app, store, batch_size, progress, until)
    changes_of = stored_changes(app)
    read = _reader(app)
    with _WriteBehind(store, progress) as behind:
        size = batch_size
        position = store.position()
        while True:
            notifications = read(position, size)
            # A page shorter than asked was the end of the history when it was read.
            at_end = len(notifications) < size
            size = _next_size(size, len(notifications), batch_size)
            if not notifications:
                if behind.wait():
                    store.settle()
                    return done + behind.done
                position = store.position()
                continue
            changes = [c for n in notifications for c in changes_of(n)]
            last = notifications[-1].id
            if not at_end:
                # More to come: this batch is written while the next one is read.
                if behind.send(changes, position, last, len(notifications)):
                    position = last
                else:
                    position = store.position()
                continue
            if behind.wait() and store.apply(changes, position, last):
                if progress is not None:
                    progress(len(notifications))
                # What was recorded since is the next catch-up's (each poll has one).
                store.settle()
                return done + behind.done + len(notifications)
            position = store.position()


def _next_size(size: int, read: int, batch_size: int) -> int:
    """How many events a catch-up asks for next, having read ``read`` of ``size``."""
    # A full batch means a long way to go (a replay): larger batches, fewer commits.
    return min(size * 2, REPLAY_BATCH) if read == size else batch_size


class _WriteBehind:
    """Applies a catch-up's batches in a thread of its own, one at a time and in order,
    while the catch-up reads and decodes the next one.

    On PostgreSQL a batch's statements wait on the server, and reading a page waits on it
    too: the two waits then overlap each other and the decoding, which holds the GIL. A
    batch that is not applied (the store's position was not the one expected: another
    runner moved it) stops the ones after it from being sent; the caller starts again
    from the store's position. A batch's error is raised by the next ``wait``.
    """

    def __init__(self, store: ToPayStore, progress: Callable[[int], object] | None) -> None:
        self.store = store
        self.progress = progress
        self.done = 0
        self.pending: Future[bool] | None = None
        self.count = 0
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "_WriteBehind":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.pending is not None:
                # Left by an error here: whatever it made of its batch stands, whole
                # or not at all, with its position.
                wait_for([self.pending])
        finally:
            if self.pool is not None:
                self.pool.shutdown()

    def send(self, changes: list[Change], expected: int, position: int, count: int) -> bool:
        """Apply a batch after the one sent before; False when that one was not applied
        (then this one is not sent)."""
        if not self.wait():
            return False
        if not self.store.remote:
            # SQLite writes in this process: each row's step gives the GIL up and waits
            # for it back while the decoding holds it, so a thread made the replay
            # slower, not faster.
            if not self.store.apply(changes, expected, position):
                return False
            self._applied(count)
            return True
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="catch-up-write")
        self.pending = self.pool.submit(self.store.apply, changes, expected, position)
        self.count = count
        return True

    def wait(self) -> bool:
        """Wait for the batch sent last; whether it was applied (True when none was)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return True
        if not pending.result():
            return False
        self._applied(self.count)
        return True

    def _applied(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(count)


def _catch_up_until(app: Any, store: ToPayStore, batch_size: int,
                    progress: Callable[[int], object] | None, until: datetime) -> int:
    """``catch_up`` up to the first event recorded after ``until``."""
    done = 0
    size = batch_size
    changes_of = stored_changes(app)
    timestamp_of = _timestamps(app)
    read = _reader(app)
    while True:
        position = store.position()
        notifications = read(position, size)
        at_end = len(notifications) < size
        size = _next_size(size, len(notifications), batch_size)
        if not notifications:
            store.settle()
            return done
        changes: list[Change] = []
        last = position
        for n in notifications:
            if timestamp_of(n) > until:
                applied = sum(1 for m in notifications if m.id <= last)
                if applied:
                    store.apply(changes, position, last)
                store.settle()
                return done + applied
            changes += changes_of(n)
            last = n.id
        if store.apply(changes, position, notifications[-1].id):
            done += len(notifications)
            if progress is not None:
                progress(len(notifications))
            if at_end:
                store.settle()
                return done


def _reader(app: Any) -> Callable[[int, int], Sequence[Any]]:
    """How to read a page of ``app``'s history: as plain rows from its database, or as
    notifications from the in-memory store."""
    if getattr(app.recorder, "datastore", None) is not None:
        sql = SqlStore(app)
        if sql.events_table is not None:
            # ``stored_changes`` writes the ids as the handlers want them.
            return partial(sql.stored_events, ids_as_stored=True)

    def select(after: int, limit: int) -> Sequence[Any]:
        page: Sequence[Any] = app.recorder.select_notifications(after, limit,
                                                                inclusive_of_start=False)
        return page

    return select


def _notification(n: Any) -> Notification:
    """The eventsourcing notification of a stored event read either way."""
    if isinstance(n, Notification):
        return n
    return Notification(id=n.id, originator_id=UUID(n.originator_id),
                        originator_version=n.originator_version, topic=n.topic, state=n.state)


def _timestamps(app: Any) -> Callable[[Any], datetime]:
    """When a stored event was recorded."""
    def timestamp(n: Any) -> datetime:
        value: datetime = app.mapper.to_domain_event(_notification(n)).timestamp
        return value

    return timestamp


def rebuild(app: Any, progress: Callable[[int], object] | None = None) -> int:
    """Drop the read models and apply the whole history again (`regie replay`); return how
    many events were read."""
    app.to_pay.reset()
    # The replay makes millions of short-lived objects and no reference cycles: the cyclic
    # collector would only scan them again and again (about an eighth of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Each batch commits with its position: one a power cut took is applied again by
        # the next catch-up, so syncing SQLite's log at every commit (a tenth of a replay)
        # buys nothing. The log is synced once at the end.
        with unsynced_while(app):
            return catch_up(app, app.to_pay, progress=progress)
    finally:
        if collecting:
            gc.enable()
