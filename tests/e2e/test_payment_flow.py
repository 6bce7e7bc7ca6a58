"""Paying on PayFiP end to end: every part its own process, the simulator as PayFiP.

request → simulator page → notification → payment events on Kafka → billing settles →
to-pay, history and journal right to the cent.
"""

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from kafka import KafkaConsumer

from events import PAYMENT_PAYMENTS, decode
from tests.e2e.system import (
    CARD_OK,
    CARD_REFUSED,
    PAYER,
    READER,
    SIM_PARTS,
    TOKENS,
    SimSystem,
    issue,
    running,
    sim_system,
    wait_until,
)

pytestmark = pytest.mark.kafka

FAMILY = "famille-martin"
AUDITOR = "auditor-token"
IBAN_OK, IBAN_REFUSED = "FR76 3000 6000 0112 3456 7890 188", "FR76 3000 6000 0112 3456 7890 189"


@pytest.fixture
def system(tmp_path: Path, kafka: Any) -> Iterator[SimSystem]:
    s = sim_system(SimSystem, tmp_path, kafka, tokens=f"{TOKENS},{AUDITOR}:auditor")
    s.env.update(REGIE_RECONCILE_INTERVAL="0.5")
    with running(s, SIM_PARTS, s.sim):
        yield s


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def payable(s: SimSystem, invoice_id: str, regie: str = "SPORTS") -> bool:
    r = requests.get(f"{s.payment}/families/{FAMILY}/to-pay/{regie}", timeout=10,
                     headers=headers(READER))
    if r.status_code == 404:  # the régie itself has not reached the payment service yet
        return False
    r.raise_for_status()
    return any(line["id"] == invoice_id and line["payable"] for line in r.json()["invoices"])


def pay(s: SimSystem, invoice_ids: list[str], regie: str = "SPORTS") -> dict[str, Any]:
    r = requests.post(f"{s.payment}/payments", headers=headers(PAYER), timeout=30, json={
        "family_id": FAMILY, "regie": regie, "invoice_ids": invoice_ids,
        "email": "famille.martin@example.org"})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def browser(s: SimSystem, payment: dict[str, Any], outcome: str) -> requests.Response:
    """Act on the simulator's page as a family would; follow PayFiP's redirect back."""
    assert payment["redirect_url"].startswith(s.sim)
    page = requests.get(payment["redirect_url"], timeout=10)
    assert page.status_code == 200 and "Informations sur la dette" in page.text
    idop = payment["idop"]
    base = f"{s.sim}/tpa/paiementws.web"
    if outcome == "A":
        r = requests.post(base, data={"idop": idop, "choix": "annuler"}, timeout=10,
                          allow_redirects=False)
    elif outcome in "PR":
        r = requests.post(f"{base}/carte", timeout=10, allow_redirects=False, data={
            "idop": idop, "action": "valider", "expiration": "12/30", "cvv": "123",
            "numero": CARD_OK if outcome == "P" else CARD_REFUSED})
    else:
        r = requests.post(f"{base}/prelevement", timeout=10, allow_redirects=False, data={
            "idop": idop, "action": "valider", "titulaire": "Famille Martin",
            "iban": IBAN_OK if outcome == "V" else IBAN_REFUSED})
    assert r.status_code == 303, r.text
    back = r.headers["Location"]
    assert back.startswith(f"{s.payment}/payfip/return") and f"idop={idop}" in back
    return requests.get(back, timeout=30)


