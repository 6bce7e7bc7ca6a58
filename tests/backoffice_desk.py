"""The back office over the real billing and payment APIs, all in this process.

``ToFlask`` is a requests transport that hands each request to a Flask app's test client
instead of a socket: the back office's real side (``RegieApis``) talks HTTP as it does in
production, to the real APIs, and the tests need no server.
"""

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient
from lxml import html
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from werkzeug.test import TestResponse

from services.backoffice.desk import RegieApis
from services.backoffice.settings import BackofficeSettings
from services.backoffice.staff import StaffAccounts
from services.backoffice.web import create_app
from services.portal.accounts import MemoryAccounts

NAME, EMAIL, PASSWORD = "Claire Durand", "c.durand@mairie.example", "un mot de passe long"
BILLING, PAYMENT = "http://billing.test", "http://payment.test"


class ToFlask(BaseAdapter):
    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.client = app.test_client()

    def send(self, request: requests.PreparedRequest, *args: Any,
             **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        answer = self.client.open(url.path, method=request.method or "GET",
                                  query_string=url.query, headers=dict(request.headers),
                                  data=request.body)
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = CaseInsensitiveDict(dict(answer.headers))
        response._content = answer.get_data()
        response.encoding = answer.charset if hasattr(answer, "charset") else "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def staff_accounts() -> StaffAccounts:
    accounts = StaffAccounts(MemoryAccounts())
    accounts.create_staff(NAME, EMAIL)
    accounts.set_password(EMAIL, PASSWORD)
    return accounts


def backoffice(billing: Flask, payment: Flask, token: str, tmp: Path,
               accounts: StaffAccounts | None = None) -> Flask:
    http = requests.Session()
    http.mount(BILLING, ToFlask(billing))
    http.mount(PAYMENT, ToFlask(payment))
    settings = BackofficeSettings(secret_key="k" * 32, token=token, billing_url=BILLING,
                                  payment_url=PAYMENT, accounts_db=str(tmp / "staff.db"),
                                  public_url="http://127.0.0.1:8004")
    app = create_app(settings, accounts or staff_accounts(),
                     RegieApis(BILLING, PAYMENT, token, session=http))
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def logged_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    answer = client.post("/guichet/connexion", data={"email": EMAIL, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return client


def texts(answer: TestResponse, xpath: str) -> list[str]:
    """The text of each element ``xpath`` finds, spaces made single."""
    page = html.fromstring(answer.get_data(as_text=True))
    return [" ".join(e.text_content().split()) for e in page.xpath(xpath)]


def details(answer: TestResponse) -> dict[str, str]:
    page = html.fromstring(answer.get_data(as_text=True))
    return {" ".join(dt.text_content().split()): " ".join(dd.text_content().split())
            for dt, dd in zip(page.xpath("//dl/dt"), page.xpath("//dl/dd"), strict=True)}
