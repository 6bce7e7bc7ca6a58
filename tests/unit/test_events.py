"""The published event contract: golden messages, envelope checks."""

import json
from pathlib import Path
from typing import Any

import pytest

import events
from events import REGISTRY, EnvelopeError, decode, encode

EXAMPLES = Path(events.__file__).parent / "examples"
GOLDEN = sorted(EXAMPLES.glob("*/v*.json"))


def test_every_event_version_has_a_golden_example() -> None:
    have = {(p.parent.name, int(p.stem[1:])) for p in GOLDEN}
    want = {(t.name, v) for t in REGISTRY for v in t.versions}
    assert want <= have


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_message_round_trips(path: Path) -> None:
    raw = path.read_text()
    message = decode(raw, upcast=False)
    assert (message.name, message.version) == (path.parent.name, int(path.stem[1:]))
    again = encode(
        message.name, message.data, version=message.version, id=message.id,
        source=message.source, time=message.time, subject=message.subject, key=message.key,
        notification_id=message.notification_id, sequence=message.sequence,
    )
    assert json.loads(again) == json.loads(raw)


def test_every_type_is_announced_on_its_topic() -> None:
    for event_type in REGISTRY:
        assert event_type.name in events.TOPICS[event_type.topic].event_types


def _golden(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((EXAMPLES / name / "v1.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda m: m.update(specversion="0.3"), "specversion"),
        (lambda m: m.pop("id"), "id"),
        (lambda m: m.update(type="fr.regie.InvoiceEaten.v1"), "unknown event type"),
        (lambda m: m.update(type="fr.regie.InvoiceIssued.v9"), "no version 9"),
        (lambda m: m.update(type="InvoiceIssued"), "type"),
        (lambda m: m["data"].update(amount_cents="25.00"), "amount_cents"),
        (lambda m: m["data"].update(amount_cents=25.0), "amount_cents"),
        (lambda m: m["data"].pop("family_id"), "family_id"),
        (lambda m: m["data"].update(issued_on="26/02/2025"), "issued_on"),
        (lambda m: m.update(notificationid=0), "notificationid"),
        (lambda m: m.update(time="2025-02-26T09:30:00"), "time"),
    ],
)
def test_malformed_messages_are_refused(mutate: Any, why: str) -> None:
    message = _golden("InvoiceIssued")
    mutate(message)
    with pytest.raises(EnvelopeError, match=why):
        decode(json.dumps(message))


def test_not_json_is_refused() -> None:
    with pytest.raises(EnvelopeError):
        decode(b"\xff not json")
    with pytest.raises(EnvelopeError):
        decode("[1, 2]")


def test_encode_refuses_data_that_breaks_the_schema() -> None:
    data = decode(json.dumps(_golden("RegieOpened"))).data
    with pytest.raises(EnvelopeError, match="numcli"):
        encode("RegieOpened", {**data, "numcli": "12"}, id="x", source="/s",
               time=decode(json.dumps(_golden("RegieOpened"))).time, subject="s", key="k",
               notification_id=1, sequence=1)


def test_unknown_fields_are_tolerated_for_minor_versions() -> None:
    message = _golden("InvoiceCancelled")
    message["data"]["cancelled_by"] = "agent-12"
    message["futureattribute"] = "x"
    assert decode(json.dumps(message)).data["reason"] == "Facture émise en double"


@pytest.mark.parametrize(
    ("name", "mutate", "why"),
    [
        ("PaymentConfirmed", lambda d: d.update(resultrans="R"), "resultrans"),
        ("PaymentConfirmed", lambda d: d.update(paid_at="2025-02-26T14:30:00"), "paid_at"),
        ("PaymentConfirmed", lambda d: d.update(amount_cents=25.0), "amount_cents"),
        ("PaymentConfirmed", lambda d: d["allocations"][0].update(amount_cents="2500"),
         "amount_cents"),
        ("PaymentConfirmed", lambda d: d.pop("numauto"), "numauto"),
        ("PaymentRequested", lambda d: d["invoices"][0].pop("invoice_id"), "invoice_id"),
        ("PaymentRefused", lambda d: d.update(resultrans="P"), "resultrans"),
        ("PaymentExpired", lambda d: d.pop("reason"), "reason"),
        ("PaymentAbandoned", lambda d: d.pop("idop"), "idop"),
        ("RefundNeeded", lambda d: d.update(refunds=[]), "refunds"),
        ("RefundNeeded", lambda d: d["refunds"][0].pop("reason"), "reason"),
        ("InvoiceSettled", lambda d: d.update(amount_cents=True), "amount_cents"),
        ("InvoiceSettled", lambda d: d.pop("payment_id"), "payment_id"),
    ],
)
def test_malformed_payment_data_is_refused(name: str, mutate: Any, why: str) -> None:
    message = _golden(name)
    mutate(message["data"])
    with pytest.raises(EnvelopeError, match=why):
        decode(json.dumps(message))


def test_paid_at_keeps_its_paris_offset() -> None:
    paid_at = decode(json.dumps(_golden("PaymentConfirmed"))).data["paid_at"]
    assert paid_at.isoformat() == "2025-02-26T14:30:00+01:00"
    settled_at = decode(json.dumps(_golden("InvoiceSettled"))).data["paid_at"]
    assert settled_at == paid_at


def test_every_payment_event_is_on_payment_payments() -> None:
    payment_types = {t.name for t in REGISTRY
                     if "payment.payments" in (t.topic, *t.also_on)}
    assert payment_types == set(events.PAYMENT_PAYMENTS.event_types)
    assert REGISTRY["InvoiceSettled"].topic == "billing.invoices"


def test_a_v1_confirmation_reads_as_a_v2_one_that_was_not_late() -> None:
    v1 = json.loads((EXAMPLES / "PaymentConfirmed" / "v1.json").read_text())
    message = decode(json.dumps(v1))
    assert (message.name, message.version) == ("PaymentConfirmed", 2)
    assert message.data["late"] is False and message.data["received_at"] is None
    v2 = decode((EXAMPLES / "PaymentConfirmed" / "v2.json").read_text(), upcast=False)
    # A superset: every v1 field is there with the same value.
    assert {k: v for k, v in v2.data.items() if k not in ("late", "received_at")} == (
        decode(json.dumps(v1), upcast=False).data)


def test_chain_heads_have_their_own_topic_and_refuse_a_bad_hash() -> None:
    assert REGISTRY["ChainHead"].topic == "audit.chain-heads" == events.AUDIT_CHAIN_HEADS.name
    assert events.TOPICS["audit.chain-heads"].event_types == ("ChainHead",)
    message = _golden("ChainHead")
    head = decode(json.dumps(message)).data
    assert head["service"] == message["partitionkey"] and len(head["hash"]) == 64
    message["data"]["hash"] = "not-a-sha-256"
    with pytest.raises(EnvelopeError, match="hash"):
        decode(json.dumps(message))
