"""HTTP schemas of the billing API (never the wire events: those live in ``events/``)."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from services.billing.domain import DUE_BEFORE_DEADLINE, MAX_AMOUNT_CENTS, InvoiceTerms, Line
from services.common.web.validators import CODE, FAMILY, NUMCLI

# Anchored with \Z, not $: in Python "$" also matches before a trailing newline, which let
# "F-1\n" through as a second invoice beside "F-1" (and "000001\n" as a numcli).
NUMBER = validate.Regexp(
    r"^[A-Za-z0-9._/-]{1,40}\Z", error="letters, digits, '.', '_', '/' or '-', 1 to 40"
)
MAX_BATCH = 5000


class RegieIn(Schema):
    code = fields.String(required=True, validate=CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    numcli = fields.String(required=True, validate=NUMCLI)
    saisie = fields.String(
        required=True,
        validate=validate.OneOf(["T", "X", "W"], error="T (test), X (activation) or W"),
    )


class RegieOut(RegieIn):
    pass


class RegieList(Schema):
    regies = fields.List(fields.Nested(RegieOut))


class LineSchema(Schema):
    label = fields.String(required=True, validate=validate.Length(min=1, max=200))
    quantity = fields.Integer(required=True, strict=True, validate=validate.Range(1, 100_000))
    unit_price_cents = fields.Integer(
        required=True, strict=True, validate=validate.Range(-1_000_000_000, 1_000_000_000)
    )


class InvoiceIn(Schema):
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True, validate=NUMBER)
    family_id = fields.String(required=True, validate=FAMILY)
    payer_email = fields.Email(required=True, validate=validate.Length(min=6, max=80))
    label = fields.String(required=True, validate=validate.Length(min=1, max=200))
    issued_on = fields.Date(required=True)
    payable_until = fields.Date(required=True, metadata={
        "description": "last day of online payment (PayFiP); from issued_on on"})
    due_on = fields.Date(required=True, metadata={
        "description": "the due date, after which the invoice may go to the public "
        "treasury; from payable_until on"})
    lines = fields.List(
        fields.Nested(LineSchema), required=True, validate=validate.Length(min=1, max=200)
    )
    amount_cents = fields.Integer(
        required=True, strict=True, validate=validate.Range(1, MAX_AMOUNT_CENTS)
    )

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["payable_until"] < data["issued_on"]:
            raise ValidationError("must not be before issued_on", "payable_until")
        if data["due_on"] < data["payable_until"]:
            raise ValidationError(DUE_BEFORE_DEADLINE, "due_on")

    @post_load
    def to_terms(self, data: dict[str, Any], **kwargs: Any) -> InvoiceTerms:
        return InvoiceTerms(**{**data, "lines": tuple(Line(**line) for line in data["lines"])})


class InvoiceOut(Schema):
    id = fields.String()
    regie = fields.String()
    number = fields.String()
    family_id = fields.String()
    payer_email = fields.String()
    label = fields.String()
    issued_on = fields.Date()
    payable_until = fields.Date()
    due_on = fields.Date()
    lines = fields.List(fields.Nested(LineSchema))
    amount_cents = fields.Integer()
    amount_due_cents = fields.Integer()
    refund_due_cents = fields.Integer(
        metadata={"description": "received after the invoice closed (or beyond its amount): "
                  "to refund or reallocate"}
    )
    status = fields.String()
    cancel_reason = fields.String(allow_none=True)
    transfer_reference = fields.String(allow_none=True)
    credit_notes = fields.List(fields.Nested(lambda: CreditNoteOut()), dump_default=list,
                               metadata={
        "description": "its credit notes (avoirs), oldest first"})


class BatchIn(Schema):
    # Items are checked one by one by the view, so that one bad invoice does not sink
    # the thousands of good ones beside it: even an item that is not an object (null, a
    # string) gets its own 422 result rather than failing the whole batch here.
    invoices = fields.List(
        fields.Raw(allow_none=True, metadata={"type": "object"}),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH, error=f"1 to {MAX_BATCH} invoices"),
    )


class BatchResult(Schema):
    index = fields.Integer()
    status = fields.Integer(metadata={"description": "201 created, 200 replay, 409, 422"})
    invoice = fields.Nested(InvoiceOut, allow_none=True)
    errors = fields.Dict(allow_none=True)


class BatchOut(Schema):
    results = fields.List(fields.Nested(BatchResult))


class CancelIn(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class TransferIn(Schema):
    reference = fields.String(load_default=None, validate=validate.Length(min=1, max=100))


class CreditNoteIn(Schema):
    amount_cents = fields.Integer(required=True, strict=True,
                                  validate=validate.Range(1, MAX_AMOUNT_CENTS))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class CreditNoteOut(Schema):
    id = fields.String()
    amount_cents = fields.Integer()
    reason = fields.String()
    applied_cents = fields.Integer(metadata={"description": "what it took off the amount due"})
    credit_cents = fields.Integer(metadata={
        "description": "what it gave back of an amount already paid: the family's credit in "
                       "the régie"})
    by = fields.String(metadata={"description": "who issued it: the role of the token, or the "
                                                "staff member named in X-Regie-Staff"})


class CreditedOut(Schema):
    credit_note = fields.Nested(CreditNoteOut)
    invoice = fields.Nested(InvoiceOut)
