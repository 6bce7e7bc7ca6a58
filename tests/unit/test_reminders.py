"""Reminders by e-mail: which invoices are due for one, what the payer reads, and a pass of
the payment application over the in-memory store with the fake mailer."""

from datetime import date, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from services.common.mail import FakeMailer, Letter
from services.payment import domain
from services.payment.application import PaymentApp
from services.payment.reminders import is_due, letter
from tests.conftest import make_settings
from tests.factories import deliver, issued, terms, wire_messages
from tests.helpers import iid

TODAY = date(2030, 3, 1)
PORTAL = "https://familles.example.org/"


def invoice(payable_until: date, amount_cents: int = 2500) -> domain.Invoice:
    return domain.Invoice(
        invoice_id=str(uuid4()), regie="SPORTS", number="VAIC521041698401", family_id="fam-1",
        label="Vacances sportives", issued_on=date(2030, 1, 15), payable_until=payable_until,
        due_on=payable_until + timedelta(days=15), amount_cents=amount_cents, sequence=1,
    )


@pytest.mark.parametrize("days, due", [(-1, False), (0, True), (3, True), (7, True),
                                       (8, False)])
def test_an_open_invoice_is_due_within_the_days_before_its_deadline(days: int, due: bool) -> None:
    assert is_due(invoice(TODAY + timedelta(days=days)), [], TODAY, 7) is due


def test_a_deadline_is_reminded_once_and_a_moved_one_again() -> None:
    old = TODAY + timedelta(days=5)
    assert not is_due(invoice(old), [old], TODAY, 7)
    assert is_due(invoice(TODAY + timedelta(days=6)), [old], TODAY, 7)


def test_an_invoice_paid_cancelled_transferred_or_being_paid_is_not_due() -> None:
    deadline = TODAY + timedelta(days=7)
    paid, cancelled, transferred, in_flight = (invoice(deadline) for _ in range(4))
    paid.pay_at_counter("p-1", 2500, "cash", TODAY)
    cancelled.cancel("doublon", 2)
    transferred.transfer("T-1", 2)
    in_flight.reserve("p-2", TODAY)
    for each in (paid, cancelled, transferred, in_flight):
        assert not is_due(each, [], TODAY, 7), each.status


def test_the_letter_names_the_invoice_in_french_and_links_the_portal() -> None:
    part_paid = invoice(date(2030, 3, 8), amount_cents=12_500)
    part_paid.pay_at_counter("p-1", 2500, "cash", TODAY)
    sent = letter(part_paid, "parent@example.org", "Direction des sports", PORTAL)
    assert sent.to == "parent@example.org"
    assert sent.subject == ("Rappel : facture n° VAIC521041698401 à payer en ligne d'ici le "
                            "08/03/2030")
    for body in (sent.text, sent.html):
        for part in ("Bonjour", "VAIC521041698401", "Vacances sportives",
                     "Direction des sports", "100,00\u00a0€", "08/03/2030", PORTAL):
            assert part in body, (part, body)
    assert f'href="{PORTAL}"' in sent.html


def test_the_html_part_escapes_what_billing_wrote() -> None:
    odd = invoice(date(2030, 3, 8))
    odd.label = '<script>alert("x")</script>'
    html = letter(odd, "parent@example.org", "A & B", PORTAL).html
    assert "<script>" not in html and "&lt;script&gt;" in html and "A &amp; B" in html


# --- a pass over the payment application ---------------------------------------------------
@pytest.fixture
def payment(tmp_path: Path) -> PaymentApp:
    settings = make_settings("memory", tmp_path)
    soon, later = TODAY + timedelta(days=7), TODAY + timedelta(days=20)
    billing, payment = issued(
        settings,
        terms("S-1", payable_until=soon, due_on=soon),
        terms("S-2", family="fam-2", payable_until=soon, due_on=soon,
              payer_email="autre@example.org"),
        terms("S-3", payable_until=later, due_on=later),
    )
    deliver(payment, wire_messages(billing))
    return payment


def test_the_payment_side_keeps_the_payers_email(payment: PaymentApp) -> None:
    assert payment.payer_email(iid("S-1")) == "parent@example.org"
    assert payment.payer_email(iid("S-2")) == "autre@example.org"
    assert payment.payer_email(str(uuid4())) is None


def test_a_pass_mails_each_payer_their_own_invoice_once(payment: PaymentApp) -> None:
    mailer = FakeMailer()
    done = payment.remind(mailer, TODAY, 7, PORTAL)
    assert (done.sent, done.failed) == (2, 0)
    by_payer: dict[str, Letter] = {m.to: m for m in mailer.sent}
    assert sorted(by_payer) == ["autre@example.org", "parent@example.org"]
    assert "S-1" in by_payer["parent@example.org"].text
    assert "S-2" not in by_payer["parent@example.org"].text
    assert "S-1" not in by_payer["autre@example.org"].text
    assert payment.remind(mailer, TODAY, 7, PORTAL).sent == 0
    assert len(mailer.sent) == 2
    recorded: domain.Reminders = payment.repository.get(domain.Reminders.create_id(iid("S-1")))
    assert recorded.deadlines == [TODAY + timedelta(days=7)]


def test_a_letter_not_sent_is_not_recorded_and_goes_next_pass(payment: PaymentApp) -> None:
    down = FakeMailer(failing=True)
    done = payment.remind(down, TODAY, 7, PORTAL)
    assert (done.sent, done.failed) == (0, 2)
    recorded: domain.Reminders = payment.repository.get(domain.Reminders.create_id(iid("S-1")))
    assert recorded.deadlines == []
    up = FakeMailer()
    assert payment.remind(up, TODAY, 7, PORTAL).sent == 2
    assert len(up.sent) == 2
