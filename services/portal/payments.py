"""The payment API as the portal uses it: a payer token, JSON over HTTP."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit
from uuid import UUID

import requests

from events import formats

REGIE_CODE = re.compile(formats.exact(formats.REGIE_CODE))
FINAL = frozenset({"confirmed", "refused", "abandoned", "expired", "failed"})
IN_PROGRESS = "payment_in_progress"
# PayFiP takes an idop on its payment page for 15 minutes after it was made.
IDOP_LIFETIME = timedelta(minutes=15)


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


# The largest page the payment API gives: fewest round trips for a long history.
PAGE = 1000


class Payments(Protocol):
    """What the portal asks of the payment API (the port; ``PaymentApi`` is the real side)."""

    def to_pay(self, family_id: str) -> list[dict[str, Any]]: ...

    def to_pay_regie(self, family_id: str, regie: str) -> list[dict[str, Any]]: ...

    def history(self, family_id: str) -> list[dict[str, Any]]: ...

    def request_payment(self, family_id: str, regie: str, invoice_ids: list[str],
                        email: str) -> dict[str, Any]: ...

    def payment(self, payment_id: str) -> dict[str, Any]: ...

    def browser_return(self, idop: str) -> str: ...

    def document(self, family_id: str, invoice_id: str, kind: str) -> bytes:
        """The family's invoice (kind ``invoice``) or its certificate (``certificate``), PDF."""
        ...

    def verify(self, code: str) -> dict[str, Any]:
        """What a document's verification code attests (``authentic`` False if nothing)."""
        ...


DOCUMENTS = ("invoice", "certificate")


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
        return self._all(f"/families/{quote(family_id, safe='')}/to-pay/{regie}")

    def history(self, family_id: str) -> list[dict[str, Any]]:
        return self._all(f"/families/{quote(family_id, safe='')}/history")

    def _all(self, path: str) -> list[dict[str, Any]]:
        """Every page of a paged list: the portal shows a family's invoices whole."""
        rows: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": PAGE}
        while True:
            body = self._call("GET", path, params=params).json()
            rows += body["invoices"]
            if not body.get("next_cursor"):
                return rows
            params["cursor"] = body["next_cursor"]

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

    def document(self, family_id: str, invoice_id: str, kind: str) -> bytes:
        try:
            UUID(invoice_id)
        except ValueError as e:
            raise NotFound("not an invoice id") from e
        if kind not in DOCUMENTS:
            raise NotFound("no such document")
        r = self._call("GET", f"/families/{quote(family_id, safe='')}/invoices/{invoice_id}/"
                       f"{kind}.pdf")
        return r.content

    def verify(self, code: str) -> dict[str, Any]:
        return dict(self._call("GET", "/verifications", params={"code": code}).json())

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


@dataclass(frozen=True)
class Reservation:
    """A payment in progress as the family may act on it."""

    until: datetime | None  # its invoices are reserved until then; None: not known
    resume_until: datetime | None  # PayFiP's page takes it until then; None: not at all

    def over(self, now: datetime) -> bool:
        return self.until is not None and now >= self.until

    def resumable(self, now: datetime) -> bool:
        return self.resume_until is not None and now < self.resume_until


def reservation(payment: dict[str, Any], length: timedelta) -> Reservation:
    """From the payment API's answer and PAYFIP_RESERVATION_MINUTES (``length``)."""
    if payment.get("status") not in ("started", "requested") or not payment.get(
            "reserved_until"):
        return Reservation(None, None)
    until = datetime.fromisoformat(payment["reserved_until"])
    target = payment.get("redirect_url") or ""
    if payment["status"] != "requested" or urlsplit(target).scheme not in ("http", "https"):
        return Reservation(until, None)
    # The reservation and the idop start together, when the payment is asked for.
    return Reservation(until, min(until, until - length + IDOP_LIFETIME))
