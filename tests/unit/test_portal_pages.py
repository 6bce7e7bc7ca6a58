"""What a family reads on the portal's pages, over the in-memory payment API."""

import importlib
import tomllib
from datetime import datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

import services.portal
from services.portal.formatting import moment
from tests.portal_fake import (
    PAYFIP_PAGE,
    FakePayments,
    checkboxes,
    details,
    links,
    logged_in,
    portal,
    submit_disabled,
    texts,
    utc_in,
)


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


def test_an_invoice_under_one_euro_is_paid_with_others_of_its_regie(
        api: FakePayments, tmp_path: Path) -> None:
    client = logged_in(portal(api, tmp_path))
    small = api.invoice("SPORTS", "STG-0001", 50)
    other_small = api.invoice("SPORTS", "STG-0002", 60)
    big = api.invoice("SPORTS", "VAIC521041698401", 2500)

    page = client.get("/factures/a-payer/SPORTS")
    assert page.status_code == 200
    # Every invoice can be picked; the small ones say why they cannot go alone.
    assert len(checkboxes(page)) == 3 and not texts(page, "raison")
    notes = texts(page, "minimum")
    assert len(notes) == 2 and all(
        "PayFiP n'accepte pas de paiement de moins de 1,00 €" in n
        and "avec une autre facture de ce service" in n for n in notes), notes

    # Alone, the 0,50 € invoice is refused here, saying why, and nothing is asked of PayFiP.
    page = client.post("/factures/a-payer/SPORTS", data={"invoice_ids": [small["id"]]})
    assert page.status_code == 422
    [error] = texts(page, "message-erreur")
    assert "0,50 €" in error and "1,00 €" in error and "PayFiP" in error, error
    assert checkboxes(page) == {small["id"]: True, other_small["id"]: False, big["id"]: False}
    assert api.asked == []

    # Together they reach 1,00 €: off to PayFiP.
    page = client.post("/factures/a-payer/SPORTS",
                       data={"invoice_ids": [small["id"], other_small["id"]]})
    assert page.status_code == 303 and page.location.startswith(PAYFIP_PAGE)
    assert [a["invoice_ids"] for a in api.asked] == [[small["id"], other_small["id"]]]


def test_invoices_of_a_regie_that_stay_under_one_euro_say_when_they_can_be_paid(
        api: FakePayments, tmp_path: Path) -> None:
    client = logged_in(portal(api, tmp_path))
    api.invoice("CANTINE", "RS-2025-02-0001", 40)
    api.invoice("CANTINE", "RS-2025-03-0001", 30)

    page = client.get("/factures/a-payer/CANTINE")
    assert page.status_code == 200
    assert checkboxes(page) == {}
    reasons = texts(page, "raison")
    assert len(reasons) == 2 and all(
        "PayFiP n'accepte pas de paiement de moins de 1,00 €" in r
        and "avec une prochaine facture de ce service" in r for r in reasons), reasons
    assert texts(page, "selection") == ["Total de la sélection : 0,00 €"]
    assert submit_disabled(page)


RESUME = "Reprendre le paiement sur PayFiP"


def utc_in_iso(timestamp: str, minutes: float) -> str:
    return (datetime.fromisoformat(timestamp) + timedelta(minutes=minutes)).isoformat()


def reserved_line(api: FakePayments, number: str, payment: dict[str, Any]) -> dict[str, Any]:
    line = api.invoice(payment["regie"], number, 2500, payable=False,
                       reason="payment_in_progress", payment_id=payment["id"])
    payment["allocations"].append({"invoice_id": line["id"], "number": number,
                                   "amount_cents": 2500})
    payment["amount_cents"] += 2500
    return line


