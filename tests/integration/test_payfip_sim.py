"""The PayFiP simulator, served for real on a free port, driven by eopayment's own client.

eopayment's ``PayFiP`` (zeep, with the WSDL and XSDs it ships) is the independent check that
the simulator speaks PayFiP's SOAP; the payment page is driven with plain HTTP requests, as
a browser without JavaScript would.
"""

import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit
from zoneinfo import ZoneInfo

import eopayment
import pytest
import requests
from eopayment.payfip_ws import PayFiP, PayFiPError

from services.payfip_sim.app import create_app as create_sim
from services.payfip_sim.model import SimSettings
from services.payment.payfip import aim
from tests.payfip import PAGE_PATH, SERVICE_PATH, served_sim

SERVICE_NS = (
    "http://securite.service.tpa.cp.finances.gouv.fr/services/mas_securite/"
    "contrat_paiement_securise/PaiementSecuriseService"
)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARIS = ZoneInfo("Europe/Paris")
UNKNOWN_NUMCLI = "424242"
RETURN_URL = "http://127.0.0.1:9/payfip/return?lang=fr"


# -- servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    settings = SimSettings(
        unknown_numcli=frozenset({"999999", UNKNOWN_NUMCLI}), notify_timeout=2.0, public_url=""
    )
    with served_sim(settings) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_sim(sim_url: str) -> Iterator[None]:
    requests.post(f"{sim_url}/_sim/reset", timeout=5).raise_for_status()
    yield
    requests.post(f"{sim_url}/_sim/reset", timeout=5).raise_for_status()


@pytest.fixture
def payfip(sim_url: str) -> PayFiP:
    return aim(PayFiP(), sim_url + SERVICE_PATH)


class Receiver:
    """The payment service's notification endpoint, as far as PayFiP can see it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = 200
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver.changed:
                    receiver.calls.append({
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "form": parse_qs(body),
                        "at": time.monotonic(),
                    })
                    receiver.changed.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/payfip/notification"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.calls) >= count, timeout=timeout)
            return list(self.calls)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


# -- helpers ---------------------------------------------------------------------------


def new_refdet() -> str:
    return "R" + uuid.uuid4().hex[:15].upper()


def creation(receiver_url: str = "http://127.0.0.1:9/payfip/notification",
             **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "numcli": "000123", "saisie": "T", "exer": "2025", "refdet": new_refdet(),
        "montant": "2500", "mel": "famille.martin@example.org",
        "objet": "Direction des sports facture F2025 0001",
        "url_notification": receiver_url, "url_redirect": RETURN_URL,
    }
    args.update(overrides)
    return args


def control(sim_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.post(f"{sim_url}/_sim/{path}", json=body or {}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def sim_payment(sim_url: str, idop: str) -> dict[str, Any]:
    answer = requests.get(f"{sim_url}/_sim/payments/{idop}", timeout=5)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def notifications(sim_url: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The simulator's notification log once ``count`` calls are finished."""
    deadline = time.monotonic() + timeout
    while True:
        records: list[dict[str, Any]] = requests.get(
            f"{sim_url}/_sim/notifications", timeout=5
        ).json()["notifications"]
        if len([r for r in records if r["done"]]) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


class Form:
    def __init__(self, action: str, method: str) -> None:
        self.action = action
        self.method = method
        self.fields: dict[str, str] = {}
        self.buttons: list[tuple[str, str, str]] = []  # label, name, value


