"""The billing and payment HTTP APIs, through Flask's test client, on SQLite and PostgreSQL.

Billing's events reach payment through the same wire messages the relay would publish
(``wire_messages`` / ``deliver``), so these tests need no broker.
"""

from collections.abc import Callable
from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from services.billing.application import BillingApp
from services.billing.domain import Regie
from services.billing.web import create_app as create_billing
from services.bootstrap import billing_app, payment_app
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.web import create_app as create_payment
from tests.factories import deliver, invoice_payload, wire_messages

TOKENS = {
    "tok-issuer": "issuer",
    "tok-reader": "reader",
    "tok-auditor": "auditor",
    "tok-operator": "operator",
}
SPORTS = {"code": "SPORTS", "name": "Direction des sports", "numcli": "000001", "saisie": "T"}
CANTINE = {"code": "CANTINE", "name": "Restauration scolaire", "numcli": "000002", "saisie": "X"}
# The day the payment API believes it is; invoices payable until before it are past their
# online payment deadline.
TODAY = date(2025, 3, 1)

BILLING_ROUTES = {
    "/health": {"get"},
    "/regies": {"get", "post"},
    "/invoices": {"post"},
    "/invoices/batch": {"post"},
    "/invoices/{invoice_id}": {"get"},
    "/invoices/{invoice_id}/cancel": {"post"},
    "/invoices/{invoice_id}/transfer": {"post"},
    "/invoices/{invoice_id}/credit-notes": {"post"},
}
PAYMENT_ROUTES = {
    "/health": {"get"},
    "/families/{family_id}/to-pay": {"get"},
    "/families/{family_id}/to-pay/{regie}": {"get"},
    "/payments": {"post"},
    "/payments/{payment_id}": {"get"},
    "/payfip/notification": {"post"},
    "/payfip/return": {"get"},
    "/families/{family_id}/history": {"get"},
    "/regies/{regie}/journal": {"get"},
    "/counter-payments": {"post"},
    "/counter-payments/{payment_id}": {"get"},
    "/families/{family_id}/credits/{regie}/refund": {"post"},
    "/refunds": {"get"},
    "/refunds/{refund_id}/paid": {"post"},
    "/families/{family_id}/invoices/{invoice_id}/invoice.pdf": {"get"},
    "/families/{family_id}/invoices/{invoice_id}/certificate.pdf": {"get"},
    "/counter-payments/{payment_id}/receipt.pdf": {"get"},
    "/verifications": {"get"},
}


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer tok-{role}"}


ISSUER = auth("issuer")
READER = auth("reader")


def field_errors(response: TestResponse, location: str = "json") -> dict[str, Any]:
    """The ``{"errors": {location: {field: [why]}}}`` part of a 4xx body."""
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == response.status_code
    errors: dict[str, Any] = body["errors"][location]
    return errors


def names_authorization(response: TestResponse) -> None:
    why = field_errors(response, "headers")["Authorization"]
    assert why and all(isinstance(w, str) and w for w in why)


@pytest.fixture
def billing(store_settings: Settings) -> BillingApp:
    return billing_app(store_settings)


@pytest.fixture
def payment(store_settings: Settings) -> PaymentApp:
    return payment_app(store_settings)


@pytest.fixture
def client(billing: BillingApp) -> FlaskClient:
    return create_billing(billing=billing, tokens=TOKENS).test_client()


PaymentClient = Callable[[date], FlaskClient]


@pytest.fixture
def payment_client(payment: PaymentApp) -> PaymentClient:
    """A payment API client whose idea of today is the one given."""

    def make(today: date = TODAY) -> FlaskClient:
        return create_payment(payment=payment, tokens=TOKENS, today=lambda: today).test_client()

    return make


def open_regies(client: FlaskClient) -> None:
    for regie in (SPORTS, CANTINE):
        assert client.post("/regies", json=regie, headers=ISSUER).status_code == 201


