"""The portal over an in-memory payment API: its pages, tested without any other process.

``FakePayments`` is the fake side of the portal's ``Payments`` port: it answers with what
the test put in it, in the payment API's field names, and records the payments asked for.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from lxml import html
from werkzeug.test import TestResponse

from services.portal.accounts import Accounts, MemoryAccounts
from services.portal.payments import NotFound, Payments
from services.portal.settings import PortalSettings
from services.portal.web import create_app

FAMILY, EMAIL, PASSWORD = "famille-martin", "famille.martin@example.org", "un mot de passe long"
PAYFIP_PAGE = "https://www.payfip.gouv.fr/tpa/paiementws.web?idop="


def utc_in(minutes: float) -> str:
    """An ISO timestamp that many minutes from now (negative: ago), as the payment API sends."""
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


@dataclass
class FakePayments:
    regies: dict[str, str] = field(default_factory=dict)  # code -> name
    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # régie -> invoices
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> payment
    rows: list[dict[str, Any]] = field(default_factory=list)  # the history
    asked: list[dict[str, Any]] = field(default_factory=list)  # POST /payments bodies
    # (family, invoice id, kind) -> the PDF; what /verifications answers per code.
    documents: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    verifications: dict[str, dict[str, Any]] = field(default_factory=dict)

    def invoice(self, regie: str, number: str, cents: int, **extra: Any) -> dict[str, Any]:
        """A to-pay line of this family at the régie, payable unless ``extra`` says not."""
        self.regies.setdefault(regie, f"Service {regie}")
        line = {"id": str(uuid.uuid4()), "number": number, "label": "Facture",
                "issued_on": "2025-02-26", "payable_until": "2025-03-31",
                "amount_due_cents": cents, "total_cents": cents, "payable": True,
                "reason": None, **extra}
        self.lines.setdefault(regie, []).append(line)
        return line

    def payment(self, payment_id: str) -> dict[str, Any]:
        if payment_id not in self.payments:
            raise NotFound("no such payment")
        return dict(self.payments[payment_id])

    def add_payment(self, regie: str, status: str, family_id: str = FAMILY,
                    **extra: Any) -> dict[str, Any]:
        payment_id, idop = str(uuid.uuid4()), uuid.uuid4().hex
        self.payments[payment_id] = {
            "id": payment_id, "status": status, "family_id": family_id, "regie": regie,
            "idop": idop, "refdet": "2025SPORTS0001", "amount_cents": 0,
            "redirect_url": PAYFIP_PAGE + idop, "allocations": [], "refunds": [],
            "resultrans": None, "numauto": None, "paid_at": None, **extra}
        return self.payments[payment_id]

    def to_pay(self, family_id: str) -> list[dict[str, Any]]:
        return [{"code": code, "name": self.regies[code], "count": len(lines),
                 "total_cents": sum(line["amount_due_cents"] for line in lines)}
                for code, lines in sorted(self.lines.items()) if lines]

    def to_pay_regie(self, family_id: str, regie: str) -> list[dict[str, Any]]:
        return [dict(line) for line in self.lines.get(regie, [])]

    def history(self, family_id: str) -> list[dict[str, Any]]:
        return [dict(row) for row in self.rows]

    def request_payment(self, family_id: str, regie: str, invoice_ids: list[str],
                        email: str) -> dict[str, Any]:
        self.asked.append({"family_id": family_id, "regie": regie,
                           "invoice_ids": invoice_ids, "email": email})
        return self.add_payment(regie, "requested", family_id)

    def document(self, family_id: str, invoice_id: str, kind: str) -> bytes:
        if (family_id, invoice_id, kind) not in self.documents:
            raise NotFound("no such invoice for this family")
        return self.documents[family_id, invoice_id, kind]

    def verify(self, code: str) -> dict[str, Any]:
        return dict(self.verifications.get(code, {"authentic": False}))

    def browser_return(self, idop: str) -> str:
        for p in self.payments.values():
            if p["idop"] == idop:
                return str(p["id"])
        raise NotFound("no such idop")


def family_accounts(clock: Callable[[], datetime] | None = None) -> Accounts:
    """The Martin family's account, in memory; ``clock`` to move the sessions' time."""
    accounts = Accounts(MemoryAccounts(), clock=clock) if clock else Accounts(MemoryAccounts())
    accounts.create(FAMILY, EMAIL)
    accounts.set_password(EMAIL, PASSWORD)
    return accounts


def portal(api: Payments, tmp: Any, accounts: Accounts | None = None) -> Flask:
    accounts = accounts or family_accounts()
    settings = PortalSettings(secret_key="k" * 32, payment_url="http://127.0.0.1:9",
                              payment_token="t", accounts_db=str(tmp / "accounts.db"),
                              public_url="http://127.0.0.1:8000")
    app = create_app(settings, accounts, api)
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def logged_in(app: Flask, password: str = PASSWORD) -> FlaskClient:
    client = app.test_client()
    answer = client.post("/connexion", data={"email": EMAIL, "password": password})
    assert answer.status_code == 303, answer.text
    return client




def texts(answer: TestResponse, css_class: str) -> list[str]:
    """The text of each element of the page with that class, spaces made single."""
    page = html.fromstring(answer.get_data(as_text=True))
    found = page.xpath(f"//*[contains(concat(' ', normalize-space(@class), ' '), ' {css_class} ')]")
    return [" ".join(e.text_content().split()) for e in found]


def links(answer: TestResponse) -> dict[str, str]:
    """The page's links: their text (spaces made single) -> their href."""
    page = html.fromstring(answer.get_data(as_text=True))
    return {" ".join(a.text_content().split()): a.get("href") for a in page.xpath("//a[@href]")}


def details(answer: TestResponse) -> dict[str, str]:
    """The page's description list: each term -> its description, spaces made single."""
    page = html.fromstring(answer.get_data(as_text=True))
    return {" ".join(dt.text_content().split()): " ".join(dd.text_content().split())
            for dt, dd in zip(page.xpath("//dl/dt"), page.xpath("//dl/dd"), strict=True)}


def checkboxes(answer: TestResponse) -> dict[str, bool]:
    """The invoices the family may pick: their id -> whether it is ticked."""
    page = html.fromstring(answer.get_data(as_text=True))
    return {box.get("value"): box.get("checked") is not None
            for box in page.xpath("//input[@type='checkbox'][@name='invoice_ids']")}


def submit_disabled(answer: TestResponse) -> bool:
    page = html.fromstring(answer.get_data(as_text=True))
    [button] = page.xpath("//form[@data-selection]//button[@type='submit']")
    return button.get("disabled") is not None
