"""Payment requests and their PayFiP outcomes, on the fake gateway, on every store."""

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from services.bootstrap import payment_app
from services.common.errors import Conflict, DomainError, NotFound, Unavailable
from services.common.settings import Settings
from services.payment import domain
from services.payment.application import PaymentApp
from services.payment.gateway import FakeGateway, GatewayError
from services.payment.integration import make_to_wire
from services.payment.web import create_app
from tests.factories import decoded, deliver, relay_messages, wire_messages
from tests.helpers import NOW, URLS, Clock, decided, iid, request, setup


def reasons(payment: PaymentApp, family: str = "fam-1") -> dict[str, Any]:
    payment.refresh()
    lines = payment.to_pay_lines(family, "SPORTS", NOW.date())
    return {line["number"]: line["reason"] for line in lines}


def test_a_payment_reserves_its_invoices_and_asks_payfip(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1", "S-2")
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
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    again = request(payment, "S-1", "S-2")
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
        request(payment, *numbers, regie=kwargs.get("regie", "SPORTS"))
    assert getattr(refused.value, "field", None) == field
    assert payment.recorder.max_notification_id() == before


def test_two_regies_and_duplicates_are_refused(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    before = payment.recorder.max_notification_id()
    with pytest.raises(DomainError, match="belongs to régie CANTINE"):
        payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("C-1", "CANTINE")],
                                "parent@example.org")
    with pytest.raises(DomainError, match="twice"):
        payment.request_payment("fam-1", "SPORTS", [iid("S-1"), iid("S-1")],
                                "parent@example.org")
    assert payment.recorder.max_notification_id() == before


