"""Malformed requests to the billing API: each gets its 4xx, names the field, stores nothing.

One table, one row per bad request. Every row starts from the same state (régies SPORTS and
CANTINE open, invoice F-0 issued) and checks that the store's last notification id did not
move, so a request that slipped through and recorded anything fails its row.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.billing.application import BillingApp
from services.billing.schemas import MAX_BATCH
from services.billing.web import create_app
from services.bootstrap import billing_app
from tests.conftest import drop_schemas, make_settings
from tests.factories import invoice_payload, open_regies, terms
from tests.http import J, answered

TOKENS = {"tok-issuer": "issuer", "tok-reader": "reader", "tok-auditor": "auditor"}
ISSUER = {"Authorization": "Bearer tok-issuer"}
# The invoice every row finds issued; "{id}" in a path stands for its id.
EXISTING = "F-0"
REGIE = {"code": "PISCINE", "name": "Piscine municipale", "numcli": "000003", "saisie": "T"}
INVOICE_FIELDS = (
    "regie", "number", "family_id", "payer_email", "label", "issued_on", "payable_until",
    "due_on", "lines", "amount_cents",
)


@dataclass(frozen=True)
class Bad:
    """One bad request and what the API must answer."""

    path: str
    body: Any  # JSON to send, or a callable making it (for the big ones)
    status: int
    where: tuple[str, ...]  # keys into the body's "errors" down to the list of reasons
    headers: dict[str, str] = field(default_factory=lambda: dict(ISSUER))
    raw: str | None = None  # sent as is instead of ``body``
    content_type: str = "application/json"


def invoice(**overrides: Any) -> dict[str, Any]:
    return {**invoice_payload("F-1"), **overrides}


def without(name: str) -> dict[str, Any]:
    payload = invoice()
    del payload[name]
    return payload


def with_line(**overrides: Any) -> dict[str, Any]:
    line = {"label": "Séjour", "quantity": 1, "unit_price_cents": 2500, **overrides}
    return invoice(lines=[line])


def regie(**overrides: Any) -> dict[str, Any]:
    return {**REGIE, **overrides}


def regie_without(name: str) -> dict[str, Any]:
    return {k: v for k, v in REGIE.items() if k != name}


def oversize_batch() -> dict[str, Any]:
    # Valid and new, every one: if the size limit failed, thousands would be stored.
    return {"invoices": [invoice_payload(f"B-{i}") for i in range(MAX_BATCH + 1)]}


def case(id: str, path: str, body: Any, status: int, *where: str, **kw: Any) -> Any:
    return pytest.param(Bad(path, body, status, where, **kw), id=id)


CASES = [
    # --- invoice: each required field missing
    *(case(f"missing-{name}", "/invoices", without(name), 422, *J(name))
      for name in INVOICE_FIELDS),
    # --- amounts
    case("amount-negative", "/invoices", invoice(amount_cents=-2500), 422, *J("amount_cents")),
    case("amount-zero", "/invoices", invoice(amount_cents=0), 422, *J("amount_cents")),
    case("amount-float", "/invoices", invoice(amount_cents=25.0), 422, *J("amount_cents")),
    case("amount-float-whole-cents", "/invoices", invoice(amount_cents=2500.0), 422,
         *J("amount_cents")),
    case("amount-string", "/invoices", invoice(amount_cents="2500"), 422, *J("amount_cents")),
    case("amount-boolean", "/invoices", invoice(amount_cents=True), 422, *J("amount_cents")),
    case("amount-null", "/invoices", invoice(amount_cents=None), 422, *J("amount_cents")),
    case("amount-huge", "/invoices", invoice(amount_cents=10**20), 422, *J("amount_cents")),
    case("amount-not-the-lines", "/invoices", invoice(amount_cents=2499), 422,
         *J("amount_cents")),
    # --- lines
    case("lines-empty", "/invoices", invoice(lines=[], amount_cents=1), 422, *J("lines")),
    case("lines-a-dict", "/invoices", invoice(lines={"0": with_line()["lines"][0]}), 422,
         *J("lines")),
    case("line-not-an-object", "/invoices", invoice(lines=[3]), 422,
         *J("lines", "0", "_schema")),
    case("line-label-missing", "/invoices", invoice(lines=[{"quantity": 1,
         "unit_price_cents": 2500}]), 422, *J("lines", "0", "label")),
    case("quantity-zero", "/invoices", with_line(quantity=0), 422,
         *J("lines", "0", "quantity")),
    case("quantity-negative", "/invoices", with_line(quantity=-1, unit_price_cents=-2500),
         422, *J("lines", "0", "quantity")),
    case("quantity-fraction", "/invoices", with_line(quantity=1.5), 422,
         *J("lines", "0", "quantity")),
    case("quantity-float", "/invoices", with_line(quantity=1.0), 422,
         *J("lines", "0", "quantity")),
    case("quantity-string", "/invoices", with_line(quantity="1"), 422,
         *J("lines", "0", "quantity")),
    case("quantity-boolean", "/invoices", with_line(quantity=True), 422,
         *J("lines", "0", "quantity")),
    case("unit-price-float", "/invoices", with_line(unit_price_cents=2500.0), 422,
         *J("lines", "0", "unit_price_cents")),
    case("line-unknown-field", "/invoices", with_line(vat=20), 422, *J("lines", "0", "vat")),
    # --- régie of the invoice
    case("regie-unknown", "/invoices", invoice(regie="ECOLE"), 422, *J("regie")),
    case("regie-malformed", "/invoices", invoice(regie="SPORTS ET LOISIRS"), 422, *J("regie")),
    case("regie-trailing-newline", "/invoices", invoice(regie="SPORTS\n"), 422, *J("regie")),
    # --- dates
    case("issued-on-not-iso", "/invoices", invoice(issued_on="26/02/2025"), 422,
         *J("issued_on")),
    case("issued-on-no-such-day", "/invoices", invoice(issued_on="2025-02-30"), 422,
         *J("issued_on")),
    case("issued-on-a-datetime", "/invoices", invoice(issued_on="2025-02-26T10:00:00"), 422,
         *J("issued_on")),
    case("issued-on-a-number", "/invoices", invoice(issued_on=20250226), 422,
         *J("issued_on")),
    case("issued-on-empty", "/invoices", invoice(issued_on=""), 422, *J("issued_on")),
    case("payable-until-no-such-day", "/invoices", invoice(payable_until="2030-13-01"), 422,
         *J("payable_until")),
    case("payable-until-before-issued-on", "/invoices",
         invoice(issued_on="2025-02-26", payable_until="2025-02-25", due_on="2025-03-31"), 422,
         *J("payable_until")),
    case("due-on-before-payable-until", "/invoices",
         invoice(payable_until="2025-03-31", due_on="2025-03-30"), 422, *J("due_on")),
    # --- payer e-mail
    case("email-no-at", "/invoices", invoice(payer_email="parent.example.org"), 422,
         *J("payer_email")),
    case("email-two-ats", "/invoices", invoice(payer_email="parent@@example.org"), 422,
         *J("payer_email")),
    case("email-empty", "/invoices", invoice(payer_email=""), 422, *J("payer_email")),
    case("email-too-long", "/invoices", invoice(payer_email="p" * 80 + "@example.org"), 422,
         *J("payer_email")),
    case("email-a-number", "/invoices", invoice(payer_email=42), 422, *J("payer_email")),
    # --- invoice number
    case("number-with-spaces", "/invoices", invoice(number="F 1"), 422, *J("number")),
    case("number-too-long", "/invoices", invoice(number="F" * 41), 422, *J("number")),
    case("number-empty", "/invoices", invoice(number=""), 422, *J("number")),
    case("number-trailing-newline", "/invoices", invoice(number="F-1\n"), 422, *J("number")),
    case("number-an-integer", "/invoices", invoice(number=1), 422, *J("number")),
    # --- other fields
    case("family-id-an-int", "/invoices", invoice(family_id=42), 422, *J("family_id")),
    case("family-id-with-spaces", "/invoices", invoice(family_id="fam 1"), 422,
         *J("family_id")),
    case("label-empty", "/invoices", invoice(label=""), 422, *J("label")),
    case("label-too-long", "/invoices", invoice(label="x" * 201), 422, *J("label")),
    case("unknown-field", "/invoices", invoice(amount=2500), 422, *J("amount")),
    # --- the body itself
    case("body-a-list", "/invoices", [invoice()], 422, *J("_schema")),
    case("body-null", "/invoices", None, 422, *J("_schema"), raw="null"),
    case("body-a-string", "/invoices", "F-1", 422, *J("_schema")),
    case("body-not-json", "/invoices", None, 400, "json", raw="regie=SPORTS&number=F-1"),
    case("body-truncated-json", "/invoices", None, 400, "json", raw='{"regie": "SPORTS", '),
    # A body of another type is refused as such, not read as no body at all.
    case("body-a-form", "/invoices", None, 415, "headers", "Content-Type",
         raw="regie=SPORTS&number=F-1", content_type="application/x-www-form-urlencoded"),
    # --- an invoice number issued before with other content
    case("invoice-conflict", "/invoices", invoice_payload(EXISTING, unit=2600), 409,
         *J("number")),
    # --- régies
    *(case(f"regie-missing-{name}", "/regies", regie_without(name), 422, *J(name))
      for name in REGIE),
    case("numcli-5-digits", "/regies", regie(numcli="12345"), 422, *J("numcli")),
    case("numcli-7-digits", "/regies", regie(numcli="1234567"), 422, *J("numcli")),
    case("numcli-letters", "/regies", regie(numcli="12345A"), 422, *J("numcli")),
    case("numcli-an-integer", "/regies", regie(numcli=123456), 422, *J("numcli")),
    case("numcli-trailing-newline", "/regies", regie(numcli="000003\n"), 422, *J("numcli")),
    case("saisie-unknown", "/regies", regie(saisie="Z"), 422, *J("saisie")),
    case("saisie-lower-case", "/regies", regie(saisie="t"), 422, *J("saisie")),
    case("saisie-empty", "/regies", regie(saisie=""), 422, *J("saisie")),
    case("regie-code-with-spaces", "/regies", regie(code="LA PISCINE"), 422, *J("code")),
    case("regie-name-blank", "/regies", regie(name="   "), 422, *J("name")),
    case("regie-body-a-list", "/regies", [REGIE], 422, *J("_schema")),
    case("regie-conflict", "/regies", {"code": "SPORTS", "name": "Direction des sports",
         "numcli": "000009", "saisie": "T"}, 409, *J("code")),
    # --- batches
    case("batch-oversize", "/invoices/batch", oversize_batch, 422, *J("invoices")),
    case("batch-empty", "/invoices/batch", {"invoices": []}, 422, *J("invoices")),
    case("batch-invoices-a-dict", "/invoices/batch", {"invoices": {"0": invoice()}}, 422,
         *J("invoices")),
    case("batch-invoices-a-string", "/invoices/batch", {"invoices": "F-1"}, 422,
         *J("invoices")),
    case("batch-invoices-missing", "/invoices/batch", {}, 422, *J("invoices")),
    case("batch-body-a-list", "/invoices/batch", [invoice()], 422, *J("_schema")),
    case("batch-unknown-field", "/invoices/batch", {"invoices": [invoice()], "dry_run": True},
         422, *J("dry_run")),
    # --- cancel
    case("cancel-no-reason", "/invoices/{id}/cancel", {}, 422, *J("reason")),
    case("cancel-no-body", "/invoices/{id}/cancel", None, 422, *J("reason"), raw=""),
    case("cancel-empty-reason", "/invoices/{id}/cancel", {"reason": ""}, 422, *J("reason")),
    case("cancel-blank-reason", "/invoices/{id}/cancel", {"reason": "   "}, 422, *J("reason")),
    case("cancel-reason-a-number", "/invoices/{id}/cancel", {"reason": 42}, 422,
         *J("reason")),
    case("cancel-reason-too-long", "/invoices/{id}/cancel", {"reason": "x" * 501}, 422,
         *J("reason")),
    case("cancel-unknown-invoice", "/invoices/00000000-0000-4000-8000-000000000000/cancel",
         {"reason": "doublon"}, 404, *J("id")),
    # --- transfer
    case("transfer-empty-reference", "/invoices/{id}/transfer", {"reference": ""}, 422,
         *J("reference")),
    case("transfer-reference-a-number", "/invoices/{id}/transfer", {"reference": 7}, 422,
         *J("reference")),
    case("transfer-reference-too-long", "/invoices/{id}/transfer", {"reference": "T" * 101},
         422, *J("reference")),
    case("transfer-unknown-invoice", "/invoices/00000000-0000-4000-8000-000000000000/transfer",
         {"reference": "T-1"}, 404, *J("id")),
]

# Each write route with a body that would be accepted, so a hole in the checks would store.
WRITES = {
    "regies": ("/regies", REGIE),
    "invoices": ("/invoices", invoice()),
    "batch": ("/invoices/batch", {"invoices": [invoice()]}),
    "cancel": ("/invoices/{id}/cancel", {"reason": "doublon"}),
    "transfer": ("/invoices/{id}/transfer", {"reference": "T-1"}),
}
AUTH_FAILURES = {
    "no-token": ({}, 401),
    "unknown-token": ({"Authorization": "Bearer tok-nobody"}, 401),
    "not-bearer": ({"Authorization": "Basic dG9rLWlzc3Vlcjo="}, 401),
    "reader": ({"Authorization": "Bearer tok-reader"}, 403),
    "auditor": ({"Authorization": "Bearer tok-auditor"}, 403),
}
CASES += [
    case(f"{route}-{who}", path, body, status, "headers", "Authorization", headers=headers)
    for route, (path, body) in WRITES.items()
    for who, (headers, status) in AUTH_FAILURES.items()
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FlaskClient, BillingApp, str]]:
    """One store per backend for the whole table, like ``store_settings`` but built once.

    Sharing is sound because no row may store anything, and each row checks exactly that;
    building the stores once per row made the file several times slower.
    """
    settings = make_settings(request.param, tmp_path_factory.mktemp("bad-input"))
    billing = billing_app(settings)
    open_regies(billing)
    existing = billing.issue_invoice(terms(EXISTING)).invoice
    yield create_app(billing=billing, tokens=TOKENS).test_client(), billing, str(existing.id)
    billing.close()
    if settings.is_postgres():
        drop_schemas(settings.schema_prefix)


@pytest.mark.parametrize("bad", CASES)
def test_a_bad_request_is_refused_and_stores_nothing(
    api: tuple[FlaskClient, BillingApp, str], bad: Bad
) -> None:
    client, billing, existing_id = api
    before = billing.recorder.max_notification_id()
    path = bad.path.format(id=existing_id)
    if bad.raw is not None:
        response = client.post(path, data=bad.raw, content_type=bad.content_type,
                               headers=bad.headers)
    else:
        body = bad.body() if callable(bad.body) else bad.body
        response = client.post(path, json=body, headers=bad.headers)
    answered(response, bad.status, bad.where)
    assert billing.recorder.max_notification_id() == before
    # And what was there is unchanged: the invoice is still issued, SPORTS still as opened.
    invoice = client.get(f"/invoices/{existing_id}", headers=ISSUER).get_json()
    assert (invoice["status"], invoice["amount_cents"]) == ("issued", 2500)
    assert [r["numcli"] for r in client.get("/regies", headers=ISSUER).get_json()["regies"]] \
        == ["000002", "000001"]
