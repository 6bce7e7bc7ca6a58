"""What a family reads on the portal's pages, over the in-memory payment API."""

from pathlib import Path

import pytest

from tests.portal_fake import FakePayments, details, logged_in, portal, texts


@pytest.fixture
def api() -> FakePayments:
    return FakePayments()


def test_a_direct_debit_reads_as_registered_not_paid(api: FakePayments, tmp_path: Path) -> None:
    client = logged_in(portal(api, tmp_path))
    debit = api.add_payment("CANTINE", "confirmed", resultrans="V", amount_cents=1000,
                            paid_at="2025-02-26T14:32:00+01:00", numauto="112233445566-tip")
    card = api.add_payment("SPORTS", "confirmed", resultrans="P", amount_cents=2500,
                           paid_at="2025-02-26T14:40:00+01:00", numauto="998877665544-tip")

    page = client.get(f"/paiement/retour?payment={debit['id']}")
    assert page.status_code == 200
    assert texts(page, "etat") == ["État du paiement : prélèvement enregistré"]
    [result] = texts(page, "resultat")
    assert "Votre prélèvement est enregistré" in result and "payé" not in result
    assert details(page)["Prélèvement enregistré le"] == "26/02/2025 à 14:32"
    assert details(page)["Moyen de paiement"] == "prélèvement"

    page = client.get(f"/paiement/retour?payment={card['id']}")
    assert texts(page, "etat") == ["État du paiement : payé"]
    assert details(page)["Payé le"] == "26/02/2025 à 14:40"

    api.rows = [
        {"id": "1", "number": "RS-2025-02-0001", "label": "Restauration scolaire",
         "regie": "CANTINE", "regie_name": "Restauration scolaire", "issued_on": "2025-02-26",
         "total_cents": 1000, "amount_due_cents": 0, "status": "paid",
         "paid_at": "2025-02-26T14:32:00+01:00", "paid_by": "direct_debit", "payment_id": None},
        {"id": "2", "number": "VAIC521041698401", "label": "Vacances sportives",
         "regie": "SPORTS", "regie_name": "Direction des sports", "issued_on": "2025-02-26",
         "total_cents": 2500, "amount_due_cents": 0, "status": "paid",
         "paid_at": "2025-02-26T14:40:00+01:00", "paid_by": "card", "payment_id": None},
    ]
    page = client.get("/factures/historique")
    cells = [texts(page, "etat-facture"), texts(page, "paiement")]
    assert cells == [["Prélèvement enregistré", "Payée"],
                     ["Le 26/02/2025 à 14:32 par prélèvement",
                      "Le 26/02/2025 à 14:40 par carte bancaire"]]
