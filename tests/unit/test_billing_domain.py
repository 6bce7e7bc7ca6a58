from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from uuid import uuid5

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.billing.domain import (
    CANCELLED,
    NAMESPACE,
    PAID,
    TRANSFERRED,
    Conflict,
    DomainError,
    Invoice,
    Line,
    Regie,
)
from tests.factories import terms
from tests.helpers import same_creation


def test_an_invoice_is_issued_with_its_whole_amount_due() -> None:
    invoice = Invoice.issue(terms(quantity=4, unit=250))
    assert invoice.amount_cents == 1000
    assert invoice.amount_due_cents == 1000
    assert invoice.status == "issued"
    assert invoice.terms() == terms(quantity=4, unit=250)


def test_the_invoice_id_is_the_same_for_the_same_regie_and_number() -> None:
    assert Invoice.create_id("SPORTS", "F-1") == Invoice.create_id("SPORTS", "F-1")
    assert Invoice.create_id("SPORTS", "F-1") != Invoice.create_id("CANTINE", "F-1")
    assert Invoice.issue(terms()).id == Invoice.create_id("SPORTS", "F-1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_cents": 2400}, "amount_cents"),
        ({"amount_cents": 0, "lines": (Line("x", 1, 0),)}, "amount_cents"),
        ({"amount_cents": -100, "lines": (Line("x", 1, -100),)}, "amount_cents"),
        ({"lines": ()}, "lines"),
        ({"lines": (Line("x", 0, 2500),)}, "lines.0.quantity"),
        ({"payable_until": date(2025, 2, 25)}, "payable_until"),
        ({"due_on": date(2030, 12, 30)}, "due_on"),
    ],
)
def test_invoice_rules(change: dict[str, object], field: str) -> None:
    with pytest.raises(DomainError) as refused:
        Invoice.issue(replace(terms(), **change))  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_discount_line_is_allowed_when_the_total_stays_positive() -> None:
    lines = (Line("Séjour", 1, 3000), Line("Quotient familial", 1, -500))
    invoice = Invoice.issue(replace(terms(), lines=lines, amount_cents=2500))
    assert invoice.amount_cents == 2500


def test_cancel_then_nothing_else() -> None:
    invoice = Invoice.issue(terms())
    invoice.cancel("erreur de facturation")
    assert invoice.status == CANCELLED
    assert invoice.cancel_reason == "erreur de facturation"
    with pytest.raises(Conflict):
        invoice.cancel("again")
    with pytest.raises(Conflict):
        invoice.transfer("T-1")


def test_cancel_needs_a_reason() -> None:
    invoice = Invoice.issue(terms())
    with pytest.raises(DomainError) as refused:
        invoice.cancel("  ")
    assert refused.value.field == "reason"
    assert invoice.status == "issued"


def test_transfer_closes_the_invoice() -> None:
    invoice = Invoice.issue(terms())
    invoice.transfer("TITRE-2025-12")
    assert invoice.status == TRANSFERRED
    assert invoice.transfer_reference == "TITRE-2025-12"
    with pytest.raises(Conflict):
        invoice.cancel("too late")


@pytest.mark.parametrize(
    ("numcli", "saisie", "name", "field"),
    [
        ("12345", "T", "Sports", "numcli"),
        ("1234567", "T", "Sports", "numcli"),
        ("12345a", "T", "Sports", "numcli"),
        ("123456\n", "T", "Sports", "numcli"),  # as the API refuses it
        ("123456", "P", "Sports", "saisie"),
        ("123456", "T", " ", "name"),
    ],
)
def test_regie_rules(numcli: str, saisie: str, name: str, field: str) -> None:
    with pytest.raises(DomainError) as refused:
        Regie.open("SPORTS", name, numcli, saisie)
    assert refused.value.field == field


def test_a_numcli_keeps_its_leading_zeros() -> None:
    assert Regie.open("SPORTS", "Direction des sports", "006281", "W").numcli == "006281"


PAID_AT = datetime(2025, 2, 26, 14, 30, tzinfo=timezone(timedelta(hours=1)))


