"""The payment domain on its own: no database, no PayFiP, no broker."""

import json
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4, uuid5

import pytest
from eventsourcing.persistence import StoredEvent

from services.common.errors import Conflict, DomainError, NotFound
from services.payment import domain
from services.payment.application import PaymentApp
from tests.helpers import same_creation

ANSWER = {"resultrans": "P", "numauto": "000001-tip"}


def started(amount_cents: int = 2500) -> domain.Payment:
    return domain.Payment(
        family_id="fam-1", regie="SPORTS", numcli="000001", saisie="T",
        email="parent@example.org", refdet="SPORTS2503011000AB12CD", exer="2025",
        objet="Factures S 1",
        allocations=[{"invoice_id": "i-1", "number": "S-1", "amount_cents": amount_cents}],
        amount_cents=amount_cents,
    )


def stored_without(app: PaymentApp, event: Any, *names: str) -> StoredEvent:
    """``event`` as an earlier version stored it: without the fields ``names``."""
    stored = app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    for name in names:
        state.pop(name, None)
    return StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                       json.dumps(state).encode())


def test_a_confirmation_stored_before_late_existed_reads_as_not_late() -> None:
    app = PaymentApp()
    payment = started()
    payment.requested(idop="idop-1", answer={"idOp": "idop-1"})
    payment.confirmed(resultrans="P", numauto="000001-tip", paid_at="2025-02-26T14:30:00+01:00",
                      answer=ANSWER, allocations=payment.allocations, refunds=[], late=True)
    confirmed = payment.collect_events()[-1]
    old = stored_without(app, confirmed, "late", "class_version")
    read = app.mapper.to_domain_event(old)
    assert isinstance(read, domain.Payment.Confirmed)
    assert read.late is False
    # One stored before the version was counted, but with the field, keeps what it says.
    kept = app.mapper.to_domain_event(stored_without(app, confirmed, "class_version"))
    assert isinstance(kept, domain.Payment.Confirmed) and kept.late is True


# --- the rules of a payment request ----------------------------------------------------

TODAY = date(2025, 3, 1)
NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
SPORTS = domain.Regie(code="SPORTS", name="Direction des sports", numcli="000001", saisie="T",
                      sequence=1)


def invoice(number: str, amount_cents: int = 2500, family: str = "fam-1",
            regie: str = "SPORTS", payable_until: date = date(2030, 12, 31)) -> domain.Invoice:
    return domain.Invoice(
        invoice_id=str(uuid4()), regie=regie, number=number, family_id=family,
        label="Vacances sportives", issued_on=date(2025, 2, 26), payable_until=payable_until,
        due_on=payable_until, amount_cents=amount_cents, sequence=1,
    )


def start(*invoices: domain.Invoice, regie: str = "SPORTS",
          ids: list[str] | None = None) -> domain.Payment:
    known = {str(i.id): i for i in invoices}
    return domain.Payment.start(
        family_id="fam-1", regie=regie,
        invoice_ids=ids if ids is not None else list(known),
        email="parent@example.org", now=NOW, token="ab12cd",
        find_regie={"SPORTS": SPORTS}.get, find_invoice=known.get,
    )


def test_a_payment_starts_for_what_the_invoices_owe_and_reserves_them() -> None:
    s1, s2 = invoice("S-1", 2500), invoice("S-2", 1250)
    payment = start(s1, s2)
    assert (payment.amount_cents, payment.numcli, payment.saisie, payment.exer) == (
        3750, "000001", "T", "2025")
    assert payment.refdet == "SPORTS250301110000AB12CD"  # Paris time
    assert payment.objet == "Factures S 1 S 2"
    assert [a["number"] for a in payment.allocations] == ["S-1", "S-2"]
    assert s1.payment_id == s2.payment_id == str(payment.id)
    assert isinstance(s1.collect_events()[-1], domain.Invoice.Reserved)


@pytest.mark.parametrize("status", [domain.CANCELLED, domain.TRANSFERRED, domain.PAID])
def test_a_closed_invoice_is_not_reserved(status: str) -> None:
    s1 = invoice("S-1")
    {domain.CANCELLED: lambda: s1.cancel(reason="doublon", sequence=2),
     domain.TRANSFERRED: lambda: s1.transfer(reference=None, sequence=2),
     domain.PAID: lambda: s1.settled_upstream(payment_id="p", sequence=2)}[status]()
    with pytest.raises(Conflict, match=f"S-1 cannot be paid: {status}") as refused:
        s1.reserve(payment_id="p-2", today=TODAY)
    assert refused.value.field == "invoice_ids"
    assert s1.payment_id is None


