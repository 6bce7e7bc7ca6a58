"""Refunds through HTTP, on SQLite and PostgreSQL: what PayFiP took for invoices closed
meanwhile, and a family's credit asked back; listed, paid once, in the journal."""

from datetime import date

from flask.testing import FlaskClient

from events import PAYMENT_PAYMENTS
from services.billing.domain import Invoice
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire
from services.payment.journal import euros, to_csv, to_pdf
from services.payment.projections import MemoryToPayStore, catch_up
from services.payment.web import create_app
from tests.factories import decoded, deliver, issued, relay_messages, terms, wire_messages
from tests.helpers import CASHIER, NOW, TOKENS, cheque


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def setup(settings: Settings) -> tuple[PaymentApp, FlaskClient, FakeGateway]:
    gateway = FakeGateway()
    billing, payment = issued(settings, terms("S-1", unit=2500), terms("S-2", unit=1250),
                              gateway=gateway, clock=lambda: NOW)
    deliver(payment, wire_messages(billing))
    # PayFiP confirms S-1 and S-2 after billing cancelled S-2: 12,50 € to give back.
    p = payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("S-2")],
                                "parent@example.org")
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-2"), "erreur de tarif")
    deliver(payment, wire_messages(billing))
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    client = create_app(payment, tokens=TOKENS).test_client()
    return payment, client, gateway


def due(client: FlaskClient) -> list[tuple[str, int]]:
    body = client.get("/refunds?status=due", headers=CASHIER).json
    return [(r["source"], r["amount_cents"]) for r in body["refunds"]]  # type: ignore[index]


def test_a_refund_needed_is_listed_then_paid_once_and_shown_in_the_journal(
        store_settings: Settings) -> None:
    payment, client, _ = setup(store_settings)
    [refund] = client.get("/refunds?status=due", headers=CASHIER).json["refunds"]  # type: ignore[index]
    assert (refund["source"], refund["amount_cents"], refund["family_id"], refund["regie"]) == (
        "online_payment", 1250, "fam-1", "SPORTS")
    paid = client.post(f"/refunds/{refund['id']}/paid", headers=CASHIER, json={
        "means": "transfer", "reference": "REMB S-2", "paid_on": "2025-03-05"})
    assert paid.status_code == 200, paid.json
    assert (paid.json["status"], paid.json["means"], paid.json["paid_by"]) == (  # type: ignore[index]
        "paid", "transfer", "cashier")
    assert due(client) == []
    again = client.post(f"/refunds/{refund['id']}/paid", headers=CASHIER, json={
        "means": "transfer", "reference": "REMB S-2", "paid_on": "2025-03-05"})
    assert again.status_code == 409
    assert [r["status"] for r in client.get(
        "/refunds?status=paid", headers=CASHIER).json["refunds"]] == ["paid"]  # type: ignore[index]

    [message] = [m for m in decoded(relay_messages(
        payment, make_to_wire(payment, PAYMENT_PAYMENTS.name))) if m.name == "RefundPaid"]
    assert (message.key, message.data["amount_cents"], message.data["source_id"],
            message.data["paid_on"]) == ("fam-1", 1250, refund["source_id"], date(2025, 3, 5))

    journal = payment.journal("SPORTS", date(2025, 3, 5))
    assert [(p["means"], p["amount_cents"]) for p in journal["payments"]] == [
        ("refund", -1250)]
    assert journal["totals"]["refund_cents"] == -1250
    assert "refund,-1250,transfer REMB S-2" in to_csv(journal)
    assert b"%PDF" in to_pdf(journal, "Direction des sports", payment.collectivite)[:8]
    assert euros(-1250) == "-12,50 €"


def test_a_familys_credit_asked_back_is_a_refund_due(store_settings: Settings) -> None:
    payment, client, _ = setup(store_settings)
    assert client.post("/counter-payments", json=cheque(1000), headers=CASHIER).json[  # type: ignore[index]
        "unallocated_cents"] == 1000
    nothing = client.post("/families/fam-2/credits/SPORTS/refund", json={}, headers=CASHIER)
    assert nothing.status_code == 404
    too_much = client.post("/families/fam-1/credits/SPORTS/refund",
                           json={"amount_cents": 1001}, headers=CASHIER)
    assert too_much.status_code == 422
    assert "amount_cents" in too_much.json["errors"]["json"]  # type: ignore[index]
    asked = client.post("/families/fam-1/credits/SPORTS/refund", json={}, headers=CASHIER)
    assert asked.status_code == 201, asked.json
    refund = asked.json
    assert refund is not None
    assert (refund["source"], refund["amount_cents"], refund["status"]) == ("credit", 1000,
                                                                            "due")
    assert payment.to_pay.credits("fam-1") == []
    assert due(client) == [("online_payment", 1250), ("credit", 1000)]

    no_number = client.post(f"/refunds/{refund['id']}/paid", headers=CASHIER,
                            json={"means": "cheque", "paid_on": "2025-03-05"})
    assert no_number.status_code == 422
    assert "reference" in no_number.json["errors"]["json"]  # type: ignore[index]
    assert client.post(f"/refunds/{refund['id']}/paid", headers=CASHIER,
                       json={"means": "cash", "paid_on": "2025-03-05"}).status_code == 200
    assert due(client) == [("online_payment", 1250)]
    assert client.post("/refunds/4b1d5c1e-0000-4000-8000-000000000009/paid", headers=CASHIER,
                       json={"means": "cash", "paid_on": "2025-03-05"}).status_code == 404

    rebuilt = MemoryToPayStore()
    catch_up(payment, rebuilt)
    assert rebuilt.snapshot() == payment.to_pay.snapshot()
