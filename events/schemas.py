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