def test_an_invoice_is_reserved_by_one_payment_at_a_time_and_until_its_deadline() -> None:
    s1 = invoice("S-1")
    s1.reserve(payment_id="p-1", today=TODAY)
    with pytest.raises(Conflict, match=domain.IN_PROGRESS):
        s1.reserve(payment_id="p-2", today=TODAY)
    assert s1.payment_id == "p-1"
    late = invoice("S-2", payable_until=date(2025, 2, 28))
    with pytest.raises(Conflict, match=domain.DEADLINE_PASSED):
        late.reserve(payment_id="p-3", today=TODAY)
    assert late.payment_id is None


@pytest.mark.parametrize(
    ("invoices", "kwargs", "error", "field", "why"),
    [
        ([invoice("S-1")], {"regie": "PISCINE"}, DomainError, "regie", "unknown régie"),
        ([invoice("S-1")], {"twice": True}, DomainError, "invoice_ids", "twice"),
        ([invoice("S-1", family="fam-2")], {}, NotFound, "invoice_ids", "no invoice"),
        ([invoice("C-1", regie="CANTINE")], {}, DomainError, "invoice_ids", "each régie"),
        ([invoice("S-4", 99)], {}, DomainError, "invoice_ids", "1,00 € or more"),
        ([invoice("S-5", 6_000_000), invoice("S-6", 4_000_000)], {}, DomainError,
         "invoice_ids", "under 100 000,00 €"),
    ],
)
def test_a_payment_request_is_refused(invoices: list[domain.Invoice], kwargs: dict[str, Any],
                                      error: type[Exception], field: str, why: str) -> None:
    ids = [str(i.id) for i in invoices] * (2 if kwargs.get("twice") else 1)
    with pytest.raises(error, match=why) as refused:
        start(*invoices, regie=kwargs.get("regie", "SPORTS"), ids=ids)
    assert getattr(refused.value, "field", None) == field
    assert all(i.payment_id is None for i in invoices)


def test_the_largest_amount_payfip_takes_is_one_cent_under_100_000_euros() -> None:
    assert start(invoice("S-1", 9_999_999)).amount_cents == 9_999_999


# --- aggregates made for a poll (register_new, open_new) ---------------------------------
ISSUED: dict[str, Any] = {"invoice_id": "0b8f5f7e-3d2c-4f61-a7f1-5d54c0f3b9a3", "regie": "SPORTS",
          "number": "F-1", "family_id": "fam-1", "label": "Cantine — février",
          "issued_on": date(2025, 2, 1), "payable_until": date(2025, 3, 1),
          "due_on": date(2025, 3, 15), "amount_cents": 2100,
          "lines": [{"label": "Repas", "quantity": 3, "unit_price_cents": 700}]}


def test_register_new_makes_the_event_and_the_state_that_the_constructor_makes() -> None:
    invoice_id = domain.Invoice.create_id(ISSUED["invoice_id"])
    made = domain.Invoice.register_new(invoice_id, ISSUED, sequence=1)
    reference = domain.Invoice(**{**ISSUED, "lines": [dict(x) for x in ISSUED["lines"]]},
                               sequence=1)
    assert made.id == reference.id == invoice_id
    same_creation(made, reference)
    # Mutable like the constructor's: a later event of the same poll changes it alone.
    made.cancel(reason="en double", sequence=2)
    assert made.version == 2 and made.status == domain.CANCELLED


def test_open_new_makes_the_event_and_the_state_that_the_constructor_makes() -> None:
    made = domain.Reminders.open_new(ISSUED["invoice_id"], "fam-1", "parent@example.org")
    reference = domain.Reminders(invoice_id=ISSUED["invoice_id"], family_id="fam-1",
                                 payer_email="parent@example.org")
    assert made.id == reference.id
    same_creation(made, reference)


def test_a_family_credit_id_is_the_uuid5_of_its_regie_and_family_however_often_asked() -> None:
    expected = uuid5(domain.NAMESPACE, "credit/SPORTS/fam-1")
    for _ in range(2):
        assert domain.FamilyCredit.create_id("SPORTS", "fam-1") == expected
        assert domain.FamilyCredit.create_id(regie="SPORTS", family_id="fam-1") == expected
    assert domain.FamilyCredit(regie="SPORTS", family_id="fam-1").id == expected
    assert domain.FamilyCredit.create_id("SPORTS", "fam-2") != expected
