"""HTTP schemas of the payment API."""

from marshmallow import Schema, fields


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
        metadata={"description": "why not payable online: online_payment_deadline_passed"},
    )


class ToPayInvoices(Schema):
    regie = fields.String()
    invoices = fields.List(fields.Nested(ToPayInvoice))