def issue(client: FlaskClient, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/invoices", json=invoice_payload(**kwargs), headers=ISSUER)
    assert response.status_code == 201, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    return body


# --- no token needed ----------------------------------------------------------------


def test_health_and_openapi_need_no_token(
    client: FlaskClient, payment_client: PaymentClient
) -> None:
    for api, routes in ((client, BILLING_ROUTES), (payment_client(TODAY), PAYMENT_ROUTES)):
        health = api.get("/health")
        # Both services consume a topic: each tells how many messages it parked.
        assert (health.status_code, health.get_json()) == (
            200, {"status": "ok", "dead_letters": 0})
        response = api.get("/openapi.json")
        assert response.status_code == 200
        spec = response.get_json()
        documented = {
            path: {m for m in ops if m in ("get", "post", "put", "patch", "delete")}
            for path, ops in spec["paths"].items()
        }
        assert documented == routes
        assert spec["components"]["securitySchemes"]["bearer"] == {
            "type": "http", "scheme": "bearer"
        }
        assert spec["security"] == [{"bearer": []}]


def test_openapi_documents_the_request_and_answer_fields(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["InvoiceIn"]["properties"]) == {
        "regie", "number", "family_id", "payer_email", "label", "issued_on",
        "payable_until", "due_on", "lines", "amount_cents",
    }
    assert {"id", "status", "amount_due_cents"} <= set(schemas["InvoiceOut"]["properties"])
    fields = schemas["InvoiceIn"]["properties"]
    assert "online payment" in fields["payable_until"]["description"]
    assert "due date" in fields["due_on"]["description"]
    post = spec["paths"]["/invoices"]["post"]
    assert {"200", "201", "422"} <= set(post["responses"])


# --- who may do what ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic tok-issuer"},
        {"Authorization": "tok-issuer"},
        {"Authorization": "Bearertok-issuer"},
    ],
    ids=["missing", "unknown", "empty", "basic-scheme", "no-scheme", "no-space"],
)
def test_without_a_valid_bearer_token_the_answer_is_401(
    client: FlaskClient, payment_client: PaymentClient, billing: BillingApp,
    headers: dict[str, str],
) -> None:
    before = billing.recorder.max_notification_id()
    for response in (
        client.get("/regies", headers=headers),
        client.post("/regies", json=SPORTS, headers=headers),
        client.post("/invoices", json=invoice_payload(), headers=headers),
        payment_client(TODAY).get("/families/fam-1/to-pay", headers=headers),
    ):
        assert response.status_code == 401
        names_authorization(response)
    assert billing.recorder.max_notification_id() == before


def test_a_token_without_the_role_is_403(
    client: FlaskClient, payment_client: PaymentClient, billing: BillingApp
) -> None:
    open_regies(client)
    before = billing.recorder.max_notification_id()
    for role in ("reader", "auditor"):
        response = client.post("/invoices", json=invoice_payload(), headers=auth(role))
        assert response.status_code == 403
        names_authorization(response)
        assert role in field_errors(response, "headers")["Authorization"][0]
    assert billing.recorder.max_notification_id() == before
    pay = payment_client(TODAY)
    for path in ("/families/fam-1/to-pay", "/families/fam-1/to-pay/SPORTS"):
        response = pay.get(path, headers=ISSUER)
        assert response.status_code == 403
        names_authorization(response)
    # Readers of billing: each role that may read gets the list.
    for role in ("issuer", "reader", "auditor", "operator"):
        assert client.get("/regies", headers=auth(role)).status_code == 200


def test_the_operator_may_do_everything(
    client: FlaskClient, payment_client: PaymentClient, payment: PaymentApp, billing: BillingApp
) -> None:
    op = auth("operator")
    assert client.post("/regies", json=SPORTS, headers=op).status_code == 201
    assert client.get("/regies", headers=op).status_code == 200
    created = client.post("/invoices", json=invoice_payload("A"), headers=op)
    assert created.status_code == 201
    invoice_id = created.get_json()["id"]
    assert client.get(f"/invoices/{invoice_id}", headers=op).status_code == 200
    batch = client.post(
        "/invoices/batch", json={"invoices": [invoice_payload("B"), invoice_payload("C")]},
        headers=op,
    )
    assert [r["status"] for r in batch.get_json()["results"]] == [201, 201]
    b_id, c_id = (r["invoice"]["id"] for r in batch.get_json()["results"])
    cancel = client.post(f"/invoices/{b_id}/cancel", json={"reason": "doublon"}, headers=op)
    assert cancel.status_code == 200
    transfer = client.post(f"/invoices/{c_id}/transfer", json={"reference": "T-1"}, headers=op)
    assert transfer.status_code == 200
    deliver(payment, wire_messages(billing))
    pay = payment_client(TODAY)
    summary = pay.get("/families/fam-1/to-pay", headers=op)
    assert summary.status_code == 200
    assert summary.get_json()["regies"][0]["count"] == 1
    lines = pay.get("/families/fam-1/to-pay/SPORTS", headers=op)
    assert [i["id"] for i in lines.get_json()["invoices"]] == [invoice_id]


