"""The documents through the payment API, on SQLite and PostgreSQL: the invoice, its
certificate and the counter receipt as PDFs, their verification codes, and who may read them."""

from dataclasses import replace
from datetime import datetime
from typing import Any

from flask.testing import FlaskClient

from events.formats import PARIS
from services.billing.domain import Invoice
from services.common.settings import Settings
from services.payment.web import create_app
from tests.documents import code_in, pdf_text, squeezed
from tests.factories import deliver, issued, terms, wire_messages
from tests.helpers import cheque

TOKENS = {"a": "auditor", "c": "cashier", "p": "payer"}
CASHIER = {"Authorization": "Bearer c"}
PAYER = {"Authorization": "Bearer p"}


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def setup(settings: Settings) -> FlaskClient:
    billing, payment = issued(
        # The municipality as the operator names it: at the head of every document.
        replace(settings, collectivite="Ville de Saint-Exemple"),
        terms("S-1", quantity=3, unit=1250),  # three days at 12,50 €
        terms("S-2", family="fam-2", unit=4000),
    )
    deliver(payment, wire_messages(billing))
    return create_app(payment, tokens=TOKENS).test_client()


def invoice_url(family: str, number: str, kind: str) -> str:
    return f"/families/{family}/invoices/{iid(number)}/{kind}.pdf"


def json_of(answer: Any) -> Any:
    body = answer.json
    assert body is not None, answer.data[:200]
    return body


def verified(client: FlaskClient, code: str) -> dict[str, Any]:
    answer = client.get("/verifications", query_string={"code": code})
    assert answer.status_code == 200, answer.json
    body: dict[str, Any] = json_of(answer)
    return body


def forged(code: str) -> str:
    # The same kind and position, another MAC: what someone making up a code would type.
    last = "A" if code[-1] != "A" else "B"
    return code[:-1] + last


def test_the_invoice_its_certificate_and_their_codes(
        store_settings: Settings, tmp_path: Any) -> None:
    client = setup(store_settings)
    answer = client.get(invoice_url("fam-1", "S-1", "invoice"), headers=PAYER)
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    text = pdf_text(answer.data, tmp_path, "invoice")
    flat = squeezed(text)
    assert "Ville de Saint-Exemple" in text and "Régie « Direction des sports »" in text
    assert "Facture n° S-1" in flat and "Page 1 / 1" in flat
    assert "Séjour 3 12,50 € 37,50 €" in flat and "Total à payer 37,50 €" in flat
    invoice_code = code_in(text)
    assert invoice_code.startswith("F")
    assert verified(client, invoice_code) == {
        "authentic": True, "kind": "invoice", "document": "Facture", "regie": "SPORTS",
        "regie_name": "Direction des sports", "number": "S-1", "amount_cents": 3750,
        "date": "2025-02-26", "status": "à payer"}

    # No certificate before it is paid.
    assert client.get(invoice_url("fam-1", "S-1", "certificate"),
                      headers=PAYER).status_code == 404
    paid = client.post("/counter-payments", json=cheque(3750, family_id="fam-1"),
                       headers=CASHIER)
    assert paid.status_code == 201, paid.json
    answer = client.get(invoice_url("fam-1", "S-1", "certificate"), headers=PAYER)
    assert answer.status_code == 200
    text = pdf_text(answer.data, tmp_path, "certificate")
    flat = squeezed(text)
    assert "Facture acquittée" in text and "Montant acquitté 37,50 €" in flat
    assert "03/03/2025 Chèques 37,50 €" in flat and "Page 1 / 1" in flat
    code = code_in(text)
    attested = verified(client, code)
    assert attested == {
        "authentic": True, "kind": "certificate", "document": "Facture acquittée",
        "regie": "SPORTS", "regie_name": "Direction des sports", "number": "S-1",
        "amount_cents": 3750, "date": "2025-03-03", "status": "payée"}
    assert "fam-1" not in str(attested) and "parent@example.org" not in str(attested)
    # Typed loosely: lower case, spaces for dashes.
    assert verified(client, code.lower().replace("-", " "))["authentic"] is True
    # The invoice's own code still says what the invoice is now.
    assert verified(client, invoice_code)["status"] == "payée"

    assert verified(client, forged(code)) == {"authentic": False}
    assert verified(client, "A999999-AAAA-AAAA") == {"authentic": False}
    assert verified(client, "not a code") == {"authentic": False}
    # A certificate's code is not an invoice's: the kind is in the MAC.
    assert verified(client, "F" + code[1:]) == {"authentic": False}
    missing = client.get("/verifications")
    assert missing.status_code == 422 and "code" in json_of(missing)["errors"]["query"]


