"""The payment application: billing's events in, to-pay lists out (payments come next)."""

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking

from events import Envelope
from services.common.application import ServiceApplication
from services.common.chain import day_root
from services.common.errors import Conflict, DomainError, NotFound, OutOfOrder, Unavailable
from services.common.persistence import SqlStore
from services.payment import domain
from services.payment.gateway import Gateway, GatewayError, PaymentOrder
from services.payment.projections import MemoryToPayStore, SqlToPayStore, ToPayStore, catch_up


@dataclass(frozen=True)
class ReturnUrls:
    """Where PayFiP notifies us (server to server) and sends the browser back."""

    notification: str
    browser_return: str


PARIS = ZoneInfo("Europe/Paris")


log = logging.getLogger(__name__)
RECORD_ATTEMPTS = 5


def _paid_at(dattrans: str, heurtrans: str) -> str:
    """PayFiP's DDMMYYYY and HHMM, local time in Paris, as an ISO timestamp with offset."""
    local = datetime.strptime(dattrans + heurtrans, "%d%m%Y%H%M").replace(tzinfo=PARIS)
    return local.isoformat()


class PaymentApp(ServiceApplication):
    name = "payment"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.to_pay: ToPayStore = (
            MemoryToPayStore() if self.in_memory() else SqlToPayStore(SqlStore(self))
        )

    # --- consuming billing's events ----------------------------------------------
    def apply_billing_event(self, message: Envelope, tracking: Tracking) -> bool:
        """Record what a billing event means here; False if it was already applied."""
        for _ in range(RECORD_ATTEMPTS):
            if self.already_applied(tracking):
                return False
            processing = ProcessingEvent[UUID](tracking=tracking)
            aggregate = self._billing_change(message)
            if aggregate is not None:
                processing.collect_events(aggregate)
            try:
                self._record(processing)
                return True
            except IntegrityError:
                # Another writer got there first: another consumer (then the tracking
                # says so above) or a payment reserving the same invoice (then apply the
                # message again to the invoice as it is now).
                continue
        raise RuntimeError(f"could not record {message.type} {message.id}: invoice kept changing")

    def _get(self, aggregate_id: UUID) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    def _billing_change(self, message: Envelope) -> Any:
        data = message.data
        if message.name == "RegieOpened":
            if self._get(domain.Regie.create_id(data["code"])) is not None:
                return None
            return domain.Regie(
                code=data["code"], name=data["name"], numcli=data["numcli"],
                saisie=data["saisie"], sequence=message.sequence,
            )
        invoice_id = UUID(data["invoice_id"])
        invoice: domain.Invoice | None = self._get(invoice_id)
        if message.name == "InvoiceIssued":
            if invoice is not None:
                return None
            return domain.Invoice(
                invoice_id=data["invoice_id"], regie=data["regie"], number=data["number"],
                family_id=data["family_id"],
                label=data["label"], issued_on=data["issued_on"],
                payable_until=data["payable_until"], due_on=data["due_on"],
                amount_cents=data["amount_cents"], sequence=message.sequence,
            )
        if invoice is not None and not invoice.is_new(message.sequence):
            return None
        if invoice is None or message.sequence != invoice.sequence + 1:
            raise OutOfOrder(
                f"{message.name} #{message.sequence} of invoice {invoice_id} follows "
                f"#{invoice.sequence if invoice else 0}"
            )
        if message.name == "InvoiceCancelled":
            invoice.cancel(reason=data["reason"], sequence=message.sequence)
        elif message.name == "InvoiceSettled":
            invoice.settled_upstream(payment_id=data["payment_id"], sequence=message.sequence)
        elif message.name == "InvoiceTransferred":
            invoice.transfer(reference=data["reference"], sequence=message.sequence)
        else:
            return None
        return invoice

    # --- queries ------------------------------------------------------------------
    def refresh(self) -> int:
        """Bring the read models up to date with the history."""
        return catch_up(self, self.to_pay)

    def to_pay_summary(self, family_id: str) -> list[dict[str, Any]]:
        return domain.summarise(self.to_pay.open_lines(family_id), self.to_pay.regie_names())

    def to_pay_lines(self, family_id: str, regie: str, today: date) -> list[dict[str, Any]]:
        result = []
        for line in self.to_pay.open_lines(family_id, regie):
            reason = line.why_not_payable(today)
            result.append({
                "id": line.id, "number": line.number, "label": line.label,
                "issued_on": line.issued_on, "payable_until": line.payable_until,
                "amount_due_cents": line.amount_due_cents, "total_cents": line.total_cents,
                "payable": reason is None, "reason": reason,
            })
        return result

    def history(self, family_id: str) -> list[dict[str, Any]]:
        names = self.to_pay.regie_names()
        return [{**row, "regie_name": names.get(row["regie"], row["regie"]),
                 "paid_by": domain.MEANS.get(row["paid_by"] or "")}
                for row in self.to_pay.history(family_id)]

    def journal(self, regie: str, day: date) -> dict[str, Any]:
        """The régisseur's daily list: payments received by type, the others apart."""
        rows = self.to_pay.payments(regie, day)
        paid = [r for r in rows if r["status"] == domain.CONFIRMED]
        for r in paid:
            r["means"] = domain.MEANS.get(r["resultrans"] or "")
        totals: dict[str, int] = {}
        for r in paid:
            totals[r["means"]] = totals.get(r["means"], 0) + r["amount_cents"]
        return {
            "regie": regie,
            "date": day,
            "payments": paid,
            "totals": {"count": len(paid), "amount_cents": sum(totals.values()), **{
                f"{means}_cents": cents for means, cents in sorted(totals.items())}},
            "not_paid": [r for r in rows if r["status"] != domain.CONFIRMED],
            # The payment history's hash chain at the end of that day: printed on the
            # journal, it lets anyone check later that the day's records were not altered.
            "chain_root": day_root(self, day.isoformat()),
        }

    def reconcile(self, gateway: Gateway, now: datetime) -> int:
        """Ask PayFiP about every payment still waiting: notifications get lost."""
        settled = 0
        for row in self.to_pay.pending_payments():
            payment = self.settle_from_payfip(row["idop"], gateway, now)
            settled += payment is not None and payment.is_final
        return settled

    def regie_exists(self, code: str) -> bool:
        return self._get(domain.Regie.create_id(code)) is not None

    # --- payments -----------------------------------------------------------------
    def request_payment(
        self,
        family_id: str,
        regie: str,
        invoice_ids: list[str],
        email: str,
        gateway: Gateway,
        urls: ReturnUrls,
        now: datetime,
    ) -> domain.Payment:
        """Reserve the invoices, ask PayFiP for an idop, record the outcome."""
        regie_agg: domain.Regie | None = self._get(domain.Regie.create_id(regie))
        if regie_agg is None:
            raise DomainError("regie", f"unknown régie {regie!r}")
        if len(set(invoice_ids)) != len(invoice_ids):
            raise DomainError("invoice_ids", "an invoice is listed twice")
        today = now.astimezone(PARIS).date()
        invoices: list[domain.Invoice] = []
        for invoice_id in invoice_ids:
            invoice = self._get(UUID(invoice_id))
            # Another family's invoice is answered exactly like a missing one.
            if not isinstance(invoice, domain.Invoice) or invoice.family_id != family_id:
                raise NotFound("invoice_ids", f"no invoice {invoice_id} for this family")
            if invoice.regie != regie:
                raise DomainError(
                    "invoice_ids", f"invoice {invoice.number} belongs to régie {invoice.regie}: "
                    "each régie is paid separately")
            reason = invoice.why_not_payable(today)
            if reason is not None:
                raise Conflict("invoice_ids", f"invoice {invoice.number} cannot be paid: {reason}")
            invoices.append(invoice)
        amount = sum(i.amount_due_cents for i in invoices)
        if amount < domain.MIN_PAYMENT_CENTS:
            raise DomainError("invoice_ids", "PayFiP takes payments of 1,00 € or more")
        if amount >= domain.MAX_PAYMENT_CENTS:
            raise DomainError("invoice_ids", "PayFiP takes payments under 100 000,00 €")
        payment = domain.Payment(
            family_id=family_id, regie=regie, numcli=regie_agg.numcli, saisie=regie_agg.saisie,
            email=email,
            refdet=domain.make_refdet(regie, now.astimezone(PARIS), secrets.token_hex(3)),
            exer=str(now.astimezone(PARIS).year),
            objet=domain.clean_objet("Factures " + " ".join(i.number for i in invoices)),
            allocations=[{"invoice_id": str(i.id), "number": i.number,
                          "amount_cents": i.amount_due_cents} for i in invoices],
            amount_cents=amount,
        )
        payment_id = str(payment.id)
        for invoice in invoices:
            invoice.reserve(payment_id=payment_id)
        try:
            # Saved with the invoices' new versions: of two requests racing for an
            # invoice, one write fails here, before anything reaches PayFiP.
            self.save(payment, *invoices)
        except IntegrityError:
            raise Conflict("invoice_ids", "an invoice is already being paid") from None
        order = PaymentOrder(
            numcli=payment.numcli, saisie=payment.saisie, exer=payment.exer,
            refdet=payment.refdet, amount_cents=amount, email=email, objet=payment.objet,
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

    def settle_from_payfip(
        self, idop: str, gateway: Gateway, now: datetime
    ) -> domain.Payment | None:
        """Read the result back from PayFiP and record it, once.

        Called for a notification, a browser return and by the reconciler; PayFiP's
        notification carries only an idop and is never trusted by itself.
        """
        payment = self.find_by_idop(idop)
        if payment is None:
            log.warning("PayFiP result for unknown idop %r ignored", idop)
            return None
        if payment.is_final:
            return payment
        try:
            result = gateway.result(idop)
        except GatewayError as e:
            if e.code == "P1" or (e.code == "P5" and payment.is_overdue(now)):
                payment.expired(reason=e.code, answer={"code": e.code, "message": e.message})
                return self._close(payment, [])
            # P5, still in progress, or no answer at all: kept as it came, so that the
            # reconciliation can be re-run from history; asked again later.
            payment.answered(answer={"code": e.code, "message": e.message})
            return self._save_outcome(payment, [])
        outcome = domain.RESULTRANS.get(result.resultrans)
        if outcome == domain.CONFIRMED:
            return self._confirm(payment, result.resultrans, result.numauto,
                                 _paid_at(result.dattrans, result.heurtrans), result.raw)
        if outcome == domain.REFUSED:
            payment.refused(resultrans=result.resultrans, answer=result.raw)
        elif outcome == domain.ABANDONED:
            payment.abandoned(resultrans=result.resultrans, answer=result.raw)
        else:
            log.error("PayFiP answered an unknown resultrans for %s: %r", idop, result.raw)
            return payment
        return self._close(payment, [])

    def _confirm(self, payment: domain.Payment, resultrans: str, numauto: str, paid_at: str,
                 raw: dict[str, Any]) -> domain.Payment:
        paid: list[dict[str, Any]] = []
        refunds: list[dict[str, Any]] = []
        touched: list[domain.Invoice] = []
        for allocation in payment.allocations:
            invoice: domain.Invoice = self.repository.get(UUID(allocation["invoice_id"]))
            if invoice.status == domain.OPEN and invoice.payment_id == str(payment.id):
                invoice.pay(payment_id=str(payment.id), amount_cents=allocation["amount_cents"],
                            paid_at=paid_at, resultrans=resultrans)
                paid.append(allocation)
                touched.append(invoice)
            else:
                # Cancelled or sent to the treasury while the family was paying: the money
                # is here all the same, and must be refunded or reallocated.
                refunds.append({**allocation, "reason": invoice.status})
        payment.confirmed(resultrans=resultrans, numauto=numauto, paid_at=paid_at, answer=raw,
                          allocations=paid, refunds=refunds)
        return self._save_outcome(payment, touched)

    def _close(self, payment: domain.Payment, touched: list[domain.Invoice]) -> domain.Payment:
        for allocation in payment.allocations:
            invoice: domain.Invoice = self.repository.get(UUID(allocation["invoice_id"]))
            if invoice.payment_id == str(payment.id):
                invoice.release(payment_id=str(payment.id))
                touched.append(invoice)
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
