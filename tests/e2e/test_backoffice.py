"""The régisseur's desk in a real browser, every part of the system its own process.

A cashier chooses her password with the operator's one-time link, logs in, finds
famille-martin, takes 10,00 € in cash on its invoices of the Direction des sports and sees
the receipt, records a credit note, marks a refund paid and downloads the day's journal.
Headless Debian Chromium through Playwright; axe-core checks every page; each step's
screenshot lands in test-artifacts/portal/.
"""

import csv
import io
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from events.formats import PARIS
from services import demo
from tests.e2e.portal_system import CHROMIUM, CHROMIUM_ARGS, Steps, axe_source
from tests.e2e.system import (
    CARD_OK,
    ISSUER,
    PAYER,
    READER,
    SIM_PARTS,
    TOKENS,
    SimSystem,
    running,
    sim_system,
)
from tests.e2e.system import wait_until as waited

pytestmark = pytest.mark.kafka

CASHIER = "cashier-token"
EMAIL, NAME, PASSWORD = "c.durand@mairie.example", "Claire Durand", "guichet-sports-2025"
FAMILY = "famille-martin"

expect.set_options(timeout=15_000)


class DeskSystem(SimSystem):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.desk = f"http://127.0.0.1:{self.env['BACKOFFICE_PORT']}"

    def staff_link(self) -> str:
        """``python -m services.backoffice accounts create`` as an operator runs it."""
        done = subprocess.run(
            [sys.executable, "-m", "services.backoffice", "accounts", "create", "--email",
             EMAIL, "--name", NAME], env=self.env, capture_output=True, text=True,
            timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        match = re.search(r"(http\S+/guichet/compte/activer/\S+)", done.stdout)
        assert match, done.stdout
        return match.group(1)

    def cashier(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.payment}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {CASHIER}"}, **kwargs)

    def due(self, regie: str) -> int:
        r = requests.get(f"{self.payment}/families/{FAMILY}/to-pay/{regie}", timeout=10,
                         headers={"Authorization": f"Bearer {READER}"})
        if r.status_code == 404:  # the régie has not reached the payment service yet
            return -1
        r.raise_for_status()
        return sum(int(i["amount_due_cents"]) for i in r.json()["invoices"])


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, kafka: Any) -> Iterator[DeskSystem]:
    s = sim_system(DeskSystem, tmp_path_factory.mktemp("backoffice"), kafka,
                   "BACKOFFICE_PORT", tokens=f"{TOKENS},{CASHIER}:cashier")
    s.env.update(
        BACKOFFICE_TOKEN=CASHIER, BACKOFFICE_BILLING_URL=s.billing,
        BACKOFFICE_PAYMENT_URL=s.payment,
        BACKOFFICE_ACCOUNTS_DB=str(s.settings.var_dir / "backoffice.db"),
        BACKOFFICE_PUBLIC_URL=s.desk, BACKOFFICE_SECRET_KEY=uuid.uuid4().hex)
    with running(s, (*SIM_PARTS, "backoffice"), s.sim, s.desk):
        demo.load(s.billing, ISSUER)  # famille-martin: 25,00 € of sports, 10,00 € of canteen
        waited(lambda: s.due("SPORTS") == 2500, "the demo invoices to reach payment")
        yield s


@pytest.fixture(scope="module")
def page(system: DeskSystem) -> Iterator[Page]:
    axe = axe_source()
    with sync_playwright() as p:
        browser: Browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="fr-FR", timezone_id="Europe/Paris",
                                      viewport={"width": 1280, "height": 900},
                                      accept_downloads=True)
        context.add_init_script(script=axe)  # loaded by the browser: the CSP stays on
        try:
            yield context.new_page()
        finally:
            browser.close()


