"""Who may call what: the README's route × role table, checked call by call on both APIs.

The routes come from each app's url_map, so a route added without an entry here fails
`test_every_route_has_an_entry`; each entry is then called with every role's token.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.billing.web import create_app as create_billing
from services.bootstrap import billing_app, payment_app
from services.common.web.auth import ROLES
from services.payment.application import ReturnUrls
from services.payment.gateway import FakeGateway
from services.payment.web import create_app as create_payment
from tests.conftest import make_settings

TOKENS = {f"tok-{role}": role for role in ROLES}
PUBLIC = "public"
ANY = ("issuer", "reader", "auditor", "operator")
FAMILY_READERS = ("reader", "auditor", "payer", "operator")

# (method, rule) -> the roles that get past the token check; PUBLIC needs no token.
BILLING: dict[tuple[str, str], tuple[str, ...] | str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/asyncapi.json"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/regies"): ANY,
    ("POST", "/regies"): ("issuer", "operator"),
    ("POST", "/invoices"): ("issuer", "operator"),
    ("POST", "/invoices/batch"): ("issuer", "operator"),
    ("GET", "/invoices/<uuid:invoice_id>"): ANY,
    ("POST", "/invoices/<uuid:invoice_id>/cancel"): ("issuer", "operator"),
    ("POST", "/invoices/<uuid:invoice_id>/transfer"): ("issuer", "operator"),
    ("POST", "/invoices/<uuid:invoice_id>/credit-notes"): ("issuer", "cashier", "operator"),
}
PAYMENT: dict[tuple[str, str], tuple[str, ...] | str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/asyncapi.json"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/families/<family_id>/to-pay"): (*FAMILY_READERS, "cashier"),
    ("GET", "/families/<family_id>/to-pay/<regie>"): (*FAMILY_READERS, "cashier"),
    ("GET", "/families/<family_id>/history"): FAMILY_READERS,
    ("POST", "/payments"): ("payer", "operator"),
    ("GET", "/payments/<uuid:payment_id>"): FAMILY_READERS,
    ("POST", "/payfip/notification"): PUBLIC,
    ("GET", "/payfip/return"): PUBLIC,
    ("GET", "/regies/<regie>/journal"): ("auditor", "cashier", "operator"),
    ("POST", "/counter-payments"): ("cashier", "operator"),
    ("GET", "/counter-payments/<uuid:payment_id>"): ("cashier", "operator"),
    ("POST", "/families/<family_id>/credits/<regie>/refund"): ("cashier", "operator"),
    ("GET", "/refunds"): ("cashier", "operator"),
    ("POST", "/refunds/<uuid:refund_id>/paid"): ("cashier", "operator"),
    ("GET", "/families/<family_id>/invoices/<uuid:invoice_id>/invoice.pdf"): FAMILY_READERS,
    ("GET", "/families/<family_id>/invoices/<uuid:invoice_id>/certificate.pdf"): FAMILY_READERS,
    ("GET", "/counter-payments/<uuid:payment_id>/receipt.pdf"): ("cashier", "operator"),
    ("GET", "/verifications"): PUBLIC,
}
TABLES = {"billing": BILLING, "payment": PAYMENT}
SAMPLE = {"invoice_id": "4b1d5c1e-0000-4000-8000-000000000001",
          "payment_id": "4b1d5c1e-0000-4000-8000-000000000002",
          "refund_id": "4b1d5c1e-0000-4000-8000-000000000003",
          "family_id": "famille-martin", "regie": "SPORTS"}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Flask]]:
    settings = make_settings("sqlite", Path(tmp_path_factory.mktemp("roles")))
    urls = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")
    yield {
        "billing": create_billing(billing_app(settings), tokens=TOKENS),
        "payment": create_payment(payment_app(settings, gateway=FakeGateway(), urls=urls),
                                  tokens=TOKENS),
    }


def routes(app: Flask) -> set[tuple[str, str]]:
    return {(method, rule.rule) for rule in app.url_map.iter_rules()
            for method in rule.methods or () if method not in ("HEAD", "OPTIONS")
            and rule.endpoint != "static"}


def url(rule: str) -> str:
    for name, value in SAMPLE.items():
        for converter in ("", "uuid:"):
            rule = rule.replace(f"<{converter}{name}>", value)
    return rule


def call(client: FlaskClient, method: str, rule: str, role: str | None) -> Any:
    headers = {"Authorization": f"Bearer tok-{role}"} if role else {}
    # An empty object: a role that passes gets a 4xx about the body, never 401 or 403.
    if method == "POST" and "payfip" not in rule:
        return client.open(url(rule), method=method, headers=headers, json={})
    return client.open(url(rule), method=method, headers=headers)


@pytest.mark.parametrize("api", TABLES)
def test_every_route_has_an_entry(apps: dict[str, Flask], api: str) -> None:
    assert routes(apps[api]) == set(TABLES[api])


CASES = [(api, method, rule, role, allowed)
         for api, table in TABLES.items() for (method, rule), allowed in table.items()
         for role in ROLES]


@pytest.mark.parametrize(("api", "method", "rule", "role", "allowed"), CASES,
                         ids=[f"{a}-{m}-{r}-{role}" for a, m, r, role, _ in CASES])
def test_each_role_gets_what_the_table_gives(
    apps: dict[str, Flask], api: str, method: str, rule: str, role: str,
    allowed: tuple[str, ...] | str,
) -> None:
    client = apps[api].test_client()
    status = call(client, method, rule, role).status_code
    if allowed == PUBLIC or role in allowed:
        assert status not in (401, 403), status
    else:
        assert status == 403
        assert role in call(client, method, rule, role).get_json()["errors"]["headers"][
            "Authorization"][0]
    without_token = call(client, method, rule, None).status_code
    assert (without_token != 401) if allowed == PUBLIC else (without_token == 401)