def test_an_invoice_in_flight_or_paid_cannot_be_paid_again(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1")
    with pytest.raises(Conflict, match="payment_in_progress"):
        request(payment, "S-1", "S-2")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    with pytest.raises(Conflict, match="paid"):
        request(payment, "S-1")


def test_payfip_refusing_leaves_nothing_half_made(any_store_settings: Settings) -> None:
    gateway = FakeGateway(fail_create=GatewayError("unreachable", "timeout"))
    _, payment = setup(any_store_settings, gateway)
    with pytest.raises(Unavailable):
        request(payment, "S-1")
    assert reasons(payment)["S-1"] is None  # payable again
    gateway.fail_create = GatewayError("A2", "Adresse mel incorrecte")
    with pytest.raises(DomainError) as refused:
        request(payment, "S-1")
    assert refused.value.field == "email"
    gateway.fail_create = None
    assert request(payment, "S-1").status == domain.REQUESTED


@pytest.mark.parametrize(
    ("resultrans", "status", "paid"),
    [("P", domain.CONFIRMED, True), ("V", domain.CONFIRMED, True),
     ("R", domain.REFUSED, False), ("Z", domain.REFUSED, False),
     ("A", domain.ABANDONED, False)],
)
def test_each_payfip_outcome(any_store_settings: Settings, resultrans: str, status: str,
                             paid: bool) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1", "S-2")
    idop = p.idop
    assert idop is not None
    assert payment.settle_from_payfip(idop).status == domain.REQUESTED  # type: ignore[union-attr]
    gateway.decide(idop, resultrans)
    settled = payment.settle_from_payfip(idop)
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
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = decided(payment, gateway, "P", "S-1")
    events = payment.recorder.max_notification_id()
    for _ in range(5):  # the notification five times, then the browser return
        assert payment.settle_from_payfip(p.idop).status == domain.CONFIRMED  # type: ignore[arg-type, union-attr]
    assert payment.recorder.max_notification_id() == events


def test_notification_racing_the_browser_return(store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(store_settings, gateway)
    p = request(payment, "S-1", "S-2")
    gateway.decide(p.idop, "V")  # type: ignore[arg-type]
    apps = [payment_app(store_settings, gateway=gateway, clock=lambda: NOW) for _ in range(4)]
    barrier = threading.Barrier(len(apps))

    def settle(app: PaymentApp) -> None:
        barrier.wait()
        app.settle_from_payfip(p.idop)  # type: ignore[arg-type]

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


def test_two_clocks_reservation_then_watch(any_store_settings: Settings) -> None:
    """The invoices are freed after the reservation; PayFiP is asked until its P5 has lasted
    the pending time (eopayment's 120 minutes), and only then is the payment expired."""
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    p = request(payment, "S-1")
    idop = p.idop
    assert idop is not None
    start = datetime.now(UTC)
    clock.now = start + timedelta(minutes=5)
    later = payment.settle_from_payfip(idop)
    assert later is not None and later.status == domain.REQUESTED
    assert later.reserved_until(payment.watch) == later.created_on + timedelta(minutes=20)
    assert reasons(payment)["S-1"] == "payment_in_progress"
    # Past the reservation: the family may pay again, PayFiP is still asked.
    clock.now = start + timedelta(minutes=25)
    freed = payment.settle_from_payfip(idop)
    assert freed is not None and freed.status == domain.REQUESTED
    assert freed.reserved_until(payment.watch) is None
    assert reasons(payment)["S-1"] is None
    payment.refresh()
    assert [w["id"] for w in payment.to_pay.watched_payments()] == [str(p.id)]
    clock.now = start + timedelta(minutes=119)
    still = payment.settle_from_payfip(idop)
    assert still is not None and still.status == domain.REQUESTED
    clock.now = start + timedelta(minutes=121)
    gone = payment.settle_from_payfip(idop)
    assert gone is not None and gone.status == domain.EXPIRED
    assert reasons(payment)["S-1"] is None
    # P1 (purged overnight) also means expired, at once.
    clock.now = NOW
    q = request(payment, "S-1")
    gateway.purged.add(q.idop)  # type: ignore[arg-type]
    assert payment.settle_from_payfip(q.idop).status == domain.EXPIRED  # type: ignore[arg-type, union-attr]


def test_the_clocks_come_from_the_settings(tmp_path: Any, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.setenv("PAYFIP_RESERVATION_MINUTES", "0.05")
    monkeypatch.setenv("PAYFIP_PENDING_MINUTES", "0.5")
    app = payment_app(Settings(var_dir=tmp_path, persistence="eventsourcing.popo"))
    assert app.watch == domain.Watch(timedelta(seconds=3), timedelta(seconds=30))
    assert app.watch.abandon_grace == timedelta(seconds=30)  # never beyond the watch
    assert domain.Watch().abandon_grace == timedelta(minutes=2)


def confirmations(payment: PaymentApp) -> list[Any]:
    """What the payment relay publishes of confirmations and refunds."""
    messages = relay_messages(payment, make_to_wire(payment, "payment.payments"))
    return [m for m in decoded(messages) if m.name in ("PaymentConfirmed", "RefundNeeded")]


def test_a_late_confirmation_is_recorded_and_refunds_what_was_paid_again(
    any_store_settings: Settings,
) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    start = datetime.now(UTC)
    first = request(payment, "S-1", "S-2")
    # Past the reservation, the reconciler frees the invoices; the family pays S-1 again.
    clock.now = start + timedelta(minutes=25)
    payment.reconcile()
    assert reasons(payment) == {"S-1": None, "S-2": None, "S-4": None}
    clock.now = NOW
    second = request(payment, "S-1")
    gateway.decide(second.idop, "P")  # type: ignore[arg-type]
    assert payment.settle_from_payfip(second.idop).status == domain.CONFIRMED  # type: ignore[arg-type, union-attr]
    # PayFiP confirms the first one at last: recorded, S-2 paid by it, S-1 refunded.
    gateway.decide(first.idop, "P")  # type: ignore[arg-type]
    clock.now = start + timedelta(minutes=40)
    assert payment.reconcile() == 1
    late = payment.get_payment(first.id)
    assert (late.status, late.late) == (domain.CONFIRMED, True)
    assert [a["number"] for a in late.allocations] == ["S-2"]
    assert late.refunds == [{"invoice_id": iid("S-1"), "number": "S-1", "amount_cents": 2500,
                             "reason": "paid"}]
    assert reasons(payment) == {"S-4": None}
    on_wire = confirmations(payment)
    assert [(m.name, m.data.get("late")) for m in on_wire] == [
        ("PaymentConfirmed", False), ("PaymentConfirmed", True), ("RefundNeeded", None)]
    assert on_wire[1].version == 2 and on_wire[1].data["received_at"] is not None
    assert on_wire[2].data["refunds"][0]["reason"] == "paid"


def test_a_confirmation_after_the_payment_expired_is_recorded(any_store_settings: Settings
                                                              ) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    p = request(payment, "S-1")
    much_later = datetime.now(UTC) + timedelta(minutes=121)
    clock.now = much_later
    assert payment.settle_from_payfip(p.idop).status == domain.EXPIRED  # type: ignore[arg-type, union-attr]
    gateway.decide(p.idop, "V")  # type: ignore[arg-type]
    # PayFiP's notification comes after all: the money is taken, so it is recorded.
    clock.now = much_later
    confirmed = payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert confirmed is not None and (confirmed.status, confirmed.late) == (domain.CONFIRMED,
                                                                            True)
    assert confirmed.refunds == [] and reasons(payment) == {"S-2": None, "S-4": None}


def test_an_abandon_is_final_only_after_two_minutes(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    p = request(payment, "S-1")
    at = datetime.now(UTC)
    gateway.decide(p.idop, "A", at=at)  # type: ignore[arg-type]
    clock.now = at + timedelta(seconds=30)
    waiting = payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert waiting is not None and waiting.status == domain.REQUESTED
    assert reasons(payment)["S-1"] is None  # the family may try again at once
    gateway.decide(p.idop, "P", at=at)  # type: ignore[arg-type]
    clock.now = at + timedelta(minutes=1)
    paid = payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert paid is not None and (paid.status, paid.late) == (domain.CONFIRMED, True)
    clock.now = NOW
    q = request(payment, "S-2")
    gateway.decide(q.idop, "A", at=at)  # type: ignore[arg-type]
    clock.now = at + timedelta(minutes=4)
    assert payment.settle_from_payfip(q.idop).status == (  # type: ignore[arg-type, union-attr]
        domain.ABANDONED)


def test_a_forged_idop_changes_nothing(any_store_settings: Settings) -> None:
    _, payment = setup(any_store_settings)
    before = payment.recorder.max_notification_id()
    assert payment.settle_from_payfip("00000000-0000-0000-0000-000000000000") is None
    assert payment.settle_from_payfip("not even a uuid") is None
    assert payment.recorder.max_notification_id() == before


def test_paid_after_the_invoice_was_cancelled_needs_a_refund(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    billing, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1", "S-2")
    billing.cancel_invoice(UUID(iid("S-2")), "erreur de tarif")
    deliver(payment, wire_messages(billing))
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    settled = payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert settled is not None and settled.status == domain.CONFIRMED
    assert [a["number"] for a in settled.allocations] == ["S-1"]
    assert settled.refunds == [{"invoice_id": iid("S-2"), "number": "S-2",
                                "amount_cents": 1250, "reason": "cancelled"}]


def test_twenty_concurrent_requests_for_one_invoice(store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(store_settings, gateway)
    app = create_app(payment=payment, tokens={"r": "payer"})
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
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
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

    app = create_app(payment=payment, tokens={"a": "auditor", "r": "reader"}).test_client()
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
        from services.common.storage.chain import day_root

        assert payment.journal("SPORTS", datetime.now(UTC).astimezone(domain_paris()).date(
            ))["chain_root"] == day_root(payment, "9999-12-31")
        assert len(day_root(payment, "9999-12-31") or "") == 64
        assert as_json["chain_root"] is None  # nothing was recorded by 26/02/2025
        # The day's head, as verify --heads takes it from a line of a JSONL file.
        import json

        from services.common.messaging.heads import from_record
        from services.common.storage.chain import head

        today_journal = payment.journal("SPORTS", datetime.now(UTC).astimezone(
            domain_paris()).date())
        assert from_record(json.dumps(today_journal["chain_head"])) == head(payment, "payment")
        assert as_json["chain_head"] is None
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
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    paid = request(payment, "S-1")
    waiting = request(payment, "S-2")
    gone = request(payment, "C-1", regie="CANTINE")
    gateway.decide(paid.idop, "P")  # type: ignore[arg-type]
    gateway.purged.add(gone.idop)  # type: ignore[arg-type]
    payment.refresh()
    assert payment.reconcile() == 2
    assert payment.get_payment(paid.id).status == domain.CONFIRMED
    assert payment.get_payment(waiting.id).status == domain.REQUESTED
    assert payment.get_payment(gone.id).status == domain.EXPIRED
    payment.refresh()
    assert [p["id"] for p in payment.to_pay.watched_payments()] == [str(waiting.id)]
    assert payment.reconcile() == 0


def test_every_payfip_answer_is_kept(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1")
    before = payment.recorder.max_notification_id()
    assert payment.settle_from_payfip(p.idop).status == domain.REQUESTED  # type: ignore[arg-type, union-attr]
    gateway.unreachable = True
    assert payment.settle_from_payfip(p.idop).status == domain.REQUESTED  # type: ignore[arg-type, union-attr]
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

    def change_then_race(message: Any, seen: Any = None) -> Any:
        aggregate = real_change(message, seen)
        if not calls:  # the family starts paying between our read and our write
            request(payment, "S-1")
        calls.append(1)
        return aggregate

    payment._billing_change = change_then_race  # type: ignore[method-assign]
    assert deliver(payment, cancel) == 1
    assert len(calls) == 2  # the first write lost the race and was made again
    invoice = payment._get(UUID(iid("S-1")))
    assert invoice.status == domain.CANCELLED
    assert deliver(payment, cancel) == 0  # and it is now tracked as applied


def test_a_payment_stuck_before_its_idop_was_recorded_is_closed(any_store_settings: Settings
                                                                ) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    real_save = payment.save
    saves: list[int] = []

    def second_save_fails(*aggregates: Any) -> Any:
        saves.append(1)
        if len(saves) == 2:  # the one after PayFiP gave the idop
            raise RuntimeError("database gone")
        return real_save(*aggregates)

    payment.save = second_save_fails  # type: ignore[method-assign, assignment]
    with pytest.raises(RuntimeError):
        request(payment, "S-1")
    payment.save = real_save  # type: ignore[method-assign]
    assert reasons(payment)["S-1"] == "payment_in_progress"
    start = datetime.now(UTC)
    clock.now = start + timedelta(minutes=5)
    assert payment.reconcile() == 0  # still reserved
    assert reasons(payment)["S-1"] == "payment_in_progress"
    clock.now = start + timedelta(minutes=21)
    assert payment.reconcile() == 1
    payment.refresh()
    stuck = payment.to_pay.snapshot()["payments"]
    assert [(p["status"]) for p in stuck.values()] == [domain.FAILED]
    assert payment.get_payment(UUID(next(iter(stuck)))).failure.startswith("stuck")  # type: ignore[union-attr]
    assert reasons(payment)["S-1"] is None
    assert payment.stuck_closed == 1
    assert payment.to_pay.watched_payments() == []


def test_one_bad_answer_does_not_stop_the_reconciler(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    broken = request(payment, "S-1")
    failing = request(payment, "S-2")
    fine = request(payment, "C-1", regie="CANTINE")
    for p in (broken, failing, fine):
        gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    gateway.tampered[broken.idop] = {"dattrans": ""}  # type: ignore[index]
    real_get = payment.get_payment

    def database_error(payment_id: UUID) -> domain.Payment:
        if payment_id == failing.id:
            raise ConnectionError("server closed the connection unexpectedly")
        return real_get(payment_id)

    payment.get_payment = database_error  # type: ignore[method-assign]
    assert payment.reconcile() == 1
    assert payment.watch_errors == 2
    payment.get_payment = real_get  # type: ignore[method-assign]
    assert payment.get_payment(fine.id).status == domain.CONFIRMED
    assert payment.get_payment(broken.id).status == domain.REQUESTED
    # The next pass tries the others again.
    assert payment.reconcile() == 1
    assert payment.get_payment(failing.id).status == domain.CONFIRMED


@pytest.mark.parametrize("field", ["montant", "refdet", "numcli", "exer"])
def test_an_answer_for_another_order_pays_nothing(any_store_settings: Settings, field: str
                                                  ) -> None:
    gateway = FakeGateway()
    _, payment = setup(any_store_settings, gateway)
    p = request(payment, "S-1")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    gateway.tampered[p.idop] = {field: "100" if field == "montant" else "OTHER1"}  # type: ignore[index]
    before = recorded(payment)
    for _ in range(3):  # notification, return, reconciler: one anomaly recorded
        got = payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
        assert got is not None and got.status == domain.REQUESTED
    assert recorded(payment) == before + 1
    assert reasons(payment)["S-1"] == "payment_in_progress"
    payment.refresh()
    assert [w["id"] for w in payment.to_pay.watched_payments()] == [str(p.id)]
    [anomaly] = payment.anomalies()
    assert anomaly["payment_id"] == str(p.id) and anomaly["fields"] == [field]
    assert anomaly["answer"]["resultrans"] == "P"
    assert anomaly["expected"]["montant"] == "2500"
    # PayFiP corrects its answer: the payment is confirmed then.
    del gateway.tampered[p.idop]  # type: ignore[arg-type]
    assert payment.settle_from_payfip(p.idop).status == domain.CONFIRMED  # type: ignore[arg-type, union-attr]


def recorded(payment: PaymentApp) -> int:
    return payment.recorder.max_notification_id() or 0


def test_notifications_cannot_grow_the_history(any_store_settings: Settings) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    p = request(payment, "S-1")
    client = create_app(payment=payment, tokens={"r": "reader"}).test_client()
    before = recorded(payment)
    for i in range(200):
        clock.now = NOW + timedelta(seconds=i / 10)  # 200 posts in 20 seconds
        assert client.post("/payfip/notification", data={"idop": p.idop}).status_code == 200
    back = client.get(f"/payfip/return?idop={p.idop}")
    assert back.status_code == 200 and back.get_json()["status"] == "requested"
    assert gateway.lookups <= 5  # one read-back per idop every 5 seconds
    assert recorded(payment) - before == 1  # P5 recorded once
    # The same answers from the reconciler add nothing either.
    clock.now = NOW + timedelta(minutes=1)
    payment.reconcile()
    assert recorded(payment) - before == 1
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    clock.now = NOW + timedelta(minutes=2)
    assert client.post("/payfip/notification", data={"idop": p.idop}).status_code == 200
    assert payment.get_payment(p.id).status == domain.CONFIRMED


def test_the_payment_says_until_when_its_invoices_are_reserved(any_store_settings: Settings
                                                               ) -> None:
    gateway = FakeGateway()
    clock = Clock()
    _, payment = setup(any_store_settings, gateway, clock)
    client = create_app(payment=payment, tokens={"r": "reader"},
                        today=lambda: NOW.date()).test_client()
    auth = {"Authorization": "Bearer r"}
    p = request(payment, "S-1")
    body = client.get(f"/payments/{p.id}", headers=auth).get_json()
    assert datetime.fromisoformat(body["reserved_until"]) == p.created_on + timedelta(minutes=20)
    assert body["late"] is False
    lines = client.get("/families/fam-1/to-pay/SPORTS", headers=auth).get_json()["invoices"]
    assert {x["number"]: x["payment_id"] for x in lines} == {"S-1": str(p.id), "S-2": None,
                                                              "S-4": None}
    clock.now = datetime.now(UTC) + timedelta(minutes=21)
    payment.reconcile()
    body = client.get(f"/payments/{p.id}", headers=auth).get_json()
    assert (body["status"], body["reserved_until"]) == ("requested", None)
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    clock.now = datetime.now(UTC) + timedelta(minutes=22)
    payment.reconcile()
    body = client.get(f"/payments/{p.id}", headers=auth).get_json()
    assert (body["status"], body["late"]) == ("confirmed", True)


def test_regie_anomalies_lists_the_answers_that_did_not_match(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import cli

    monkeypatch.setenv("REGIE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    gateway = FakeGateway()
    _, payment = setup(Settings(), gateway)
    assert cli.main(["anomalies"]) == 0
    assert capsys.readouterr().out == "no anomalies\n"
    p = request(payment, "S-1")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    gateway.tampered[p.idop] = {"montant": "100"}  # type: ignore[index]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    assert cli.main(["anomalies"]) == 0
    line = capsys.readouterr().out
    assert f"payment {p.id} SPORTS idop {p.idop} requested: montant='100' (asked '2500')" in line
    assert cli.main(["anomalies", "--format", "json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["answer"]["montant"] == "100" and listed["fields"] == ["montant"]


def test_an_invoice_whose_reservation_is_over_can_be_paid_before_the_reconciler_passes(
    any_store_settings: Settings,
) -> None:
    clock = Clock()
    _, payment = setup(any_store_settings, clock=clock)
    first = request(payment, "S-1", "S-2")
    clock.now = datetime.now(UTC) + timedelta(minutes=10)
    with pytest.raises(Conflict, match="payment_in_progress"):
        request(payment, "S-1")
    clock.now = datetime.now(UTC) + timedelta(minutes=21)
    second = request(payment, "S-1")
    assert second.status == domain.REQUESTED
    held = payment.get_payment(first.id)
    assert (held.status, held.reserved_until(payment.watch)) == (domain.REQUESTED, None)
    assert reasons(payment) == {"S-1": "payment_in_progress", "S-2": None, "S-4": None}
