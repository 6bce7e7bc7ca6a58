"""What the back office asks of the two APIs: the port (``Desk``) and its real side.

Every call goes with the back office's cashier token; every act also names the staff member
in X-Regie-Staff, which the APIs record in the events' ``by``.
"""

from datetime import date
from typing import Any, Protocol
from urllib.parse import quote
from uuid import UUID

import requests

from services.portal.payments import NotFound, Refused, Unavailable

STAFF_HEADER = "X-Regie-Staff"


def _reason(r: requests.Response) -> str:
    """The API's refusal in one line: each field's messages."""
    try:
        errors = r.json().get("errors", {})
        return "; ".join(f"{field}: {m}" for fields in errors.values()
                         for field, ms in fields.items() for m in ms)
    except (ValueError, AttributeError):
        return r.text[:200]


def _uuid(value: str, what: str) -> str:
    try:
        return str(UUID(value))
    except ValueError as e:
        raise NotFound(f"not a {what} id") from e


class Desk(Protocol):
    def to_pay(self, family_id: str) -> list[dict[str, Any]]:
        """One entry per régie the family owes something to: code, name, count, total_cents."""

    def open_invoices(self, family_id: str, regie: str) -> list[dict[str, Any]]: ...

    def take_payment(self, staff: str, regie: str, family_id: str, means: str,
                     amount_cents: int, reference: str | None,
                     received_on: date) -> dict[str, Any]: ...

    def counter_payment(self, payment_id: str) -> dict[str, Any]: ...

    def receipt_pdf(self, payment_id: str) -> bytes: ...

    def credit_note(self, staff: str, invoice_id: str, amount_cents: int,
                    reason: str) -> dict[str, Any]: ...

    def refunds_due(self) -> list[dict[str, Any]]: ...

    def mark_refund_paid(self, staff: str, refund_id: str, means: str,
                         reference: str | None, paid_on: date) -> dict[str, Any]: ...

    def journal_csv(self, regie: str, day: date) -> str: ...


class _Api:
    def __init__(self, name: str, base_url: str, token: str, session: requests.Session,
                 timeout: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = session
        self.timeout = timeout

    def call(self, method: str, path: str, staff: str | None = None,
             accept: str = "application/json", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": accept}
        if staff is not None:
            headers[STAFF_HEADER] = staff
        try:
            r = self.http.request(method, self.base_url + path, headers=headers,
                                  timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise Unavailable(f"{self.name} API unreachable: {e}") from e
        if r.status_code == 404:
            raise NotFound(_reason(r))
        if r.status_code in (409, 422):
            raise Refused(r.status_code, _reason(r))
        if r.status_code >= 400:
            raise Unavailable(f"{self.name} API answered {r.status_code}: {_reason(r)}")
        return r


class RegieApis:
    """The billing and payment APIs over HTTP."""

    def __init__(self, billing_url: str, payment_url: str, token: str, timeout: float = 20.0,
                 session: requests.Session | None = None) -> None:
        http = session or requests.Session()
        self.billing = _Api("billing", billing_url, token, http, timeout)
        self.payment = _Api("payment", payment_url, token, http, timeout)

    def to_pay(self, family_id: str) -> list[dict[str, Any]]:
        r = self.payment.call("GET", f"/families/{quote(family_id, safe='')}/to-pay")
        return list(r.json()["regies"])

    def open_invoices(self, family_id: str, regie: str) -> list[dict[str, Any]]:
        r = self.payment.call(
            "GET", f"/families/{quote(family_id, safe='')}/to-pay/{quote(regie, safe='')}")
        return list(r.json()["invoices"])

    def take_payment(self, staff: str, regie: str, family_id: str, means: str,
                     amount_cents: int, reference: str | None,
                     received_on: date) -> dict[str, Any]:
        r = self.payment.call("POST", "/counter-payments", staff, json={
            "regie": regie, "family_id": family_id, "means": means,
            "amount_cents": amount_cents, "reference": reference,
            "received_on": received_on.isoformat()})
        return dict(r.json())

    def counter_payment(self, payment_id: str) -> dict[str, Any]:
        r = self.payment.call("GET", f"/counter-payments/{_uuid(payment_id, 'payment')}")
        return dict(r.json())

    def receipt_pdf(self, payment_id: str) -> bytes:
        r = self.payment.call("GET", f"/counter-payments/{_uuid(payment_id, 'payment')}"
                              "/receipt.pdf", accept="application/pdf")
        return r.content

    def credit_note(self, staff: str, invoice_id: str, amount_cents: int,
                    reason: str) -> dict[str, Any]:
        r = self.billing.call("POST", f"/invoices/{_uuid(invoice_id, 'invoice')}/credit-notes",
                              staff, json={"amount_cents": amount_cents, "reason": reason})
        return dict(r.json())

    def refunds_due(self) -> list[dict[str, Any]]:
        return list(self.payment.call("GET", "/refunds", params={"status": "due"}).json()[
            "refunds"])

    def mark_refund_paid(self, staff: str, refund_id: str, means: str,
                         reference: str | None, paid_on: date) -> dict[str, Any]:
        r = self.payment.call("POST", f"/refunds/{_uuid(refund_id, 'refund')}/paid", staff,
                              json={"means": means, "reference": reference,
                                    "paid_on": paid_on.isoformat()})
        return dict(r.json())

    def journal_csv(self, regie: str, day: date) -> str:
        r = self.payment.call("GET", f"/regies/{quote(regie, safe='')}/journal",
                              accept="text/csv", params={"date": day.isoformat()})
        return r.text
