"""A poll of payment.payments applied by billing in one transaction, and what happens when
it fails: as the payment consumer's batches, each message goes in exactly once."""

import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from events import PAYMENT_PAYMENTS
from services.billing.application import BillingApp
from services.billing.domain import PAID, Invoice
from services.common.messaging.consumer import Intake
from services.common.messaging.ports import Record
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire
from tests.factories import deliver, issued, relay_messages, terms, wire_messages

PAYMENTS = PAYMENT_PAYMENTS.name
NUMBERS = [f"S-{i}" for i in range(8)]


def iid(number: str) -> UUID:
    return Invoice.create_id("SPORTS", number)


def paid(settings: Settings) -> tuple[BillingApp, list[tuple[int, bytes]]]:
    """Eight invoices of four families, each paid online (two payments refused first):
    billing and what the payment relay publishes."""
    gateway = FakeGateway()
    billing, payment = issued(settings, *(terms(n, family=f"fam-{i % 4}")
                                          for i, n in enumerate(NUMBERS)),
                              gateway=gateway, clock=lambda: datetime(2025, 3, 1, tzinfo=UTC))
    deliver(payment, wire_messages(billing))
    for i, number in enumerate(NUMBERS):
        for outcome in (["R", "P"] if i < 2 else ["P"]):
            pay(payment, gateway, outcome, number, f"fam-{i % 4}")
    return billing, relay_messages(payment, make_to_wire(payment, PAYMENTS))


def pay(payment: PaymentApp, gateway: FakeGateway, outcome: str, number: str,
        family: str) -> None:
    p = payment.request_payment(family, "SPORTS", [str(iid(number))], "parent@example.org")
    assert p.idop is not None
    gateway.decide(p.idop, outcome)
    payment.settle_from_payfip(p.idop)


def as_poll(messages: list[tuple[int, bytes]]) -> dict[int, list[Record]]:
    poll: dict[int, list[Record]] = {}
    for offset, (partition, value) in enumerate(messages):
        poll.setdefault(partition, []).append(Record(partition, offset, None, value))
    return poll


def intake(billing: BillingApp) -> Intake:
    return Intake(PAYMENTS, billing.apply_payment_event, billing.dead_letters,
                  billing.apply_payment_events)


def versions(billing: BillingApp) -> dict[str, int]:
    return {n: billing.get_invoice(iid(n)).version for n in NUMBERS}


def counted_commits(billing: BillingApp, fail_first: bool = False) -> list[int]:
    """Each recorded transaction's event count, noted as billing records it (a poll
    through ``_store_new``, a message alone through ``_record``)."""
    commits: list[int] = []

    def counting(record: Any) -> Any:
        def counted(processing: Any) -> Any:
            if fail_first and not commits:
                commits.append(-1)
                raise RuntimeError("the database went away")
            commits.append(len(processing.events))
            return record(processing)
        return counted

    billing._store_new = counting(billing._store_new)  # type: ignore[method-assign]
    billing._record = counting(billing._record)  # type: ignore[method-assign]
    return commits


def test_a_poll_of_payments_is_one_transaction(store_settings: Settings) -> None:
    billing, messages = paid(store_settings)
    commits = counted_commits(billing)
    assert intake(billing).records(as_poll(messages)) == len(messages)

    assert commits == [len(NUMBERS)]  # one transaction: each invoice's settlement in it
    for number in NUMBERS:
        assert billing.get_invoice(iid(number)).status == PAID
    # Delivered again, in a batch or one by one: nothing new.
    before = versions(billing)
    assert intake(billing).records(as_poll(messages)) == 0
    assert Intake(PAYMENTS, billing.apply_payment_event, billing.dead_letters).records(
        as_poll(messages)) == 0
    assert versions(billing) == before == dict.fromkeys(NUMBERS, 2)


def test_a_poll_that_fails_goes_in_message_by_message_each_once(
        store_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "services.common.messaging.consumer")
    billing, messages = paid(store_settings)
    half = len(messages) // 2
    # The first half goes in as one poll; then a poll of everything fails once.
    assert intake(billing).records(as_poll(messages[:half])) == half
    commits = counted_commits(billing, fail_first=True)
    assert intake(billing).records(as_poll(messages)) == len(messages) - half
    assert "applying it message by message" in caplog.text
    assert commits[0] == -1 and len(commits) == 1 + len(messages) - half
    assert versions(billing) == dict.fromkeys(NUMBERS, 2)
    for number in NUMBERS:
        assert billing.get_invoice(iid(number)).status == PAID