def _names(invoice: Invoice) -> list[str]:
    return [type(e).__name__ for e in invoice.collect_events()]


def test_settling_pays_the_invoice_once_per_payment() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.settle("pay-1", 2500, PAID_AT)
    assert (invoice.status, invoice.amount_due_cents, invoice.refund_due_cents) == (PAID, 0, 0)
    assert invoice.paid_at == PAID_AT
    assert _names(invoice) == ["Issued", "Settled"]
    # The same confirmation again (redelivered, republished): nothing new.
    invoice.settle("pay-1", 2500, PAID_AT)
    assert _names(invoice) == []
    assert (invoice.status, invoice.amount_due_cents, invoice.version) == (PAID, 0, 2)


def test_a_paid_invoice_can_be_neither_cancelled_nor_transferred() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.settle("pay-1", 2500, PAID_AT)
    with pytest.raises(Conflict):
        invoice.cancel("trop tard")
    with pytest.raises(Conflict):
        invoice.transfer("T-1")


@pytest.mark.parametrize(
    ("close", "status"),
    [(lambda i: i.cancel("doublon"), CANCELLED), (lambda i: i.transfer("T-1"), TRANSFERRED)],
)
def test_money_for_a_closed_invoice_is_kept_as_a_refund(close: object, status: str) -> None:
    invoice = Invoice.issue(terms(unit=2500))
    close(invoice)  # type: ignore[operator]
    invoice.collect_events()
    invoice.settle("pay-1", 2500, PAID_AT)
    assert _names(invoice) == ["PaidAfterClose"]
    assert (invoice.status, invoice.amount_due_cents, invoice.refund_due_cents) == (
        status, 2500, 2500)
    invoice.settle("pay-1", 2500, PAID_AT)
    assert _names(invoice) == []
    assert invoice.refund_due_cents == 2500


def test_a_second_payment_of_a_paid_invoice_is_kept_as_a_refund() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.settle("pay-1", 2500, PAID_AT)
    invoice.collect_events()
    invoice.settle("pay-2", 2500, PAID_AT)
    assert _names(invoice) == ["PaidAfterClose"]
    assert (invoice.status, invoice.amount_due_cents, invoice.refund_due_cents) == (PAID, 0, 2500)


def test_a_partial_payment_leaves_the_rest_due_and_an_excess_is_refundable() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    invoice.settle("pay-1", 1000, PAID_AT)
    assert (invoice.status, invoice.amount_due_cents) == ("issued", 1500)
    invoice.settle("pay-2", 2000, PAID_AT)
    assert (invoice.status, invoice.amount_due_cents, invoice.refund_due_cents) == (PAID, 0, 500)


def test_settling_needs_a_positive_amount() -> None:
    invoice = Invoice.issue(terms(unit=2500))
    with pytest.raises(DomainError) as refused:
        invoice.settle("pay-1", 0, PAID_AT)
    assert refused.value.field == "amount_cents"


@given(regie=st.text(max_size=12), number=st.text(max_size=40))
def test_an_invoice_id_is_the_uuid5_of_its_regie_and_number(regie: str, number: str) -> None:
    try:
        expected = uuid5(NAMESPACE, f"invoice/{regie}/{number}")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            Invoice.create_id(regie, number)
        return
    assert Invoice.create_id(regie, number) == expected


def test_issue_new_makes_the_event_and_the_state_that_issue_makes() -> None:
    t = terms(quantity=3, unit=700, label="Cantine — février")
    same_creation(Invoice.issue_new(t, Invoice.create_id(t.regie, t.number)), Invoice.issue(t))


def test_an_invoice_issued_by_issue_new_replays_as_issued() -> None:
    t = terms()
    made = Invoice.issue_new(t, Invoice.create_id(t.regie, t.number))
    (event,) = made.collect_events()
    replayed = event.mutate(None)
    assert vars(replayed) == vars(made)


def test_issue_new_checks_the_terms_as_issue_does() -> None:
    with pytest.raises(DomainError) as e:
        Invoice.issue_new(terms(amount_cents=1), Invoice.create_id("SPORTS", "F-1"))
    assert e.value.field == "amount_cents"