def test_a_payment_left_open_on_payfip_can_be_resumed_while_its_idop_lives(
        api: FakePayments, tmp_path: Path) -> None:
    """PAYFIP_RESERVATION_MINUTES is 20 (its default): the idop, 15 minutes, ends first."""
    client = logged_in(portal(api, tmp_path))
    # Begun a minute ago, the tab then closed: PayFiP's page still takes it for 14 minutes.
    until = utc_in(19)
    payment = api.add_payment("SPORTS", "requested", reserved_until=until)
    reserved_line(api, "VAIC521041698401", payment)
    api.invoice("SPORTS", "STG-2025-0007", 1200)

    page = client.get("/factures/a-payer/SPORTS")
    assert page.status_code == 200
    assert links(page)[RESUME] == payment["redirect_url"]
    [section] = texts(page, "reprise")
    assert "25,00 €" in section and "VAIC521041698401" in section
    assert f"jusqu'au {moment(utc_in_iso(until, -5))}" in section, section
    [reason] = texts(page, "raison")
    assert f"réservée jusqu'au {moment(until)}" in reason, reason
    assert len(checkboxes(page)) == 1  # the other invoice only

    # Begun 16 minutes ago: PayFiP no longer takes its idop; the invoice is still reserved.
    payment["reserved_until"] = until = utc_in(4)
    page = client.get("/factures/a-payer/SPORTS")
    assert RESUME not in links(page) and not texts(page, "reprise")
    [reason] = texts(page, "raison")
    assert f"réservée jusqu'au {moment(until)}" in reason, reason

    # The reservation is over: the invoice may be paid again (the payment API frees it).
    payment["reserved_until"] = utc_in(-1)
    page = client.get("/factures/a-payer/SPORTS")
    assert RESUME not in links(page) and not texts(page, "raison")
    assert len(checkboxes(page)) == 2


def test_no_resume_link_for_a_payment_that_is_no_longer_requested(
        api: FakePayments, tmp_path: Path) -> None:
    client = logged_in(portal(api, tmp_path))
    # PayFiP said "paid" a second ago; the to-pay list has not caught up yet.
    payment = api.add_payment("SPORTS", "confirmed", resultrans="P", reserved_until=None)
    reserved_line(api, "VAIC521041698401", payment)
    page = client.get("/factures/a-payer/SPORTS")
    assert RESUME not in links(page) and not texts(page, "reprise")
    assert texts(page, "raison") == [
        "Un paiement de cette facture est en cours : attendez son résultat avant de la payer "
        "à nouveau."]
    # Still requested, the reservation still on, but another family's (a made-up answer).
    payment.update(status="requested", reserved_until=utc_in(19), family_id="famille-durand")
    page = client.get("/factures/a-payer/SPORTS")
    assert RESUME not in links(page) and payment["redirect_url"] not in page.text


def test_a_payment_left_on_payfip_says_the_invoices_are_free_again(
        api: FakePayments, tmp_path: Path) -> None:
    """PayFiP's A right after the transaction may still turn into a payment: the payment
    stays requested, but its invoices are released at once (reserved_until null)."""
    client = logged_in(portal(api, tmp_path))
    left = api.add_payment("SPORTS", "requested", reserved_until=None, amount_cents=1200)
    page = client.get(f"/paiement/retour?payment={left['id']}")
    assert texts(page, "etat") == ["État du paiement : non terminé"]
    [result] = texts(page, "resultat")
    assert "les factures peuvent de nouveau être payées" in result, result
    assert "Actualiser la page" in links(page)  # PayFiP's last word is still awaited

    waiting = api.add_payment("SPORTS", "requested", reserved_until=utc_in(19))
    page = client.get(f"/paiement/retour?payment={waiting['id']}")
    assert texts(page, "etat") == ["État du paiement : en cours de traitement"]


def test_the_style_sheet_and_the_script_are_served_from_their_files(
        api: FakePayments, tmp_path: Path) -> None:
    client = portal(api, tmp_path).test_client()
    static = Path(services.portal.__file__).parent / "static"
    for name, mimetype in (("portal.css", "text/css"), ("portal.js", "text/javascript")):
        answer = client.get(f"/assets/{name}")
        assert answer.status_code == 200 and answer.mimetype == mimetype
        assert answer.data == (static / name).read_bytes()
        assert answer.cache_control.max_age == 3600 and answer.cache_control.public
    assert client.get("/assets/missing.css").status_code == 404


PYPROJECT = Path(services.portal.__file__).parents[2] / "pyproject.toml"


@pytest.mark.parametrize(("package", "at_least"), [
    ("services.portal", 13), ("services.backoffice", 10), ("services.common.web", 3)])
def test_every_template_and_asset_is_package_data(package: str, at_least: int) -> None:
    """A non-editable install ships only what pyproject.toml names: the portal's pages, the
    back office's, and the pieces of them both sites share."""
    root = Path(importlib.import_module(package).__file__ or "").parent
    config = tomllib.loads(PYPROJECT.read_text())
    patterns = config["tool"]["setuptools"]["package-data"].get(package, [])
    files = [p.relative_to(root) for p in (*root.glob("templates/*"), *root.glob("static/*"))]
    assert len(files) >= at_least
    unshipped = [f for f in files if not any(fnmatch(str(f), p) for p in patterns)]
    assert unshipped == []
