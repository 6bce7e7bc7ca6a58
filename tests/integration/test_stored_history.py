"""Stores written by an earlier version still load, replay and verify.

tests/fixtures/stores/ keeps one SQLite store per service made by
tests/fixtures/make_stores.py, with every type of stored event of both services, and what
that version read from them. Renaming or re-declaring an event class must not change any
of it: the stored topics and states are the history, and the hash chain covers them.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from services import cli
from services.billing.integration import make_to_wire as billing_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.outbox import Outgoing
from services.common.messaging.ports import Ack
from services.common.messaging.positions import MemoryPositions
from services.common.messaging.relay import Relay
from services.payment.integration import make_to_wire as payment_to_wire
from tests.fixtures.make_stores import BILLING_TOPIC, HERE, PAYMENT_TOPIC, read, settings

EXPECTED = json.loads((HERE / "expected.json").read_text())

BILLING_TYPES = {"Regie.Opened", "Invoice.Issued", "Invoice.Cancelled", "Invoice.Transferred",
                 "Invoice.Settled", "Invoice.PaidAfterClose"}
PAYMENT_TYPES = {
    "Regie.Registered", "IdopIndex.Indexed",
    *(f"Invoice.{name}" for name in ("Registered", "Reserved", "Released", "Paid",
                                     "SettledUpstream", "Cancelled", "Transferred")),
    *(f"Payment.{name}" for name in ("Started", "Requested", "AnswerReceived",
                                     "AnswerMismatched", "ReservationEnded", "RequestFailed",
                                     "Confirmed", "Refused", "Abandoned", "Expired")),
}


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the kept stores, where `regie` finds them."""
    var = tmp_path / "var"
    var.mkdir()
    for name in ("billing.db", "payment.db"):
        shutil.copy(HERE / name, var / name)
    monkeypatch.setenv("REGIE_VAR_DIR", str(var))
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    return var


def test_the_kept_stores_hold_every_type_of_stored_event() -> None:
    assert {row["type"] for row in EXPECTED["billing"]["export"]} == BILLING_TYPES
    assert {row["type"] for row in EXPECTED["payment"]["export"]} == PAYMENT_TYPES
    assert any(json.loads(m)["data"].get("late") for m in EXPECTED["payment"]["messages"])
    assert EXPECTED["payment"]["anomalies"]


def test_they_verify(var_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"billing: {len(EXPECTED['billing']['export'])} events, chain intact",
        f"payment: {len(EXPECTED['payment']['export'])} events, chain intact",
    ]


def test_they_load_as_they_did(var_dir: Path) -> None:
    billing = billing_app(settings(var_dir))
    payment = payment_app(settings(var_dir))
    try:
        # Aggregates, export (stored topics and bytes), public messages, read models.
        seen: dict[str, Any] = {
            "billing": read(billing, "billing", billing_to_wire(billing, BILLING_TOPIC)),
            "payment": read(payment, "payment", payment_to_wire(payment, PAYMENT_TOPIC)),
        }
    finally:
        billing.close()
        payment.close()
    for service in ("billing", "payment"):
        for part, value in EXPECTED[service].items():
            if part == "read_models":
                value, seen[service][part] = value, kept_layout(seen[service][part], value)
            assert seen[service][part] == value, f"{service} {part}"


def kept_layout(now: dict[str, Any], then: dict[str, Any]) -> dict[str, Any]:
    """The read models as they are now, cut to the tables and columns they had then.

    Read models are rebuilt from the history whenever their layout changes, and may gain
    tables and columns; every one they had must still hold the same values.
    """
    cut: dict[str, Any] = {}
    for table, rows in then.items():
        if not isinstance(rows, dict) or not all(isinstance(r, dict) for r in rows.values()):
            cut[table] = now.get(table)
            continue
        cut[table] = {
            key: {column: row.get(column) for column in rows.get(key, row)}
            if isinstance(row, dict) else row
            for key, row in now.get(table, {}).items()
        }
    return cut


def test_they_replay_to_the_same_read_models(var_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "all", "--quiet"]) == 0
    assert f"rebuilt from {len(EXPECTED['payment']['export'])} events" in capsys.readouterr().out
    payment = payment_app(settings(var_dir))
    try:
        seen = read(payment, "payment", payment_to_wire(payment, PAYMENT_TOPIC))
    finally:
        payment.close()
    assert kept_layout(seen["read_models"], EXPECTED["payment"]["read_models"]) == (
        EXPECTED["payment"]["read_models"])
    assert seen["to_pay"] == EXPECTED["payment"]["to_pay"]


class Recorded(MemoryPublisher):
    """The in-memory broker, and every message in the order the relay sent it."""

    def __init__(self) -> None:
        super().__init__(partitions=6)
        self.sent: list[Outgoing] = []

    def publish(self, messages: list[Outgoing]) -> list[Ack]:
        self.sent.extend(messages)
        return super().publish(messages)


@pytest.mark.parametrize("service", ["billing", "payment"])
def test_the_relay_publishes_them_as_they_were_published(var_dir: Path, service: str) -> None:
    """The relay's pages (read at once, their keys in one query) give the kept messages
    byte for byte and in order, keyed (so partitioned) as each event read alone gives them."""
    app: Any = (billing_app if service == "billing" else payment_app)(settings(var_dir))
    try:
        make, topic = ((billing_to_wire, BILLING_TOPIC) if service == "billing"
                       else (payment_to_wire, PAYMENT_TOPIC))
        to_wire = make(app, topic)
        broker = Recorded()
        relay = Relay(app, to_wire, broker, MemoryPositions(), name=topic, batch_size=7)
        while relay.run_once():
            pass
        one_by_one = [m for n in app.recorder.select_notifications(
            0, 100_000, inclusive_of_start=False)
            for m in to_wire(app.mapper.to_domain_event(n), n.id)]
    finally:
        app.close()
    assert [m.value.decode() for m in broker.sent] == EXPECTED[service]["messages"]
    # Topic, key (which sets the partition) and bytes of each, in the same order.
    assert broker.sent == one_by_one
