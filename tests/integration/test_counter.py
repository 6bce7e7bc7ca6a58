"""The counter through HTTP, on SQLite and PostgreSQL: counter payments, part payments, the
family's credit; billing learning of them from payment.payments."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from events import PAYMENT_PAYMENTS
from services import bootstrap, cli
from services.billing.application import BillingApp
from services.billing.domain import PAID, Invoice
from services.bootstrap import payment_app
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.domain import CounterTerms
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire
from services.payment.projections import MemoryToPayStore, catch_up
from services.payment.web import create_app
from tests.factories import decoded, deliver, issued, relay_messages, terms, wire_messages
from tests.helpers import CASHIER, NOW, TOKENS, Parts, cheque, to_billing, to_pay


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def setup(settings: Settings, gateway: FakeGateway | None = None
          ) -> tuple[BillingApp, PaymentApp, FlaskClient]:
    # S-2 falls due before S-1: it is paid first.
    billing, payment = issued(
        settings,
        terms("S-1", unit=2500, payable_until=date(2030, 6, 30), due_on=date(2030, 6, 30)),
        terms("S-2", unit=1500, payable_until=date(2030, 3, 31), due_on=date(2030, 3, 31)),
        terms("S-3", family="fam-2", unit=4000),
        gateway=gateway or FakeGateway(), clock=lambda: NOW,
    )
    deliver(payment, wire_messages(billing))
    client = create_app(payment, tokens=TOKENS).test_client()
    return billing, payment, client





def test_a_cheque_pays_the_oldest_due_first_and_the_next_in_part(
        store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment, client = setup(store_settings, gateway)
    answer = client.post("/counter-payments", json=cheque(2000), headers=CASHIER)
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert body is not None
    assert [(a["number"], a["amount_cents"]) for a in body["allocations"]] == [
        ("S-2", 1500), ("S-1", 500)]
    assert (body["unallocated_cents"], body["by"], body["means"]) == (0, "cashier", "cheque")
    assert body["receipt_url"] == (
        f"http://localhost/counter-payments/{body['id']}/receipt.pdf")
    assert client.get(body["receipt_url"], headers=CASHIER).mimetype == "application/pdf"
    again = client.get(f"/counter-payments/{body['id']}", headers=CASHIER)
    assert again.status_code == 200 and again.json == body

    # S-1 keeps its place in the list with what it still owes, and PayFiP may take the rest.
    assert to_pay(client) == [("S-1", 2000)]
    online = payment.request_payment("fam-1", "SPORTS", [iid("S-1")], "parent@example.org")
    assert online.amount_cents == 2000
    gateway.decide(online.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(online.idop)  # type: ignore[arg-type]
    assert to_pay(client) == []

    # Billing learns of both from payment.payments, and its answer back changes nothing.
    to_billing(billing, payment)
    s1, s2 = billing.get_invoice(Invoice.create_id("SPORTS", "S-1")), billing.get_invoice(
        Invoice.create_id("SPORTS", "S-2"))
    assert (s2.status, s2.amount_due_cents) == (PAID, 0)
    assert (s1.status, s1.amount_due_cents, s1.refund_due_cents) == (PAID, 0, 0)
    deliver(payment, wire_messages(billing))
    assert to_pay(client) == []
    history = client.get("/families/fam-1/history", headers={"Authorization": "Bearer r"}).json
    paid_by = {i["number"]: i["paid_by"] for i in history["invoices"]}  # type: ignore[index]
    assert paid_by == {"S-1": "card", "S-2": "cheque"}


def test_billing_keeps_a_part_paid_invoice_open_and_so_does_payment_after_hearing_back(
        store_settings: Settings) -> None:
    billing, payment, client = setup(store_settings)
    client.post("/counter-payments", json=cheque(1000, invoice_ids=[iid("S-1")]),
                headers=CASHIER)
    to_billing(billing, payment)
    s1 = billing.get_invoice(Invoice.create_id("SPORTS", "S-1"))
    assert (s1.status, s1.amount_due_cents) == ("issued", 1500)
    [message] = [m for m in decoded(relay_messages(
        payment, make_to_wire(payment, PAYMENT_PAYMENTS.name)))]
    assert message.name == "CounterPaymentReceived"
    assert (message.key, message.data["means"], message.data["allocations"][0]["amount_cents"],
            message.data["by"]) == ("fam-1", "cheque", 1000, "cashier")
    deliver(payment, wire_messages(billing))  # billing's InvoiceSettled of that part
    assert to_pay(client) == [("S-1", 1500), ("S-2", 1500)]


def test_money_beyond_what_is_due_becomes_the_familys_credit(store_settings: Settings) -> None:
    _, payment, client = setup(store_settings)
    body = client.post("/counter-payments", json=cheque(5000), headers=CASHIER).json
    assert body is not None and body["unallocated_cents"] == 1000
    assert payment.to_pay.credits("fam-1") == [{"regie": "SPORTS", "balance_cents": 1000}]
    assert to_pay(client) == []


def test_the_same_reference_again_is_the_same_payment_and_other_terms_are_refused(
        store_settings: Settings) -> None:
    _, payment, client = setup(store_settings)
    first = client.post("/counter-payments", json=cheque(1000), headers=CASHIER)
    again = client.post("/counter-payments", json=cheque(1000), headers=CASHIER)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json == first.json
    before = payment.recorder.max_notification_id()
    other = client.post("/counter-payments", json=cheque(1200), headers=CASHIER)
    assert other.status_code == 409
    assert "reference" in other.json["errors"]["json"]  # type: ignore[index]
    assert payment.recorder.max_notification_id() == before
    assert to_pay(client) == [("S-1", 2500), ("S-2", 500)]
    # The same number for another means is another payment.
    cesu = client.post("/counter-payments", json=cheque(500, means="cesu"), headers=CASHIER)
    assert cesu.status_code == 201


def test_bad_counter_payments_say_which_field_and_change_nothing(
        store_settings: Settings) -> None:
    _, payment, client = setup(store_settings)
    before = payment.recorder.max_notification_id()
    cases = [
        (cheque(1000, reference=None), 422, "reference"),
        (cheque(1000, means="bitcoin"), 422, "means"),
        (cheque(0), 422, "amount_cents"),
        (cheque(1000, regie="PISCINE"), 422, "regie"),
        (cheque(1000, invoice_ids=[iid("S-3")]), 404, "invoice_ids"),
        ({k: v for k, v in cheque(1000).items() if k != "received_on"}, 422, "received_on"),
    ]
    for payload, status, field in cases:
        answer = client.post("/counter-payments", json=payload, headers=CASHIER)
        assert answer.status_code == status, (payload, answer.json)
        errors = answer.json["errors"]  # type: ignore[index]
        assert field in errors or field in errors.get("json", {}), (field, errors)
    assert payment.recorder.max_notification_id() == before
    cash = client.post("/counter-payments", json=cheque(100, means="cash", reference=None),
                       headers=CASHIER)
    assert cash.status_code == 201


def test_the_read_models_rebuild_to_the_same(store_settings: Settings) -> None:
    _, payment, client = setup(store_settings)
    client.post("/counter-payments", json=cheque(5000), headers=CASHIER)
    client.post("/counter-payments", json=cheque(300, means="cash", reference=None),
                headers=CASHIER)
    rebuilt = MemoryToPayStore()
    catch_up(payment, rebuilt)
    assert rebuilt.snapshot() == payment.to_pay.snapshot()
    journal = payment.journal("SPORTS", date(2025, 3, 3))
    assert [(p["means"], p["amount_cents"]) for p in journal["payments"]] == [
        ("cheque", 5000), ("cash", 300)]
    assert (journal["totals"]["cheque_cents"], journal["totals"]["cash_cents"]) == (5000, 300)


def test_as_of_shows_what_was_due_and_what_the_regie_owed_the_family(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, _, client = setup(store_settings)
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    before = datetime.now(UTC)
    time.sleep(0.01)  # the payment's events are recorded after that instant
    client.post("/counter-payments", json=cheque(2000), headers=CASHIER)

    def as_of(moment: str) -> dict[str, Any]:
        assert cli.main(["as-of", moment, "--family", "fam-1"]) == 0
        state: dict[str, Any] = json.loads(capsys.readouterr().out)
        return state

    assert as_of(before.isoformat())["regies"]["SPORTS"]["total_cents"] == 4000
    assert as_of("now")["regies"]["SPORTS"]["total_cents"] == 2000
    # Paid beyond what is due, then asked back: the credit, then the refund due.
    client.post("/counter-payments", json=cheque(2500, reference="7654321"), headers=CASHIER)
    credited = datetime.now(UTC)
    time.sleep(0.01)
    client.post("/families/fam-1/credits/SPORTS/refund", json={}, headers=CASHIER)
    then = as_of(credited.isoformat())
    assert (then["credits"], then["refunds_due"]) == (
        {"fam-1": [{"regie": "SPORTS", "balance_cents": 500}]}, [])
    now = as_of("now")
    assert now["credits"] == {}
    assert [(r["source"], r["amount_cents"]) for r in now["refunds_due"]] == [("credit", 500)]


@pytest.fixture
def broker_parts(tmp_path: Path, kafka: Any) -> Iterator[Parts]:
    from tests.helpers import kafka_settings

    started = Parts(kafka_settings(tmp_path, kafka.bootstrap, kafka.kind))
    try:
        yield started
    finally:
        started.stop_all()


@pytest.mark.kafka
def test_billing_learns_of_counter_payments_through_the_broker(broker_parts: Parts) -> None:
    from tests.helpers import wait_for

    parts = broker_parts
    billing, payment = issued(parts.settings, terms("K-1", unit=2500), terms("K-2", unit=1500))
    deliver(payment, wire_messages(billing))
    cheque_terms = CounterTerms(regie="SPORTS", family_id="fam-1", means="cheque",
                                amount_cents=3000, reference="42", received_on=date(2025, 3, 3),
                                invoice_ids=None)
    payment.receive_at_counter(cheque_terms, by="cashier")

    def due() -> list[int]:
        return [billing.get_invoice(Invoice.create_id("SPORTS", n)).amount_due_cents
                for n in ("K-1", "K-2")]

    parts.start("relay")
    parts.start("consumer")
    wait_for(lambda: due() == [0, 1000], what="billing to apply the counter payment")
    assert billing.get_invoice(Invoice.create_id("SPORTS", "K-1")).status == PAID
