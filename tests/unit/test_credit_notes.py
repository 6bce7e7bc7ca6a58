"""Credit notes (avoirs) and the family's credit, on the domains alone."""

from datetime import UTC, date, datetime
from uuid import uuid4

import pytest

from services.billing.domain import PAID, Conflict, DomainError, Invoice
from services.payment import domain
from tests.factories import terms

PAID_AT = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def test_a_credit_note_on_an_open_invoice_lowers_what_is_due() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    note = invoice.credit(1000, "séjour écourté", by="issuer")
    assert (note["applied_cents"], note["credit_cents"], note["by"]) == (1000, 0, "issuer")
    assert (invoice.status, invoice.amount_due_cents) == ("issued", 1500)
    invoice.credit(1500, "séjour annulé", by="issuer")
    assert (invoice.status, invoice.amount_due_cents) == (PAID, 0)


def test_a_credit_note_on_a_paid_invoice_is_the_familys_credit() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.settle(payment_id="p-1", amount_cents=2500, paid_at=PAID_AT)
    note = invoice.credit(700, "repas non pris", by="operator")
    assert (note["applied_cents"], note["credit_cents"]) == (0, 700)
    assert (invoice.status, invoice.amount_due_cents) == (PAID, 0)
    # Part paid: it first lowers what is still due, the rest is credit.
    part = Invoice.issue(terms("F-2", unit=2500))
    part.settle(payment_id="p-2", amount_cents=2000, paid_at=PAID_AT)
    note = part.credit(1200, "tarif réduit", by="issuer")
    assert (note["applied_cents"], note["credit_cents"], part.status) == (500, 700, PAID)


def test_credit_notes_never_exceed_the_invoice_nor_touch_a_closed_one() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.credit(2000, "remise", by="issuer")
    with pytest.raises(DomainError) as refused:
        invoice.credit(501, "encore", by="issuer")
    assert refused.value.field == "amount_cents"
    with pytest.raises(DomainError, match="blank"):
        invoice.credit(100, " ", by="issuer")
    cancelled = Invoice.issue(terms("F-3"))
    cancelled.cancel("doublon")
    with pytest.raises(Conflict):
        cancelled.credit(100, "remise", by="issuer")


def payment_invoice(number: str, amount_cents: int) -> domain.Invoice:
    return domain.Invoice(
        invoice_id=str(uuid4()), regie="SPORTS", number=number, family_id="fam-1",
        label="Vacances sportives", issued_on=date(2025, 2, 1), payable_until=date(2030, 1, 1),
        due_on=date(2030, 1, 1), amount_cents=amount_cents, sequence=1)


def test_on_the_payment_side_what_was_paid_here_already_becomes_credit() -> None:
    invoice = payment_invoice("S-1", 2500)
    invoice.pay_at_counter(payment_id="c-1", amount_cents=2000, means="cash",
                           received_on=date(2025, 3, 3))
    # Billing lowered 1000 it thought due; only 500 was still due here.
    assert invoice.credit(credit_note_id="n-1", applied_cents=1000, sequence=2) == 500
    assert (invoice.status, invoice.amount_due_cents) == (domain.PAID, 0)


def test_the_familys_credit_pays_its_next_invoice() -> None:
    credit = domain.FamilyCredit(regie="SPORTS", family_id="fam-1")
    credit.credit(amount_cents=1000, source="credit_note", source_id="n-1", by="issuer")
    small = payment_invoice("S-2", 600)
    credit.apply_to(small)
    assert (small.status, small.amount_due_cents, credit.balance_cents) == (domain.PAID, 0, 400)
    big = payment_invoice("S-3", 2500)
    credit.apply_to(big)
    assert (big.status, big.amount_due_cents, credit.balance_cents) == (domain.OPEN, 2100, 0)
    credit.apply_to(payment_invoice("S-4", 100))  # nothing left: nothing happens
    assert len(credit.collect_events()) == 4