# --- régies ---------------------------------------------------------------------------


def test_opening_a_regie_is_idempotent_and_conflicts_are_409(
    client: FlaskClient, billing: BillingApp
) -> None:
    first = client.post("/regies", json=SPORTS, headers=ISSUER)
    assert (first.status_code, first.get_json()) == (201, SPORTS)
    stored = billing.recorder.max_notification_id()
    again = client.post("/regies", json=SPORTS, headers=ISSUER)
    assert (again.status_code, again.get_json()) == (200, SPORTS)
    other = client.post("/regies", json={**SPORTS, "numcli": "000009"}, headers=ISSUER)
    assert other.status_code == 409
    assert "SPORTS" in field_errors(other)["code"][0]
    assert billing.recorder.max_notification_id() == stored
    assert client.post("/regies", json=CANTINE, headers=ISSUER).status_code == 201
    listed = client.get("/regies", headers=READER)
    assert listed.status_code == 200
    # Sorted by code; the conflicting numcli was not recorded.
    assert listed.get_json() == {"regies": [CANTINE, SPORTS]}


def test_answers_are_utf8_as_written(client: FlaskClient,
                                     payment_client: PaymentClient) -> None:
    periscolaire = {"code": "PERI", "name": "Activités périscolaires", "numcli": "000003",
                    "saisie": "T"}
    opened = client.post("/regies", json=periscolaire, headers=ISSUER)
    assert opened.status_code == 201
    assert opened.content_type == "application/json"  # JSON is UTF-8 by definition
    for response in (opened, client.get("/regies", headers=READER)):
        assert "Activités périscolaires".encode() in response.get_data()
        assert b"\\u00e9" not in response.get_data()
    refused = client.post("/regies", json={**periscolaire, "numcli": "000009"}, headers=ISSUER)
    assert "régie PERI is already open".encode() in refused.get_data()  # errors too
    spec = payment_client(TODAY).get("/openapi.json")
    assert "Régie payment API".encode() in spec.get_data()


# --- invoices -------------------------------------------------------------------------


def test_a_due_date_before_the_online_payment_deadline_says_what_each_date_is(
    client: FlaskClient,
) -> None:
    open_regies(client)
    refused = client.post("/invoices", headers=ISSUER, json=invoice_payload(
        payable_until="2025-03-31", due_on="2025-03-30"))
    assert refused.status_code == 422
    assert field_errors(refused)["due_on"] == [
        "must not be before payable_until: the due date comes on or after the end of "
        "online payment"]


def test_issuing_an_invoice_is_idempotent_on_regie_and_number(
    client: FlaskClient, billing: BillingApp
) -> None:
    open_regies(client)
    payload = invoice_payload("F-1", quantity=3, unit=850)
    created = client.post("/invoices", json=payload, headers=ISSUER)
    assert created.status_code == 201
    body = created.get_json()
    assert body["status"] == "issued"
    assert body["amount_cents"] == body["amount_due_cents"] == 2550
    for name, value in payload.items():
        assert body[name] == value, name
    stored = billing.recorder.max_notification_id()

    replay = client.post("/invoices", json=payload, headers=ISSUER)
    assert replay.status_code == 200
    assert replay.get_json() == body

    changed = invoice_payload("F-1", quantity=3, unit=851)
    conflict = client.post("/invoices", json=changed, headers=ISSUER)
    assert conflict.status_code == 409
    assert "F-1" in field_errors(conflict)["number"][0]
    assert billing.recorder.max_notification_id() == stored

    # The same number in another régie is another invoice.
    elsewhere = client.post("/invoices", json={**payload, "regie": "CANTINE"}, headers=ISSUER)
    assert elsewhere.status_code == 201
    assert elsewhere.get_json()["id"] != body["id"]

    for role in ("reader", "auditor", "issuer"):
        read = client.get(f"/invoices/{body['id']}", headers=auth(role))
        assert (read.status_code, read.get_json()) == (200, body)


