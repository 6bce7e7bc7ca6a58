"""The payment application: billing's events in, to-pay lists out (payments come next)."""

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from events import Envelope
from services.common.application import ServiceApplication, collect
from services.common.errors import Conflict, DomainError, NotFound, OutOfOrder, Unavailable
from services.common.mail import Mailer, MailError
from services.common.privacy import ERASED
from services.common.storage.chain import Chained, day_root, head
from services.common.storage.persistence import SqlStore
from services.common.web.metrics import ProcessMeters
from services.payment import domain, reminders
from services.payment.gateway import Gateway, GatewayError, PaymentOrder
from services.payment.guards import NOT_PAYFIP
from services.payment.projections import (
    MemoryToPayStore,
    Recorded,
    SqlToPayStore,
    ToPayStore,
    catch_up,
)


def _as_dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else asdict(value)


@dataclass(frozen=True)
class ReturnUrls:
    """Where PayFiP notifies us (server to server) and sends the browser back."""

    notification: str
    browser_return: str


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PayFiP:
    """PayFiP as the payment application meets it, given once by the composition root: the
    gateway it is asked through, where it calls back, and the clock that dates the payments
    and tells when their reservations end (a fixed one in the tests)."""

    gateway: Gateway
    urls: ReturnUrls
    clock: Callable[[], datetime] = utc_now


@dataclass
class RemindPass:
    """What one reminder pass did."""

    sent: int = 0
    failed: int = 0  # the mail server did not take them: tried again next pass
    without_email: int = 0  # consumed before the payer's e-mail was kept here


log = logging.getLogger(__name__)
RECORD_ATTEMPTS = 5
# Unauthenticated notifications and returns read PayFiP back at most this often per idop;
# in between they are answered from what is recorded.
READBACK_INTERVAL = timedelta(seconds=5)


