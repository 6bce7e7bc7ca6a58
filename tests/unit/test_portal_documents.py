"""The family's documents on the portal (Historique) and the public /verifier page, over the
in-memory payment API."""

from pathlib import Path
from typing import Any

from tests.portal_fake import FAMILY, FakePayments, details, links, logged_in, portal, texts

PAID = "4b1d5c1e-0000-4000-8000-00000000000a"
OPEN = "4b1d5c1e-0000-4000-8000-00000000000b"


def history_row(invoice_id: str, number: str, status: str) -> dict[str, Any]:
    return {"id": invoice_id, "number": number, "label": "Vacances sportives",
            "regie": "SPORTS", "regie_name": "Direction des sports",
            "issued_on": "2025-02-26", "total_cents": 2500,
            "amount_due_cents": 0 if status == "paid" else 2500, "status": status,
            "paid_at": "2025-02-26T14:40:00+01:00" if status == "paid" else None,
            "paid_by": "card" if status == "paid" else None, "payment_id": None}


def test_the_history_links_each_invoice_and_each_paid_ones_certificate(
        tmp_path: Path) -> None:
    api = FakePayments(rows=[history_row(PAID, "S-1", "paid"), history_row(OPEN, "S-2", "open")])
    api.documents = {(FAMILY, PAID, "invoice"): b"%PDF-invoice",
                     (FAMILY, PAID, "certificate"): b"%PDF-certificate",
                     (FAMILY, OPEN, "invoice"): b"%PDF-open"}
    client = logged_in(portal(api, tmp_path))
    page = client.get("/factures/historique")
    found = {text: href for text, href in links(page).items() if "(PDF)" in text}
    assert found == {
        "Facture n° S-1 (PDF)": f"/factures/{PAID}/facture.pdf",
        "Facture acquittée n° S-1 (PDF)": f"/factures/{PAID}/facture-acquittee.pdf",
        "Facture n° S-2 (PDF)": f"/factures/{OPEN}/facture.pdf",
    }
    for href, body in ((f"/factures/{PAID}/facture.pdf", b"%PDF-invoice"),
                       (f"/factures/{PAID}/facture-acquittee.pdf", b"%PDF-certificate")):
        answer = client.get(href)
        assert (answer.status_code, answer.mimetype, answer.data) == (
            200, "application/pdf", body)
    # The payment API knows no certificate of an unpaid invoice, nor another family's.
    assert client.get(f"/factures/{OPEN}/facture-acquittee.pdf").status_code == 404
    assert client.get("/factures/not-an-id/facture.pdf").status_code == 404
    # Logged out: to the log-in page, not the document.
    assert portal(api, tmp_path).test_client().get(
        f"/factures/{PAID}/facture.pdf").status_code in (302, 303)


def test_anyone_may_check_a_code_and_reads_what_it_attests(tmp_path: Path) -> None:
    api = FakePayments(verifications={"A42-K7QM-3XPA": {
        "authentic": True, "kind": "certificate", "document": "Facture acquittée",
        "regie": "SPORTS", "regie_name": "Direction des sports", "number": "S-1",
        "amount_cents": 2500, "date": "2025-02-26", "status": "payée"}})
    client = portal(api, tmp_path).test_client()  # not logged in
    form = client.get("/verifier")
    assert form.status_code == 200 and "Code de vérification" in form.text
    assert texts(form, "verification") == []
    page = client.get("/verifier", query_string={"code": "A42-K7QM-3XPA"})
    assert page.status_code == 200
    assert details(page) == {"Document": "Facture acquittée", "Régie": "Direction des sports",
                             "Numéro": "S-1", "Montant": "25,00 €", "Date": "26/02/2025",
                             "État": "payée"}
    assert "Document authentique" in texts(page, "verification")[0]
    forged = client.get("/verifier", query_string={"code": "A42-K7QM-3XPB"})
    assert forged.status_code == 200 and details(forged) == {}
    assert "Code inconnu" in texts(forged, "verification")[0]
