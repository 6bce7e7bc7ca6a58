"""The portal over the real payment API (in process): the family downloads its certificate
from the Historique, and its code checks out on /verifier; a forged one does not."""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask.testing import FlaskClient
from requests.structures import CaseInsensitiveDict

from services.common.settings import Settings
from services.payment.web import create_app
from services.portal.payments import PaymentApi
from tests.documents import code_in, pdf_text
from tests.factories import deliver, issued, terms, wire_messages
from tests.helpers import cheque
from tests.portal_fake import FAMILY, details, links, logged_in, portal, texts


class InProcess(requests.Session):
    """requests' session over a Flask test client: the portal's real HTTP adapter, no port."""

    def __init__(self, client: FlaskClient) -> None:
        super().__init__()
        self.client = client

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        answer = self.client.open(urlsplit(str(url)).path, method=str(method),
                                  headers=kwargs.get("headers"),
                                  query_string=kwargs.get("params"), json=kwargs.get("json"))
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.data
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        return response


def test_the_certificate_downloaded_from_the_history_verifies(
        store_settings: Settings, tmp_path: Path) -> None:
    billing, payment = issued(store_settings, terms("S-1", family=FAMILY, unit=2500),
                              terms("S-2", family="fam-2", unit=4000))
    deliver(payment, wire_messages(billing))
    api_client = create_app(payment, tokens={"p": "payer", "c": "cashier"}).test_client()
    paid = api_client.post("/counter-payments", json=cheque(2500, family_id=FAMILY),
                           headers={"Authorization": "Bearer c"})
    assert paid.status_code == 201
    api = PaymentApi("http://payment.test", "p", session=InProcess(api_client))
    family = logged_in(portal(api, tmp_path))

    page = family.get("/factures/historique")
    href = links(page)["Facture acquittée n° S-1 (PDF)"]
    answer = family.get(href)
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    code = code_in(pdf_text(answer.data, tmp_path))

    visitor = portal(api, tmp_path).test_client()  # anyone, not logged in
    checked = visitor.get("/verifier", query_string={"code": code})
    assert "Document authentique" in texts(checked, "verification")[0]
    facts = details(checked)
    assert (facts["Document"], facts["Numéro"], facts["Montant"], facts["État"]) == (
        "Facture acquittée", "S-1", "25,00 €", "payée")
    assert FAMILY not in checked.text
    forged = visitor.get("/verifier", query_string={"code": code[:-1] + (
        "A" if code[-1] != "A" else "B")})
    assert "Code inconnu" in texts(forged, "verification")[0]

    # Another family's invoice, by its id: not found, as if it did not exist.
    other = payment.to_pay.history("fam-2")[0]["id"]
    assert family.get(f"/factures/{other}/facture.pdf").status_code == 404