def test_an_unknown_invoice_is_404_json(client: FlaskClient) -> None:
    open_regies(client)
    for unknown in ("00000000-0000-4000-8000-000000000000", str(Regie.create_id("SPORTS"))):
        response = client.get(f"/invoices/{unknown}", headers=READER)
        assert response.status_code == 404
        assert field_errors(response)["id"]
        cancel = client.post(f"/invoices/{unknown}/cancel", json={"reason": "x"}, headers=ISSUER)
        assert cancel.status_code == 404
        assert field_errors(cancel)["id"]


def test_cancel_and_transfer(client: FlaskClient, billing: BillingApp) -> None:
    open_regies(client)
    a = issue(client, number="A")
    b = issue(client, number="B")

    cancelled = client.post(f"/invoices/{a['id']}/cancel", json={"reason": "doublon"},
                            headers=ISSUER)
    assert cancelled.status_code == 200
    assert cancelled.get_json() == {**a, "status": "cancelled", "cancel_reason": "doublon"}
    stored = billing.recorder.max_notification_id()
    twice = client.post(f"/invoices/{a['id']}/cancel", json={"reason": "encore"},
                        headers=ISSUER)
    assert twice.status_code == 409
    assert "cancelled" in field_errors(twice)["status"][0]
    assert client.post(f"/invoices/{a['id']}/transfer", json={}, headers=ISSUER).status_code \
        == 409
    assert billing.recorder.max_notification_id() == stored

    transferred = client.post(f"/invoices/{b['id']}/transfer", json={"reference": "T-2025-7"},
                              headers=ISSUER)
    assert transferred.status_code == 200
    assert transferred.get_json() == {
        **b, "status": "transferred", "transfer_reference": "T-2025-7"
    }
    stored = billing.recorder.max_notification_id()
    late = client.post(f"/invoices/{b['id']}/cancel", json={"reason": "trop tard"},
                       headers=ISSUER)
    assert late.status_code == 409
    assert "transferred" in field_errors(late)["status"][0]
    assert billing.recorder.max_notification_id() == stored

    # The reference of the titre is optional.
    c = issue(client, number="C")
    bare = client.post(f"/invoices/{c['id']}/transfer", json={}, headers=ISSUER)
    assert bare.status_code == 200
    assert bare.get_json()["status"] == "transferred"
    assert bare.get_json()["transfer_reference"] is None

    assert client.get(f"/invoices/{a['id']}", headers=READER).get_json()["status"] == "cancelled"
    assert client.get(f"/invoices/{b['id']}", headers=READER).get_json()["status"] \
        == "transferred"


def test_a_batch_gives_one_result_per_item_in_order(
    client: FlaskClient, billing: BillingApp
) -> None:
    open_regies(client)
    existing = issue(client, number="F-0")
    invalid = invoice_payload("F-2", amount_cents=-5)
    del invalid["label"]
    items: list[Any] = [
        invoice_payload("F-1", quantity=2, unit=1250),  # created
        invoice_payload("F-0"),  # replay of an invoice issued before
        invalid,  # refused by the schema
        invoice_payload("F-3", regie="PISCINE"),  # unknown régie
        invoice_payload("F-0", unit=9999),  # other content for an existing number
        invoice_payload("F-4", amount_cents=1),  # lines do not add up
        None,  # not an invoice at all
    ]
    response = client.post("/invoices/batch", json={"invoices": items}, headers=ISSUER)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [
        (0, 201), (1, 200), (2, 422), (3, 422), (4, 409), (5, 422), (6, 422)
    ]
    assert results[0]["invoice"]["number"] == "F-1"
    assert results[0]["invoice"]["amount_due_cents"] == 2500
    assert results[1]["invoice"] == existing
    assert set(results[2]["errors"]) == {"label", "amount_cents"}
    assert "PISCINE" in results[3]["errors"]["regie"][0]
    assert "F-0" in results[4]["errors"]["number"][0]
    assert "2500" in results[5]["errors"]["amount_cents"][0]
    assert results[6]["errors"]["_schema"]
    for refused in results[2:]:
        assert "invoice" not in refused

    # Only F-1 was stored, and as answered.
    f1 = client.get(f"/invoices/{results[0]['invoice']['id']}", headers=READER)
    assert f1.get_json() == results[0]["invoice"]
    f0 = client.get(f"/invoices/{existing['id']}", headers=READER).get_json()
    assert f0["amount_cents"] == 2500
    stored = billing.recorder.max_notification_id()
    again = client.post("/invoices/batch", json={"invoices": items}, headers=ISSUER)
    assert [r["status"] for r in again.get_json()["results"]] == [
        200, 200, 422, 422, 409, 422, 422
    ]
    assert billing.recorder.max_notification_id() == stored


