"""One marshmallow schema per public event type and version.

Amounts are integer cents, dates ISO 8601 strings. Adding an optional field is a minor
change; anything else is a new version with an upcaster in ``events.registry``.
"""

from marshmallow import Schema, fields, validate

CODE = validate.Regexp(r"^[A-Za-z0-9_-]{1,32}$", error="letters, digits, '-' or '_', 1 to 32")
NUMCLI = validate.Regexp(r"^[0-9]{6}$", error="exactly 6 digits")


class Strict(Schema):
    class Meta:
        # Subscribers must be able to add fields in a minor version without breaking us.
        unknown = "exclude"


class RegieOpenedV1(Strict):
    code = fields.String(required=True, validate=CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    numcli = fields.String(required=True, validate=NUMCLI)
    saisie = fields.String(required=True, validate=validate.OneOf(["T", "X", "W"]))


class InvoiceLineV1(Strict):
    label = fields.String(required=True)
    quantity = fields.Integer(required=True, strict=True)
    unit_price_cents = fields.Integer(required=True, strict=True)


class InvoiceIssuedV1(Strict):
    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    payer_email = fields.String(required=True)
    label = fields.String(required=True)
    issued_on = fields.Date(required=True)
    payable_until = fields.Date(required=True)
    due_on = fields.Date(required=True)
    lines = fields.List(fields.Nested(InvoiceLineV1), required=True)
    amount_cents = fields.Integer(required=True, strict=True)


class InvoiceCancelledV1(Strict):
    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    reason = fields.String(required=True)


class InvoiceTransferredV1(Strict):
    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    reference = fields.String(required=True, allow_none=True)


class InvoiceSettledV1(Strict):
    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    payment_id = fields.String(required=True)
    # What this payment settled of the invoice, not the invoice's total.
    amount_cents = fields.Integer(required=True, strict=True)
    paid_at = fields.AwareDateTime(required=True)


# --- payment.payments ---------------------------------------------------------------
# Amounts carry no range check on purpose: the payment service has already enforced
# PayFiP's limits, and a relay that cannot encode a stored event would stall its topic.


class AllocationV1(Strict):
    """One invoice a payment pays, and how much of it."""

    invoice_id = fields.String(required=True)
    number = fields.String(required=True)
    amount_cents = fields.Integer(required=True, strict=True)


class RefundV1(AllocationV1):
    # Why the money cannot settle the invoice: its status when the payment was confirmed
    # ("cancelled", "transferred").
    reason = fields.String(required=True)


class PaymentRequestedV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refdet = fields.String(required=True)
    amount_cents = fields.Integer(required=True, strict=True)
    invoices = fields.List(fields.Nested(AllocationV1), required=True)


class PaymentConfirmedV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refdet = fields.String(required=True)
    # What PayFiP collected; the allocations plus any RefundNeeded add up to it.
    amount_cents = fields.Integer(required=True, strict=True)
    # P: card, V: one-off SEPA direct debit.
    resultrans = fields.String(required=True, validate=validate.OneOf(["P", "V"]))
    numauto = fields.String(required=True)
    # PayFiP's local date and time, Europe/Paris, with its offset.
    paid_at = fields.AwareDateTime(required=True)
    # The invoices this payment settles; those closed meanwhile are in RefundNeeded.
    allocations = fields.List(fields.Nested(AllocationV1), required=True)


class PaymentRefusedV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    # R: card refused, Z: direct debit refused.
    resultrans = fields.String(required=True, validate=validate.OneOf(["R", "Z"]))


class PaymentAbandonedV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)


class PaymentExpiredV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    # PayFiP's fault code: P1 (idop unknown or purged), P5 (still pending past its life).
    reason = fields.String(required=True)


class RefundNeededV1(Strict):
    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refunds = fields.List(fields.Nested(RefundV1), required=True, validate=validate.Length(min=1))
