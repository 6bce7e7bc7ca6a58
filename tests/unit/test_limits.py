"""Bounded input: body size, nesting, content type, methods, and what the documents promise."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from services.billing.web import create_app as create_billing
from services.bootstrap import billing_app, payment_app
from services.common.settings import SETTINGS
from services.payfip_sim import soap
from services.payfip_sim.app import create_app as create_sim
from services.payment.application import ReturnUrls
from services.payment.gateway import FakeGateway
from services.payment.web import create_app as create_payment
from services.portal.accounts import Accounts, SqliteAccounts
from services.portal.settings import PortalSettings
from services.portal.web import create_app as create_portal
from tests.conftest import make_settings
from tests.factories import invoice_payload

TOKENS = {"tok-issuer": "issuer", "tok-payer": "payer"}
ISSUER = {"Authorization": "Bearer tok-issuer"}
PAYER = {"Authorization": "Bearer tok-payer"}
LIMIT = int(SETTINGS["REGIE_MAX_BODY_BYTES"][0])
OVER = b"x" * (LIMIT + 1)
SPORTS = {"code": "SPORTS", "name": "Direction des sports", "numcli": "000001", "saisie": "T"}


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Flask]]:
    monkeypatch.delenv("REGIE_MAX_BODY_BYTES", raising=False)
    settings = make_settings("memory", tmp_path)
    urls = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")
    portal = PortalSettings(payment_token="tok-payer", accounts_db=str(tmp_path / "p.db"),
                            secret_key="k" * 40)
    yield {
        "billing": create_billing(billing_app(settings), tokens=TOKENS),
        "payment": create_payment(payment_app(settings, gateway=FakeGateway(), urls=urls),
                                  tokens=TOKENS),
        "portal": create_portal(portal, Accounts(SqliteAccounts(portal.accounts_db))),
        "sim": create_sim(),
    }


def error(response: TestResponse, location: str) -> dict[str, list[str]]:
    body = response.get_json()
    assert body["code"] == response.status_code, body
    errors: dict[str, list[str]] = body["errors"][location]
    assert errors and all(why and isinstance(why[0], str) for why in errors.values())
    return errors


def test_the_default_limit_is_16_mib() -> None:
    assert LIMIT == 16 * 1024 * 1024


@pytest.mark.parametrize(("api", "path", "headers", "content_type"), [
    ("billing", "/invoices/batch", ISSUER, "application/json"),
    ("billing", "/regies", ISSUER, "application/json"),
    ("payment", "/payments", PAYER, "application/json"),
    ("payment", "/payfip/notification", {}, "application/x-www-form-urlencoded"),
])
def test_an_api_refuses_a_body_over_the_limit(
    apps: dict[str, Flask], api: str, path: str, headers: dict[str, str], content_type: str,
) -> None:
    response = apps[api].test_client().post(path, data=OVER, headers=headers,
                                            content_type=content_type)
    assert response.status_code == 413
    assert str(LIMIT) in error(response, "body")["_schema"][0]
    if path == "/regies":
        assert apps[api].test_client().get("/regies", headers=ISSUER).get_json() == {
            "regies": []}


@pytest.mark.parametrize(("part", "path", "content_type"), [
    ("portal", "/connexion", "application/x-www-form-urlencoded"),
    ("sim", soap.ENDPOINT_PATH, "text/xml"),
])
def test_the_portal_and_the_simulator_refuse_a_body_over_the_limit(
    apps: dict[str, Flask], part: str, path: str, content_type: str,
) -> None:
    response = apps[part].test_client().post(path, data=OVER, content_type=content_type)
    assert response.status_code == 413


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIE_MAX_BODY_BYTES", "1000")
    app = create_billing(billing_app(make_settings("memory", tmp_path)), tokens=TOKENS)
    client = app.test_client()
    assert client.post("/regies", json={**SPORTS, "name": "x" * 1000},
                       headers=ISSUER).status_code == 413
    assert client.post("/regies", json=SPORTS, headers=ISSUER).status_code == 201


def test_a_batch_of_5000_invoices_fits(apps: dict[str, Flask]) -> None:
    client = apps["billing"].test_client()
    assert client.post("/regies", json=SPORTS, headers=ISSUER).status_code == 201
    # Long labels and a few lines each: a heavy but ordinary month of one régie.
    lines = [{"label": "Repas du midi, tarif selon quotient familial " + "x" * 150,
              "quantity": 2, "unit_price_cents": 450}] * 4
    invoices = [invoice_payload(f"RS-2025-03-{i:05d}", family=f"famille-{i:05d}",
                                label="Restauration scolaire " + "y" * 170, lines=lines,
                                amount_cents=3600) for i in range(5000)]
    body = json.dumps({"invoices": invoices}).encode()
    assert 4 * 1024 * 1024 < len(body) < LIMIT
    response = client.post("/invoices/batch", data=body, headers=ISSUER,
                           content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert {r["status"] for r in response.get_json()["results"]} == {201}


@pytest.mark.parametrize(("api", "path", "headers"), [
    ("billing", "/invoices", ISSUER), ("billing", "/invoices/batch", ISSUER),
    ("payment", "/payments", PAYER)])
@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_json_nested_too_deeply_is_400(
    apps: dict[str, Flask], api: str, path: str, headers: dict[str, str], depth: int,
) -> None:
    # As a whole body, and as the value of a field the schema walks.
    for body in ("[" * depth + "]" * depth,
                 '{"invoices": ' + "[" * depth + "]" * depth + "}"):
        response = apps[api].test_client().post(path, data=body, headers=headers,
                                                content_type="application/json")
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert "nested too deeply" in error(response, "json")["_schema"][0]


@pytest.mark.parametrize(("api", "path", "headers"), [
    ("billing", "/invoices", ISSUER), ("billing", "/regies", ISSUER),
    ("payment", "/payments", PAYER)])
def test_a_json_route_sent_another_type_is_415(
    apps: dict[str, Flask], api: str, path: str, headers: dict[str, str],
) -> None:
    client = apps[api].test_client()
    response = client.post(path, data=json.dumps(SPORTS), headers=headers,
                           content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in error(response, "headers")["Content-Type"][0]
    if api == "billing":  # nothing was stored
        assert client.get("/regies", headers=ISSUER).get_json() == {"regies": []}


@pytest.mark.parametrize(("api", "method", "path", "allow"), [
    ("billing", "DELETE", "/regies", {"GET", "POST"}),
    ("billing", "PUT", "/invoices/batch", {"POST"}),
    ("payment", "GET", "/payments", {"POST"}),
    ("payment", "GET", "/payfip/notification", {"POST"}),
])
def test_a_wrong_method_is_405_with_allow(
    apps: dict[str, Flask], api: str, method: str, path: str, allow: set[str],
) -> None:
    response = apps[api].test_client().open(path, method=method, headers=ISSUER)
    assert response.status_code == 405
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allow <= allowed and method not in allowed
    assert method in error(response, "request")["method"][0]


def operations(app: Flask) -> dict[tuple[str, str], dict[str, Any]]:
    spec = app.test_client().get("/openapi.json").get_json()
    assert spec["security"] == [{"bearer": []}]
    return {(method.upper(), path): op for path, ops in spec["paths"].items()
            for method, op in ops.items() if method in ("get", "post", "put", "delete")}


@pytest.mark.parametrize("api", ["billing", "payment"])
def test_openapi_says_which_calls_need_no_token(apps: dict[str, Flask], api: str) -> None:
    ops = operations(apps[api])
    public = {key for key, op in ops.items() if op.get("security") == []}
    expected = {("GET", "/health")}
    if api == "payment":
        expected |= {("POST", "/payfip/notification"), ("GET", "/payfip/return"),
                     ("GET", "/verifications")}
    assert public == expected
    # Every other operation keeps the document's bearer requirement.
    assert all("security" not in op for key, op in ops.items() if key not in expected)


def test_an_unknown_idop_is_logged_short(apps: dict[str, Flask],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    idop = "A" * 10_000
    response = apps["payment"].test_client().post("/payfip/notification", data={"idop": idop})
    assert response.status_code == 200
    logged = [r.getMessage() for r in caplog.records if "idop" in r.getMessage()]
    assert logged and all("A" * 65 not in m and len(m) < 200 for m in logged)