class Page(HTMLParser):
    """The forms, labels and text of a page, to act on it as a browser would."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.labels: dict[str, str] = {}
        self.input_ids: list[str] = []
        self.text_parts: list[str] = []
        self.lang: str | None = None
        self._form: Form | None = None
        self._button: tuple[str, str] | None = None
        self._label_for: str | None = None
        self._buffer: list[str] = []
        self.feed(html)
        self.text = " ".join(" ".join(self.text_parts).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            if a.get("type") != "hidden":
                self.input_ids.append(a.get("id", ""))
            if a.get("name"):
                self._form.fields[a["name"]] = a.get("value", "")
        elif tag == "button":
            self._button = (a.get("name", ""), a.get("value", ""))
            self._buffer = []
        elif tag == "label":
            self._label_for = a.get("for", "")
            self._buffer = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "button" and self._button is not None and self._form is not None:
            label = " ".join("".join(self._buffer).split())
            self._form.buttons.append((label, *self._button))
            self._button = None
        elif tag == "label" and self._label_for is not None:
            self.labels[self._label_for] = " ".join("".join(self._buffer).split())
            self._label_for = None

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)
        self._buffer.append(data)

    def submit(self, session: requests.Session, page_url: str, button: str,
               **values: str) -> requests.Response:
        """Fill ``values`` in and press the button labelled ``button``."""
        for form in self.forms:
            for label, name, value in form.buttons:
                if label == button:
                    data = dict(form.fields)
                    data.update(values)
                    if name:
                        data[name] = value
                    return session.post(urljoin(page_url, form.action), data=data,
                                        allow_redirects=False, timeout=5)
        raise AssertionError(f"no button {button!r} in {[f.buttons for f in self.forms]}")


def open_page(session: requests.Session, sim_url: str, idop: str) -> tuple[str, Page]:
    url = f"{sim_url}{PAGE_PATH}?idop={idop}"
    answer = session.get(url, timeout=5)
    assert answer.status_code == 200, answer.text
    return url, Page(answer.text)


def pay_with_card(sim_url: str, idop: str, number: str,
                  button: str = "Valider") -> requests.Response:
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    answer = page.submit(session, url, "Payer par carte bancaire")
    assert answer.status_code == 200, answer.text
    card = Page(answer.text)
    return card.submit(session, answer.url, button, numero=number, expiration="12/30", cvv="123")


def pay_by_debit(sim_url: str, idop: str, iban: str) -> requests.Response:
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    answer = page.submit(session, url, "Payer par prélèvement")
    assert answer.status_code == 200, answer.text
    debit = Page(answer.text)
    return debit.submit(session, answer.url, "Valider", titulaire="Camille Martin", iban=iban)


def raw_soap(sim_url: str, operation: str, arg0: str) -> requests.Response:
    envelope = (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:tns="{SERVICE_NS}">'
        f"<soapenv:Body><tns:{operation}><arg0>{arg0}</arg0></tns:{operation}>"
        "</soapenv:Body></soapenv:Envelope>"
    )
    return requests.post(sim_url + SERVICE_PATH, data=envelope.encode(),
                         headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=5)


# -- SOAP operations -------------------------------------------------------------------


def test_creer_paiement_returns_a_fresh_uuid4_and_records_the_request(payfip, sim_url):
    args = creation()
    idop = payfip.get_idop(**args)
    other = payfip.get_idop(**creation())

    assert isinstance(idop, str) and len(idop) == 36
    assert uuid.UUID(idop).version == 4
    assert other != idop
    recorded = sim_payment(sim_url, idop)
    assert {k: recorded[k] for k in ("numcli", "saisie", "exer", "refdet", "montant", "mel",
                                     "objet", "urlnotif", "urlredirect")} == {
        "numcli": "000123", "saisie": "T", "exer": "2025", "refdet": args["refdet"],
        "montant": "2500", "mel": "famille.martin@example.org",
        "objet": "Direction des sports facture F2025 0001",
        "urlnotif": args["url_notification"], "urlredirect": RETURN_URL,
    }
    assert recorded["state"] == "in_progress" and recorded["resultrans"] is None


def test_recuperer_detail_client(payfip):
    info = payfip.get_info_client("000123")

    assert info.numcli == "000123"
    assert info.libelleN2 == "REGIE 000123"
    assert info.libelleN1 and info.libelleN3


@pytest.mark.parametrize(("numcli", "code"), [
    ("12345", "T1"), ("1234567", "T1"), ("12345a", "T1"), ("999999", "T2"),
    (UNKNOWN_NUMCLI, "T2"),
])
def test_recuperer_detail_client_faults(payfip, numcli, code):
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_client(numcli)
    assert raised.value.code == code


def test_card_payment_through_the_page(payfip, sim_url, receiver):
    args = creation(receiver.url, montant="2500")
    idop = payfip.get_idop(**args)
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P5"  # in progress

    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    assert page.lang == "fr"
    for text in ("PayFiP.gouv.fr", "Informations sur la dette", "Référence de la dette",
                 args["refdet"], "Montant : 25,00 €"):
        assert text in page.text, text
    assert page.labels["mel"] == "Adresse électronique"
    assert page.forms[0].fields["mel"] == "famille.martin@example.org"
    labels = [label for form in page.forms for label, _, _ in form.buttons]
    assert labels == ["Payer par carte bancaire", "Payer par prélèvement", "Annuler"]

    card_page = page.submit(session, url, "Payer par carte bancaire")
    assert card_page.status_code == 200
    card = Page(card_page.text)
    assert {"Numéro de carte", "Cryptogramme visuel"} <= set(card.labels.values())
    assert [b[0] for f in card.forms for b in f.buttons] == ["Valider", "Annuler"]
    before = datetime.now(PARIS)
    done = card.submit(session, card_page.url, "Valider", numero="4970 1012 3456 7892",
                       expiration="12/30", cvv="123")
    after = datetime.now(PARIS)

    assert done.status_code == 303
    assert done.headers["Location"] == f"{RETURN_URL}&idop={idop}"
    detail = payfip.get_info_paiement(idop)
    assert detail.resultrans == "P"
    assert detail.numauto == "112233445566-tip"
    assert detail.idOp == idop
    assert (detail.refdet, detail.montant, detail.numcli, detail.saisie, detail.exer) == (
        args["refdet"], "2500", "000123", "T", "2025")
    assert detail.dattrans in {before.strftime("%d%m%Y"), after.strftime("%d%m%Y")}
    assert detail.heurtrans in {before.strftime("%H%M"), after.strftime("%H%M")}
    calls = receiver.wait_for(1)
    assert calls[0]["form"] == {"idop": [idop]}
    assert calls[0]["path"] == "/payfip/notification"
    assert calls[0]["content_type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(("pay", "resultrans", "numauto"), [
    (lambda url, idop: pay_with_card(url, idop, "4970101234567893"), "R", None),
    (lambda url, idop: pay_with_card(url, idop, "4970101234567892", button="Annuler"),
     "A", None),
    (lambda url, idop: pay_by_debit(url, idop, "FR76 3000 6000 0112 3456 7890 188"), "V",
     "112233445566-tip"),
    (lambda url, idop: pay_by_debit(url, idop, "FR76 3000 6000 0112 3456 7890 189"), "Z",
     None),
])
def test_page_outcomes(payfip, sim_url, pay, resultrans, numauto):
    idop = payfip.get_idop(**creation())

    answer = pay(sim_url, idop)

    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{RETURN_URL}&idop={idop}"
    detail = payfip.get_info_paiement(idop)
    assert detail.resultrans == resultrans
    assert detail.numauto == numauto
    assert len(detail.dattrans) == 8 and len(detail.heurtrans) == 4


def test_cancel_from_the_first_page(payfip, sim_url):
    idop = payfip.get_idop(**creation(url_redirect="https://portal.example/retour"))
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)

    answer = page.submit(session, url, "Annuler")

    assert answer.status_code == 303
    assert answer.headers["Location"] == f"https://portal.example/retour?idop={idop}"
    assert payfip.get_info_paiement(idop).resultrans == "A"


def test_card_form_errors_are_announced_and_decide_nothing(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    card_page = page.submit(session, url, "Payer par carte bancaire")

    answer = Page(card_page.text).submit(session, card_page.url, "Valider", numero="12ab",
                                         expiration="13/30", cvv="1")

    assert answer.status_code == 422
    assert 'role="alert"' in answer.text
    assert len(re.findall(r'<input [^>]*aria-invalid="true"', answer.text)) == 3
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P5"


def test_every_field_has_a_label(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    card = Page(page.submit(session, url, "Payer par carte bancaire").text)
    debit = Page(page.submit(session, url, "Payer par prélèvement").text)

    for p in (page, card, debit):
        assert p.input_ids and all(i in p.labels for i in p.input_ids), (p.input_ids, p.labels)
    assert debit.labels["iban"] == "IBAN"


def test_a_decided_idop_is_not_paid_twice(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))
    session = requests.Session()
    url, page = open_page(session, sim_url, idop)
    card_page = page.submit(session, url, "Payer par carte bancaire")
    card = Page(card_page.text)
    assert card.submit(session, card_page.url, "Valider", numero="4970101234567892",
                       expiration="12/30", cvv="123").status_code == 303

    again = session.get(url, timeout=5)
    resubmitted = card.submit(session, card_page.url, "Valider", numero="4970101234567893",
                              expiration="12/30", cvv="123")
    by_control = requests.post(f"{sim_url}/_sim/payments/{idop}/outcome",
                               json={"resultrans": "R"}, timeout=5)

    assert again.status_code == 409 and "paiement déjà traité" in again.text.lower()
    assert resubmitted.status_code == 409
    assert by_control.status_code == 409
    assert payfip.get_info_paiement(idop).resultrans == "P"
    receiver.wait_for(1)
    time.sleep(0.3)
    assert len(receiver.calls) == 1


def test_unknown_idop_page(sim_url):
    answer = requests.get(f"{sim_url}{PAGE_PATH}?idop={uuid.uuid4()}", timeout=5)

    assert answer.status_code == 404
    assert "Opération inconnue" in answer.text


# -- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "code"), [
    ({"refdet": "ABCD"}, "R3"),
    ({"refdet": "ABC-DEF12"}, "R3"),
    ({"refdet": "A" * 31}, "R3"),
    ({"refdet": None}, "R3"),
    ({"mel": None}, "A1"),
    ({"mel": "famille.example.org"}, "A2"),
    ({"mel": "a@b.c"}, "A2"),
    ({"mel": "a" * 75 + "@example.org"}, "A2"),
    # PayFiP checks the address before the amount (an A2 was answered for both wrong).
    ({"mel": "john.doeexample.com", "montant": "9990000001"}, "A2"),
    ({"montant": "25.00"}, "M1"),
    ({"montant": "abc"}, "M1"),
    ({"montant": None}, "M1"),
    ({"montant": "99"}, "M3"),
    ({"montant": "10000000"}, "M5"),
    ({"numcli": "12345"}, "T1"),
    ({"numcli": "abcdef"}, "T1"),
    ({"numcli": "999999"}, "T2"),
    ({"numcli": UNKNOWN_NUMCLI}, "T2"),
    ({"saisie": "M"}, "S1"),
    ({"saisie": None}, "S1"),
    ({"url_notification": None}, "N1"),
    ({"url_notification": "pas une url"}, "N1"),
    ({"url_redirect": None}, "D1"),
])
def test_creation_faults(payfip, sim_url, overrides, code):
    with pytest.raises(PayFiPError) as raised:
        payfip.get_idop(**creation(**overrides))

    assert raised.value.code == code
    assert raised.value.message  # descriptif or libellé, as eopayment reads them
    assert requests.get(f"{sim_url}/_sim/payments", timeout=5).json()["payments"] == []


def test_boundaries_are_accepted(payfip):
    for overrides in ({"montant": "100"}, {"montant": "9999999"}, {"refdet": "ABC123"},
                      {"refdet": "a" * 30}, {"mel": "a@b.fr"}, {"saisie": "X"},
                      {"saisie": "W"}, {"objet": None}):
        assert len(payfip.get_idop(**creation(**overrides))) == 36, overrides


def test_fault_messages_match_eopayments_expectations(payfip):
    """The patterns eopayment's own tests match against PayFiP's real answers."""
    with pytest.raises(PayFiPError, match=r".*R3.*Le format.*REFDET.*conforme"):
        payfip.get_idop(**creation(refdet="ABCD"))
    with pytest.raises(PayFiPError, match=r".*A2.*Adresse.*incorrecte"):
        payfip.get_idop(**creation(mel="famille.example.org"))
    with pytest.raises(PayFiPError, match=r".*P1.*IdOp incorrect.*"):
        payfip.get_info_paiement(str(uuid.uuid4()))
    idop = payfip.get_idop(**creation())
    with pytest.raises(PayFiPError, match=r".*P5.*sultat de la transaction non connu.*"):
        payfip.get_info_paiement(idop)


def test_fault_on_the_wire(sim_url):
    answer = raw_soap(sim_url, "recupererDetailPaiementSecurise",
                      f"<idOp>{uuid.uuid4()}</idOp>")

    assert answer.status_code == 500
    assert answer.headers["Content-Type"].startswith("text/xml")
    fault = ET.fromstring(answer.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None
    assert fault.findtext("faultstring") == (
        "fr.gouv.finances.cp.tpa.webservice.exceptions.FonctionnelleErreur")
    error = fault.find(f"detail/{{{SERVICE_NS}}}FonctionnelleErreur")
    assert error is not None
    assert {child.tag: child.text for child in error} == {
        "code": "P1", "descriptif": "IdOp incorrect.", "libelle": "IdOp incorrect.",
        "severite": "2",
    }


def test_response_on_the_wire(sim_url):
    answer = raw_soap(sim_url, "recupererDetailClient", "<numCli>000123</numCli>")

    assert answer.status_code == 200
    body = ET.fromstring(answer.content).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    response = body.find(f"{{{SERVICE_NS}}}recupererDetailClientResponse")
    assert response is not None
    assert [child.tag for child in response.findall("return/*")] == [
        "libelleN1", "libelleN2", "libelleN3", "numcli"]


def test_lowercase_idop_element_gets_p1(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})

    lower = raw_soap(sim_url, "recupererDetailPaiementSecurise", f"<idop>{idop}</idop>")
    right = raw_soap(sim_url, "recupererDetailPaiementSecurise", f"<idOp>{idop}</idOp>")

    assert lower.status_code == 500 and b"<code>P1</code>" in lower.content
    assert right.status_code == 200 and b"<resultrans>P</resultrans>" in right.content


def test_not_soap(sim_url):
    wrong_type = requests.post(sim_url + SERVICE_PATH, data=b"<x/>",
                               headers={"Content-Type": "application/json"}, timeout=5)
    not_xml = requests.post(sim_url + SERVICE_PATH, data=b"not xml",
                            headers={"Content-Type": "text/xml"}, timeout=5)
    other_op = raw_soap(sim_url, "supprimerPaiement", "")

    assert wrong_type.status_code == 415
    assert not_xml.status_code == 500 and b"faultcode>S:Client" in not_xml.content
    assert other_op.status_code == 500 and b"Cannot find dispatch method" in other_op.content


def test_unknown_idop_is_p1(payfip):
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(str(uuid.uuid4()))
    assert raised.value.code == "P1"


def test_p5_until_the_nightly_purge_then_p1(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    paid = payfip.get_idop(**creation())
    control(sim_url, f"payments/{paid}/outcome", {"resultrans": "P"})

    control(sim_url, "clock", {"advance_seconds": 14 * 60})
    assert requests.get(f"{sim_url}{PAGE_PATH}?idop={idop}", timeout=5).status_code == 200
    control(sim_url, "clock", {"advance_seconds": 2 * 60})

    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P5"
    page = requests.get(f"{sim_url}{PAGE_PATH}?idop={idop}", timeout=5)
    assert page.status_code == 410 and "expiré" in page.text
    late = requests.post(f"{sim_url}/_sim/payments/{idop}/outcome", json={"resultrans": "P"},
                         timeout=5)
    assert late.status_code == 409
    assert sim_payment(sim_url, idop)["state"] == "expired"

    assert control(sim_url, "purge")["purged"] == [idop]

    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P1"
    assert requests.get(f"{sim_url}{PAGE_PATH}?idop={idop}", timeout=5).status_code == 404
    # A paid idop stays readable; only the wider purge forgets it.
    assert payfip.get_info_paiement(paid).resultrans == "P"
    assert control(sim_url, "purge", {"include_decided": True})["purged"] == [paid]
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(paid)
    assert raised.value.code == "P1"


def test_purge_spares_recent_idops(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    control(sim_url, "clock", {"advance_seconds": 10 * 60})

    assert control(sim_url, "purge")["purged"] == []
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P5"


def test_hold_answers_p5_after_payment_until_released(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    control(sim_url, "config", {"hold": True})
    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "V"})

    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_paiement(idop)
    assert raised.value.code == "P5"

    control(sim_url, "config", {"hold": False})
    assert payfip.get_info_paiement(idop).resultrans == "V"


def test_eopayment_backend_reads_the_simulator(sim_url, receiver):
    """The high-level ``eopayment.Payment`` the gateway adapter may use, on the simulator."""
    backend = eopayment.Payment("payfip_ws", {
        "numcli": "000123", "saisie": "T", "automatic_return_url": receiver.url,
        "normal_return_url": RETURN_URL,
    })
    backend.backend.payfip = aim(PayFiP(), sim_url + SERVICE_PATH)  # Payment wraps the backend

    idop, kind, url = backend.request(amount=Decimal("25.00"), email="famille@example.org",
                                      refdet="F2025000123")

    assert kind == eopayment.URL
    # The payment page URL is hard-coded too: the adapter must build its own.
    assert url == f"https://www.payfip.gouv.fr/tpa/paiementws.web?idop={idop}"
    assert sim_payment(sim_url, idop)["montant"] == "2500"
    assert backend.payment_status(idop).result == eopayment.WAITING
    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})
    response = backend.response(f"idop={idop}")
    assert response.result == eopayment.PAID
    assert response.transaction_id == f"F2025000123 {idop} 112233445566-tip"
    assert response.test is True


# -- notifications ---------------------------------------------------------------------


def test_control_outcome_notifies_and_returns_the_redirect(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))

    answer = control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})

    assert answer["redirect_url"] == f"{RETURN_URL}&idop={idop}"
    assert answer["payment"]["resultrans"] == "P"
    assert receiver.wait_for(1)[0]["form"] == {"idop": [idop]}
    [record] = notifications(sim_url, 1)
    assert (record["idop"], record["url"], record["status"], record["sent"]) == (
        idop, receiver.url, 200, True)


def test_notification_drop(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))
    control(sim_url, "config", {"notification": "drop"})

    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})

    time.sleep(0.5)
    assert receiver.calls == []
    [record] = notifications(sim_url, 1)
    assert (record["mode"], record["sent"], record["status"]) == ("drop", False, None)
    assert payfip.get_info_paiement(idop).resultrans == "P"  # polling still finds it


def test_notification_duplicate(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))
    control(sim_url, "config", {"notification": "duplicate"})

    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})

    calls = receiver.wait_for(2)
    assert [c["form"] for c in calls] == [{"idop": [idop]}, {"idop": [idop]}]
    assert [r["status"] for r in notifications(sim_url, 2)] == [200, 200]


def test_notification_delay(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))
    control(sim_url, "config", {"notification": "delay", "delay_seconds": 1.0})

    started = time.monotonic()
    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})
    time.sleep(0.4)
    assert receiver.calls == []

    calls = receiver.wait_for(1, timeout=5)
    assert calls and calls[0]["at"] - started >= 0.9
    assert calls[0]["form"] == {"idop": [idop]}


def test_notification_field_can_be_idOp(payfip, sim_url, receiver):
    idop = payfip.get_idop(**creation(receiver.url))
    control(sim_url, "config", {"notification_field": "idOp"})

    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "R"})

    assert receiver.wait_for(1)[0]["form"] == {"idOp": [idop]}


def test_notification_errors_are_recorded_not_raised(payfip, sim_url, receiver):
    receiver.status = 500
    refused = payfip.get_idop(**creation(receiver.url))
    closed = payfip.get_idop(**creation("http://127.0.0.1:9/payfip/notification"))

    control(sim_url, f"payments/{refused}/outcome", {"resultrans": "P"})
    answer = pay_with_card(sim_url, closed, "4970101234567892")

    assert answer.status_code == 303
    records = {r["idop"]: r for r in notifications(sim_url, 2)}
    assert records[refused]["status"] == 500
    assert records[closed]["status"] is None and records[closed]["error"]
    assert payfip.get_info_paiement(closed).resultrans == "P"


# -- failure modes ---------------------------------------------------------------------


def test_fail_with_a_fault_code_once(payfip, sim_url):
    control(sim_url, "config", {"fail": "R3"})

    with pytest.raises(PayFiPError) as raised:
        payfip.get_idop(**creation())  # a valid request
    assert raised.value.code == "R3"
    assert len(payfip.get_idop(**creation())) == 36


def test_fail_until_cleared_on_one_operation(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})
    control(sim_url, "config", {"fail": "P1", "fail_count": None,
                                "fail_operation": "recupererDetailPaiementSecurise"})

    for _ in range(3):
        with pytest.raises(PayFiPError) as raised:
            payfip.get_info_paiement(idop)
        assert raised.value.code == "P1"
    assert payfip.get_info_client("000123").numcli == "000123"  # other operations work

    control(sim_url, "config", {"fail": None})
    assert payfip.get_info_paiement(idop).resultrans == "P"


def test_fail_timeout_makes_eopayment_give_up_within_its_timeout(payfip, sim_url):
    control(sim_url, "config", {"fail": "timeout", "fail_sleep_seconds": 5})

    started = time.monotonic()
    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_client("000123", timeout=0.5)
    elapsed = time.monotonic() - started

    assert raised.value.code == "HTTP error"
    assert 0.4 <= elapsed < 2.0


def test_fail_http500(payfip, sim_url):
    control(sim_url, "config", {"fail": "http500"})

    with pytest.raises(PayFiPError) as raised:
        payfip.get_info_client("000123")
    assert raised.value.code == "SOAP error"
    assert "500" in str(raised.value.message)


def test_fail_technical_fault(payfip, sim_url):
    control(sim_url, "config", {"fail": "tech"})

    with pytest.raises(PayFiPError) as raised:
        payfip.get_idop(**creation())
    assert raised.value.code == "unknown"
    assert "TechIndisponibiliteErreur" in str(raised.value.message)


# -- WSDL, control API, concurrency ----------------------------------------------------


def test_wsdl_is_served_aimed_at_the_simulator(sim_url):
    answer = requests.get(f"{sim_url}{SERVICE_PATH}?wsdl", timeout=5)
    assert answer.status_code == 200
    wsdl = ET.fromstring(answer.content)
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address is not None and address.get("location") == sim_url + SERVICE_PATH

    # zeep can load it, schemas included, and then needs no aiming at all.
    payfip = PayFiP(wsdl_url=f"{sim_url}{SERVICE_PATH}?wsdl", use_local_wsdl=False)
    assert payfip.get_info_client("000123").numcli == "000123"


def test_control_api_refuses_bad_input(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    cases = [
        (f"payments/{idop}/outcome", {"resultrans": "X"}, 400, "resultrans"),
        (f"payments/{uuid.uuid4()}/outcome", {"resultrans": "P"}, 404, "idop"),
        ("config", {"notification": "sometimes"}, 400, "notification"),
        ("config", {"fail": "kaboom"}, 400, "fail"),
        ("config", {"holdd": True}, 400, "holdd"),
        ("clock", {"advance_seconds": -5}, 400, "advance_seconds"),
    ]
    for path, body, status, field in cases:
        answer = requests.post(f"{sim_url}/_sim/{path}", json=body, timeout=5)
        assert answer.status_code == status, (path, answer.text)
        assert field in answer.json()["errors"]["json"], answer.text
    assert sim_payment(sim_url, idop)["resultrans"] is None


def test_concurrent_calls(payfip, sim_url):
    idops: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client = aim(PayFiP(), sim_url + SERVICE_PATH)
            idop = client.get_idop(**creation())
            control(sim_url, f"payments/{idop}/outcome", {"resultrans": "P"})
            assert client.get_info_paiement(idop).resultrans == "P"
            idops.append(idop)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)

    assert errors == []
    assert len(set(idops)) == 12
    payments = requests.get(f"{sim_url}/_sim/payments", timeout=5).json()["payments"]
    assert {p["idop"] for p in payments} == set(idops)


def test_redirect_keeps_existing_query(payfip, sim_url):
    idop = payfip.get_idop(**creation(url_redirect="https://portal.example/r?a=1&b=x%20y#top"))

    location = control(sim_url, f"payments/{idop}/outcome", {"resultrans": "A"})["redirect_url"]

    parts = urlsplit(location)
    assert parse_qs(parts.query) == {"a": ["1"], "b": ["x y"], "idop": [idop]}
    assert (parts.netloc, parts.path, parts.fragment) == ("portal.example", "/r", "top")


# -- guards: never started by accident, its controls never reachable from afar ---------


@pytest.mark.parametrize("value", [None, "", "0", "yes"])
def test_the_simulator_refuses_to_start_unless_enabled(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("PAYFIP_SIM_ENABLED", raising=False)
    else:
        monkeypatch.setenv("PAYFIP_SIM_ENABLED", value)
    with pytest.raises(RuntimeError, match="PAYFIP_SIM_ENABLED=1"):
        create_sim()
    monkeypatch.setenv("PAYFIP_SIM_ENABLED", "1")
    assert create_sim().test_client().get("/health").json == {"status": "ok"}


def test_python_m_refuses_to_start_unless_enabled():
    env = {k: v for k, v in os.environ.items() if k != "PAYFIP_SIM_ENABLED"}
    done = subprocess.run([sys.executable, "-m", "services.payfip_sim", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "PAYFIP_SIM_ENABLED=1" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("peer", ["172.18.0.1", "10.0.0.5", "192.168.1.20", "2001:db8::1"])
def test_the_control_api_answers_this_machine_only(peer):
    client = create_sim(SimSettings(enabled=True)).test_client()
    far = {"REMOTE_ADDR": peer}
    for path in ("/_sim/payments", "/_sim/config", "/_sim/notifications"):
        refused = client.get(path, environ_base=far)
        assert refused.status_code == 403
        assert "this machine" in refused.get_json()["errors"]["request"]["client"][0]
    for path in ("/_sim/reset", "/_sim/config", "/_sim/clock", "/_sim/purge",
                 "/_sim/payments/x/outcome"):
        refused = client.post(path, json={"advance_seconds": 1}, environ_base=far)
        assert refused.status_code == 403
    # Nothing was changed: the clock is where it was, seen from this machine.
    near = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/_sim/payments", environ_base=near).status_code == 200
    assert client.post("/_sim/clock", json={"advance_seconds": 0},
                       environ_base=near).get_json()["offset_seconds"] == 0
    # What PayFiP itself serves is reachable from anywhere.
    assert client.get("/health", environ_base=far).status_code == 200
    assert client.get(PAGE_PATH + "?idop=unknown", environ_base=far).status_code == 404
    assert client.get(SERVICE_PATH + "?wsdl", environ_base=far).status_code == 200
    for peer_here in ("127.0.0.1", "127.3.4.5", "::1"):
        here = client.get("/_sim/config", environ_base={"REMOTE_ADDR": peer_here})
        assert here.status_code == 200


# -- packaging -------------------------------------------------------------------------


def test_a_non_editable_install_ships_the_pages(tmp_path):
    """The templates and the style are files beside the code: a wheel must carry them."""
    root = Path(__file__).resolve().parents[2]
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(root / "pyproject.toml", source)
    for package in ("events", "services"):
        shutil.copytree(root / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("regie-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    sim = root / "services" / "payfip_sim"
    files = [p for folder in ("templates", "static") for p in (sim / folder).rglob("*")
             if p.is_file()]
    assert any(p.suffix == ".html" for p in files) and any(p.suffix == ".css" for p in files)
    missing = {str(p.relative_to(root)) for p in files} - shipped
    assert missing == set()


def test_the_pages_style_is_served(payfip, sim_url):
    idop = payfip.get_idop(**creation())
    page = requests.get(f"{sim_url}{PAGE_PATH}", params={"idop": idop}, timeout=5)
    [href] = re.findall(r'<link rel="stylesheet" href="([^"]+)">', page.text)
    style = requests.get(urljoin(page.url, href), timeout=5)
    assert style.status_code == 200
    assert style.headers["Content-Type"].startswith("text/css")
    assert ".lien-evitement:focus" in style.text