# --- to pay ---------------------------------------------------------------------------


def test_to_pay_follows_billing_to_the_cent(
    client: FlaskClient, billing: BillingApp, payment: PaymentApp,
    payment_client: PaymentClient,
) -> None:
    open_regies(client)
    a = issue(client, number="S-1", quantity=2, unit=1250, label="Stage de voile",
              issued_on="2025-02-10")
    late = issue(client, number="S-2", quantity=3, unit=411, label="Piscine janvier",
                 issued_on="2025-01-05", payable_until="2025-02-28", due_on="2025-03-31")
    gone = issue(client, number="S-3", unit=700)
    sent = issue(client, number="S-4", unit=900)
    meal = issue(client, number="C-1", regie="CANTINE", quantity=7, unit=343,
                 label="Cantine février", issued_on="2025-02-28")
    issue(client, number="S-5", family="fam-2", unit=5000)  # another family
    assert client.post(f"/invoices/{gone['id']}/cancel", json={"reason": "doublon"},
                       headers=ISSUER).status_code == 200
    assert client.post(f"/invoices/{sent['id']}/transfer", json={"reference": "T-1"},
                       headers=ISSUER).status_code == 200
    deliver(payment, wire_messages(billing))

    pay = payment_client(TODAY)
    summary = pay.get("/families/fam-1/to-pay", headers=READER)
    assert summary.status_code == 200
    assert summary.get_json() == {"regies": [
        {"code": "CANTINE", "name": CANTINE["name"], "count": 1, "total_cents": 7 * 343},
        {"code": "SPORTS", "name": SPORTS["name"], "count": 2,
         "total_cents": 2 * 1250 + 3 * 411},
    ]}

    sports = pay.get("/families/fam-1/to-pay/SPORTS", headers=auth("auditor"))
    assert sports.status_code == 200
    invoices = sports.get_json()["invoices"]
    # Oldest first; the cancelled and the transferred ones are gone.
    assert [i["id"] for i in invoices] == [late["id"], a["id"]]
    wanted = ("number", "label", "issued_on")
    for got, issued in zip(invoices, (late, a), strict=True):
        assert {k: got[k] for k in wanted} == {k: issued[k] for k in wanted}
        assert got["amount_due_cents"] == got["total_cents"] == issued["amount_cents"]
    assert (invoices[0]["payable"], invoices[0]["reason"]) == (
        False, "online_payment_deadline_passed"
    )
    assert (invoices[1]["payable"], invoices[1]["reason"]) == (True, None)

    # The deadline is judged against the injected day: the day itself is still payable.
    on_deadline = payment_client(date(2025, 2, 28)).get(
        "/families/fam-1/to-pay/SPORTS", headers=READER
    ).get_json()["invoices"]
    assert [(i["number"], i["payable"], i["reason"]) for i in on_deadline] == [
        ("S-2", True, None), ("S-1", True, None)
    ]

    cantine = pay.get("/families/fam-1/to-pay/CANTINE", headers=READER).get_json()
    assert [(i["id"], i["amount_due_cents"]) for i in cantine["invoices"]] == [
        (meal["id"], 2401)
    ]
    # A known régie where the family owes nothing, and a family that owes nothing at all.
    assert pay.get("/families/fam-2/to-pay/CANTINE", headers=READER).get_json()[
        "invoices"] == []
    assert pay.get("/families/nobody/to-pay", headers=READER).get_json() == {"regies": []}

    unknown = pay.get("/families/fam-1/to-pay/PISCINE", headers=READER)
    assert unknown.status_code == 404
    assert "PISCINE" in field_errors(unknown)["regie"][0]


