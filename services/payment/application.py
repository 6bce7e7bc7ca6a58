"""The payment application: billing's events in, to-pay lists out (payments come next)."""

from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, JSONTranscoder, ProcessRecorder, Tracking

from events import Envelope
from services.common.errors import OutOfOrder
from services.common.persistence import SqlStore, register_transcodings
from services.payment import domain
from services.payment.projections import MemoryToPayStore, SqlToPayStore, ToPayStore, catch_up


class UnknownRegie(LookupError):
    pass


class PaymentApp(Application[UUID]):
    name = "payment"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.to_pay: ToPayStore = (
            MemoryToPayStore()
            if self.env.get("PERSISTENCE_MODULE", "eventsourcing.popo") == "eventsourcing.popo"
            else SqlToPayStore(SqlStore(self))
        )

    def construct_recorder(self) -> ProcessRecorder:
        # Events made from a consumed message are recorded in one transaction with the
        # message's position, so a redelivered message is recognised and changes nothing.
        return self.factory.process_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)

    # --- consuming billing's events ----------------------------------------------
    def already_applied(self, tracking: Tracking) -> bool:
        recorder: Any = self.recorder
        last = recorder.max_tracking_id(tracking.application_name)
        return last is not None and last >= tracking.notification_id

    def apply_billing_event(self, message: Envelope, tracking: Tracking) -> bool:
        """Record what a billing event means here; False if it was already applied."""
        if self.already_applied(tracking):
            return False
        processing = ProcessingEvent[UUID](tracking=tracking)
        aggregate = self._billing_change(message)
        if aggregate is not None:
            processing.collect_events(aggregate)
        try:
            self._record(processing)
        except IntegrityError:
            # Raced by another consumer of the same partition: it recorded this one.
            return False
        return True

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

    def regie_exists(self, code: str) -> bool:
        return self._get(domain.Regie.create_id(code)) is not None
