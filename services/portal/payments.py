"""The payment API as the portal uses it: a payer token, JSON over HTTP."""

import re
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from uuid import UUID

import requests

REGIE_CODE = re.compile(r"^[A-Za-z0-9_-]{1,32}\Z")
FINAL = frozenset({"confirmed", "refused", "abandoned", "expired", "failed"})


class PaymentApiError(Exception):
    pass


class NotFound(PaymentApiError):
    """Unknown, or not this family's: both look the same to the family."""


class Refused(PaymentApiError):
    """The payment API said no (409 or 422); ``message`` is its reason, in English."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unavailable(PaymentApiError):
    pass


def _reason(r: requests.Response) -> str:
    try:
        errors = r.json().get("errors", {})
        return "; ".join(str(m) for fields in errors.values() for ms in fields.values()
                         for m in ms)
    except (ValueError, AttributeError):
        return r.text[:200]


class PaymentApi:
    def __init__(self, base_url: str, token: str, timeout: float = 20.0,
                 session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            r = self.http.request(method, self.base_url + path, headers=self.headers,
                                  timeout=self.timeout, **kwargs)
        except requests.RequestException as e:
            raise Unavailable(f"payment API unreachable: {e}") from e
        if r.status_code == 404:
            raise NotFound(_reason(r))
        if r.status_code in (409, 422):
            raise Refused(r.status_code, _reason(r))
        if r.status_code >= 400:
            raise Unavailable(f"payment API answered {r.status_code}: {_reason(r)}")
        return r

    def to_pay(self, family_id: str) -> list[dict[str, Any]]:
        """One entry per régie: code, name, count, total_cents."""
        r = self._call("GET", f"/families/{quote(family_id, safe='')}/to-pay")
        return list(r.json()["regies"])

    def to_pay_regie(self, family_id: str, regie: str) -> list[dict[str, Any]]:
        if not REGIE_CODE.match(regie):
            raise NotFound("not a régie code")
        r = self._call("GET", f"/families/{quote(family_id, safe='')}/to-pay/{regie}")
        return list(r.json()["invoices"])

    def history(self, family_id: str) -> list[dict[str, Any]]:
        r = self._call("GET", f"/families/{quote(family_id, safe='')}/history")
        return list(r.json()["invoices"])

    def request_payment(self, family_id: str, regie: str, invoice_ids: list[str],
                        email: str) -> dict[str, Any]:
        r = self._call("POST", "/payments", json={
            "family_id": family_id, "regie": regie, "invoice_ids": invoice_ids,
            "email": email})
        return dict(r.json())

    def payment(self, payment_id: str) -> dict[str, Any]:
        try:
            UUID(payment_id)
        except ValueError as e:
            raise NotFound("not a payment id") from e
        return dict(self._call("GET", f"/payments/{payment_id}").json())

    def browser_return(self, idop: str) -> str:
        """Ask the payment API to read the result back from PayFiP; the payment's id.

        The payment API answers its browser return with the payment (JSON), or, when it
        sends browsers on to the portal (PORTAL_RETURN_URL), with a 303 naming it.
        """
        r = self._call("GET", "/payfip/return", params={"idop": idop}, allow_redirects=False)
        if r.is_redirect:
            ids = parse_qs(urlsplit(r.headers.get("Location", "")).query).get("payment")
            if not ids:
                raise Unavailable("payment API redirected without a payment id")
            return ids[0]
        return str(r.json()["id"])
