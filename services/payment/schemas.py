"""HTTP schemas of the payment API."""

import base64
import binascii
import json
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from services.common.web.validators import CODE, FAMILY


class RegieTotal(Schema):
    code = fields.String()
    name = fields.String()
    count = fields.Integer()
    total_cents = fields.Integer()


class ToPay(Schema):
    regies = fields.List(fields.Nested(RegieTotal))


class ToPayInvoice(Schema):
    id = fields.String()
    number = fields.String()
    label = fields.String()
    issued_on = fields.Date()
    payable_until = fields.Date()
    amount_due_cents = fields.Integer()
    total_cents = fields.Integer()
    payable = fields.Boolean()
    reason = fields.String(
        allow_none=True,
        metadata={"description": "why not payable online: online_payment_deadline_passed, "
                                 "payment_in_progress"},
    )
    payment_id = fields.String(allow_none=True, metadata={
        "description": "the payment in progress that reserves it, null otherwise"})


PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class Cursor(fields.String):
    """Where the previous page ended: opaque to clients, who send back ``next_cursor``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any,  # type: ignore[override]
                     **kwargs: Any) -> list[str]:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            after = json.loads(base64.urlsafe_b64decode(text.encode() + b"=="))
        except (ValueError, binascii.Error) as e:
            raise ValidationError("not a cursor this API gave") from e
        if not (isinstance(after, list) and after and all(isinstance(v, str) for v in after)):
            raise ValidationError("not a cursor this API gave")
        return after


def cursor_after(key: list[str] | tuple[str, ...] | None) -> str | None:
    """The ``next_cursor`` of a page whose last row has ``key``; None on the last page."""
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


class PageQuery(Schema):
    limit = fields.Integer(load_default=PAGE_SIZE,
                           validate=validate.Range(min=1, max=MAX_PAGE_SIZE), metadata={
                               "description": f"rows per page, {PAGE_SIZE} when not given, "
                                              f"at most {MAX_PAGE_SIZE}"})
    cursor = Cursor(load_default=None, metadata={
        "description": "the next_cursor of the previous page; none for the first page"})


class ToPayInvoices(Schema):
    regie = fields.String()
    invoices = fields.List(fields.Nested(ToPayInvoice))
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "send it as cursor for the next page; null on the last page"})




class PaymentIn(Schema):
    family_id = fields.String(required=True, validate=FAMILY)
    regie = fields.String(required=True, validate=CODE)
    invoice_ids = fields.List(
        fields.UUID(), required=True,
        validate=validate.Length(min=1, max=50, error="1 to 50 invoices of one régie"),
    )
    email = fields.Email(required=True, validate=validate.Length(min=6, max=80))


class Allocation(Schema):
    invoice_id = fields.String()
    number = fields.String()
    amount_cents = fields.Integer()
    reason = fields.String()


class PaymentOut(Schema):
    id = fields.String()
    status = fields.String(metadata={
        "description": "started, requested, confirmed, refused, abandoned, expired or failed"})
    family_id = fields.String()
    regie = fields.String()
    idop = fields.String(allow_none=True)
    refdet = fields.String()
    amount_cents = fields.Integer()
    redirect_url = fields.String(allow_none=True)
    allocations = fields.List(fields.Nested(Allocation))
    refunds = fields.List(fields.Nested(Allocation), metadata={
        "description": "confirmed amounts for invoices cancelled or transferred meanwhile"})
    resultrans = fields.String(allow_none=True)
    numauto = fields.String(allow_none=True)
    paid_at = fields.String(allow_none=True, metadata={"description": "Europe/Paris time"})
    reserved_until = fields.AwareDateTime(allow_none=True, metadata={
        "description": "until when the invoices stay reserved for this payment; null once "
                       "they may be paid again"})
    late = fields.Boolean(metadata={
        "description": "confirmed by PayFiP after the reservation ended or the payment was "
                       "called expired or abandoned"})


class NotificationIn(Schema):
    # PayFiP sends idop; some integrations read idOp: accept both.
    idop = fields.String(load_default=None)
    idOp = fields.String(load_default=None)


class HistoryLine(Schema):
    id = fields.String()
    number = fields.String()
    label = fields.String()
    regie = fields.String()
    regie_name = fields.String()
    issued_on = fields.String()
    total_cents = fields.Integer()
    amount_due_cents = fields.Integer()
    status = fields.String(metadata={"description": "open, paid, cancelled or transferred"})
    paid_at = fields.String(allow_none=True, metadata={"description": "Europe/Paris time"})
    paid_by = fields.String(allow_none=True, metadata={
        "description": "how it was paid: card or direct_debit online; cash, cheque, cesu, "
                       "ancv or transfer at the counter (what paid the last part of it); "
                       "credit, the family's credit in the régie"})
    paid_by_payment_id = fields.String(allow_none=True, metadata={
        "description": "the payment that paid it (GET /payments/{id}); null unless paid"})
    payment_id = fields.String(allow_none=True, metadata={
        "description": "the payment in progress, while one holds the invoice; null otherwise, "
        "paid invoices included"})


class History(Schema):
    invoices = fields.List(fields.Nested(HistoryLine))
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "send it as cursor for the next page; null on the last page"})


class JournalQuery(Schema):
    date = fields.Date(required=True)


class JournalLine(Schema):
    id = fields.String()
    family_id = fields.String()
    status = fields.String()
    amount_cents = fields.Integer()
    refdet = fields.String()
    idop = fields.String(allow_none=True)
    invoices = fields.String()
    resultrans = fields.String(allow_none=True)
    means = fields.String(allow_none=True)
    numauto = fields.String(allow_none=True)
    paid_at = fields.String(allow_none=True)
    closed_at = fields.String(allow_none=True)
    acted_by = fields.String(allow_none=True, data_key="by", metadata={
        "description": "who took the money at the counter or paid the refund back: the "
                       "staff member, or the acting token's role; null for PayFiP's"})


class ChainHead(Schema):
    service = fields.String()
    notification_id = fields.Integer()
    hash = fields.String()
    day = fields.String()


class Journal(Schema):
    regie = fields.String()
    date = fields.Date()
    payments = fields.List(fields.Nested(JournalLine))
    totals = fields.Dict(keys=fields.String(), values=fields.Integer())
    not_paid = fields.List(fields.Nested(JournalLine))
    chain_root = fields.String(allow_none=True, metadata={
        "description": "hash chain of the payment history at the end of the day (regie verify)"})
    chain_head = fields.Nested(ChainHead, allow_none=True, metadata={
        "description": "the same as a chain head (service, position, hash, day): a line of "
                       "a JSONL file that regie verify --heads takes"})
    code = fields.String(allow_none=True, metadata={
        "description": "the verification code printed on the journal's PDF: it attests "
                       "chain_head (GET /verifications)"})


class CounterPaymentIn(Schema):
    regie = fields.String(required=True, validate=CODE)
    family_id = fields.String(required=True, validate=FAMILY)
    means = fields.String(required=True, validate=validate.OneOf(
        ["cash", "cheque", "cesu", "ancv", "transfer"]))
    amount_cents = fields.Integer(required=True, strict=True,
                                  validate=validate.Range(min=1, max=10_000_000_000))
    reference = fields.String(load_default=None, allow_none=True,
                              validate=validate.Length(min=1, max=200), metadata={
        "description": "cheque number, CESU or ANCV voucher numbers, transfer label; "
                       "required except for cash. The same reference again is the same "
                       "payment"})
    received_on = fields.Date(required=True)
    invoice_ids = fields.List(
        fields.UUID(), load_default=None,
        validate=validate.Length(min=1, max=50, error="1 to 50 invoices of one régie"),
        metadata={"description": "the invoices it pays, in this order; without it, the "
                                 "family's open invoices of the régie, oldest due first"})


class CounterAllocation(Schema):
    invoice_id = fields.String()
    number = fields.String()
    amount_cents = fields.Integer()


class CounterPaymentOut(Schema):
    id = fields.String()
    regie = fields.String()
    family_id = fields.String()
    means = fields.String()
    amount_cents = fields.Integer()
    reference = fields.String(allow_none=True)
    received_on = fields.String()
    invoice_ids = fields.List(fields.String(), allow_none=True)
    allocations = fields.List(fields.Nested(CounterAllocation))
    unallocated_cents = fields.Integer(metadata={
        "description": "beyond what was due: now the family's credit in the régie"})
    by = fields.String(metadata={"description": "who recorded it: the role of the token, or "
                                                "the staff member named in X-Regie-Staff"})
    recorded_at = fields.AwareDateTime()
    receipt_url = fields.String(metadata={"description": "where its receipt is served"})


class CreditRefundIn(Schema):
    amount_cents = fields.Integer(load_default=None, allow_none=True, strict=True,
                                  validate=validate.Range(min=1), metadata={
        "description": "what to pay back; the whole credit without it"})


class RefundsQuery(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(["due", "paid"]))
    regie = fields.String(load_default=None, validate=CODE)


class RefundPaidIn(Schema):
    means = fields.String(required=True, validate=validate.OneOf(["cash", "cheque",
                                                                  "transfer"]))
    reference = fields.String(load_default=None, allow_none=True,
                              validate=validate.Length(min=1, max=200), metadata={
        "description": "the cheque's number or the transfer's label; required except for "
                       "cash"})
    paid_on = fields.Date(required=True)


class RefundOut(Schema):
    id = fields.String()
    family_id = fields.String()
    regie = fields.String()
    amount_cents = fields.Integer()
    source = fields.String(metadata={
        "description": "online_payment (PayFiP took money for invoices closed meanwhile: "
                       "RefundNeeded) or credit (the family's credit asked back)"})
    source_id = fields.String(metadata={"description": "the payment, or the credit's event"})
    status = fields.String(metadata={"description": "due or paid"})
    asked_at = fields.String()
    paid_on = fields.String(allow_none=True)
    means = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    paid_by = fields.String(allow_none=True, metadata={
        "description": "who recorded the payment: the role of the acting token, or the "
                       "staff member named in X-Regie-Staff"})


class RefundList(Schema):
    refunds = fields.List(fields.Nested(RefundOut))


class VerificationQuery(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=40), metadata={
        "description": "a document's verification code, as printed (dashes and spaces "
                       "optional, any case)"})


class Verification(Schema):
    """What a verification code attests; never who the family is."""

    authentic = fields.Boolean(required=True)
    kind = fields.String(metadata={"description": "invoice, certificate, receipt or journal"})
    document = fields.String(metadata={"description": "the document's title, in French"})
    regie = fields.String()
    regie_name = fields.String()
    number = fields.String(metadata={"description": "the invoice's number; for a receipt, "
                                                    "the invoices it paid"})
    amount_cents = fields.Integer()
    date = fields.Date(metadata={"description": "issued on (invoice), paid on "
                                                "(certificate), received on (receipt), "
                                                "the day (journal)"})
    means = fields.String()
    status = fields.String(metadata={"description": "what the invoice or payment is now, "
                                                    "in French"})