@pytest.mark.parametrize(("outcome", "status"), [
    ("P", "confirmed"), ("V", "confirmed"), ("R", "refused"), ("Z", "refused"),
    # PayFiP's A may still turn into a payment for 2 minutes: the invoice is freed at once,
    # the payment stays under watch.
    ("A", "requested"),
])
def test_each_outcome_end_to_end(system: SimSystem, outcome: str, status: str) -> None:
    s = system
    for code, name in (("SPORTS", "Direction des sports"), ("CANTINE", "Restauration scolaire")):
        assert s.post("/regies", {"code": code, "name": name, "numcli": "000123",
                                  "saisie": "T"}).status_code == 201
    sports = issue(s, FAMILY, "VAIC521041698401", 2500)
    canteen = issue(s, FAMILY, "RS-2025-02-0001", 1000, regie="CANTINE")
    wait_until(lambda: payable(s, sports), "the invoice to reach to-pay")

    payment = pay(s, [sports])
    assert payment["amount_cents"] == 2500 and payment["status"] == "requested"
    assert not payable(s, sports)  # in a payment now
    back = browser(s, payment, outcome)
    assert back.status_code == 200 and back.json()["status"] == status

    got = requests.get(f"{s.payment}/payments/{payment['id']}", headers=headers(READER),
                       timeout=10).json()
    assert got["status"] == status
    assert got["resultrans"] == (None if outcome == "A" else outcome)
    if status != "confirmed":
        assert got["reserved_until"] is None
        wait_until(lambda: payable(s, sports), "the invoice to be payable again")
        return

    assert got["numauto"] and got["paid_at"]
    # Billing hears of it through payment.payments and settles the invoice.
    def settled() -> Any:
        r = requests.get(f"{s.billing}/invoices/{sports}", headers=headers(READER), timeout=5)
        return r.json()["status"] == "paid" and r.json()
    invoice = wait_until(settled, "billing to settle the invoice")
    assert invoice["amount_due_cents"] == 0
    assert s.to_pay(FAMILY) == {"regies": [
        {"code": "CANTINE", "name": "Restauration scolaire", "count": 1, "total_cents": 1000}]}
    assert canteen
    history = requests.get(f"{s.payment}/families/{FAMILY}/history", headers=headers(READER),
                           timeout=5).json()["invoices"]
    paid = next(h for h in history if h["id"] == sports)
    assert paid["status"] == "paid"
    assert paid["paid_by"] == ("card" if outcome == "P" else "direct_debit")
    day = datetime.fromisoformat(got["paid_at"]).astimezone(ZoneInfo("Europe/Paris")).date()
    journal = requests.get(f"{s.payment}/regies/SPORTS/journal", params={"date": str(day)},
                           headers=headers(AUDITOR), timeout=5).json()
    assert journal["totals"]["amount_cents"] == 2500
    assert [p["id"] for p in journal["payments"]] == [payment["id"]]


def setup_invoice(s: SimSystem) -> str:
    assert s.post("/regies", {"code": "SPORTS", "name": "Direction des sports",
                              "numcli": "000123", "saisie": "T"}).status_code == 201
    sports = issue(s, FAMILY, "VAIC521041698401", 2500)
    wait_until(lambda: payable(s, sports), "the invoice to reach to-pay")
    return sports


def status_of(s: SimSystem, payment: dict[str, Any]) -> str:
    r = requests.get(f"{s.payment}/payments/{payment['id']}", headers=headers(READER), timeout=5)
    return str(r.json()["status"])


def test_a_lost_notification_is_settled_by_the_reconciler(system: SimSystem) -> None:
    s = system
    sports = setup_invoice(s)
    s.sim_config(notification="drop")
    payment = pay(s, [sports])
    r = requests.post(f"{s.sim}/_sim/payments/{payment['idop']}/outcome",
                      json={"resultrans": "P"}, timeout=10)
    assert r.ok, r.text
    # Neither the notification nor the browser came back: only polling can find out.
    assert status_of(s, payment) == "requested"
    s.start("reconciler")
    wait_until(lambda: status_of(s, payment) == "confirmed", "the reconciler")
    wait_until(lambda: requests.get(f"{s.billing}/invoices/{sports}", headers=headers(READER),
                                    timeout=5).json()["status"] == "paid", "billing to settle")


def test_duplicated_notifications_racing_the_return_record_one_outcome(system: SimSystem) -> None:
    s = system
    sports = setup_invoice(s)
    s.sim_config(notification="duplicate")
    payment = pay(s, [sports])
    back = browser(s, payment, "P")
    assert back.json()["status"] == "confirmed"
    for _ in range(3):  # and PayFiP insists
        r = requests.post(f"{s.payment}/payfip/notification", data={"idOp": payment["idop"]},
                          timeout=10)
        assert r.status_code == 200
    forged = requests.post(f"{s.payment}/payfip/notification",
                           data={"idop": str(uuid.uuid4())}, timeout=10)
    assert forged.status_code == 200
    invoice = wait_until(lambda: (r := requests.get(
        f"{s.billing}/invoices/{sports}", headers=headers(READER), timeout=5).json())["status"]
        == "paid" and r, "billing to settle")
    assert (invoice["amount_due_cents"], invoice["refund_due_cents"]) == (0, 0)
    got = requests.get(f"{s.payment}/payments/{payment['id']}", headers=headers(READER),
                       timeout=5).json()
    day = datetime.fromisoformat(got["paid_at"]).astimezone(ZoneInfo("Europe/Paris")).date()
    journal = requests.get(f"{s.payment}/regies/SPORTS/journal", params={"date": str(day)},
                           headers=headers(AUDITOR), timeout=5).json()
    assert journal["totals"] == {"count": 1, "amount_cents": 2500, "card_cents": 2500}