class PaymentApp(ServiceApplication):
    name = "payment"

    def __init__(self, env: dict[str, str] | None = None,
                 watch: domain.Watch | None = None,
                 meters: ProcessMeters | None = None,
                 payfip: PayFiP | None = None,
                 collectivite: str = "Collectivité territoriale") -> None:
        super().__init__(env)
        # Who issues the documents: at the head of each one.
        self.collectivite = collectivite
        # None for the parts that never ask PayFiP (consumers, relays, tools).
        self._payfip = payfip
        self.watch = watch if watch is not None else domain.Watch()
        # What this process met: PayFiP calls (through MeasuredGateway) and the reconciler's
        # troubles, exposed at the payment API's /metrics.
        self.meters = meters if meters is not None else ProcessMeters()
        self._readbacks: dict[str, tuple[datetime, threading.Lock]] = {}
        self._readbacks_lock = threading.Lock()
        self.to_pay: ToPayStore = (
            MemoryToPayStore() if self.in_memory() else SqlToPayStore(SqlStore(self))
        )
        # The last poll this process recorded, until the next catch-up applies it.
        self._recorded: Recorded | None = None

    @property
    def payfip(self) -> PayFiP:
        if self._payfip is None:
            raise RuntimeError("this payment application was built without PayFiP")
        return self._payfip

    @property
    def watch_errors(self) -> int:
        """Payments under watch this process could not settle in a pass."""
        return self.meters.count("regie_watch_errors")

    @property
    def stuck_closed(self) -> int:
        """Payments this process closed as stuck before PayFiP's idop was recorded."""
        return self.meters.count("regie_stuck_payments_closed")

    # --- consuming billing's events ----------------------------------------------
    def apply_billing_event(self, message: Envelope, tracking: Tracking) -> bool:
        """Record what a billing event means here; False if it was already applied."""
        for _ in range(RECORD_ATTEMPTS):
            if self.already_applied(tracking):
                return False
            processing = ProcessingEvent[UUID](tracking=tracking)
            for aggregate in self._billing_change(message):
                collect(processing, aggregate)
            try:
                self._record(processing)
                return True
            except IntegrityError:
                # Another writer got there first: another consumer (then the tracking
                # says so above) or a payment reserving the same invoice (then apply the
                # message again to the invoice as it is now).
                continue
        raise RuntimeError(f"could not record {message.type} {message.id}: invoice kept changing")

    def apply_billing_events(self, batch: list[tuple[Envelope, Tracking]]) -> int:
        """Record a whole poll of billing events in one transaction; how many were new.

        One tracking record per aggregate (subject), its last notification id in the batch,
        goes in the same transaction as every event the batch causes, so the batch is
        recorded whole or not at all. Anything that stops it (an event out of order, an
        invoice a payment changed meanwhile) raises with nothing recorded: the caller then
        applies the messages one by one, as ``apply_billing_event`` does.
        """
        recorder: Any = self.recorder
        if not isinstance(recorder, Chained):
            # The in-memory store takes one tracking record per write.
            return sum(self.apply_billing_event(m, t) for m, t in batch)
        # Where this batch takes each subject's position in the store.
        moved: dict[str, int] = {}
        # The aggregates as this batch left them: a later message of the same invoice (or
        # the family's credit) must see what an earlier one did before it is recorded.
        seen: dict[UUID, Any] = dict.fromkeys(self._absent(batch))
        processing = ProcessingEvent[UUID]()
        applied = 0
        for message in self._unrecorded(batch, moved):
            for aggregate in self._billing_change(message, seen):
                seen[aggregate.id] = aggregate
                collect(processing, aggregate)
            applied += 1
        ids = self._record_poll(processing, moved)
        if ids:
            # The catch-up that follows takes them from here rather than from the store.
            self._recorded = Recorded(ids, processing.events)
        return applied

    def _absent(self, batch: list[tuple[Envelope, Tracking]]) -> set[UUID]:
        """The aggregates this batch may read that have no event yet, found in one query:
        a poll of new invoices would otherwise cost a SELECT per invoice and per family
        credit, only to learn each is not there."""
        wanted: set[UUID] = set()
        for message, _ in batch:
            data = message.data
            if message.name == "RegieOpened":
                wanted.add(domain.Regie.create_id(data["code"]))
            elif "invoice_id" in data:
                wanted.add(UUID(data["invoice_id"]))
                if message.name == "InvoiceIssued":
                    wanted.add(domain.FamilyCredit.create_id(data["regie"], data["family_id"]))
        recorder: Any = self.recorder
        table = getattr(recorder, "events_table_name", "stored_events")
        store = SqlStore(self)
        # As each store writes them: SQLite keeps the 32 hex digits, without dashes.
        rows = store.rows_by_keys(
            f"SELECT DISTINCT originator_id FROM {{schema}}{table} "
            "WHERE originator_id IN ({keys})",
            (str(i) if store.postgres else i.hex for i in wanted))
        present = {UUID(str(r["originator_id"])) for r in rows}
        return wanted - present

    def _get(self, aggregate_id: UUID, seen: dict[UUID, Any] | None = None) -> Any:
        if seen is not None and aggregate_id in seen:
            return seen[aggregate_id]
        found: Any
        try:
            found = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            found = None
        if seen is not None:
            seen[aggregate_id] = found
        return found

    def _billing_change(self, message: Envelope, seen: dict[UUID, Any] | None = None
                        ) -> list[Any]:
        """The aggregates a billing event changes here, with their new events (``seen``:
        those a batch has changed already, or found missing)."""
        data = message.data
        if message.name == "FamilyForgotten":
            # Billing erased its copy; this service's own is erased by `regie forget`.
            return []
        if message.name == "RegieOpened":
            if self._get(domain.Regie.create_id(data["code"]), seen) is not None:
                return []
            return [domain.Regie(
                code=data["code"], name=data["name"], numcli=data["numcli"],
                saisie=data["saisie"], sequence=message.sequence,
            )]
        invoice_id = UUID(data["invoice_id"])
        invoice: domain.Invoice | None = self._get(invoice_id, seen)
        if message.name == "InvoiceIssued":
            if invoice is not None:
                return []
            if seen is not None:
                # A poll: most of its messages are new invoices, built without
                # eventsourcing's generic construction (tests/integration/test_poll_rows.py
                # holds the rows to those of the path below).
                invoice = domain.Invoice.register_new(invoice_id, data, message.sequence)
                contact = domain.Reminders.open_new(data["invoice_id"], data["family_id"],
                                                    data["payer_email"])
            else:
                invoice = domain.Invoice(
                    invoice_id=data["invoice_id"], regie=data["regie"], number=data["number"],
                    family_id=data["family_id"],
                    label=data["label"], issued_on=data["issued_on"],
                    payable_until=data["payable_until"], due_on=data["due_on"],
                    amount_cents=data["amount_cents"], sequence=message.sequence,
                    lines=[dict(line) for line in data["lines"]],
                )
                # Whom to remind of it: billing's invoice names its payer's e-mail.
                contact = domain.Reminders(invoice_id=data["invoice_id"],
                                           family_id=data["family_id"],
                                           payer_email=data["payer_email"])
            # What the régie owes the family pays its next invoice by itself.
            credit = self._get(
                domain.FamilyCredit.create_id(invoice.regie, invoice.family_id), seen)
            if isinstance(credit, domain.FamilyCredit) and credit.balance_cents > 0:
                credit.apply_to(invoice)
                return [invoice, contact, credit]
            return [invoice, contact]
        if invoice is not None and not invoice.is_new(message.sequence):
            return []
        if invoice is None or message.sequence != invoice.sequence + 1:
            raise OutOfOrder(
                f"{message.name} #{message.sequence} of invoice {invoice_id} follows "
                f"#{invoice.sequence if invoice else 0}"
            )
        if message.name == "InvoiceCancelled":
            invoice.cancel(reason=data["reason"], sequence=message.sequence)
            if invoice.paid_here_cents:
                # Paid, in part or in full, at the counter or from credit before billing
                # heard of it: that money is the family's again.
                return [invoice, self._credited(invoice, invoice.paid_here_cents,
                                                "cancelled_invoice", str(invoice.id),
                                                "billing", seen)]
        elif message.name == "InvoiceSettled" and invoice.status == domain.OPEN:
            # A part payment billing heard of from us: what remains is still to pay here.
            invoice.settlement_acknowledged(payment_id=data["payment_id"],
                                            sequence=message.sequence)
        elif message.name == "InvoiceSettled":
            invoice.settled_upstream(payment_id=data["payment_id"], sequence=message.sequence)
        elif message.name == "InvoiceTransferred":
            invoice.transfer(reference=data["reference"], sequence=message.sequence)
        elif message.name == "InvoiceCredited":
            beyond = invoice.credit(credit_note_id=data["credit_note_id"],
                                    applied_cents=data["applied_cents"],
                                    sequence=message.sequence)
            # Given back of an amount paid, or paid here before billing heard of it.
            owed = data["credit_cents"] + beyond
            if owed:
                return [invoice, self._credited(invoice, owed, "credit_note",
                                                data["credit_note_id"], data["by"], seen)]
        else:
            return []
        return [invoice]

    def _credited(self, invoice: domain.Invoice, amount_cents: int, source: str,
                  source_id: str, by: str, seen: dict[UUID, Any] | None = None
                  ) -> domain.FamilyCredit:
        """The family's credit in the invoice's régie, ``amount_cents`` more."""
        credit = self._get(domain.FamilyCredit.create_id(invoice.regie, invoice.family_id),
                           seen)
        if not isinstance(credit, domain.FamilyCredit):
            credit = domain.FamilyCredit(regie=invoice.regie, family_id=invoice.family_id)
        credit.credit(amount_cents=amount_cents, source=source, source_id=source_id, by=by)
        return credit

    # --- reminders ----------------------------------------------------------------
    def payer_email(self, invoice_id: str) -> str | None:
        """The payer's e-mail address billing issued the invoice to; None for an invoice
        consumed before the payment side kept it. Every reader of it goes through here."""
        record = self._get(domain.Reminders.create_id(invoice_id))
        if not isinstance(record, domain.Reminders) or record.payer_email == ERASED:
            # Forgotten on request (regie forget): nobody to write to any more.
            return None
        return str(record.payer_email)

    def remind(self, mailer: Mailer, today: date, days_before: int,
               portal_url: str) -> RemindPass:
        """E-mail the payer of each invoice due for a reminder (see reminders.is_due) and
        record each one sent. A letter the mail server did not take is logged and not
        recorded, so the next pass tries again."""
        self.refresh()
        done = RemindPass()
        names = self.to_pay.regie_names()
        until = today + timedelta(days=days_before)
        for invoice_id in self.to_pay.open_invoice_ids(payable_from=today, payable_until=until):
            # The aggregates, not the read model, decide: it may lag behind a payment.
            invoice: domain.Invoice = self.repository.get(UUID(invoice_id))
            record = self._get(domain.Reminders.create_id(invoice_id))
            reminded = record.deadlines if isinstance(record, domain.Reminders) else []
            if not reminders.is_due(invoice, reminded, today, days_before):
                continue
            to = self.payer_email(invoice_id)
            if not isinstance(record, domain.Reminders) or not to:
                log.warning("invoice %s: no payer e-mail known here, no reminder",
                            invoice.number)
                done.without_email += 1
                continue
            letter = reminders.letter(invoice, to, names.get(invoice.regie, invoice.regie),
                                      portal_url)
            try:
                mailer.send(letter)
            except MailError as e:
                log.error("reminder of invoice %s not sent, next pass tries again: %s",
                          invoice.number, e)
                done.failed += 1
                continue
            record.sent(payable_until=invoice.payable_until)
            self.save(record)
            done.sent += 1
        return done

    # --- queries ------------------------------------------------------------------
    def erasure(self, family_id: str, reason: str) -> domain.Erasure:
        return domain.Erasure(family_id=family_id, reason=reason)

    def refresh(self) -> int:
        """Bring the read models up to date with the history."""
        recorded, self._recorded = self._recorded, None
        return catch_up(self, self.to_pay, recorded=recorded)

    def to_pay_summary(self, family_id: str) -> list[dict[str, Any]]:
        """Per régie, the family's open invoices: one query on the read models."""
        return [{"code": t["regie"], "name": t["name"], "count": t["count"],
                 "total_cents": t["total_cents"]} for t in self.to_pay.summary(family_id)]

    def to_pay_lines(self, family_id: str, regie: str, today: date,
                     limit: int | None = None, after: list[str] | None = None
                     ) -> list[dict[str, Any]]:
        """The family's open invoices in the régie, oldest issued first; with ``limit``,
        that many after the one keyed ``after`` ([issued_on, number])."""
        lines = (self.to_pay.open_lines(family_id, regie) if limit is None
                 else self.to_pay.open_page(family_id, regie, limit, after))
        result = []
        for line in lines:
            reason = line.why_not_payable(today)
            result.append({
                "id": line.id, "number": line.number, "label": line.label,
                "issued_on": line.issued_on, "payable_until": line.payable_until,
                "amount_due_cents": line.amount_due_cents, "total_cents": line.total_cents,
                "payable": reason is None, "reason": reason, "payment_id": line.payment_id,
            })
        return result

    def history(self, family_id: str, limit: int | None = None,
                after: list[str] | None = None) -> list[dict[str, Any]]:
        """The family's invoices, newest issued first; with ``limit``, that many after the
        one keyed ``after`` (``projections.history_key``)."""
        return [{**row,
                 # PayFiP's resultrans online, the means itself at the counter.
                 "paid_by": domain.MEANS.get(row["paid_by"] or "", row["paid_by"])}
                for row in self.to_pay.history(family_id, limit, after)]

    def journal(self, regie: str, day: date) -> dict[str, Any]:
        """The régisseur's daily list: payments received by type, the others apart."""
        rows = self.to_pay.payments(regie, day)
        paid = [r for r in rows if r["status"] == domain.CONFIRMED]
        for r in paid:
            r["means"] = r["means"] or domain.MEANS.get(r["resultrans"] or "")
        totals: dict[str, int] = {}
        for r in paid:
            totals[r["means"]] = totals.get(r["means"], 0) + r["amount_cents"]
        journal = {
            "regie": regie,
            "date": day,
            "payments": paid,
            "totals": {"count": len(paid), "amount_cents": sum(totals.values()), **{
                f"{means}_cents": cents for means, cents in sorted(totals.items())}},
            "not_paid": [r for r in rows if r["status"] != domain.CONFIRMED],
            # The payment history's hash chain at the end of that day: printed on the
            # journal, it lets anyone check later that the day's records were not altered.
            "chain_root": day_root(self, day.isoformat()),
            # The same, as a head `regie verify --heads` takes (a line of a JSONL file).
            "chain_head": _as_dict(head(self, "payment", day.isoformat())),
        }
        return journal

    def reconcile(self) -> int:
        """Ask PayFiP about every payment under watch: notifications get lost, and PayFiP
        may confirm long after the family left. Return how many closed in this pass.

        One payment that cannot be settled (a malformed answer, a database error) is
        logged and counted in ``watch_errors``; the pass goes on with the next one.
        """
        settled = 0
        now = self.payfip.clock()
        for row in self.to_pay.watched_payments():
            try:
                payment = self.get_payment(UUID(row["id"]))
                if payment.is_stuck(now, self.watch):
                    self._close_stuck(payment)
                    settled += 1
                    continue
                if payment.idop is None:
                    continue  # started a moment ago: PayFiP's idop is on its way
                closed = self._settle_from_payfip(payment.idop, now)
                settled += closed is not None and closed.is_final
            except Exception:
                self.meters.watch_errors.inc()
                log.exception("could not settle payment %s; the next pass tries again",
                              row["id"])
        return settled

    def _close_stuck(self, payment: domain.Payment) -> None:
        # Its idop was never recorded (the save after PayFiP's answer failed): no
        # notification can find it, so its invoices would stay reserved for good.
        payment.request_failed(
            code="stuck", message="no PayFiP idop recorded before the reservation ended")
        log.error("payment %s stuck before PayFiP's idop was recorded: closed as failed",
                  payment.id)
        self.meters.stuck_closed.inc()
        self._close(payment, [])

    def _free_if_over(self, payment_id: str, now: datetime) -> bool:
        """End the reservation of the payment holding an invoice, if its time is over:
        the family need not wait for the reconciler's next pass. True if it was freed."""
        holder = self._get(UUID(payment_id))
        if not isinstance(holder, domain.Payment):
            return False
        if holder.is_stuck(now, self.watch):
            self._close_stuck(holder)
            return True
        if not holder.reservation_over(now, self.watch):
            return False
        holder.reservation_ended(reason="reservation time over")
        # Raced by the reconciler or another request: the invoices are free all the same.
        self._save_outcome(holder, self._release(holder))
        return True

    def anomalies(self) -> list[dict[str, Any]]:
        """Every PayFiP answer that did not match its order, oldest first."""
        found = []
        topic = get_topic(domain.Payment.AnswerMismatched)
        position = 0
        while batch := self.recorder.select_notifications(
            position, 1000, topics=[topic], inclusive_of_start=False
        ):
            position = batch[-1].id
            for n in batch:
                event = self.mapper.to_domain_event(n)
                if not isinstance(event, domain.Payment.AnswerMismatched):
                    continue  # selected by that topic: only a type check
                payment = self.get_payment(event.originator_id)
                found.append({
                    "payment_id": str(payment.id), "idop": payment.idop,
                    "regie": payment.regie, "family_id": payment.family_id,
                    "recorded_at": event.timestamp.isoformat(),
                    "status": payment.status,
                    "fields": event.fields, "answer": event.answer,
                    "expected": {name: str(getattr(payment, attribute))
                                 for name, attribute in domain.ORDER_FIELDS.items()},
                })
        return found

    def regie_exists(self, code: str) -> bool:
        return self._get(domain.Regie.create_id(code)) is not None

    def regie_saisies(self) -> dict[str, str]:
        """Each known régie's PayFiP mode (T test, X activation, W production)."""
        self.refresh()
        return {code: self._get(domain.Regie.create_id(code)).saisie
                for code in self.to_pay.regie_names()}

    # --- payments -----------------------------------------------------------------
    def request_payment(
        self,
        family_id: str,
        regie: str,
        invoice_ids: list[str],
        email: str,
    ) -> domain.Payment:
        """Reserve the invoices, ask PayFiP for an idop, record the outcome."""
        gateway, urls, now = self.payfip.gateway, self.payfip.urls, self.payfip.clock()
        found: dict[str, domain.Invoice] = {}

        def find_invoice(invoice_id: str) -> domain.Invoice | None:
            invoice = self._get(UUID(invoice_id))
            if not isinstance(invoice, domain.Invoice):
                return None
            # One of this request's, held by a payment whose time is over: free it first,
            # the family need not wait for the reconciler's next pass.
            if (invoice.family_id == family_id and invoice.regie == regie
                    and invoice.payment_id is not None
                    and self._free_if_over(invoice.payment_id, now)):
                freed: domain.Invoice = self.repository.get(invoice.id)
                invoice = freed
            found[invoice_id] = invoice
            return invoice

        payment = domain.Payment.start(
            family_id=family_id, regie=regie, invoice_ids=invoice_ids, email=email, now=now,
            token=secrets.token_hex(3),
            find_regie=lambda code: self._get(domain.Regie.create_id(code)),
            find_invoice=find_invoice,
        )
        invoices = [found[invoice_id] for invoice_id in invoice_ids]
        payment_id = str(payment.id)
        try:
            # Saved with the invoices' new versions: of two requests racing for an
            # invoice, one write fails here, before anything reaches PayFiP.
            self.save(payment, *invoices)
        except IntegrityError:
            raise Conflict("invoice_ids", "an invoice is already being paid") from None
        order = PaymentOrder(
            numcli=payment.numcli, saisie=payment.saisie, exer=payment.exer,
            refdet=payment.refdet, amount_cents=payment.amount_cents, email=email,
            objet=payment.objet,
            urlnotif=urls.notification, urlredirect=urls.browser_return,
        )
        try:
            idop, answer = gateway.create(order)
        except GatewayError as e:
            payment.request_failed(code=e.code, message=e.message)
            for invoice in invoices:
                invoice.release(payment_id=payment_id)
            self.save(payment, *invoices)
            log.warning("PayFiP refused payment %s: %s", payment_id, e)
            if e.code == "A2":
                raise DomainError("email", "PayFiP refuses this email address") from None
            if e.code == NOT_PAYFIP:  # never sent: the guard says why
                raise Unavailable(e.message) from None
            raise Unavailable(f"PayFiP did not accept the payment ({e.code})") from None
        payment.requested(idop=idop, answer=answer)
        self.save(payment, domain.IdopIndex(idop=idop, payment_id=payment_id))
        # The family's next page must show the invoices as being paid: read your writes.
        self.refresh()
        return payment

    def get_payment(self, payment_id: UUID) -> domain.Payment:
        payment = self._get(payment_id)
        if not isinstance(payment, domain.Payment):
            raise NotFound("id", "no such payment")
        return payment

    def find_by_idop(self, idop: str) -> domain.Payment | None:
        index = self._get(domain.IdopIndex.create_id(idop))
        return None if index is None else self.get_payment(UUID(index.payment_id))

    def notified(self, idop: str) -> domain.Payment | None:
        """A notification or a browser return: anyone can send them, as often as they like.

        PayFiP is read back at most once per READBACK_INTERVAL per idop; a call in between
        waits for the read in flight, if any, and answers from what is recorded.
        """
        now = self.payfip.clock()
        with self._readbacks_lock:
            last = self._readbacks.get(idop)
            if last is not None and now - last[0] < READBACK_INTERVAL:
                recent: threading.Lock | None = last[1]
            else:
                recent = None
                if len(self._readbacks) > 10_000:  # forget what no longer throttles
                    self._readbacks = {k: v for k, v in self._readbacks.items()
                                       if now - v[0] < READBACK_INTERVAL}
                lock = threading.Lock()
                lock.acquire()
                self._readbacks[idop] = (now, lock)
        if recent is not None:
            with recent:
                return self.find_by_idop(idop)
        try:
            return self._settle_from_payfip(idop, now)
        finally:
            lock.release()

    def settle_from_payfip(self, idop: str) -> domain.Payment | None:
        """Read the result back from PayFiP and record it, once.

        Called for a notification, a browser return and by the reconciler; PayFiP's
        notification carries only an idop and is never trusted by itself. A confirmation
        is recorded whenever it comes, even after the invoices were freed or the payment
        was called expired or abandoned; an answer like the last one recorded adds nothing.
        """
        return self._settle_from_payfip(idop, self.payfip.clock())

    def _settle_from_payfip(self, idop: str, now: datetime) -> domain.Payment | None:
        # ``now`` read once by the caller: a reconciliation pass judges every payment
        # at the same moment.
        payment = self.find_by_idop(idop)
        if payment is None:
            log.warning("PayFiP result for unknown idop %r ignored", idop[:64])
            return None
        if not payment.may_still_be_paid():
            return payment
        touched: list[domain.Invoice] = []
        if payment.reservation_over(now, self.watch):
            payment.reservation_ended(reason="reservation time over")
            touched = self._release(payment)
        try:
            result = self.payfip.gateway.result(idop)
        except GatewayError as e:
            answer = {"code": e.code, "message": e.message}
            if payment.is_final:
                pass  # closed already: only a confirmation would change it
            elif e.code == "P1" or (e.code == "P5" and payment.is_overdue(now, self.watch)):
                payment.expired(reason=e.code, answer=answer)
                return self._close(payment, touched)
            elif payment.is_new_answer(answer):
                # P5, still in progress, or no answer at all: kept as it came, so that the
                # reconciliation can be re-run from history; asked again later.
                payment.answered(answer=answer)
            return self._save_outcome(payment, touched)
        wrong = domain.mismatches(payment, result.raw)
        if wrong:
            # Never pay on an answer for another amount or debt; an operator decides.
            log.error("PayFiP's answer for %s does not match its order (%s): %r",
                      idop, ", ".join(wrong), result.raw)
            if payment.is_new_answer(result.raw):
                payment.mismatched(fields=wrong, answer=result.raw)
            return self._save_outcome(payment, touched)
        outcome = domain.RESULTRANS.get(result.resultrans)
        if outcome == domain.CONFIRMED:
            paid_at = domain.transaction_time(result.dattrans, result.heurtrans)
            return self._confirm(payment, result.resultrans, result.numauto,
                                 paid_at.isoformat(), result.raw, touched)
        if payment.is_final:
            return self._save_outcome(payment, touched)
        if outcome == domain.REFUSED:
            payment.refused(resultrans=result.resultrans, answer=result.raw)
        elif outcome == domain.ABANDONED:
            at = domain.transaction_time(result.dattrans, result.heurtrans)
            if not payment.abandon_is_final(at, now, self.watch):
                # The family left PayFiP's page: let it pay again at once, but keep asking,
                # PayFiP may yet confirm.
                if payment.reserved:
                    payment.reservation_ended(reason="abandoned on PayFiP's page")
                    touched += self._release(payment)
                if payment.is_new_answer(result.raw):
                    payment.answered(answer=result.raw)
                return self._save_outcome(payment, touched)
            payment.abandoned(resultrans=result.resultrans, answer=result.raw)
        else:
            log.error("PayFiP answered an unknown resultrans for %s: %r", idop, result.raw)
            return self._save_outcome(payment, touched)
        return self._close(payment, touched)

    def _confirm(self, payment: domain.Payment, resultrans: str, numauto: str, paid_at: str,
                 raw: dict[str, Any], touched: list[domain.Invoice]) -> domain.Payment:
        paid: list[dict[str, Any]] = []
        refunds: list[dict[str, Any]] = []
        late = payment.confirmation_is_late()
        by_id = {str(i.id): i for i in touched}
        for allocation in payment.allocations:
            invoice: domain.Invoice = by_id.get(allocation["invoice_id"]) or self.repository.get(
                UUID(allocation["invoice_id"]))
            if invoice.status == domain.OPEN:
                # Ours, or freed since, or even reserved by a newer attempt: the money
                # PayFiP took pays it; the newer attempt will find it paid. A credit note
                # may have lowered what it owes meanwhile: the rest goes back.
                share = min(allocation["amount_cents"], invoice.amount_due_cents)
                invoice.pay(payment_id=str(payment.id), amount_cents=share,
                            paid_at=paid_at, resultrans=resultrans)
                paid.append({**allocation, "amount_cents": share})
                if share < allocation["amount_cents"]:
                    refunds.append({**allocation,
                                    "amount_cents": allocation["amount_cents"] - share,
                                    "reason": "credited"})
                if str(invoice.id) not in by_id:
                    touched.append(invoice)
            else:
                # Paid by another payment, cancelled or sent to the treasury meanwhile:
                # the money is here all the same, and must be refunded or reallocated.
                refunds.append({**allocation, "reason": invoice.status})
        if late:
            log.warning("PayFiP confirmed payment %s late (%s)", payment.id, payment.status)
        payment.confirmed(resultrans=resultrans, numauto=numauto, paid_at=paid_at, answer=raw,
                          allocations=paid, refunds=refunds, late=late)
        return self._save_outcome(payment, touched)

    def _release(self, payment: domain.Payment) -> list[domain.Invoice]:
        released = []
        for allocation in payment.allocations:
            invoice: domain.Invoice = self.repository.get(UUID(allocation["invoice_id"]))
            if invoice.payment_id == str(payment.id):
                invoice.release(payment_id=str(payment.id))
                released.append(invoice)
        return released

    def _close(self, payment: domain.Payment, touched: list[domain.Invoice]) -> domain.Payment:
        done = {str(i.id) for i in touched}
        touched += [i for i in self._release(payment) if str(i.id) not in done]
        return self._save_outcome(payment, touched)

    def _save_outcome(self, payment: domain.Payment, invoices: list[domain.Invoice]
                      ) -> domain.Payment:
        try:
            self.save(payment, *invoices)
        except IntegrityError:
            # A notification and the browser return raced: the other one recorded it.
            return self.get_payment(payment.id)
        self.refresh()
        return payment

    # --- the counter --------------------------------------------------------------
    def receive_at_counter(self, terms: domain.CounterTerms, by: str
                           ) -> tuple[domain.CounterPayment, bool]:
        """Record money a cashier took; True if this call recorded it, False for the same
        reference entered again with the same terms."""
        for _ in range(RECORD_ATTEMPTS):
            if (terms.reference or "").strip():
                existing = self._get(domain.CounterPayment.create_id(
                    terms.regie, terms.means, terms.reference))
                if isinstance(existing, domain.CounterPayment):
                    if not existing.same_terms(terms):
                        raise Conflict("reference", f"{terms.means} {terms.reference} is "
                                       "already recorded in this régie with other terms")
                    return existing, False
            if not self.regie_exists(terms.regie):
                raise DomainError("regie", f"unknown régie {terms.regie!r}")
            payment, changed = self._counter_payment(terms, by)
            try:
                self.save(payment, *changed)
            except IntegrityError:
                # The same reference entered at the same moment, or an invoice or the credit
                # changed meanwhile: look again.
                continue
            self.refresh()
            return payment, True
        raise Conflict("invoice_ids", "the family's invoices kept changing; try again")

    def _counter_payment(self, terms: domain.CounterTerms, by: str
                         ) -> tuple[domain.CounterPayment, list[Any]]:
        """The payment and the aggregates it changes, none saved yet."""
        self.refresh()
        invoices: dict[str, domain.Invoice] = {
            line.id: self.repository.get(UUID(line.id))
            for line in self.to_pay.open_lines(terms.family_id, terms.regie)}

        def find_invoice(invoice_id: str) -> domain.Invoice | None:
            # One object per invoice, so that what the payment changes is what is saved.
            if invoice_id not in invoices:
                found = self._get(UUID(invoice_id))
                if not isinstance(found, domain.Invoice):
                    return None
                invoices[invoice_id] = found
            return invoices[invoice_id]

        payment = domain.CounterPayment.receive(
            terms, by=by, open_invoices=list(invoices.values()), find_invoice=find_invoice)
        changed: list[Any] = [invoices[a["invoice_id"]] for a in payment.allocations]
        if payment.unallocated_cents:
            credit = self._get(domain.FamilyCredit.create_id(terms.regie, terms.family_id))
            if not isinstance(credit, domain.FamilyCredit):
                credit = domain.FamilyCredit(regie=terms.regie, family_id=terms.family_id)
            credit.credit(amount_cents=payment.unallocated_cents, source="counter_payment",
                          source_id=str(payment.id), by=by)
            changed.append(credit)
        return payment, changed

    def get_counter_payment(self, payment_id: UUID) -> domain.CounterPayment:
        payment = self._get(payment_id)
        if not isinstance(payment, domain.CounterPayment):
            raise NotFound("id", "no such counter payment")
        return payment

    # --- refunds ------------------------------------------------------------------
    def ask_credit_refund(self, family_id: str, regie: str, amount_cents: int | None,
                          by: str) -> dict[str, Any]:
        """Take the family's credit in the régie (all of it, or ``amount_cents``) to be
        paid back; return the refund due."""
        credit = self._get(domain.FamilyCredit.create_id(regie, family_id))
        if not isinstance(credit, domain.FamilyCredit):
            raise NotFound("regie", "the régie owes this family nothing")
        refund_id = credit.ask_refund(amount_cents, by=by)
        try:
            self.save(credit)
        except IntegrityError:
            raise Conflict("amount_cents", "the credit changed meanwhile; try again") from None
        return self.get_refund(UUID(refund_id))

    def refunds(self, status: str | None, regie: str | None) -> list[dict[str, Any]]:
        self.refresh()
        return self.to_pay.refunds(status, regie)

    def get_refund(self, refund_id: UUID) -> dict[str, Any]:
        self.refresh()
        for row in self.to_pay.refunds(refund_id=str(refund_id)):
            return row
        raise NotFound("id", "no such refund")

    def pay_refund(self, refund_id: UUID, means: str, reference: str | None, paid_on: date,
                   by: str) -> dict[str, Any]:
        """Record that the régisseur paid a refund back; once."""
        due = self.get_refund(refund_id)
        if due["status"] != "due":
            raise Conflict("id", f"this refund was paid on {due['paid_on']}")
        refund = domain.Refund.pay(due, means=means, reference=reference, paid_on=paid_on,
                                   by=by)
        try:
            self.save(refund)
        except IntegrityError:
            raise Conflict("id", "this refund was paid meanwhile") from None
        return self.get_refund(refund_id)