def h1(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text(text)


def test_a_cashiers_day_at_the_desk(system: DeskSystem, page: Page) -> None:
    steps = Steps("guichet")
    page.goto(system.staff_link())
    h1(page, "Choisir votre mot de passe")
    page.get_by_label("Mot de passe (12 caractères au moins)").fill(PASSWORD)
    page.get_by_label("Confirmation du mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Enregistrer le mot de passe").click()

    h1(page, "Connexion au guichet")
    steps.shot(page, "connexion")
    page.get_by_label("Adresse électronique").fill(EMAIL)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    h1(page, "Rechercher une famille")
    expect(page.get_by_text("ne conserve pas le nom des familles")).to_be_visible()
    steps.shot(page, "recherche")

    page.get_by_label("Identifiant de la famille").fill(FAMILY)
    page.get_by_role("button", name="Rechercher").click()
    h1(page, f"Famille {FAMILY}")
    steps.shot(page, "famille")
    page.get_by_role("link", name="Direction des sports (SPORTS)").click()
    h1(page, f"Famille {FAMILY}, régie SPORTS")
    steps.shot(page, "regie")

    # 10,00 € in cash on the family's sports invoices.
    page.get_by_label("Moyen de paiement").select_option(label="Espèces")
    page.get_by_label("Montant en euros").fill("10,00")
    page.get_by_role("button", name="Encaisser").click()
    h1(page, "Reçu d'encaissement")
    receipt = page.locator(".recu")
    expect(receipt).to_contain_text("10,00\u00a0€")
    expect(receipt).to_contain_text("Espèces")
    expect(receipt).to_contain_text(EMAIL)
    expect(receipt).to_contain_text("VAIC521041698401")
    expect(page.get_by_role("button", name="Imprimer le reçu")).to_be_visible()
    steps.shot(page, "recu")
    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Imprimer le reçu")).to_be_hidden()
    page.emulate_media(media="screen")
    assert system.due("SPORTS") == 1500

    # A credit note of 5,00 € on what the invoice still owes.
    page.get_by_role("link", name="Retour à la famille").click()
    page.get_by_label("Montant de l'avoir en euros").fill("5")
    page.get_by_label("Motif").fill("séance annulée")
    page.get_by_role("button", name="Enregistrer l'avoir").click()
    expect(page.get_by_role("status")).to_have_text(
        "Avoir de 5,00\u00a0€ enregistré sur la facture VAIC521041698401.")
    steps.shot(page, "avoir")
    waited(lambda: system.due("SPORTS") == 1000, "the credit note to reach payment")

    # 20,00 € for the 10,00 € still owed: 10,00 € of credit, which the family asks back.
    page.reload()
    page.get_by_label("Moyen de paiement").select_option(label="Chèque")
    page.get_by_label("Montant en euros").fill("20")
    page.get_by_role("button", name="Encaisser").click()
    h1(page, f"Famille {FAMILY}, régie SPORTS")  # refused by the desk: a cheque has a number
    expect(page.locator("#erreur-reference")).to_be_visible()
    steps.shot(page, "cheque-sans-numero")
    page.get_by_label("Référence", exact=False).fill("0012345")
    page.get_by_role("button", name="Encaisser").click()
    h1(page, "Reçu d'encaissement")
    expect(page.locator(".recu")).to_contain_text("10,00\u00a0€")  # the credit
    asked = system.cashier("POST", f"/families/{FAMILY}/credits/SPORTS/refund", json={})
    assert asked.status_code == 201, asked.text

    page.get_by_role("link", name="Remboursements").click()
    h1(page, "Remboursements à payer")
    refund = page.get_by_role("region", name=f"10,00\u00a0€ à {FAMILY}, régie SPORTS")
    steps.shot(page, "remboursements")
    refund.get_by_label("Payé par").select_option(label="Espèces")
    refund.get_by_role("button", name="Marquer payé").click()
    expect(page.get_by_text("Aucun remboursement à payer.")).to_be_visible()
    steps.shot(page, "rembourse")
    [paid] = system.cashier("GET", "/refunds", params={"status": "paid"}).json()["refunds"]
    assert paid["paid_by"] == EMAIL

    page.get_by_role("link", name="Journal du jour").click()
    h1(page, "Journal des paiements")
    page.get_by_label("Code de la régie").fill("SPORTS")
    steps.shot(page, "journal")
    with page.expect_download() as download:
        page.get_by_role("button", name="Télécharger le journal").click()
    today = datetime.now(PARIS).date().isoformat()
    assert download.value.suggested_filename == f"journal-SPORTS-{today}.csv"
    path = download.value.path()
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert sorted((r["means"], r["amount_cents"]) for r in rows) == [
        ("cash", "1000"), ("cheque", "2000"), ("refund", "-1000")]


def test_paid_in_part_at_the_desk_then_the_rest_online(system: DeskSystem) -> None:
    """The canteen's 10,00 €: 4,00 € in cash at the desk, the 6,00 € left on PayFiP's page;
    billing then holds the invoice as paid."""
    [canteen] = system.regie_lines(FAMILY, "CANTINE")
    assert canteen["amount_due_cents"] == 1000
    today = datetime.now(PARIS).date().isoformat()
    taken = system.cashier("POST", "/counter-payments", json={
        "regie": "CANTINE", "family_id": FAMILY, "means": "cash", "amount_cents": 400,
        "received_on": today})
    assert taken.status_code == 201, taken.text
    assert [(a["invoice_id"], a["amount_cents"]) for a in taken.json()["allocations"]] == [
        (canteen["id"], 400)]
    assert system.due("CANTINE") == 600  # still to pay, and payable online

    asked = requests.post(f"{system.payment}/payments", timeout=30, json={
        "family_id": FAMILY, "regie": "CANTINE", "invoice_ids": [canteen["id"]],
        "email": "famille.martin@example.org"}, headers={"Authorization": f"Bearer {PAYER}"})
    assert asked.status_code == 201, asked.text
    payment = asked.json()
    assert payment["amount_cents"] == 600  # what the invoice still owes, computed here
    paid = requests.post(f"{system.sim}/tpa/paiementws.web/carte", timeout=10,
                         allow_redirects=False, data={
                             "idop": payment["idop"], "action": "valider",
                             "expiration": "12/30", "cvv": "123", "numero": CARD_OK})
    assert paid.status_code == 303, paid.text
    assert requests.get(paid.headers["Location"], timeout=30).ok  # back from PayFiP

    def billed() -> str:
        r = requests.get(f"{system.billing}/invoices/{canteen['id']}", timeout=10,
                         headers={"Authorization": f"Bearer {READER}"})
        return str(r.json()["status"])

    waited(lambda: billed() == "paid", "billing to hold the canteen invoice as paid")
    assert system.due("CANTINE") == 0
