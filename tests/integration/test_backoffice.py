"""The back office's pages over the real billing and payment APIs (in this process, SQLite):
a cashier finds a family, takes a payment and prints its receipt, records a credit note,
marks a refund paid and downloads the day's journal; each act is recorded under her id."""

import csv
import io
from datetime import date
from pathlib import Path

import pytest
from flask import Flask

from services.billing.domain import Invoice
from services.billing.web import create_app as billing_web
from services.payment.web import create_app as payment_web
from tests.backoffice_desk import EMAIL, NAME, backoffice, details, logged_in, texts
from tests.conftest import make_settings
from tests.factories import deliver, issued, terms, wire_messages

FAMILY = "famille-martin"
TOKENS = {"c": "cashier", "r": "reader"}


class Desk:
    def __init__(self, tmp_path: Path, token: str = "c") -> None:
        self.billing, self.payment = issued(
            make_settings("sqlite", tmp_path),
            terms("S-1", family=FAMILY, unit=2500, payable_until=date(2030, 6, 30),
                  due_on=date(2030, 6, 30)),
            terms("S-2", family=FAMILY, unit=1500, payable_until=date(2030, 3, 31),
                  due_on=date(2030, 3, 31)))
        deliver(self.payment, wire_messages(self.billing))
        self.billing_api = billing_web(billing=self.billing, tokens=TOKENS)
        self.payment_api = payment_web(self.payment, tokens=TOKENS)
        self.app: Flask = backoffice(self.billing_api, self.payment_api, token, tmp_path)

    def to_payment(self) -> None:
        deliver(self.payment, wire_messages(self.billing))


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


@pytest.fixture
def desk(tmp_path: Path) -> Desk:
    return Desk(tmp_path)