def test_a_family_cannot_read_another_familys_documents(store_settings: Settings) -> None:
    client = setup(store_settings)
    client.post("/counter-payments", json=cheque(4000, family_id="fam-2"), headers=CASHIER)
    for kind in ("invoice", "certificate"):
        assert client.get(invoice_url("fam-2", "S-2", kind), headers=PAYER).status_code == 200
        answer = client.get(invoice_url("fam-1", "S-2", kind), headers=PAYER)
        assert answer.status_code == 404, answer.data[:100]
        assert json_of(answer)["errors"]["json"]["invoice_id"]
    unknown = "/families/fam-1/invoices/4b1d5c1e-0000-4000-8000-000000000009/invoice.pdf"
    assert client.get(unknown, headers=PAYER).status_code == 404


def test_the_counter_receipt(store_settings: Settings, tmp_path: Any) -> None:
    client = setup(store_settings)
    # 50 €: 37,50 € pays S-1, the rest is the family's credit.
    body: Any = client.post("/counter-payments", json={
        "regie": "SPORTS", "family_id": "fam-1", "means": "cash", "amount_cents": 5000,
        "reference": None, "received_on": "2025-03-03"}, headers=CASHIER)
    body = json_of(body)
    assert body["receipt_url"] == f"http://localhost/counter-payments/{body['id']}/receipt.pdf"
    answer = client.get(body["receipt_url"], headers=CASHIER)
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    text = pdf_text(answer.data, tmp_path, "receipt")
    flat = squeezed(text)
    assert "Reçu de paiement au guichet" in text and "Régie « Direction des sports »" in text
    assert "Espèces" in flat and "03/03/2025" in flat and "Page 1 / 1" in flat
    assert "Facture n° S-1 37,50 €" in flat
    assert "Avoir de la famille dans la régie 12,50 €" in flat
    assert "Montant reçu 50,00 €" in flat
    attested = verified(client, code_in(text))
    assert attested == {
        "authentic": True, "kind": "receipt", "document": "Reçu de paiement au guichet",
        "regie": "SPORTS", "regie_name": "Direction des sports", "number": "S-1",
        "amount_cents": 5000, "date": "2025-03-03", "means": "Espèces",
        "status": "encaissé"}
    assert client.get(body["receipt_url"], headers=PAYER).status_code == 403


def test_the_journals_code_attests_the_days_chain_head(store_settings: Settings) -> None:
    client = setup(store_settings)
    today = datetime.now(PARIS).date()
    journal = json_of(client.get(f"/regies/SPORTS/journal?date={today.isoformat()}",
                                 headers={"Authorization": "Bearer a"}))
    assert journal["code"].startswith(f"J{journal['chain_head']['notification_id']}-")
    assert verified(client, journal["code"]) == {
        "authentic": True, "kind": "journal", "document": "Journal des paiements",
        "number": f"historique arrêté à l'événement {journal['chain_head']['notification_id']}",
        "date": today.isoformat(), "status": "arrêté"}
    # No event that day, no head: nothing to attest.
    assert json_of(client.get("/regies/SPORTS/journal?date=2001-01-01",
                              headers={"Authorization": "Bearer a"}))["code"] is None
