"""The billing application: the only door to the billing domain."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from events import Envelope
from services.billing.domain import (
    Conflict,
    DomainError,
    Erasure,
    Invoice,
    InvoiceTerms,
    NotFound,
    Regie,
)
from services.common.application import ServiceApplication, collect
from services.common.storage.chain import Chained

# New invoices saved per transaction: a whole HTTP batch of 1000 commits once (a commit
# is an fsync on SQLite). A number issued before sends its chunk one by one.
BATCH_SAVE_SIZE = 1000
# Attempts at recording one payment event when an invoice it settles changes under it
# (an issuer cancelling it at that very moment): each attempt reads the invoices again.
RECORD_ATTEMPTS = 5
# The payment events that change invoices; the others are only tracked.
SETTLING = ("PaymentConfirmed", "CounterPaymentReceived", "CreditApplied")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Issued:
    """Outcome of one issue command: the invoice, and whether this call created it."""

    invoice: Invoice
    created: bool


class BillingApp(ServiceApplication):
    name = "billing"

    def erasure(self, family_id: str, reason: str) -> Erasure:
        return Erasure(family_id=family_id, reason=reason)

    # --- consuming the payment service's events -----------------------------------
    def apply_payment_event(self, message: Envelope, tracking: Tracking) -> bool:
        """Record what a payment event means here; False if it was already applied.

        Only a confirmed payment, money taken at the counter or the family's credit
        changes invoices. The others are tracked all the same, so that the consumer's
        position per payment moves on. Order between one payment's events does not matter
        here: a confirmation carries all it settles.
        """
        for _ in range(RECORD_ATTEMPTS):
            if self.already_applied(tracking):
                return False
            processing = ProcessingEvent[UUID](tracking=tracking)
            if message.name in SETTLING:
                collect(processing, *self._settlements(message))
            try:
                self._record(processing)
            except IntegrityError:
                # Either another consumer recorded this message (seen at the next check),
                # or an invoice got a new version meanwhile: read them again and retry.
                continue
            return True
        # Left to the consumer, which backs off and reads the message again.
        raise RuntimeError(f"could not record {message.type} {message.id}: invoices kept changing")

    def apply_payment_events(self, batch: list[tuple[Envelope, Tracking]]) -> int:
        """Record a whole poll of payment events in one transaction; how many were new.

        As the payment consumer's batches: one tracking record per subject (the payment),
        its last notification id in the batch, in the same transaction as the invoices'
        new events, so the poll is recorded whole or not at all. Whatever stops it (an
        invoice changed meanwhile, the database gone) raises with nothing recorded, and
        the caller applies the messages one by one with ``apply_payment_event``.
        """
        if not isinstance(self.recorder, Chained):
            # The in-memory store takes one tracking record per write.
            return sum(self.apply_payment_event(m, t) for m, t in batch)
        moved: dict[str, int] = {}
        # The invoices as this batch left them: two payments of one invoice in a poll.
        seen: dict[UUID, Invoice] = {}
        applied = 0
        for message in self._unrecorded(batch, moved):
            if message.name in SETTLING:
                seen.update((invoice.id, invoice) for invoice in
                            self._settlements(message, seen))
            applied += 1
        processing = ProcessingEvent[UUID]()
        collect(processing, *seen.values())
        self._record_poll(processing, moved)
        return applied

    def _settlements(self, message: Envelope, seen: dict[UUID, Invoice] | None = None
                     ) -> list[Invoice]:
        """The invoices this payment settles, settled (``seen``: those a batch changed
        already)."""
        data = message.data
        touched: dict[UUID, Invoice] = {}
        for allocation in data["allocations"]:
            invoice_id = UUID(allocation["invoice_id"])
            try:
                invoice = (touched.get(invoice_id) or (seen or {}).get(invoice_id)
                           or self.get_invoice(invoice_id))
                invoice.settle(
                    payment_id=data["payment_id"], amount_cents=allocation["amount_cents"],
                    # At the counter, when it was recorded: the day it was received is
                    # on the payment.
                    paid_at=data.get("paid_at") or data.get("recorded_at") or data[
                        "applied_at"],
                )
            except DomainError as e:
                # Not an invoice of ours, or a nonsensical amount: retrying cannot fix it
                # and stopping would hold up every later payment. Say so loudly.
                log.error("payment %s: allocation %s not applied: %s",
                          data["payment_id"], allocation, e)
                continue
            touched[invoice_id] = invoice
        return list(touched.values())

    # --- régies -------------------------------------------------------------------
    def open_regie(self, code: str, name: str, numcli: str, saisie: str) -> tuple[Regie, bool]:
        existing = self.find_regie(code)
        wanted = {"code": code, "name": name, "numcli": numcli, "saisie": saisie}
        if existing is not None:
            if existing.as_terms() != wanted:
                raise Conflict("code", f"régie {code} is already open with other settings")
            return existing, False
        regie = Regie.open(code, name, numcli, saisie)
        try:
            self.save(regie)
        except IntegrityError:
            return self.open_regie(code, name, numcli, saisie)
        return regie, True

    def find_regie(self, code: str) -> Regie | None:
        try:
            regie: Regie = self.repository.get(Regie.create_id(code))
        except AggregateNotFoundError:
            return None
        return regie

    def list_regies(self) -> list[Regie]:
        topic = get_topic(Regie.Opened)
        regies: list[Regie] = []
        start = 1
        while True:
            page = self.recorder.select_notifications(start, 500, topics=[topic])
            regies.extend(self.repository.get(UUID(str(n.originator_id))) for n in page)
            if len(page) < 500:
                break
            start = page[-1].id + 1
        return sorted(regies, key=lambda r: r.code)

    # --- invoices -----------------------------------------------------------------
    def get_invoice(self, invoice_id: UUID) -> Invoice:
        try:
            invoice: Invoice = self.repository.get(invoice_id)
        except AggregateNotFoundError:
            raise NotFound("id", "no such invoice") from None
        if not isinstance(invoice, Invoice):
            raise NotFound("id", "no such invoice")
        return invoice

    def _find_invoice(self, terms: InvoiceTerms) -> Invoice | None:
        try:
            invoice: Invoice = self.repository.get(Invoice.create_id(terms.regie, terms.number))
        except AggregateNotFoundError:
            return None
        return invoice

    @staticmethod
    def _same(existing: Invoice, terms: InvoiceTerms) -> Issued:
        if existing.terms() != terms:
            raise Conflict(
                "number",
                f"invoice {terms.number} of régie {terms.regie} exists with other content",
            )
        return Issued(existing, created=False)

    def _check_regie(self, code: str, known: dict[str, bool]) -> None:
        if code not in known:
            known[code] = self.find_regie(code) is not None
        if not known[code]:
            raise DomainError("regie", f"unknown régie {code!r}")

    def issue_invoice(self, terms: InvoiceTerms) -> Issued:
        self._check_regie(terms.regie, {})
        existing = self._find_invoice(terms)
        if existing is not None:
            return self._same(existing, terms)
        invoice = Invoice.issue(terms)
        try:
            self.save(invoice)
        except IntegrityError:
            # Another request issued the same number between our read and our write.
            existing = self._find_invoice(terms)
            assert existing is not None
            return self._same(existing, terms)
        return Issued(invoice, created=True)

    def issue_batch(self, items: Sequence[InvoiceTerms]) -> list[Issued | DomainError]:
        """Issue many invoices, each judged on its own; the valid ones are saved in bulk."""
        results: list[Issued | DomainError] = [DomainError("", "")] * len(items)
        known_regies: dict[str, bool] = {}
        pending: dict[UUID, tuple[int, Invoice, InvoiceTerms]] = {}
        for i, item in enumerate(items):
            try:
                self._check_regie(item.regie, known_regies)
                invoice_id = Invoice.create_id(item.regie, item.number)
                if invoice_id in pending:
                    # The same number twice in one batch: the second is a replay of the first.
                    results[i] = self._same(pending[invoice_id][1], item)
                    continue
                # No look-up of the store here: new numbers are the rule, and a number
                # issued before makes the chunk's save fail, which sorts it out one by one.
                invoice = Invoice.issue_new(item, invoice_id)
                pending[invoice_id] = (i, invoice, item)
                results[i] = Issued(invoice, created=True)
            except DomainError as e:
                results[i] = e
        chunk: list[tuple[int, Invoice, InvoiceTerms]] = []
        for entry in pending.values():
            chunk.append(entry)
            if len(chunk) >= BATCH_SAVE_SIZE:
                self._save_chunk(chunk, results)
                chunk = []
        if chunk:
            self._save_chunk(chunk, results)
        return results

    def _save_chunk(
        self,
        chunk: list[tuple[int, Invoice, InvoiceTerms]],
        results: list[Issued | DomainError],
    ) -> None:
        try:
            self._save_new([invoice for _, invoice, _ in chunk])
        except IntegrityError:
            # Some number was issued concurrently: fall back to one by one, which sorts
            # replays from conflicts without losing the others.
            for i, _, terms in chunk:
                try:
                    results[i] = self.issue_invoice(terms)
                except DomainError as e:
                    results[i] = e

    def _save_new(self, invoices: list[Invoice]) -> None:
        """``save(*invoices)`` for invoices just made, collected as aggregates (``collect``).

        The events are stored without the ``Recording`` objects ``save`` returns
        (``_store_new``); snapshots are ``save``'s own.
        """
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        collect(processing, *invoices)
        self._store_new(processing)
        self._take_snapshots(processing)

    def cancel_invoice(self, invoice_id: UUID, reason: str) -> Invoice:
        invoice = self.get_invoice(invoice_id)
        invoice.cancel(reason)
        self._save_command(invoice)
        return invoice

    def transfer_invoice(self, invoice_id: UUID, reference: str | None) -> Invoice:
        invoice = self.get_invoice(invoice_id)
        invoice.transfer(reference)
        self._save_command(invoice)
        return invoice

    def credit_invoice(self, invoice_id: UUID, amount_cents: int, reason: str, by: str
                       ) -> tuple[Invoice, dict[str, Any]]:
        invoice = self.get_invoice(invoice_id)
        note = invoice.credit(amount_cents, reason, by)
        self._save_command(invoice)
        return invoice, note

    def _save_command(self, aggregate: Any) -> None:
        try:
            self.save(aggregate)
        except IntegrityError:
            raise Conflict("id", "the invoice changed meanwhile; try again") from None
