"""A consumed message that cannot be read is parked, never skipped, and its aggregate's
later messages wait behind it until an operator retries them."""

import json
from dataclasses import replace

from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.consumer import handle_record
from services.common.deadletters import DeadLetter
from services.common.settings import Settings
from tests.factories import open_regies, terms, wire_messages

GARBAGE = b"{not an event"


def invoice_id(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def as_version(value: bytes, version: int) -> bytes:
    """The same message as a producer speaking a newer schema version would send it."""
    message = json.loads(value)
    name = message["type"].rsplit(".", 1)[0]
    message["type"] = f"{name}.v{version}"
    return json.dumps(message).encode()


def letter(offset: int, subject: str | None = None, nid: int | None = None,
           partition: int = 0, topic: str = "billing.invoices") -> DeadLetter:
    return DeadLetter(topic, partition, offset, b"fam-\xff", b"\x00raw\xff" + bytes([offset]),
                      f"error {offset}", subject=subject, notification_id=nid)


def test_the_dead_letter_store(any_store_settings: Settings) -> None:
    app = payment_app(any_store_settings)
    parked = app.dead_letters
    assert parked.park(letter(5, "inv-1", 10))
    assert parked.park(letter(3, None, None, partition=1))  # bytes with no envelope
    assert parked.park(letter(9, "inv-1", 12))
    assert parked.park(letter(7, "inv-2", 11, topic="other"))
    # Redelivered at the same place, or republished elsewhere on the topic: kept once.
    assert not parked.park(replace(letter(5, "inv-1", 10), error="again"))
    assert not parked.park(letter(40, "inv-1", 10, partition=2))
    assert parked.count() == 4

    if not app.in_memory():  # what a restarted service finds in its database
        app = payment_app(any_store_settings)
        parked = app.dead_letters
    letters = parked.all()
    assert [(x.topic, x.partition, x.offset) for x in letters] == [
        ("billing.invoices", 0, 5), ("billing.invoices", 1, 3), ("billing.invoices", 0, 9),
        ("other", 0, 7)]
    first = letters[0]
    assert (first.key, first.value, first.error, first.subject, first.notification_id) == (
        b"fam-\xff", b"\x00raw\xff\x05", "error 5", "inv-1", 10)
    assert first.first_seen is not None and first.first_seen.tzinfo is not None
    assert parked.held_subjects("billing.invoices") == {"inv-1": 10}

    parked.set_error(first, "still unknown")
    parked.remove(letters[1])
    assert [(x.offset, x.error) for x in parked.all()] == [
        (5, "still unknown"), (9, "error 9"), (7, "error 7")]
    assert parked.count() == 3


def test_only_later_messages_of_a_parked_invoice_wait_behind_it(
    any_store_settings: Settings,
) -> None:
    billing = billing_app(any_store_settings)
    payment = payment_app(any_store_settings)
    open_regies(billing)
    billing.issue_invoice(terms("A-1", family="fam-a"))
    billing.issue_invoice(terms("B-1", family="fam-a"))
    billing.cancel_invoice(Invoice.create_id("SPORTS", "A-1"), "doublon")
    billing.cancel_invoice(Invoice.create_id("SPORTS", "B-1"), "doublon")
    messages = [value for _, value in wire_messages(billing)]
    # régies, A issued, B issued, A cancelled, B cancelled
    assert len(messages) == 6
    topic = "billing.invoices"

    def feed(offset: int, value: bytes) -> bool:
        return handle_record(topic, 0, value, payment.apply_billing_event,
                             payment.dead_letters, offset, b"fam-a")

    for offset, value in enumerate(messages[:4]):
        assert feed(offset, value)
    # B's cancellation arrives as a version this code does not know yet: parked, though
    # the invoice's earlier events were applied, and nothing of A waits behind it.
    assert not feed(5, as_version(messages[5], 7))
    assert feed(4, messages[4])  # A's cancellation (offsets need not be in order here)
    payment.refresh()
    statuses = {k: v["status"] for k, v in payment.to_pay.snapshot()["invoices"].items()}
    assert statuses == {invoice_id("A-1"): "cancelled", invoice_id("B-1"): "open"}
    # An earlier event of B read again (the topic re-read from the start) is not held.
    assert not feed(3, messages[3])
    assert [(x.offset, x.subject) for x in payment.dead_letters.all()] == [
        (5, invoice_id("B-1"))]
