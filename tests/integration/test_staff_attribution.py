"""The counter's acts carry the staff member who did them: a cashier's (or operator's) token
with an X-Regie-Staff header records that id in ``by``, on both APIs; other roles cannot."""

from pathlib import Path

from flask.testing import FlaskClient

from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.billing.web import create_app as billing_web
from services.common.settings import Settings
from services.payment.web import create_app as payment_web
from tests.conftest import make_settings
from tests.factories import deliver, issued, terms, wire_messages
from tests.helpers import CASHIER, TOKENS, cheque

STAFF = {**CASHIER, "X-Regie-Staff": "c.durand@mairie.example"}


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def clients(tmp_path: Path) -> tuple[BillingApp, FlaskClient, FlaskClient]:
    settings: Settings = make_settings("sqlite", tmp_path)
    billing, payment = issued(settings, terms("S-1", unit=2500), terms("S-2", unit=1500))
    deliver(payment, wire_messages(billing))
    tokens = {"i": "issuer", "c": "cashier"}
    return (billing, billing_web(billing=billing, tokens=tokens).test_client(),
            payment_web(payment, tokens=TOKENS).test_client())


def test_a_staff_header_is_recorded_in_counter_payments_credit_notes_and_refunds(
        tmp_path: Path) -> None:
    _, bills, pays = clients(tmp_path)
    counter = pays.post("/counter-payments", json=cheque(4500), headers=STAFF)
    assert counter.status_code == 201, counter.json
    assert counter.json["by"] == "c.durand@mairie.example"  # type: ignore[index]

    note = bills.post(f"/invoices/{iid('S-1')}/credit-notes", headers=STAFF,
                      json={"amount_cents": 500, "reason": "séance annulée"})
    assert note.status_code == 201, note.json
    assert note.json["credit_note"]["by"] == "c.durand@mairie.example"  # type: ignore[index]

    # 5,00 € more than was owed: the family's credit, asked back and paid.
    asked = pays.post("/families/fam-1/credits/SPORTS/refund", headers=STAFF, json={})
    assert asked.status_code == 201, asked.json
    paid = pays.post(f"/refunds/{asked.json['id']}/paid", headers=STAFF,  # type: ignore[index]
                     json={"means": "cash", "paid_on": "2025-03-05"})
    assert paid.status_code == 200, paid.json
    assert paid.json["paid_by"] == "c.durand@mairie.example"  # type: ignore[index]


def test_without_the_header_the_role_is_recorded(tmp_path: Path) -> None:
    _, _, pays = clients(tmp_path)
    counter = pays.post("/counter-payments", json=cheque(4500), headers=CASHIER)
    assert counter.json["by"] == "cashier"  # type: ignore[index]


def test_a_malformed_staff_header_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    billing, bills, pays = clients(tmp_path)
    bad = {**CASHIER, "X-Regie-Staff": "x" * 200}
    answer = pays.post("/counter-payments", json=cheque(4500), headers=bad)
    assert answer.status_code == 422
    assert "X-Regie-Staff" in answer.json["errors"]["headers"]  # type: ignore[index]
    assert pays.get("/families/fam-1/to-pay/SPORTS", headers=CASHIER).json[  # type: ignore[index]
        "invoices"][0]["amount_due_cents"] == 2500
    answer = bills.post(f"/invoices/{iid('S-1')}/credit-notes", headers=bad,
                        json={"amount_cents": 500, "reason": "séance annulée"})
    assert answer.status_code == 422
    assert billing.get_invoice(Invoice.create_id("SPORTS", "S-1")).amount_due_cents == 2500


def test_the_header_of_an_issuer_is_not_recorded(tmp_path: Path) -> None:
    billing, _ = issued(make_settings("sqlite", tmp_path), terms("S-1", unit=2500))
    bills = billing_web(billing=billing, tokens={"i": "issuer"}).test_client()
    note = bills.post(f"/invoices/{iid('S-1')}/credit-notes",
                      headers={"Authorization": "Bearer i", "X-Regie-Staff": "someone"},
                      json={"amount_cents": 500, "reason": "séance annulée"})
    assert note.json["credit_note"]["by"] == "issuer"  # type: ignore[index]