@pytest.fixture
def short_clocks(tmp_path: Path, kafka: Any) -> Iterator[SimSystem]:
    """The whole system with the reconciler, and both payment clocks in seconds."""
    s = sim_system(SimSystem, tmp_path, kafka, tokens=f"{TOKENS},{AUDITOR}:auditor")
    s.env.update(REGIE_RECONCILE_INTERVAL="0.5",
                 PAYFIP_RESERVATION_MINUTES="0.05",  # 3 s
                 PAYFIP_PENDING_MINUTES="0.15")  # 9 s of P5, then expired
    with running(s, (*SIM_PARTS, "reconciler"), s.sim):
        yield s


def payment_messages(s: SimSystem) -> list[Any]:
    consumer = KafkaConsumer(
        s.settings.topic(PAYMENT_PAYMENTS.name), bootstrap_servers=s.settings.kafka_bootstrap,
        auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        return [decode(record.value) for record in consumer]
    finally:
        consumer.close()


def test_a_late_confirmation_is_recorded_and_refunded(short_clocks: SimSystem) -> None:
    s = short_clocks
    sports = setup_invoice(s)
    # PayFiP takes the money but answers "in progress" to every read-back.
    s.sim_config(hold=True)
    first = pay(s, [sports])
    r = requests.post(f"{s.sim}/_sim/payments/{first['idop']}/outcome",
                      json={"resultrans": "P"}, timeout=10)
    assert r.ok, r.text
    # The reservation ends: the invoice may be paid again; the watch ends later, expired.
    wait_until(lambda: payable(s, sports), "the reservation to end")
    wait_until(lambda: status_of(s, first) == "expired", "the watch to end")
    s.sim_config(hold=False)
    second = pay(s, [sports])
    back = browser(s, second, "P")
    assert back.status_code == 200 and back.json()["status"] == "confirmed"
    # PayFiP's notification for the first payment comes at last (sent again, or delayed).
    assert requests.post(f"{s.payment}/payfip/notification", data={"idop": first["idop"]},
                         timeout=10).ok
    got = requests.get(f"{s.payment}/payments/{first['id']}", headers=headers(READER),
                       timeout=5).json()
    assert (got["status"], got["late"], got["allocations"]) == ("confirmed", True, [])
    assert [(x["invoice_id"], x["reason"]) for x in got["refunds"]] == [(sports, "paid")]

    def published() -> Any:
        messages = payment_messages(s)
        return len([m for m in messages if m.name == "PaymentConfirmed"]) == 2 and messages
    messages = wait_until(published, "both confirmations on payment.payments")
    late = [m for m in messages if m.name == "PaymentConfirmed" and m.data["late"]]
    assert [m.data["payment_id"] for m in late] == [first["id"]]
    refunds = [m for m in messages if m.name == "RefundNeeded"]
    assert len(refunds) == 1 and refunds[0].data["payment_id"] == first["id"]
    # Billing keeps the invoice paid once, by the second payment.
    def settled() -> Any:
        r = requests.get(f"{s.billing}/invoices/{sports}", headers=headers(READER), timeout=5)
        return r.json()["status"] == "paid" and r.json()
    assert wait_until(settled, "billing to settle the invoice")["amount_due_cents"] == 0


def test_the_logs_hold_no_email_name_or_token(system: SimSystem) -> None:
    """Every part's output over a paid and a refused payment: no e-mail address, no payer's
    name, no token."""
    s = system
    sports = setup_invoice(s)
    back = browser(s, pay(s, [sports]), "R")
    assert back.json()["status"] == "refused"
    wait_until(lambda: payable(s, sports), "the invoice to be payable again")
    back = browser(s, pay(s, [sports]), "V")
    assert back.json()["status"] == "confirmed"
    s.stop_all()
    logs = {p.name: p.read_text(errors="replace") for p in s.logs.glob("*.log")}
    assert logs and any(logs.values())
    secrets = ["famille.martin@example.org", "parent@example.org", "Famille Martin",
               *(pair.split(":")[0] for pair in s.env["REGIE_TOKENS"].split(","))]
    found = {(name, secret) for name, text in logs.items() for secret in secrets
             if secret in text}
    assert not found
