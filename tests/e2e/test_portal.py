"""The families' portal in a real browser, every part of the system its own process.

The seed procedure sheet's flow (log in, "Payer mes factures", "Factures à payer", PAYER,
"Récapitulatif" étape 1/2, PayFiP, "Retour du paiement" étape 2/2, "Historique des
factures"), then direct debit, a refused card, a cancel on PayFiP, and another family's data
reached by editing URLs and forms. Headless Debian Chromium through Playwright; axe-core
checks every portal page; each step's screenshot lands in test-artifacts/portal/.
"""

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.portal_system import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Family,
    PortalSystem,
    Steps,
    axe_source,
    load_demo,
    no_horizontal_scroll,
    portal_system,
    tab_to,
)
from tests.e2e.system import CARD_OK, CARD_REFUSED, issue, wait_until

pytestmark = pytest.mark.kafka

IBAN_OK = "FR76 3000 6000 0112 3456 7890 188"
PASSWORD = "vacances-sportives-2025"

MARTIN = Family("famille-martin", "famille.martin@example.org", PASSWORD)
MARTIN_2 = Family("famille-martin", "parent2.martin@example.org", "restauration-2025")
BERNARD = Family("famille-bernard", "famille.bernard@example.org", "bernard-mot-de-passe")
DURAND = Family("famille-durand", "famille.durand@example.org", "")

expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, kafka: Any) -> Iterator[PortalSystem]:
    with portal_system(tmp_path_factory.mktemp("portal"), kafka) as s:
        load_demo(s)  # the seed sheet's family: 25,00 € of sports, 10,00 € of canteen
        BERNARD.invoices = {
            "VAIC521041698402": issue(s, BERNARD.id, "VAIC521041698402", 3000),
            "STG-2025-0007": issue(s, BERNARD.id, "STG-2025-0007", 1200,
                                   label="Stage multisports"),
        }
        DURAND.invoices = {"VAIC521041698403": issue(s, DURAND.id, "VAIC521041698403", 4000)}
        s.account(MARTIN.id, MARTIN.email)  # its password is chosen in the browser
        s.account(MARTIN_2.id, MARTIN_2.email, MARTIN_2.password)
        s.account(BERNARD.id, BERNARD.email, BERNARD.password)
        expected = {MARTIN.id: 2, BERNARD.id: 2, DURAND.id: 1}
        wait_until(lambda: all(
            sum(r["count"] for r in s.to_pay(f)["regies"]) == n for f, n in expected.items()),
            "the invoices to reach the payment service")
        yield s