def test_the_regie_list_and_the_history_come_in_pages_that_follow_cursors(
        client: FlaskClient, billing: BillingApp, payment: PaymentApp,
        payment_client: PaymentClient) -> None:
    open_regies(client)
    # Two invoices a day, so that a page can end in the middle of a day.
    for i in range(7):
        issue(client, number=f"S-{i}", issued_on=f"2025-02-{10 + i // 2:02d}")
        issue(client, number=f"C-{i}", regie="CANTINE", issued_on=f"2025-02-{10 + i // 2:02d}")
    deliver(payment, wire_messages(billing))
    pay = payment_client(TODAY)

    def follow(path: str, limit: int | None) -> tuple[list[str], int]:
        numbers: list[str] = []
        query: dict[str, Any] = {} if limit is None else {"limit": limit}
        pages = 0
        while True:
            r = pay.get(path, query_string=query, headers=READER)
            assert r.status_code == 200, r.get_data(as_text=True)
            body = r.get_json()
            pages += 1
            assert limit is None or len(body["invoices"]) <= limit
            numbers += [i["number"] for i in body["invoices"]]
            if body["next_cursor"] is None:
                return numbers, pages
            query["cursor"] = body["next_cursor"]

    whole = [f"S-{i}" for i in range(7)]
    assert follow("/families/fam-1/to-pay/SPORTS", None) == (whole, 1)
    assert follow("/families/fam-1/to-pay/SPORTS", 3) == (whole, 3)
    assert follow("/families/fam-1/to-pay/SPORTS", 7) == (whole, 1)
    history, _ = follow("/families/fam-1/history", None)
    assert history[:4] == ["C-6", "S-6", "C-4", "C-5"]  # newest first, then régie, number
    assert follow("/families/fam-1/history", 2) == (history, 7)
    assert follow("/families/fam-1/history", 5) == (history, 3)
    assert sorted(history) == sorted(whole + [f"C-{i}" for i in range(7)])

    # Bad page parameters: 422 naming the parameter, as for any bad input.
    for path, why in (("/families/fam-1/history?limit=0", "limit"),
                      ("/families/fam-1/history?limit=1001", "limit"),
                      ("/families/fam-1/to-pay/SPORTS?cursor=nope!", "cursor"),
                      ("/families/fam-1/history?cursor=e30", "cursor")):
        r = pay.get(path, headers=READER)
        assert r.status_code == 422, path
        assert why in field_errors(r, "query")


class _FlaskSession:
    """What PaymentApi asks of requests.Session, answered by the payment API in-process."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, *, headers: dict[str, str], timeout: float,
                params: dict[str, Any] | None = None, **_: Any) -> Any:
        self.calls.append(dict(params or {}))
        r = self.client.open(url.removeprefix("http://pay.test"), method=method,
                             headers=headers, query_string=params)
        return SimpleNamespace(status_code=r.status_code, json=r.get_json, is_redirect=False,
                               headers=r.headers, text=r.get_data(as_text=True))


def test_the_portal_follows_the_cursors_to_show_a_long_history_whole(
        client: FlaskClient, billing: BillingApp, payment: PaymentApp,
        payment_client: PaymentClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.portal import payments as portal_payments

    open_regies(client)
    for i in range(5):
        issue(client, number=f"S-{i}")
    deliver(payment, wire_messages(billing))
    session = _FlaskSession(payment_client(TODAY))
    api = portal_payments.PaymentApi("http://pay.test", "tok-reader",
                                     session=session)  # type: ignore[arg-type]
    monkeypatch.setattr(portal_payments, "PAGE", 2)

    assert sorted(i["number"] for i in api.history("fam-1")) == [f"S-{i}" for i in range(5)]
    assert len(session.calls) == 3 and "cursor" in session.calls[-1]
    assert [i["number"] for i in api.to_pay_regie("fam-1", "SPORTS")] == [
        f"S-{i}" for i in range(5)]
