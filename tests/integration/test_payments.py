"""Payment requests and their PayFiP outcomes, on the fake gateway, on every store."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.bootstrap import payment_app
from services.common.errors import Conflict, DomainError, NotFound, Unavailable
from services.common.settings import Settings
from services.payment import domain
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.gateway import FakeGateway, GatewayError
from services.payment.web import create_app
from tests.factories import deliver, issued, terms, wire_messages

NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")


def iid(number: str, regie: str = "SPORTS") -> str:
    return str(Invoice.create_id(regie, number))


def setup(settings: Settings) -> tuple[BillingApp, PaymentApp]:
    billing, payment = issued(
        settings,
        terms("S-1", family="fam-1", unit=2500),
        terms("S-2", family="fam-1", unit=1250),
        terms("S-3", family="fam-2", unit=4000),
        terms("S-4", family="fam-1", unit=50),
        terms("S-5", family="fam-1", unit=700),
        terms("C-1", family="fam-1", regie="CANTINE", unit=1000),
    )
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-5"), "doublon")
    deliver(payment, wire_messages(billing))
    return billing, payment


def request(payment: PaymentApp, gateway: FakeGateway, *numbers: str, family: str = "fam-1",
            regie: str = "SPORTS", now: datetime = NOW) -> domain.Payment:
    return payment.request_payment(
        family_id=family, regie=regie, invoice_ids=[iid(n, regie) for n in numbers],
        email="parent@example.org", gateway=gateway, urls=URLS, now=now,
    )


def decided(payment: PaymentApp, gateway: FakeGateway, resultrans: str, *numbers: str,
            regie: str = "SPORTS") -> domain.Payment:
    """A payment requested, decided ``resultrans`` on PayFiP, and PayFiP's answer read."""
    p = request(payment, gateway, *numbers, regie=regie)
    gateway.decide(p.idop, resultrans)  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop, gateway, NOW)  # type: ignore[arg-type]
    return p


def reasons(payment: PaymentApp, family: str = "fam-1") -> dict[str, Any]:
    payment.refresh()
    lines = payment.to_pay_lines(family, "SPORTS", NOW.date())
    return {line["number"]: line["reason"] for line in lines}


def test_a_payment_reserves_its_invoices_and_asks_payfip(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1", "S-2")
    assert p.status == domain.REQUESTED
    assert p.amount_cents == 3750  # computed from what the invoices owe
    order = gateway.orders[p.idop]  # type: ignore[index]
    assert (order.numcli, order.saisie, order.exer, order.amount_cents) == ("000001", "T",
                                                                            "2025", 3750)
    assert order.urlnotif == URLS.notification
    assert 6 <= len(p.refdet) <= 30 and p.refdet.isalnum() and p.refdet.isupper()
    assert order.objet == "Factures S 1 S 2"
    assert payment.find_by_idop(p.idop).id == p.id  # type: ignore[arg-type, union-attr]
    assert reasons(payment) == {"S-1": "payment_in_progress", "S-2": "payment_in_progress",
                                "S-4": None}
    # A second attempt gets a fresh refdet.
    gateway.decide(p.idop, "A")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop, gateway, NOW)  # type: ignore[arg-type]
    again = request(payment, gateway, "S-1", "S-2")
    assert again.refdet != p.refdet


@pytest.mark.parametrize(
    ("numbers", "kwargs", "error", "field"),
    [
        (["S-3"], {}, NotFound, "invoice_ids"),  # another family's invoice
        (["S-1", "C-1"], {}, NotFound, "invoice_ids"),  # C-1 is not of the régie asked
        (["S-5"], {}, Conflict, "invoice_ids"),  # cancelled
        (["S-4"], {}, DomainError, "invoice_ids"),  # 0,50 €: under PayFiP's 1 €
        (["S-1"], {"regie": "PISCINE"}, DomainError, "regie"),
    ],
)
def test_payment_rules(any_store_settings: Settings, numbers: list[str], kwargs: dict[str, str],
                       error: type[Exception], field: str) -> None:
    _, payment = setup(any_store_settings)
    before = payment.recorder.max_notification_id()
    with pytest.raises(error) as refused:
        request(payment, FakeGateway(), *numbers, regie=kwargs.get("regie", "SPORTS"))
    assert getattr(refused.value, "field", None) == field
    assert payment.recorder.max_notification_id() == before


