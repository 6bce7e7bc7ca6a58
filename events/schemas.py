"""One marshmallow schema per public event type and version.

Amounts are integer cents, dates ISO 8601 strings. Adding an optional field is a minor
change. Anything else is a new version with an upcaster in ``events.registry``, and a new
version keeps every field of the one before with the same meaning (a superset), so that a
reader of vN reads vN+1. A change that would break such a reader is a new event name.
See docs/subscribers.md.
"""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from events import formats

CODE = validate.Regexp(formats.published(formats.REGIE_CODE),
                       error="letters, digits, '-' or '_', 1 to 32")
NUMCLI = validate.Regexp(formats.published(formats.NUMCLI), error="exactly 6 digits")


class Strict(Schema):
    class Meta:
        # Subscribers must be able to add fields in a minor version without breaking us.
        unknown = "exclude"


class RegieOpenedV1(Strict):
    """A régie was opened: a service with its own PayFiP account. Keyed by its code."""

    code = fields.String(required=True, validate=CODE)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    numcli = fields.String(required=True, validate=NUMCLI)
    saisie = fields.String(required=True, validate=validate.OneOf(["T", "X", "W"]))


class InvoiceLineV1(Strict):
    """One line of an invoice: quantity times unit price, in cents."""

    label = fields.String(required=True)
    quantity = fields.Integer(required=True, strict=True)
    unit_price_cents = fields.Integer(required=True, strict=True)


class InvoiceIssuedV1(Strict):
    """An invoice was issued to a family, in a régie."""

    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True, metadata={"description": "Also the Kafka key."})
    payer_email = fields.String(
        required=True, metadata={"description": "Where PayFiP sends the payment receipt."}
    )
    label = fields.String(required=True)
    issued_on = fields.Date(required=True)
    payable_until = fields.Date(
        required=True, metadata={"description": "Last day it can be paid online."}
    )
    due_on = fields.Date(required=True)
    lines = fields.List(fields.Nested(InvoiceLineV1), required=True)
    amount_cents = fields.Integer(
        required=True, strict=True, metadata={"description": "Total, in cents: the lines' sum."}
    )


class PayerV2(Strict):
    """Who pays an invoice: the family and the address PayFiP's receipt goes to."""

    family_id = fields.String(required=True)
    email = fields.String(required=True)


class InvoiceIssuedV2(InvoiceIssuedV1):
    """v1 plus `payer`, a structured reference to who pays.

    A superset of v1: `family_id` and `payer_email` stay, with the same values as
    `payer.family_id` and `payer.email`, so a reader written for v1 reads v2 as is.
    New payer details will be optional fields of `payer` (minor changes).
    """

    payer = fields.Nested(PayerV2, required=True)

    @validates_schema
    def payer_matches_the_flat_fields(self, data: dict[str, Any], **kwargs: Any) -> None:
        payer = data.get("payer") or {}
        for flat, inner in (("family_id", "family_id"), ("payer_email", "email")):
            if flat in data and inner in payer and data[flat] != payer[inner]:
                raise ValidationError({"payer": {inner: [f"must equal {flat}"]}})


