"""The payment API and a régie in production (saisie W) with a PayFiP that is not PayFiP.

At start, a known production régie stops the API; registered while it runs, the régie gets
no payment: a 5xx naming the setting, nothing sent to PayFiP, its invoices payable again.
"""

import logging
from dataclasses import replace

import pytest

from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_api, payment_app
from services.common.settings import Settings
from services.payment.application import ReturnUrls
from services.payment.gateway import FakeGateway
from services.payment.web import create_app
from tests.factories import deliver, open_regies, terms, wire_messages

SIMULATOR = "http://127.0.0.1:8003/tpa/services/securite"
PAYFIP = "https://www.payfip.gouv.fr/tpa/services/securite"
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")
PAYER = {"Authorization": "Bearer p"}


def test_a_known_production_regie_stops_the_start(any_store_settings: Settings) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings, gateway=FakeGateway(), urls=URLS)
    open_regies(billing)
    billing.open_regie("CRECHE", "Petite enfance", "000003", "W")
    deliver(payment, wire_messages(billing))
    with pytest.raises(RuntimeError, match=r"CRECHE.*PAYFIP_SERVICE_URL"):
        payment_api(replace(any_store_settings, payfip_service_url=SIMULATOR), app=payment)
    # PayFiP itself, or only test régies, start.
    payment_api(replace(any_store_settings, payfip_service_url=PAYFIP), app=payment)


def test_a_production_regie_registered_later_gets_no_payment(
        any_store_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = replace(any_store_settings, payfip_service_url=SIMULATOR)
    gateway = FakeGateway()
    billing, payment = billing_app(settings), payment_app(settings, gateway=gateway, urls=URLS)
    open_regies(billing)
    client = create_app(payment=payment, tokens={"p": "payer"},
                        settings=settings).test_client()
    billing.open_regie("CRECHE", "Petite enfance", "000003", "W")
    billing.issue_invoice(terms("K-1", regie="CRECHE"))
    billing.issue_invoice(terms("S-1"))
    deliver(payment, wire_messages(billing))
    invoice = str(Invoice.create_id("CRECHE", "K-1"))
    body = {"family_id": "fam-1", "regie": "CRECHE", "invoice_ids": [invoice],
            "email": "parent@example.org"}

    with caplog.at_level(logging.ERROR, logger="services.payment.guards"):
        r = client.post("/payments", headers=PAYER, json=body)
    assert r.status_code >= 500
    assert r.json is not None
    [message] = r.json["errors"]["json"]["payfip"]
    assert "PAYFIP_SERVICE_URL" in message and "saisie W" in message
    assert any("saisie W" in record.getMessage() for record in caplog.records)
    assert not gateway.orders  # nothing reached the simulator
    # The invoice was not left reserved: asking again meets the same refusal, not a 409.
    assert client.post("/payments", headers=PAYER, json=body).status_code == r.status_code
    # A test régie beside it is paid as before.
    ok = client.post("/payments", headers=PAYER, json={
        **body, "regie": "SPORTS", "invoice_ids": [str(Invoice.create_id("SPORTS", "S-1"))]})
    assert ok.status_code == 201, ok.json