def test_two_regies_and_duplicates_are_refused(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    before = payment.recorder.max_notification_id()
    with pytest.raises(DomainError, match="belongs to régie CANTINE"):
        payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("C-1", "CANTINE")],
                                "parent@example.org", FakeGateway(), URLS, NOW)
    with pytest.raises(DomainError, match="twice"):
        payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("S-1")],
                                "parent@example.org", FakeGateway(), URLS, NOW)
    assert payment.recorder.max_notification_id() == before


def test_an_invoice_in_flight_or_paid_cannot_be_paid_again(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1")
    with pytest.raises(Conflict, match="payment_in_progress"):
        request(payment, gateway, "S-1", "S-2")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop, gateway, NOW)  # type: ignore[arg-type]
    with pytest.raises(Conflict, match="paid"):
        request(payment, gateway, "S-1")


def test_payfip_refusing_leaves_nothing_half_made(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway(fail_create=GatewayError("unreachable", "timeout"))
    with pytest.raises(Unavailable):
        request(payment, gateway, "S-1")
    assert reasons(payment)["S-1"] is None  # payable again
    gateway.fail_create = GatewayError("A2", "Adresse mel incorrecte")
    with pytest.raises(DomainError) as refused:
        request(payment, gateway, "S-1")
    assert refused.value.field == "email"
    gateway.fail_create = None
    assert request(payment, gateway, "S-1").status == domain.REQUESTED


@pytest.mark.parametrize(
    ("resultrans", "status", "paid"),
    [("P", domain.CONFIRMED, True), ("V", domain.CONFIRMED, True),
     ("R", domain.REFUSED, False), ("Z", domain.REFUSED, False),
     ("A", domain.ABANDONED, False)],
)
def test_each_payfip_outcome(any_store_settings: Settings, resultrans: str, status: str,
                             paid: bool) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1", "S-2")
    idop = p.idop
    assert idop is not None
    assert payment.settle_from_payfip(idop, gateway, NOW).status == domain.REQUESTED  # type: ignore[union-attr]
    gateway.decide(idop, resultrans)
    settled = payment.settle_from_payfip(idop, gateway, NOW)
    assert settled is not None and settled.status == status
    assert settled.resultrans == resultrans
    if paid:
        assert settled.numauto and settled.paid_at == "2025-02-26T14:30:00+01:00"
        assert [a["amount_cents"] for a in settled.allocations] == [2500, 1250]
        assert reasons(payment) == {"S-4": None}  # paid invoices left the list
        summary = {e["code"]: e["total_cents"] for e in payment.to_pay_summary("fam-1")}
        assert summary == {"SPORTS": 50, "CANTINE": 1000}
    else:
        assert reasons(payment) == {"S-1": None, "S-2": None, "S-4": None}


def test_outcomes_are_recorded_once(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = decided(payment, gateway, "P", "S-1")
    events = payment.recorder.max_notification_id()
    for _ in range(5):  # the notification five times, then the browser return
        assert payment.settle_from_payfip(p.idop, gateway, NOW).status == domain.CONFIRMED  # type: ignore[arg-type, union-attr]
    assert payment.recorder.max_notification_id() == events


def test_notification_racing_the_browser_return(store_settings: Settings) -> None:
    _, payment = setup(store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1", "S-2")
    gateway.decide(p.idop, "V")  # type: ignore[arg-type]
    apps = [payment_app(store_settings) for _ in range(4)]
    barrier = threading.Barrier(len(apps))

    def settle(app: PaymentApp) -> None:
        barrier.wait()
        app.settle_from_payfip(p.idop, gateway, NOW)  # type: ignore[arg-type]

    threads = [threading.Thread(target=settle, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    confirmed = [
        n for n in payment.recorder.select_notifications(0, 10_000, inclusive_of_start=False)
        if n.topic.endswith("Payment.Confirmed")
    ]
    assert len(confirmed) == 1
    assert payment.get_payment(p.id).status == domain.CONFIRMED


def test_pending_then_expired(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1")
    idop = p.idop
    assert idop is not None
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert payment.settle_from_payfip(idop, gateway, later).status == domain.REQUESTED  # type: ignore[union-attr]
    much_later = datetime.now(UTC) + timedelta(minutes=25)
    assert payment.settle_from_payfip(idop, gateway, much_later).status == domain.EXPIRED  # type: ignore[union-attr]
    assert reasons(payment)["S-1"] is None
    # P1 (purged overnight) also means expired.
    q = request(payment, gateway, "S-1")
    gateway.purged.add(q.idop)  # type: ignore[arg-type]
    assert payment.settle_from_payfip(q.idop, gateway, NOW).status == domain.EXPIRED  # type: ignore[arg-type, union-attr]


def test_a_forged_idop_changes_nothing(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    before = payment.recorder.max_notification_id()
    assert payment.settle_from_payfip("00000000-0000-0000-0000-000000000000",
                                      FakeGateway(), NOW) is None
    assert payment.settle_from_payfip("not even a uuid", FakeGateway(), NOW) is None
    assert payment.recorder.max_notification_id() == before


def test_paid_after_the_invoice_was_cancelled_needs_a_refund(any_store_settings: Settings) -> None:
    billing, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1", "S-2")
    billing.cancel_invoice(UUID(iid("S-2")), "erreur de tarif")
    deliver(payment, wire_messages(billing))
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    settled = payment.settle_from_payfip(p.idop, gateway, NOW)  # type: ignore[arg-type]
    assert settled is not None and settled.status == domain.CONFIRMED
    assert [a["number"] for a in settled.allocations] == ["S-1"]
    assert settled.refunds == [{"invoice_id": iid("S-2"), "number": "S-2",
                                "amount_cents": 1250, "reason": "cancelled"}]


def test_twenty_concurrent_requests_for_one_invoice(store_settings: Settings) -> None:
    _, payment = setup(store_settings)
    gateway = FakeGateway()
    app = create_app(payment=payment, tokens={"r": "reader"}, gateway=gateway, urls=URLS)
    barrier = threading.Barrier(20)
    codes: list[int] = []

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        r = client.post("/payments", headers={"Authorization": "Bearer r"}, json={
            "family_id": "fam-1", "regie": "SPORTS", "invoice_ids": [iid("S-1")],
            "email": "parent@example.org"})
        codes.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] + [409] * 19
    assert len(gateway.orders) == 1  # the losers never reached PayFiP


def test_history_and_journal(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    decided(payment, gateway, "P", "S-1")  # by card
    decided(payment, gateway, "V", "S-2")  # by direct debit
    decided(payment, gateway, "R", "C-1", regie="CANTINE")
    payment.refresh()

    history = {h["number"]: h for h in payment.history("fam-1")}
    assert set(history) == {"S-1", "S-2", "S-4", "S-5", "C-1"}
    assert (history["S-1"]["status"], history["S-1"]["paid_by"]) == ("paid", "card")
    assert history["S-2"]["paid_by"] == "direct_debit"
    assert history["S-2"]["paid_at"] == "2025-02-26T14:30:00+01:00"
    assert (history["S-5"]["status"], history["C-1"]["status"]) == ("cancelled", "open")
    assert history["S-1"]["regie_name"] == "Direction des sports"

    # The fake dates every payment 26/02/2025 14:30 in Paris.
    journal = payment.journal("SPORTS", datetime(2025, 2, 26).date())
    assert sorted(p["means"] for p in journal["payments"]) == ["card", "direct_debit"]
    assert journal["totals"] == {"count": 2, "amount_cents": 3750, "card_cents": 2500,
                                 "direct_debit_cents": 1250}
    assert payment.journal("SPORTS", datetime(2025, 2, 27).date())["payments"] == []
    cantine = payment.journal("CANTINE", datetime.now(UTC).astimezone(
        domain_paris()).date())
    assert [p["status"] for p in cantine["not_paid"]] == ["refused"]
    assert cantine["payments"] == []

    app = create_app(payment=payment, tokens={"a": "auditor", "r": "reader"},
                     gateway=gateway, urls=URLS).test_client()
    csv_body = app.get("/regies/SPORTS/journal?date=2025-02-26",
                       headers={"Authorization": "Bearer a", "Accept": "text/csv"})
    assert csv_body.status_code == 200 and csv_body.mimetype == "text/csv"
    lines = csv_body.get_data(as_text=True).splitlines()
    assert lines[0].startswith("paid_at,means,amount_cents")
    assert sorted(line.split(",")[1] + ":" + line.split(",")[2] for line in lines[1:]) == [
        "card:2500", "direct_debit:1250"]
    as_json = app.get("/regies/SPORTS/journal?date=2025-02-26",
                      headers={"Authorization": "Bearer a"}).get_json()
    assert as_json["totals"]["amount_cents"] == 3750
    if any_store_settings.persistence != "eventsourcing.popo":
        # The chain root of the day the events were recorded (today), none before.
        from services.common.chain import day_root

        assert payment.journal("SPORTS", datetime.now(UTC).astimezone(domain_paris()).date(
            ))["chain_root"] == day_root(payment, "9999-12-31")
        assert len(day_root(payment, "9999-12-31") or "") == 64
        assert as_json["chain_root"] is None  # nothing was recorded by 26/02/2025
    assert app.get("/regies/SPORTS/journal?date=26-02-2025",
                   headers={"Authorization": "Bearer a"}).status_code == 422
    assert app.get("/regies/SPORTS/journal?date=2025-02-26",
                   headers={"Authorization": "Bearer r"}).status_code == 403
    assert app.get("/regies/PISCINE/journal?date=2025-02-26",
                   headers={"Authorization": "Bearer a"}).status_code == 404
    body = app.get("/families/fam-1/history", headers={"Authorization": "Bearer r"}).get_json()
    invoices = {i["number"]: i for i in body["invoices"]}
    assert (invoices["S-1"]["status"], invoices["S-1"]["paid_by"]) == ("paid", "card")
    assert invoices["S-1"]["payment_id"] is None  # no payment in progress any more
    paying = app.get(f"/payments/{invoices['S-1']['paid_by_payment_id']}",
                     headers={"Authorization": "Bearer r"}).get_json()
    assert paying["status"] == "confirmed"
    assert [a["number"] for a in paying["allocations"]] == ["S-1"]
    assert invoices["C-1"]["paid_by_payment_id"] is None  # refused: still to pay


def domain_paris() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


def test_the_reconciler_settles_what_was_never_notified(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    paid = request(payment, gateway, "S-1")
    waiting = request(payment, gateway, "S-2")
    gone = request(payment, gateway, "C-1", regie="CANTINE")
    gateway.decide(paid.idop, "P")  # type: ignore[arg-type]
    gateway.purged.add(gone.idop)  # type: ignore[arg-type]
    payment.refresh()
    assert payment.reconcile(gateway, NOW) == 2
    assert payment.get_payment(paid.id).status == domain.CONFIRMED
    assert payment.get_payment(waiting.id).status == domain.REQUESTED
    assert payment.get_payment(gone.id).status == domain.EXPIRED
    payment.refresh()
    assert [p["id"] for p in payment.to_pay.pending_payments()] == [str(waiting.id)]
    assert payment.reconcile(gateway, NOW) == 0


def test_every_payfip_answer_is_kept(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    gateway = FakeGateway()
    p = request(payment, gateway, "S-1")
    before = payment.recorder.max_notification_id()
    assert payment.settle_from_payfip(p.idop, gateway, NOW).status == domain.REQUESTED  # type: ignore[arg-type, union-attr]
    gateway.unreachable = True
    assert payment.settle_from_payfip(p.idop, gateway, NOW).status == domain.REQUESTED  # type: ignore[arg-type, union-attr]
    answers = [
        payment.mapper.to_domain_event(n).answer  # type: ignore[attr-defined]
        for n in payment.recorder.select_notifications(before, 10, inclusive_of_start=False)
    ]
    assert [a["code"] for a in answers] == ["P5", "unreachable"]
    assert reasons(payment)["S-1"] == "payment_in_progress"


def test_a_cancellation_racing_a_payment_is_not_lost(store_settings: Settings) -> None:
    billing, payment = setup(store_settings)
    billing.cancel_invoice(UUID(iid("S-1")), "erreur")
    cancel = wire_messages(billing)[-1:]
    real_change = payment._billing_change
    calls: list[int] = []

    def change_then_race(message: Any) -> Any:
        aggregate = real_change(message)
        if not calls:  # the family starts paying between our read and our write
            request(payment, FakeGateway(), "S-1")
        calls.append(1)
        return aggregate

    payment._billing_change = change_then_race  # type: ignore[method-assign]
    assert deliver(payment, cancel) == 1
    assert len(calls) == 2  # the first write lost the race and was made again
    invoice = payment._get(UUID(iid("S-1")))
    assert invoice.status == domain.CANCELLED
    assert deliver(payment, cancel) == 0  # and it is now tracked as applied