def test_every_page_asks_for_a_log_in(desk: Desk) -> None:
    client = desk.app.test_client()
    for path in ("/guichet/", f"/guichet/familles/{FAMILY}", "/guichet/remboursements",
                 "/guichet/journal", "/guichet/journal.csv?regie=SPORTS&date=2025-03-03"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.location.startswith(
            "/guichet/connexion?suivant="), path
    refused = client.post("/guichet/connexion",
                          data={"email": EMAIL, "password": "pas le bon mot de passe"})
    assert refused.status_code == 401
    assert "incorrect" in refused.get_data(as_text=True)


def test_a_cashier_takes_cash_and_prints_the_receipt(desk: Desk) -> None:
    client = logged_in(desk.app)
    home = client.get("/guichet/")
    assert NAME in home.get_data(as_text=True)
    assert "ne conserve pas le nom des familles" in home.get_data(as_text=True)
    found = client.get("/guichet/familles", query_string={"famille": FAMILY})
    assert found.status_code == 303 and found.location == f"/guichet/familles/{FAMILY}"
    family = client.get(found.location)
    assert texts(family, "//ul[@class='regies']/li") == [
        "Direction des sports (SPORTS) : 2 factures ouvertes, 40,00 €"]

    answer = client.post(f"/guichet/familles/{FAMILY}/SPORTS/encaissement", data={
        "means": "cash", "amount": "10,00", "reference": "", "received_on": "2025-03-03"})
    assert answer.status_code == 303, answer.text
    receipt = client.get(answer.location)
    assert receipt.status_code == 200
    said = details(receipt)
    # "Par" is the payment API's record of the act: the staff member, not the token's role.
    assert (said["Montant reçu"], said["Moyen de paiement"], said["Par"], said["Famille"]) == (
        "10,00 €", "Espèces", EMAIL, FAMILY)
    # S-2 falls due first: the 10,00 € go to it.
    assert texts(receipt, "//table//tbody/tr/*") == ["S-2", "10,00 €"]
    # And the payment API's laid-out receipt, through the back office.
    pdf = client.get(f"{answer.location}/recu.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert "Reçu au format PDF" in receipt.get_data(as_text=True)
    assert "print" in client.get("/guichet/assets/guichet.css").get_data(as_text=True)

    regie = client.get(f"/guichet/familles/{FAMILY}/SPORTS")
    assert texts(regie, "//table//tbody/tr/td[last()]") == ["25,00 €", "5,00 €"]  # S-1, S-2


def test_a_payment_with_bad_input_says_which_field_and_sends_nothing(desk: Desk) -> None:
    client = logged_in(desk.app)
    for form, field in (
        ({"means": "cash", "amount": "dix", "reference": "", "received_on": "2025-03-03"},
         "amount"),
        ({"means": "cash", "amount": "10,001", "reference": "", "received_on": "2025-03-03"},
         "amount"),
        ({"means": "cheque", "amount": "10", "reference": "", "received_on": "2025-03-03"},
         "reference"),
        ({"means": "bitcoin", "amount": "10", "reference": "", "received_on": "2025-03-03"},
         "means"),
        ({"means": "cash", "amount": "10", "reference": "", "received_on": "hier"},
         "received_on"),
    ):
        answer = client.post(f"/guichet/familles/{FAMILY}/SPORTS/encaissement", data=form)
        assert answer.status_code == 422, form
        assert texts(answer, f"//*[@id='erreur-{field}']"), (form, answer.text)
        assert texts(answer, f"//*[@id='{field}'][@aria-invalid='true']"), form
    regie = client.get(f"/guichet/familles/{FAMILY}/SPORTS")
    assert texts(regie, "//table//tbody/tr/td[last()]") == ["25,00 €", "15,00 €"]  # S-1, S-2


def test_a_credit_note_is_recorded_under_the_cashier(desk: Desk) -> None:
    client = logged_in(desk.app)
    answer = client.post(f"/guichet/familles/{FAMILY}/SPORTS/avoir", data={
        "invoice_id": iid("S-1"), "credit_amount": "5", "reason": "séance annulée"})
    assert answer.status_code == 303, answer.text
    invoice = desk.billing.get_invoice(Invoice.create_id("SPORTS", "S-1"))
    assert invoice.amount_due_cents == 2000
    assert [(n["amount_cents"], n["by"]) for n in invoice.credit_notes] == [(500, EMAIL)]
    page = client.get(answer.location)
    assert "Avoir de 5,00\u00a0€ enregistré sur la facture S-1." in page.get_data(as_text=True)
    desk.to_payment()
    page = client.get(answer.location)
    assert texts(page, "//table//tbody/tr/td[last()]") == ["20,00 €", "15,00 €"]  # S-1, S-2

    too_much = client.post(f"/guichet/familles/{FAMILY}/SPORTS/avoir", data={
        "invoice_id": iid("S-1"), "credit_amount": "500", "reason": "erreur"})
    assert too_much.status_code == 422
    assert texts(too_much, "//*[@id='erreur-credit']")


def test_a_refund_due_is_marked_paid_under_the_cashier(desk: Desk) -> None:
    client = logged_in(desk.app)
    # 50,00 € in cash for 40,00 € owed: 10,00 € of credit, asked back.
    client.post(f"/guichet/familles/{FAMILY}/SPORTS/encaissement", data={
        "means": "cash", "amount": "50", "reference": "", "received_on": "2025-03-03"})
    asked = desk.payment_api.test_client().post(
        f"/families/{FAMILY}/credits/SPORTS/refund", json={},
        headers={"Authorization": "Bearer c"})
    assert asked.status_code == 201, asked.json
    page = client.get("/guichet/remboursements")
    assert texts(page, "//h2") == [f"10,00 € à {FAMILY}, régie SPORTS"]
    refund_id = asked.json["id"]  # type: ignore[index]

    bad = client.post(f"/guichet/remboursements/{refund_id}/paye",
                      data={"means": "cheque", "reference": "", "paid_on": "2025-03-05"})
    assert bad.status_code == 422 and texts(bad, f"//*[@id='erreur-reference-{refund_id}']")
    done = client.post(f"/guichet/remboursements/{refund_id}/paye",
                       data={"means": "cash", "reference": "", "paid_on": "2025-03-05"})
    assert done.status_code == 303, done.text
    page = client.get(done.location)
    assert "Aucun remboursement à payer." in page.get_data(as_text=True)
    [row] = desk.payment.refunds("paid", None)
    assert row["paid_by"] == EMAIL


def test_the_days_journal_downloads_as_csv(desk: Desk) -> None:
    client = logged_in(desk.app)
    client.post(f"/guichet/familles/{FAMILY}/SPORTS/encaissement", data={
        "means": "cheque", "amount": "15", "reference": "0012345", "received_on": "2025-03-03"})
    day = client.get("/guichet/journal.csv", query_string={"regie": "SPORTS",
                                                          "date": "2025-03-03"})
    assert day.status_code == 200, day.text
    assert day.mimetype == "text/csv"
    assert 'filename="journal-SPORTS-2025-03-03.csv"' in day.headers["Content-Disposition"]
    lines = day.get_data(as_text=True).splitlines()
    assert lines[0].startswith("paid_at,means,amount_cents") and len(lines) == 2
    assert ",cheque,1500," in lines[1]
    # Who took it: the staff member, in the journal as in the event.
    [row] = csv.DictReader(io.StringIO(day.get_data(as_text=True)))
    assert row["by"] == EMAIL
    journal = desk.payment_api.test_client().get(
        "/regies/SPORTS/journal?date=2025-03-03", headers={"Authorization": "Bearer c"})
    assert [p["by"] for p in journal.json["payments"]] == [EMAIL]  # type: ignore[index]
    unknown = client.get("/guichet/journal.csv", query_string={"regie": "NOPE",
                                                              "date": "2025-03-03"})
    assert unknown.status_code == 404
    bad = client.get("/guichet/journal.csv", query_string={"regie": "SPORTS", "date": "hier"})
    assert bad.status_code == 422


def test_a_family_with_nothing_open_says_so(desk: Desk) -> None:
    client = logged_in(desk.app)
    page = client.get("/guichet/familles/famille-inconnue")
    assert "Aucune facture ouverte pour cet identifiant" in page.get_data(as_text=True)
    bad = client.get("/guichet/familles", query_string={"famille": "Martin Dupont"})
    assert bad.status_code == 422 and texts(bad, "//*[@id='erreur-famille']")


def test_pages_carry_the_security_headers(desk: Desk) -> None:
    answer = desk.app.test_client().get("/guichet/connexion")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_five_failed_log_ins_then_429(desk: Desk) -> None:
    client = desk.app.test_client()
    for _ in range(5):
        assert client.post("/guichet/connexion", data={
            "email": EMAIL, "password": "pas le bon mot de passe"}).status_code == 401
    blocked = client.post("/guichet/connexion", data={"email": EMAIL, "password": "x"})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "Trop de tentatives de connexion" in blocked.get_data(as_text=True)


def test_a_form_without_its_csrf_token_is_refused_and_sends_nothing(desk: Desk) -> None:
    client = logged_in(desk.app)
    desk.app.config["WTF_CSRF_ENABLED"] = True
    answer = client.post(f"/guichet/familles/{FAMILY}/SPORTS/encaissement", data={
        "means": "cash", "amount": "10", "reference": "", "received_on": "2025-03-03"})
    assert answer.status_code == 400 and "Page expirée" in answer.get_data(as_text=True)
    assert [line["amount_due_cents"] for line in desk.payment.to_pay_lines(
        FAMILY, "SPORTS", date(2025, 3, 3))] == [2500, 1500]