AXE: list[str] = []  # axe.min.js, read once


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    AXE[:] = [axe_source()]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def new_page(browser: Browser, phone: bool = False) -> Page:
    options: dict[str, Any] = {"locale": "fr-FR", "timezone_id": "Europe/Paris"}
    if phone:
        options.update(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    else:
        options.update(viewport={"width": 1280, "height": 900})
    context = browser.new_context(**options)
    # axe-core on every page, loaded by the browser itself: the portal's CSP stays on.
    context.add_init_script(script=AXE[0])
    return context.new_page()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = new_page(browser)
    yield p
    p.context.close()


def log_in(page: Page, s: PortalSystem, who: Family) -> None:
    page.goto(f"{s.portal}/connexion")
    page.get_by_label("Adresse électronique").fill(who.email)
    page.get_by_label("Mot de passe").fill(who.password)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Bienvenue sur votre espace famille")


def open_summary(page: Page, regie_name: str) -> None:
    page.get_by_role("complementary").get_by_role("link", name="Payer mes factures").click()
    page.get_by_role("link", name="Factures à payer").click()
    page.get_by_role("link", name=f"Payer les factures de {regie_name}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Récapitulatif")


def regie_block(page: Page, name: str) -> Any:
    return page.get_by_role("region", name=name)


def returned(page: Page, s: PortalSystem, word: str) -> None:
    """Back from PayFiP on the portal's étape 2/2 page, the outcome in words."""
    expect(page).to_have_url(re.compile(re.escape(f"{s.portal}/paiement/retour?payment=")))
    expect(page.get_by_role("heading", level=1)).to_have_text("Retour du paiement")
    expect(page.locator(".etapes [aria-current=step]")).to_contain_text("Étape 2/2")
    expect(page.locator(".etat")).to_have_text(f"État du paiement : {word}")


def test_the_seed_sheet_flow_pay_by_card_then_history(system: PortalSystem,
                                                       page: Page) -> None:
    s, steps = system, Steps("1-carte")
    # The operator's one-time link: the family chooses its password, once.
    page.goto(s.links[MARTIN.email])
    expect(page.get_by_role("heading", level=1)).to_have_text("Choisir mon mot de passe")
    page.get_by_label("Nouveau mot de passe", exact=True).fill(PASSWORD)
    page.get_by_label("Confirmez le mot de passe", exact=True).fill(PASSWORD)
    steps.shot(page, "choisir-mot-de-passe")
    page.get_by_role("button", name="Enregistrer mon mot de passe").click()
    expect(page.get_by_role("status")).to_have_text(
        "Votre mot de passe est enregistré : connectez-vous.")
    again = page.goto(s.links[MARTIN.email])
    assert again is not None and again.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Lien expiré ou déjà utilisé")

    # Logging in, with the keyboard only; a wrong password first.
    page.goto(f"{s.portal}/factures")
    expect(page).to_have_url(re.compile(r"/connexion\?suivant=/factures$"))
    page.get_by_label("Adresse électronique").fill(MARTIN.email)
    page.get_by_label("Mot de passe").fill("pas le bon mot de passe")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text(
        "Adresse électronique ou mot de passe incorrect.")
    page.get_by_label("Mot de passe").fill(PASSWORD)
    steps.shot(page, "connexion")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Facturation")  # where it went
    page.get_by_role("navigation", name="Menu principal").get_by_role(
        "link", name="Accueil").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Bienvenue sur votre espace famille")
    steps.shot(page, "accueil")

    # « Payer mes factures » in the right-hand menu, then « Factures à payer ».
    page.get_by_role("complementary").get_by_role("link", name="Payer mes factures").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Facturation")
    expect(page.get_by_role("link", name="Factures à payer")).to_contain_text(
        "2 factures à payer")
    expect(page.get_by_role("link", name="Historique des factures")).to_be_visible()
    steps.shot(page, "facturation")
    page.get_by_role("link", name="Factures à payer").click()

    # One block per régie, each paid separately.
    expect(page.get_by_role("heading", level=1)).to_have_text("Factures à payer")
    sports, canteen = regie_block(page, "Direction des sports"), regie_block(
        page, "Restauration scolaire")
    expect(sports).to_contain_text("1 facture à payer")
    expect(sports.locator(".total")).to_have_text("TOTAL 25,00 €")
    expect(canteen).to_contain_text("1 facture à payer")
    expect(canteen.locator(".total")).to_have_text("TOTAL 10,00 €")
    expect(page.locator(".note")).to_contain_text("Chaque service se paie séparément")
    steps.shot(page, "factures-a-payer")
    sports.get_by_role("link", name="Payer les factures de Direction des sports").click()

    # Récapitulatif, étape 1/2.
    expect(page.get_by_role("heading", level=1)).to_have_text("Récapitulatif")
    crumbs = page.get_by_role("navigation", name="Fil d'Ariane").get_by_role("listitem")
    expect(crumbs).to_have_text(["Accueil", "Factures à payer", "Récapitulatif"])
    expect(page.locator(".etapes li")).to_have_text(
        ["Étape 1/2 Récapitulatif", "Étape 2/2 Retour du paiement"])
    expect(page.locator(".etapes [aria-current=step]")).to_contain_text("Étape 1/2")
    expect(page.locator("legend")).to_contain_text("Direction des sports")
    invoice = page.locator(".facture")
    expect(invoice).to_have_count(1)
    expect(invoice.locator(".emise")).to_have_text("Émise le 26/02/2025")
    expect(invoice.locator(".objet")).to_have_text("Vacances sportives n° VAIC521041698401")
    expect(invoice.locator(".du")).to_have_text("À payer 25,00 €")
    expect(invoice.locator(".total-facture")).to_have_text("Total de la facture 25,00 €")
    box = page.get_by_role("checkbox", name="Vacances sportives n° VAIC521041698401")
    expect(box).to_be_checked()
    total = page.locator("#total-selection")
    expect(total).to_have_text("25,00 €")
    box.uncheck()
    expect(total).to_have_text("0,00 €")  # the portal's own script runs under its CSP
    box.check()
    expect(total).to_have_text("25,00 €")
    expect(page.get_by_role("link", name="Annuler")).to_be_visible()
    steps.shot(page, "recapitulatif")
    tab_to(page, "Payer")
    page.keyboard.press("Enter")

    # PayFiP (the simulator): the amount was computed by the payment service.
    expect(page.get_by_role("heading", name="Informations sur la dette")).to_be_visible()
    assert page.url.startswith(f"{s.sim}/tpa/paiementws.web?idop=")
    expect(page.get_by_text("Montant : 25,00 €")).to_be_visible()
    steps.shot(page, "payfip", a11y=False)
    page.get_by_role("button", name="Payer par carte bancaire").click()
    page.get_by_label("Numéro de carte").fill(CARD_OK)
    page.get_by_label("Date d'expiration").fill("12/30")
    page.get_by_label("Cryptogramme visuel").fill("123")
    steps.shot(page, "payfip-carte", a11y=False)
    page.get_by_role("button", name="Valider").click()

    # Retour du paiement, étape 2/2.
    returned(page, s, "payé")
    details = page.locator(".details")
    expect(details).to_contain_text("Direction des sports")
    expect(details).to_contain_text("25,00 €")
    expect(details).to_contain_text("VAIC521041698401")
    expect(details).to_contain_text("carte bancaire")
    steps.shot(page, "retour-paye")

    # Historique des factures: paid, when and how.
    page.get_by_role("link", name="Consulter l'historique de mes factures").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Historique des factures")
    row = page.get_by_role("row", name=re.compile("VAIC521041698401"))
    for _ in range(100):  # the history is a read model: it may lag the payment a little
        if "par carte bancaire" in row.inner_text():
            break
        page.wait_for_timeout(100)
        page.reload()
    expect(row.locator("td").nth(2)).to_have_text("25,00 €")
    expect(row.locator("td").nth(3)).to_have_text("Payée")
    expect(row.locator("td").nth(4)).to_have_text(
        re.compile(r"^Le \d\d/\d\d/\d{4} à \d\d:\d\d par carte bancaire$"))
    expect(page.get_by_role("row", name=re.compile("RS-2025-02-0001"))).to_contain_text(
        "10,00 €")
    steps.shot(page, "historique")

    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Connexion à votre espace famille")
    page.goto(f"{s.portal}/factures/historique")
    expect(page).to_have_url(re.compile("/connexion"))


def test_canteen_by_direct_debit_on_a_phone_result_comes_late(
        system: PortalSystem, browser: Browser) -> None:
    s, steps = system, Steps("2-prelevement")
    page = new_page(browser, phone=True)
    try:
        log_in(page, s, MARTIN_2)  # the other parent's account, same family
        steps.shot(page, "accueil")
        no_horizontal_scroll(page)
        open_summary(page, "Restauration scolaire")
        invoice = page.locator(".facture")
        expect(invoice.locator(".objet")).to_have_text(
            "Restauration scolaire février 2025 n° RS-2025-02-0001")
        expect(invoice.locator(".du")).to_have_text("À payer 10,00 €")
        steps.shot(page, "recapitulatif")
        no_horizontal_scroll(page)
        # PayFiP keeps answering "in progress" for a while after the family decided.
        s.sim_config(hold=True)
        page.get_by_role("button", name="Payer").click()
        expect(page.get_by_text("Montant : 10,00 €")).to_be_visible()
        page.get_by_role("button", name="Payer par prélèvement").click()
        page.get_by_label("Titulaire du compte").fill("Famille Martin")
        page.get_by_label("IBAN").fill(IBAN_OK)
        steps.shot(page, "payfip-prelevement", a11y=False)
        page.get_by_role("button", name="Valider").click()
        returned(page, s, "en cours de traitement")
        expect(page.get_by_role("link", name="Actualiser la page")).to_be_visible()
        steps.shot(page, "retour-en-cours")
        no_horizontal_scroll(page)
        s.sim_config(hold=False)
        # The page asks by itself until the result is known, then shows it.
        expect(page.locator(".etat")).to_have_text("État du paiement : prélèvement enregistré")
        expect(page.locator(".details")).to_contain_text("prélèvement")
        steps.shot(page, "retour-prelevement-enregistre")
        page.get_by_role("link", name="Consulter l'historique de mes factures").first.click()
        row = page.get_by_role("row", name=re.compile("RS-2025-02-0001"))
        for _ in range(100):
            if "par prélèvement" in row.inner_text():
                break
            page.wait_for_timeout(100)
            page.reload()
        expect(row).to_contain_text("par prélèvement")
        expect(row.locator("td").nth(3)).to_have_text("Prélèvement enregistré")
        steps.shot(page, "historique")
        no_horizontal_scroll(page)
    finally:
        s.sim_config(hold=False)
        page.context.close()


def test_a_refused_card_then_a_cancel_on_payfip(system: PortalSystem, page: Page) -> None:
    s, steps = system, Steps("3-refus-annulation")
    log_in(page, s, BERNARD)
    page.get_by_role("complementary").get_by_role("link", name="Payer mes factures").click()
    page.get_by_role("link", name="Factures à payer").click()
    sports = regie_block(page, "Direction des sports")
    expect(sports).to_contain_text("2 factures à payer")
    expect(sports.locator(".total")).to_have_text("TOTAL 42,00 €")
    expect(regie_block(page, "Restauration scolaire")).to_have_count(0)
    sports.get_by_role("link", name="Payer les factures de Direction des sports").click()

    # Only one of the two invoices: the total follows the selection.
    stage = page.get_by_role("checkbox", name="Stage multisports n° STG-2025-0007")
    stage.uncheck()
    expect(page.locator("#total-selection")).to_have_text("30,00 €")
    steps.shot(page, "recapitulatif-selection")
    page.get_by_role("button", name="Payer").click()
    expect(page.get_by_text("Montant : 30,00 €")).to_be_visible()
    idop = page.url.partition("idop=")[2]
    page.get_by_role("button", name="Payer par carte bancaire").click()
    page.get_by_label("Numéro de carte").fill(CARD_REFUSED)
    page.get_by_label("Date d'expiration").fill("12/30")
    page.get_by_label("Cryptogramme visuel").fill("123")
    page.get_by_role("button", name="Valider").click()
    returned(page, s, "refusé")
    expect(page.locator(".resultat")).to_contain_text("aucune somme n'a été prélevée")
    steps.shot(page, "retour-refuse")
    # PayFiP's browser return may also be pointed straight at the portal.
    page.goto(f"{s.portal}/payfip/return?idop={idop}")
    expect(page.locator(".etat")).to_have_text("État du paiement : refusé")

    # The refused invoice can be paid again; this time the other one, cancelled on PayFiP.
    summary = f"{s.portal}/factures/a-payer/SPORTS"
    vac = page.get_by_role("checkbox", name="Vacances sportives n° VAIC521041698402")
    for _ in range(100):
        page.goto(summary)
        if vac.count():
            break
        page.wait_for_timeout(100)
    vac.uncheck()
    expect(page.locator("#total-selection")).to_have_text("12,00 €")
    page.get_by_role("button", name="Payer").click()
    expect(page.get_by_text("Montant : 12,00 €")).to_be_visible()
    page.get_by_role("button", name="Annuler").click()
    # PayFiP's A may still turn into a payment for a while: not "annulé" yet, but the
    # invoice is free again at once.
    returned(page, s, "non terminé")
    expect(page.locator(".resultat")).to_contain_text("peuvent de nouveau être payées")
    steps.shot(page, "retour-non-termine")

    # An invoice being paid shows why it cannot be picked, and nothing is selected.
    r = s.payer("POST", "/payments", json={
        "family_id": BERNARD.id, "regie": "SPORTS", "email": BERNARD.email,
        "invoice_ids": [BERNARD.invoices["STG-2025-0007"]]})
    assert r.status_code == 201, r.text
    blocked = page.locator(".facture-bloquee")
    for _ in range(100):
        page.goto(summary)
        if blocked.count():
            break
        page.wait_for_timeout(100)
    expect(blocked.locator(".raison")).to_have_text(re.compile(
        r"Un paiement de cette facture est en cours : elle lui est réservée jusqu'au "
        r"\d\d/\d\d/\d{4} à \d\d:\d\d\."))
    expect(blocked.get_by_role("checkbox")).to_have_count(0)
    # Its PayFiP page was left open (the tab closed): the family can go back to it.
    resume = page.get_by_role("link", name="Reprendre le paiement sur PayFiP")
    expect(resume).to_have_attribute("href", r.json()["redirect_url"])
    expect(page.locator(".reprise")).to_contain_text("12,00 €")
    steps.shot(page, "recapitulatif-paiement-en-cours")
    resume.click()
    expect(page.get_by_text("Montant : 12,00 €")).to_be_visible()


def test_another_familys_data_is_404(system: PortalSystem, page: Page) -> None:
    s, steps = system, Steps("4-autre-famille")
    # The Durand family has an invoice and a payment under way.
    durand_invoice = DURAND.invoices["VAIC521041698403"]
    r = s.payer("POST", "/payments", json={
        "family_id": DURAND.id, "regie": "SPORTS", "invoice_ids": [durand_invoice],
        "email": DURAND.email})
    assert r.status_code == 201, r.text
    durand = r.json()

    # Not logged in: every page asks to log in first.
    for path in ("/", "/factures/a-payer", f"/paiement/retour?payment={durand['id']}"):
        page.goto(s.portal + path)
        expect(page).to_have_url(re.compile(r"/connexion\?suivant="))

    log_in(page, s, BERNARD)
    for path in (
        f"/paiement/retour?payment={durand['id']}",
        f"/paiement/retour?idop={durand['idop']}",
        f"/payfip/return?idop={durand['idop']}",
        f"/paiement/etat?payment={durand['id']}",
        "/paiement/retour?payment=pas-un-identifiant",
        "/paiement/retour",
        "/factures/a-payer/CANTINE",  # a régie this family owes nothing to
        "/factures/a-payer/INCONNUE",
        "/factures/a-payer/..%2F..%2Ffamilies",
    ):
        response = page.goto(s.portal + path)
        assert response is not None and response.status == 404, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Page introuvable")
        expect(page.locator("main")).not_to_contain_text("40,00")
    steps.shot(page, "paiement-d-une-autre-famille")

    # The form edited in the browser to name the Durand family's invoice.
    page.goto(f"{s.portal}/factures/a-payer/SPORTS")
    page.evaluate("""id => {
        const box = document.querySelector("input[name=invoice_ids]");
        box.value = id; box.checked = true;
        const family = document.createElement("input");
        family.type = "hidden"; family.name = "family_id"; family.value = "famille-durand";
        box.form.appendChild(family);
    }""", durand_invoice)
    with page.expect_response(lambda resp: resp.request.method == "POST") as answer:
        page.get_by_role("button", name="Payer").click()
    assert answer.value.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page introuvable")
    steps.shot(page, "formulaire-modifie")

    # A form posted without its CSRF token, with the family's own session cookie.
    posted = page.request.post(f"{s.portal}/factures/a-payer/SPORTS", form={
        "invoice_ids": BERNARD.invoices["VAIC521041698402"]}, max_redirects=0)
    assert posted.status == 400 and "Page expirée" in posted.text()
    # Nothing of the Durand family's moved.
    lines = s.regie_lines(DURAND.id, "SPORTS")
    assert [(line["id"], line["reason"]) for line in lines] == [
        (durand_invoice, "payment_in_progress")]


def test_the_accounts_command_refuses_bad_input(system: PortalSystem) -> None:
    out = system.portal_cli("accounts", "link", "--email", BERNARD.email)
    assert f"{system.portal}/compte/activer/" in out
    for args in (["create", "--family", MARTIN.id, "--email", MARTIN.email],  # taken
                 ["create", "--family", "famille martin", "--email", "x@example.org"],
                 ["set-password", "--email", "personne@example.org", "--password", "x" * 12]):
        done = subprocess.run([sys.executable, "-m", "services.portal", "accounts", *args],
                              env=system.env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 1 and done.stderr.startswith("error: "), args