def invoice_issued_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Upcaster: a v1 InvoiceIssued (wire form) as v2, `payer` built from the flat fields."""
    payer = {
        inner: data[flat]
        for flat, inner in (("family_id", "family_id"), ("payer_email", "email"))
        if flat in data
    }
    return {**data, "payer": payer}


class FamilyForgottenV1(Strict):
    """A family's personal data was erased on request (its key destroyed).

    Sent by both services on their topics. It holds no personal data: a subscriber
    erases what it keeps of the family (e-mail addresses, names) and shows "[effacé]"
    instead; amounts, numbers, dates and statuses stay. Later messages carry
    "[effacé]" in each personal field of the family. See docs/subscribers.md.
    """

    family_id = fields.String(required=True, metadata={"description": "Also the Kafka key."})
    forgotten_at = fields.AwareDateTime(required=True)


class InvoiceCancelledV1(Strict):
    """An unpaid invoice was cancelled: nothing is due on it any more."""

    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    reason = fields.String(required=True)


class InvoiceTransferredV1(Strict):
    """An unpaid invoice went to the public treasury (a titre): it is no longer paid here."""

    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    reference = fields.String(
        required=True, allow_none=True,
        metadata={"description": "The public treasury's titre, null if not given."},
    )


class InvoiceSettledV1(Strict):
    """A payment settled an invoice, in full or in part."""

    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    payment_id = fields.String(required=True)
    # What this payment settled of the invoice, not the invoice's total.
    amount_cents = fields.Integer(
        required=True, strict=True,
        metadata={"description": "What this payment settled of the invoice, in cents."},
    )
    paid_at = fields.AwareDateTime(required=True)


class InvoiceCreditedV1(Strict):
    """A credit note (avoir) on an invoice: it lowered what is due, or, on an invoice paid
    already, gave the family credit in the régie."""

    invoice_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    number = fields.String(required=True)
    family_id = fields.String(required=True)
    credit_note_id = fields.String(required=True)
    amount_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "The credit note's amount, in cents: applied_cents plus credit_cents."})
    reason = fields.String(required=True)
    applied_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What it took off the invoice's amount due."})
    credit_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What it gave back of an amount already paid: the family's credit in "
                       "the régie, applied to its next invoices or refunded."})
    by = fields.String(required=True, metadata={
        "description": "Who issued it: the role of the acting token, or a staff id."})


# --- payment.payments ---------------------------------------------------------------
# Amounts carry no range check on purpose: the payment service has already enforced
# PayFiP's limits, and a relay that cannot encode a stored event would stall its topic.


class AllocationV1(Strict):
    """One invoice a payment pays, and how much of it."""

    invoice_id = fields.String(required=True)
    number = fields.String(required=True)
    amount_cents = fields.Integer(required=True, strict=True)


class RefundV1(AllocationV1):
    """An invoice a payment paid but could not settle, the amount to give back, and why."""

    # Why the money cannot settle the invoice: its status when the payment was confirmed
    # ("cancelled", "transferred", or "paid" by another payment after a late confirmation).
    reason = fields.String(required=True, metadata={
        "description": "The invoice's status when the payment was confirmed: cancelled, "
                       "transferred, or paid (by another payment, the confirmation being "
                       "late); or credited: a credit note lowered what it owed while it was "
                       "being paid, and this is the difference."})


class PaymentRequestedV1(Strict):
    """A family started paying invoices of one régie: PayFiP gave the payment an idop."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refdet = fields.String(required=True)
    amount_cents = fields.Integer(required=True, strict=True)
    invoices = fields.List(fields.Nested(AllocationV1), required=True)


class PaymentConfirmedV1(Strict):
    """PayFiP confirmed the payment: the money is collected."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refdet = fields.String(required=True)
    # What PayFiP collected; the allocations plus any RefundNeeded add up to it.
    amount_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What PayFiP collected, in cents: the allocations plus any "
                       "RefundNeeded add up to it."})
    # P: card, V: one-off SEPA direct debit.
    resultrans = fields.String(
        required=True, validate=validate.OneOf(["P", "V"]),
        metadata={"description": "P: card, V: one-off SEPA direct debit."},
    )
    numauto = fields.String(required=True)
    # PayFiP's local date and time, Europe/Paris, with its offset.
    paid_at = fields.AwareDateTime(required=True, metadata={
        "description": "PayFiP's local date and time, Europe/Paris, with its offset."})
    # The invoices this payment settles; those closed meanwhile are in RefundNeeded.
    allocations = fields.List(fields.Nested(AllocationV1), required=True, metadata={
        "description": "The invoices this payment settles; those closed meanwhile are in "
                       "RefundNeeded."})


class PaymentConfirmedV2(PaymentConfirmedV1):
    """v1 plus `late` and `received_at`: PayFiP may confirm after the invoices were freed.

    A superset of v1. `late` is true when the confirmation came after the payment's
    reservation ended, or after it was called expired or abandoned: its invoices may have
    been paid meanwhile by another payment, and those are then in RefundNeeded.
    """

    late = fields.Boolean(required=True, metadata={
        "description": "Confirmed after the reservation ended or the payment was called "
                       "expired or abandoned."})
    received_at = fields.AwareDateTime(required=True, allow_none=True, metadata={
        "description": "When Régie read the confirmation from PayFiP; null in records first "
                       "published as v1."})


def payment_confirmed_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Upcaster: a v1 PaymentConfirmed (wire form) as v2; v1 was never sent late."""
    return {**data, "late": False, "received_at": None}


class PaymentRefusedV1(Strict):
    """PayFiP refused the payment: nothing was paid."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    # R: card refused, Z: direct debit refused.
    resultrans = fields.String(
        required=True, validate=validate.OneOf(["R", "Z"]),
        metadata={"description": "R: card refused, Z: direct debit refused."},
    )


class PaymentAbandonedV1(Strict):
    """The payer left PayFiP without paying (resultrans A): nothing was paid."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)


