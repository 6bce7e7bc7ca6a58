"""Malformed requests to the payment API: each gets its 4xx, names the field, records nothing.

One table, one row per bad request, like the billing table (test_bad_input.py). Every row
starts from the same family: fam-1 has invoices payable, paid, cancelled, in a payment in
progress, past their online deadline, too small or too big for PayFiP, and one at the
CANTINE; fam-2 has one. Each row checks that the payment store's last notification id did
not move and that nothing reached the (fake) PayFiP, so a request that slipped through fails
its row. The two rows where PayFiP itself refuses are the exception: the attempt is recorded
as failed, and the invoices must be payable again.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.billing.domain import Invoice
from services.payment import domain
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.gateway import UNREACHABLE, FakeGateway, GatewayError
from services.payment.web import create_app
from tests.conftest import drop_schemas, make_settings
from tests.factories import deliver, issued, terms, wire_messages
from tests.http import J, answered

TOKENS = {"tok-reader": "reader", "tok-auditor": "auditor", "tok-issuer": "issuer",
          "tok-payer": "payer"}
READER = {"Authorization": "Bearer tok-reader"}
PAYER = {"Authorization": "Bearer tok-payer"}
NOW = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")
NOBODY = "00000000-0000-4000-8000-000000000000"  # a well-formed id that names nothing


def iid(number: str, regie: str = "SPORTS") -> str:
    return str(Invoice.create_id(regie, number))


# What fam-1 can pay at SPORTS, and why not, before and after every row.
PAYABLE = {"S-1": None, "S-2": None, "S-4": None, "S-7": "payment_in_progress",
           "S-8": "online_payment_deadline_passed", "S-9": None}


@dataclass(frozen=True)
class Bad:
    """One bad request and what the API must answer."""

    method: str
    path: str  # "{payment}" and "{idop}" stand for the payment in progress (S-7)
    body: Any  # JSON to send, or a callable making it from those names
    status: int
    where: tuple[str, ...] | None  # keys into "errors" down to the reasons; None: no field
    headers: dict[str, str] = field(default_factory=lambda: dict(PAYER))
    raw: str | None = None  # sent as is instead of ``body``
    content_type: str = "application/json"
    payfip: GatewayError | None = None  # what the fake PayFiP answers creerPaiementSecurise
    # PayFiP refused: the attempt is recorded as failed and its invoices are released.
    failed_attempt: bool = False


def pay(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"family_id": "fam-1", "regie": "SPORTS",
                            "invoice_ids": [iid("S-1")], "email": "parent@example.org"}
    body.update(overrides)
    return body


def without(name: str) -> dict[str, Any]:
    body = pay()
    del body[name]
    return body


def invoices(*numbers: str) -> dict[str, Any]:
    return pay(invoice_ids=[iid(n, "CANTINE" if n.startswith("C") else "SPORTS")
                            for n in numbers])


def case(id: str, path: str, body: Any, status: int, *where: str, method: str = "POST",
         **kw: Any) -> Any:
    return pytest.param(Bad(method, path, body, status, where, **kw), id=id)


def no_field(id: str, method: str, path: str, status: int, **kw: Any) -> Any:
    return pytest.param(Bad(method, path, None, status, None, **kw), id=id)


CASES = [
    # --- the invoices asked for
    case("another-familys-invoice", "/payments", invoices("S-3"), 404, *J("invoice_ids")),
    case("another-familys-beside-own", "/payments", invoices("S-1", "S-3"), 404,
         *J("invoice_ids")),
    case("unknown-invoice", "/payments", pay(invoice_ids=[NOBODY]), 404, *J("invoice_ids")),
    # Ids of the payment service's other aggregates are no invoices either.
    case("a-payment-id", "/payments", lambda ctx: pay(invoice_ids=[ctx["payment"]]), 404,
         *J("invoice_ids")),
    case("a-regie-id", "/payments", pay(invoice_ids=[str(domain.Regie.create_id("SPORTS"))]),
         404, *J("invoice_ids")),
    case("two-regies", "/payments", invoices("S-1", "C-1"), 422, *J("invoice_ids")),
    case("invoice-of-another-regie", "/payments", invoices("C-1"), 422, *J("invoice_ids")),
    case("already-paid", "/payments", invoices("S-6"), 409, *J("invoice_ids")),
    case("paid-beside-payable", "/payments", invoices("S-1", "S-6"), 409, *J("invoice_ids")),
    case("cancelled", "/payments", invoices("S-5"), 409, *J("invoice_ids")),
    case("payment-in-progress", "/payments", invoices("S-7"), 409, *J("invoice_ids")),
    case("in-progress-beside-payable", "/payments", invoices("S-1", "S-7"), 409,
         *J("invoice_ids")),
    case("online-deadline-passed", "/payments", invoices("S-8"), 409, *J("invoice_ids")),
    case("total-under-1-euro", "/payments", invoices("S-4"), 422, *J("invoice_ids")),
    case("total-100000-euros", "/payments", invoices("S-9"), 422, *J("invoice_ids")),
    case("total-over-100000-euros", "/payments", invoices("S-1", "S-9"), 422,
         *J("invoice_ids")),
    # --- invoice_ids itself
    case("invoice-id-not-a-uuid", "/payments", pay(invoice_ids=["F-1"]), 422,
         *J("invoice_ids", "0")),
    case("second-invoice-id-not-a-uuid", "/payments", pay(invoice_ids=[iid("S-1"), "S-2"]),
         422, *J("invoice_ids", "1")),
    case("invoice-id-null", "/payments", pay(invoice_ids=[None]), 422, *J("invoice_ids", "0")),
    case("invoice-id-a-number", "/payments", pay(invoice_ids=[42]), 422,
         *J("invoice_ids", "0")),
    case("invoice-ids-empty", "/payments", pay(invoice_ids=[]), 422, *J("invoice_ids")),
    case("invoice-ids-51", "/payments",
         pay(invoice_ids=[str(uuid.UUID(int=i + 1)) for i in range(51)]), 422,
         *J("invoice_ids")),
    case("invoice-ids-duplicate", "/payments", invoices("S-1", "S-1"), 422, *J("invoice_ids")),
    # One id spelt differently (upper case, no hyphens, braces, URN) is still one invoice.
    *(case(f"invoice-ids-duplicate-{how}", "/payments",
           pay(invoice_ids=[iid("S-1"), spelling]), 422, *J("invoice_ids"))
      for how, spelling in [("upper-case", iid("S-1").upper()),
                            ("hex", uuid.UUID(iid("S-1")).hex),
                            ("braces", "{" + iid("S-1") + "}"),
                            ("urn", uuid.UUID(iid("S-1")).urn)]),
    case("invoice-ids-a-string", "/payments", pay(invoice_ids=iid("S-1")), 422,
         *J("invoice_ids")),
    case("invoice-ids-a-dict", "/payments", pay(invoice_ids={"0": iid("S-1")}), 422,
         *J("invoice_ids")),
    case("invoice-ids-null", "/payments", pay(invoice_ids=None), 422, *J("invoice_ids")),
    # --- each required field missing
    *(case(f"missing-{name}", "/payments", without(name), 422, *J(name))
      for name in ("family_id", "regie", "invoice_ids", "email")),
    # --- family and régie
    case("family-id-a-number", "/payments", pay(family_id=1), 422, *J("family_id")),
    case("family-id-empty", "/payments", pay(family_id=""), 422, *J("family_id")),
    case("family-id-with-spaces", "/payments", pay(family_id="fam 1"), 422, *J("family_id")),
    case("family-id-too-long", "/payments", pay(family_id="f" * 65), 422, *J("family_id")),
    case("family-id-trailing-newline", "/payments", pay(family_id="fam-1\n"), 422,
         *J("family_id")),
    case("regie-unknown", "/payments", pay(regie="PISCINE"), 422, *J("regie")),
    case("regie-malformed", "/payments", pay(regie="SPORTS ET LOISIRS"), 422, *J("regie")),
    case("regie-trailing-newline", "/payments", pay(regie="SPORTS\n"), 422, *J("regie")),
    case("regie-a-number", "/payments", pay(regie=1), 422, *J("regie")),
    # --- e-mail
    case("email-no-at", "/payments", pay(email="parent.example.org"), 422, *J("email")),
    case("email-two-ats", "/payments", pay(email="parent@@example.org"), 422, *J("email")),
    case("email-empty", "/payments", pay(email=""), 422, *J("email")),
    case("email-81-chars", "/payments", pay(email="p" * 69 + "@example.org"), 422,
         *J("email")),
    case("email-5-chars", "/payments", pay(email="a@b.c"), 422, *J("email")),
    case("email-with-space", "/payments", pay(email="pa rent@example.org"), 422, *J("email")),
    case("email-trailing-newline", "/payments", pay(email="parent@example.org\n"), 422,
         *J("email")),
    case("email-a-number", "/payments", pay(email=42), 422, *J("email")),
    case("email-null", "/payments", pay(email=None), 422, *J("email")),
    # --- the client never sets the amount, nor anything else
    case("amount-given", "/payments", pay(amount_cents=1), 422, *J("amount_cents")),
    case("unknown-field", "/payments", pay(refdet="CHOSEN123"), 422, *J("refdet")),
    # --- the body itself
    case("body-a-list", "/payments", [pay()], 422, *J("_schema")),
    case("body-a-string", "/payments", "S-1", 422, *J("_schema")),
    case("body-null", "/payments", None, 422, *J("_schema"), raw="null"),
    case("body-empty", "/payments", None, 422, *J("invoice_ids"), raw=""),
    case("body-not-json", "/payments", None, 400, "json", raw="family_id=fam-1&regie=SPORTS"),
    case("body-truncated-json", "/payments", None, 400, "json", raw='{"family_id": "fam-1", '),
    case("body-a-form", "/payments", None, 415, "headers", "Content-Type",
         raw="family_id=fam-1&regie=SPORTS", content_type="application/x-www-form-urlencoded"),
    # --- PayFiP refuses: recorded as a failed attempt, the invoices payable again
    case("payfip-refuses-the-email", "/payments", pay(email="parent@example.invalid"), 422,
         *J("email"), payfip=GatewayError("A2", "Adresse mél incorrecte."),
         failed_attempt=True),
    case("payfip-unreachable", "/payments", invoices("S-1", "S-2"), 502, *J("payfip"),
         payfip=GatewayError(UNREACHABLE, "HTTP error: ReadTimeout"), failed_attempt=True),
    case("payfip-other-fault", "/payments", pay(), 502, *J("payfip"),
         payfip=GatewayError("T2", "Le numéro de client est inconnu de PayFiP."),
         failed_attempt=True),
    # --- who may ask
    case("no-token", "/payments", pay(), 401, "headers", "Authorization", headers={}),
    case("unknown-token", "/payments", pay(), 401, "headers", "Authorization",
         headers={"Authorization": "Bearer tok-nobody"}),
    case("issuer-token", "/payments", pay(), 403, "headers", "Authorization",
         headers={"Authorization": "Bearer tok-issuer"}),
    # Reading tokens are handed to other systems: they must not reserve invoices nor
    # send receipts to an address of their choosing.
    case("reader-token", "/payments", pay(), 403, "headers", "Authorization", headers=READER),
    case("auditor-token", "/payments", pay(), 403, "headers", "Authorization",
         headers={"Authorization": "Bearer tok-auditor"}),
    # --- reading a payment
    case("get-unknown-payment", f"/payments/{NOBODY}", None, 404, *J("id"), method="GET"),
    case("get-an-invoice-as-payment", f"/payments/{iid('S-1')}", None, 404, *J("id"),
         method="GET"),
    no_field("get-payment-not-a-uuid", "GET", "/payments/not-a-uuid", 404),
    case("get-payment-no-token", "/payments/{payment}", None, 401, "headers", "Authorization",
         method="GET", headers={}),
    case("get-payment-issuer", "/payments/{payment}", None, 403, "headers", "Authorization",
         method="GET", headers={"Authorization": "Bearer tok-issuer"}),
    # --- PayFiP's calls: the notification answers 200 whatever comes, records nothing unknown
    no_field("notification-no-idop", "POST", "/payfip/notification", 200, headers={},
             raw="", content_type="application/x-www-form-urlencoded"),
    no_field("notification-empty-idop", "POST", "/payfip/notification", 200, headers={},
             raw="idop=", content_type="application/x-www-form-urlencoded"),
    no_field("notification-forged-idop", "POST", "/payfip/notification", 200, headers={},
             raw=f"idop={NOBODY}", content_type="application/x-www-form-urlencoded"),
    no_field("notification-garbage-idop", "POST", "/payfip/notification", 200, headers={},
             raw="idOp=%27%3B--", content_type="application/x-www-form-urlencoded"),
    no_field("notification-json", "POST", "/payfip/notification", 200, headers={},
             raw=f'{{"idop": "{NOBODY}"}}'),
    case("return-no-idop", "/payfip/return", None, 404, *J("idop"), method="GET", headers={}),
    case("return-empty-idop", "/payfip/return?idop=", None, 404, *J("idop"), method="GET",
         headers={}),
    case("return-forged-idop", f"/payfip/return?idop={NOBODY}", None, 404, *J("idop"),
         method="GET", headers={}),
    case("return-forged-idOp", f"/payfip/return?idOp={NOBODY}", None, 404, *J("idop"),
         method="GET", headers={}),
    case("return-garbage-idop", "/payfip/return?idop=%3Cscript%3E", None, 404, *J("idop"),
         method="GET", headers={}),
]


@dataclass
class World:
    client: FlaskClient
    payment: PaymentApp
    gateway: FakeGateway
    names: dict[str, str]  # what "{payment}" and "{idop}" stand for


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One pair of stores per backend for the whole table, as in test_bad_input.py.

    Sharing is sound because no row may record anything but a failed attempt that leaves
    the invoices as they were, and each row checks exactly that.
    """
    settings = make_settings(request.param, tmp_path_factory.mktemp("payment-bad-input"))
    gateway = FakeGateway()
    billing, payment = issued(
        settings,
        *(terms(number, family=family, unit=unit)
          for number, family, unit in [("S-1", "fam-1", 2500), ("S-2", "fam-1", 1250),
                                       ("S-3", "fam-2", 4000), ("S-4", "fam-1", 50),
                                       ("S-5", "fam-1", 700), ("S-6", "fam-1", 1000),
                                       ("S-7", "fam-1", 1500), ("S-9", "fam-1", 10_000_000)]),
        terms("S-8", payable_until=datetime(2025, 3, 31).date(),
              due_on=datetime(2025, 4, 30).date()),
        terms("C-1", regie="CANTINE", unit=1000),
        gateway=gateway, clock=lambda: NOW,
    )
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-5"), "doublon")
    deliver(payment, wire_messages(billing))

    paid = payment.request_payment("fam-1", "SPORTS", [iid("S-6")], "parent@example.org")
    assert paid.idop is not None
    gateway.decide(paid.idop, "P")
    payment.settle_from_payfip(paid.idop)
    in_progress = payment.request_payment("fam-1", "SPORTS", [iid("S-7")],
                                          "parent@example.org")
    assert in_progress.idop is not None
    app = create_app(payment=payment, tokens=TOKENS, today=NOW.date)
    yield World(app.test_client(), payment, gateway,
                {"payment": str(in_progress.id), "idop": in_progress.idop})
    payment.close()
    billing.close()
    if settings.is_postgres():
        drop_schemas(settings.schema_prefix)


