"""The counter on its own: money taken in hand, parts of invoices, the family's credit."""

from datetime import date
from uuid import uuid4

import pytest

from services.common.errors import Conflict, DomainError, NotFound
from services.payment import domain

RECEIVED_ON = date(2025, 3, 3)


def invoice(number: str, amount_cents: int, due_on: date, family: str = "fam-1",
            regie: str = "SPORTS") -> domain.Invoice:
    return domain.Invoice(
        invoice_id=str(uuid4()), regie=regie, number=number, family_id=family,
        label="Vacances sportives", issued_on=date(2025, 2, 1), payable_until=due_on,
        due_on=due_on, amount_cents=amount_cents, sequence=1,
    )


def terms(amount_cents: int, means: str = "cheque", reference: str | None = "1234567",
          invoice_ids: tuple[str, ...] | None = None) -> domain.CounterTerms:
    return domain.CounterTerms(regie="SPORTS", family_id="fam-1", means=means,
                               amount_cents=amount_cents, reference=reference,
                               received_on=RECEIVED_ON, invoice_ids=invoice_ids)


def receive(t: domain.CounterTerms, *invoices: domain.Invoice) -> domain.CounterPayment:
    known = {str(i.id): i for i in invoices}
    return domain.CounterPayment.receive(t, by="cashier", open_invoices=list(invoices),
                                         find_invoice=known.get)


def test_without_invoices_named_the_oldest_due_are_paid_first_and_the_last_in_part() -> None:
    later = invoice("S-2", 2000, date(2025, 4, 30))
    older = invoice("S-1", 1500, date(2025, 3, 31))
    payment = receive(terms(2500), later, older)
    assert [(a["number"], a["amount_cents"]) for a in payment.allocations] == [
        ("S-1", 1500), ("S-2", 1000)]
    assert payment.unallocated_cents == 0
    assert (older.status, older.amount_due_cents) == (domain.PAID, 0)
    # Paid in part, it stays open for the rest, which PayFiP may be asked for.
    assert (later.status, later.amount_due_cents) == (domain.OPEN, 1000)
    assert later.why_not_payable(date(2025, 3, 3)) is None
    paid = later.collect_events()[-1]
    assert isinstance(paid, domain.Invoice.PaidAtCounter)
    assert (paid.means, paid.amount_cents, paid.amount_due_cents) == ("cheque", 1000, 1000)


def test_money_beyond_what_is_due_is_left_over_for_the_family_credit() -> None:
    s1 = invoice("S-1", 1500, date(2025, 3, 31))
    payment = receive(terms(4000), s1)
    assert payment.unallocated_cents == 2500
    credit = domain.FamilyCredit(regie="SPORTS", family_id="fam-1")
    credit.credit(amount_cents=2500, source="counter_payment", source_id=str(payment.id),
                  by="cashier")
    assert credit.balance_cents == 2500
    assert credit.collect_events()[-1].balance_cents == 2500  # type: ignore[attr-defined]


def test_named_invoices_are_paid_in_the_order_given() -> None:
    s1 = invoice("S-1", 1500, date(2025, 3, 31))
    s2 = invoice("S-2", 2000, date(2025, 4, 30))
    payment = receive(terms(2500, invoice_ids=(str(s2.id),)), s1, s2)
    assert [(a["number"], a["amount_cents"]) for a in payment.allocations] == [("S-2", 2000)]
    assert (payment.unallocated_cents, s1.amount_due_cents) == (500, 1500)


def test_the_same_reference_names_the_same_payment_and_cash_may_have_none() -> None:
    s1 = invoice("S-1", 1500, date(2025, 3, 31))
    first = receive(terms(100), s1)
    assert first.id == domain.CounterPayment.create_id("SPORTS", "cheque", "1234567")
    assert first.same_terms(terms(100)) and not first.same_terms(terms(200))
    a, b = receive(terms(100, "cash", None), s1), receive(terms(100, "cash", None), s1)
    assert a.id != b.id


def test_an_invoice_being_paid_online_is_passed_over_or_refused_when_named() -> None:
    held = invoice("S-1", 1500, date(2025, 3, 31))
    held.reserve(payment_id="p-1", today=date(2025, 3, 3))
    free = invoice("S-2", 2000, date(2025, 4, 30))
    payment = receive(terms(1000), held, free)
    assert [a["number"] for a in payment.allocations] == ["S-2"]
    assert held.amount_due_cents == 1500
    with pytest.raises(Conflict, match="being paid online") as refused:
        receive(terms(1000, reference="99", invoice_ids=(str(held.id),)), held)
    assert refused.value.field == "invoice_ids"


@pytest.mark.parametrize(
    ("t", "error", "field"),
    [
        (terms(1000, means="bitcoin"), DomainError, "means"),
        (terms(0), DomainError, "amount_cents"),
        (terms(1000, reference=None), DomainError, "reference"),
        (terms(1000, means="cesu", reference=" "), DomainError, "reference"),
        (terms(1000, invoice_ids=("x", "x")), DomainError, "invoice_ids"),
        (terms(1000, invoice_ids=(str(uuid4()),)), NotFound, "invoice_ids"),
    ],
)
def test_bad_counter_payments_are_refused(t: domain.CounterTerms, error: type[DomainError],
                                          field: str) -> None:
    s1 = invoice("S-1", 1500, date(2025, 3, 31))
    with pytest.raises(error) as refused:
        receive(t, s1)
    assert refused.value.field == field
    assert s1.amount_due_cents == 1500 and len(s1.collect_events()) == 1


def test_another_familys_or_a_closed_invoice_cannot_be_named() -> None:
    theirs = invoice("S-9", 1500, date(2025, 3, 31), family="fam-2")
    with pytest.raises(NotFound):
        receive(terms(1000, invoice_ids=(str(theirs.id),)), theirs)
    closed = invoice("S-3", 1500, date(2025, 3, 31))
    closed.cancel(reason="doublon", sequence=2)
    with pytest.raises(Conflict, match="cancelled"):
        receive(terms(1000, invoice_ids=(str(closed.id),)), closed)