class PaymentExpiredV1(Strict):
    """PayFiP no longer knows the payment, or it stayed pending past its life: nothing was paid."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    # PayFiP's fault code: P1 (idop unknown or purged), P5 (still pending past its life).
    reason = fields.String(required=True, metadata={
        "description": "PayFiP's fault code: P1 (idop unknown or purged), P5 (still pending "
                       "past its life)."})


class RefundNeededV1(Strict):
    """A confirmed payment paid invoices closed meanwhile: that money must go back."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True)
    regie = fields.String(required=True, validate=CODE)
    idop = fields.String(required=True)
    refunds = fields.List(fields.Nested(RefundV1), required=True, validate=validate.Length(min=1))


COUNTER_MEANS = ["cash", "cheque", "cesu", "ancv", "transfer"]


class CounterPaymentReceivedV1(Strict):
    """A cashier took money for a family in a régie (cash, cheque, CESU or ANCV vouchers, a
    transfer): it pays the allocated invoices, in full or in part, and what is left over is
    the family's credit in the régie."""

    payment_id = fields.String(required=True)
    family_id = fields.String(required=True, metadata={"description": "Also the Kafka key."})
    regie = fields.String(required=True, validate=CODE)
    means = fields.String(required=True, validate=validate.OneOf(COUNTER_MEANS))
    reference = fields.String(required=True, allow_none=True, metadata={
        "description": "Cheque number, CESU or ANCV voucher numbers, transfer label; null for "
                       "cash taken without one."})
    amount_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What was received, in cents: the allocations plus unallocated_cents."})
    received_on = fields.Date(required=True, metadata={
        "description": "The day the money was received (Paris)."})
    recorded_at = fields.AwareDateTime(required=True, metadata={
        "description": "When Régie recorded it."})
    allocations = fields.List(fields.Nested(AllocationV1), required=True, metadata={
        "description": "The invoices it pays and how much of each: an amount under what the "
                       "invoice owed pays it in part."})
    unallocated_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "Money beyond what was due: the family's credit in the régie."})
    by = fields.String(required=True, metadata={
        "description": "Who recorded it: the role of the acting token (cashier, operator), "
                       "or a staff id."})


class CreditAppliedV1(Strict):
    """The family's credit in the régie (money paid beyond what was due, credit notes on
    paid invoices) paid a new invoice of the family there, in full or in part."""

    payment_id = fields.String(required=True, metadata={
        "description": "This application's id: what billing records as the settlement's "
                       "payment."})
    credit_id = fields.String(required=True)
    family_id = fields.String(required=True, metadata={"description": "Also the Kafka key."})
    regie = fields.String(required=True, validate=CODE)
    applied_at = fields.AwareDateTime(required=True)
    allocations = fields.List(fields.Nested(AllocationV1), required=True)
    balance_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What the régie still owes the family after it."})
    by = fields.String(required=True, metadata={
        "description": "Who did it: automatic, the credit applying itself."})


class RefundPaidV1(Strict):
    """The régisseur paid money back to a family: what a confirmed payment took for invoices
    closed meanwhile (RefundNeeded), or the family's credit it asked back."""

    refund_id = fields.String(required=True)
    family_id = fields.String(required=True, metadata={"description": "Also the Kafka key."})
    regie = fields.String(required=True, validate=CODE)
    amount_cents = fields.Integer(required=True, strict=True, metadata={
        "description": "What was paid back, in cents (positive)."})
    source = fields.String(required=True, validate=validate.OneOf(["online_payment", "credit"]),
                           metadata={"description": "online_payment: the payment_id of a "
                                     "RefundNeeded is source_id; credit: the family's credit."})
    source_id = fields.String(required=True)
    means = fields.String(required=True, validate=validate.OneOf(["cash", "cheque", "transfer"]))
    reference = fields.String(required=True, allow_none=True, metadata={
        "description": "The cheque's number or the transfer's label; null for cash."})
    paid_on = fields.Date(required=True)
    by = fields.String(required=True, metadata={
        "description": "Who recorded it: the role of the acting token, or a staff id."})


# --- audit.chain-heads --------------------------------------------------------------


class ChainHeadV1(Strict):
    """Where a service's event hash chain stood: its last position and that position's hash.

    Each relay publishes one at least every minute and one at each day's end (Paris). Kept
    outside Régie's database (an archive of this topic on write-once storage), heads let
    `regie verify --heads` show that the history up to each of them was not truncated nor
    rewritten since.
    """

    service = fields.String(required=True, validate=validate.OneOf(["billing", "payment"]),
                            metadata={"description": "Also the Kafka key."})
    notification_id = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=1),
        metadata={"description": "The position of the chain's last event in the service's "
                                 "log."})
    hash = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$", error="64 hex digits"),
        metadata={"description": "The chain's hash at that position: SHA-256, or "
                                 "HMAC-SHA-256 when the deployment keys its chain."})
    day = fields.Date(required=True, metadata={
        "description": "The day (Paris) that event was recorded; a day-end head is the "
                       "last of its day."})