def fill(text: str, names: dict[str, str]) -> str:
    for name, value in names.items():
        text = text.replace("{" + name + "}", value)
    return text


def payable(world: World) -> dict[str, str | None]:
    """fam-1's SPORTS invoices as the family sees them, then once the read model caught up."""
    seen = world.client.get("/families/fam-1/to-pay/SPORTS", headers=READER).get_json()
    now = {line["number"]: line["reason"] for line in seen["invoices"]}
    world.payment.refresh()
    later = {line["number"]: line["reason"]
             for line in world.payment.to_pay_lines("fam-1", "SPORTS", NOW.date())}
    assert now == later
    return later


def recorded_since(payment: PaymentApp, before: int | None) -> list[str]:
    """The topics of the events recorded after notification ``before``."""
    return [n.topic for n in payment.recorder.select_notifications(
        before or 0, 10_000, inclusive_of_start=False)]


@pytest.mark.parametrize("bad", CASES)
def test_a_bad_request_is_refused_and_records_nothing(world: World, bad: Bad) -> None:
    client, payment, gateway = world.client, world.payment, world.gateway
    before = payment.recorder.max_notification_id()
    orders = len(gateway.orders)
    path = fill(bad.path, world.names)
    send: Callable[..., Any] = client.post if bad.method == "POST" else client.get
    gateway.fail_create = bad.payfip
    try:
        if bad.raw is not None:
            response = send(path, data=fill(bad.raw, world.names),
                            content_type=bad.content_type, headers=bad.headers)
        elif bad.body is not None:
            body = bad.body(world.names) if callable(bad.body) else bad.body
            response = send(path, json=body, headers=bad.headers)
        else:
            response = send(path, headers=bad.headers)
    finally:
        gateway.fail_create = None
    answered(response, bad.status, bad.where)

    assert len(gateway.orders) == orders  # nothing reached PayFiP, or PayFiP refused it
    if bad.failed_attempt:
        recorded = recorded_since(payment, before)
        assert any(t.endswith("Payment.RequestFailed") for t in recorded), recorded
        assert not any(t.endswith("Payment.Requested") for t in recorded), recorded
    else:
        assert payment.recorder.max_notification_id() == before
    # Whatever happened, every invoice is as payable as before.
    assert payable(world) == PAYABLE
