"""Credit notes through billing's HTTP API, on SQLite and PostgreSQL, and what the payment
service makes of them: a lower amount due, or the family's credit paying its next invoice,
which billing then settles."""

from services.billing.domain import PAID, Invoice
from services.billing.web import create_app as billing_web
from services.common.settings import Settings
from services.payment.projections import MemoryToPayStore, catch_up
from services.payment.web import create_app as payment_web
from tests.factories import decoded, deliver, issued, terms, wire_messages
from tests.helpers import CASHIER, TOKENS, cheque, to_billing, to_pay

ISSUER = {"Authorization": "Bearer i"}


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def test_a_credit_note_lowers_what_is_due_then_pays_the_next_invoice(
        store_settings: Settings) -> None:
    billing, payment = issued(store_settings, terms("S-1", unit=2500),
                              terms("S-2", unit=1500))
    deliver(payment, wire_messages(billing))
    bills = billing_web(billing=billing, tokens={"i": "issuer", "r": "reader"}).test_client()
    pays = payment_web(payment, tokens=TOKENS).test_client()

    answer = bills.post(f"/invoices/{iid('S-1')}/credit-notes", headers=ISSUER,
                        json={"amount_cents": 1000, "reason": "séjour écourté"})
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert body is not None
    assert (body["credit_note"]["applied_cents"], body["credit_note"]["by"]) == (1000, "issuer")
    assert (body["invoice"]["amount_due_cents"], body["invoice"]["credit_notes"][0]["reason"]) \
        == (1500, "séjour écourté")
    credited = [m for m in decoded(wire_messages(billing)) if m.name == "InvoiceCredited"]
    assert [(m.key, m.data["applied_cents"], m.data["credit_cents"]) for m in credited] == [
        ("fam-1", 1000, 0)]
    deliver(payment, wire_messages(billing))
    assert to_pay(pays) == [("S-1", 1500), ("S-2", 1500)]

    # S-2 paid at the counter, then credited: that money is the family's credit…
    assert pays.post("/counter-payments", json=cheque(1500, invoice_ids=[iid("S-2")]),
                     headers=CASHIER).status_code == 201
    to_billing(billing, payment)
    deliver(payment, wire_messages(billing))
    bills.post(f"/invoices/{iid('S-2')}/credit-notes", headers=ISSUER,
               json={"amount_cents": 400, "reason": "repas non pris"})
    deliver(payment, wire_messages(billing))
    assert payment.to_pay.credits("fam-1") == [{"regie": "SPORTS", "balance_cents": 400}]

    # … which pays the family's next invoice of the régie by itself, and billing hears of it.
    billing.issue_invoice(terms("S-3", unit=1000))
    deliver(payment, wire_messages(billing))
    assert to_pay(pays) == [("S-1", 1500), ("S-3", 600)]
    assert payment.to_pay.credits("fam-1") == []
    to_billing(billing, payment)
    s3 = billing.get_invoice(Invoice.create_id("SPORTS", "S-3"))
    assert (s3.status, s3.amount_due_cents) == ("issued", 600)
    deliver(payment, wire_messages(billing))
    assert to_pay(pays) == [("S-1", 1500), ("S-3", 600)]

    rebuilt = MemoryToPayStore()
    catch_up(payment, rebuilt)
    assert rebuilt.snapshot() == payment.to_pay.snapshot()


def test_a_credit_note_for_all_that_is_due_closes_the_invoice(store_settings: Settings) -> None:
    billing, payment = issued(store_settings, terms("S-1", unit=2500))
    deliver(payment, wire_messages(billing))
    bills = billing_web(billing=billing, tokens={"i": "issuer"}).test_client()
    bills.post(f"/invoices/{iid('S-1')}/credit-notes", headers=ISSUER,
               json={"amount_cents": 2500, "reason": "séjour annulé"})
    assert billing.get_invoice(Invoice.create_id("SPORTS", "S-1")).status == PAID
    deliver(payment, wire_messages(billing))
    assert payment.to_pay.open_lines("fam-1") == []


def test_bad_credit_notes_say_which_field_and_change_nothing(store_settings: Settings) -> None:
    billing, _ = issued(store_settings, terms("S-1", unit=2500), terms("S-2", unit=2500))
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-2"), "doublon")
    bills = billing_web(billing=billing, tokens={"i": "issuer"}).test_client()
    before = billing.recorder.max_notification_id()
    cases = [
        (iid("S-1"), {"amount_cents": 2501, "reason": "trop"}, 422, "amount_cents"),
        (iid("S-1"), {"amount_cents": 0, "reason": "rien"}, 422, "amount_cents"),
        (iid("S-1"), {"amount_cents": 100}, 422, "reason"),
        (iid("S-2"), {"amount_cents": 100, "reason": "annulée"}, 409, "status"),
        (iid("S-9"), {"amount_cents": 100, "reason": "inconnue"}, 404, "id"),
    ]
    for invoice_id, payload, status, field in cases:
        answer = bills.post(f"/invoices/{invoice_id}/credit-notes", json=payload,
                            headers=ISSUER)
        assert answer.status_code == status, (payload, answer.json)
        errors = answer.json["errors"]  # type: ignore[index]
        assert field in errors.get("json", errors), (field, errors)
    assert billing.recorder.max_notification_id() == before


def test_what_was_paid_at_the_counter_on_an_invoice_billing_cancels_is_credit(
        store_settings: Settings) -> None:
    billing, payment = issued(store_settings, terms("S-1", unit=2500))
    deliver(payment, wire_messages(billing))
    pays = payment_web(payment, tokens=TOKENS).test_client()
    pays.post("/counter-payments", json=cheque(1000), headers=CASHIER)
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-1"), "doublon")
    deliver(payment, wire_messages(billing))
    assert payment.to_pay.credits("fam-1") == [{"regie": "SPORTS", "balance_cents": 1000}]
    assert to_pay(pays) == []
