"""The composition root assembles the relays and consumers `regie` runs; a caller (a test, a
benchmark) can hand it the application and the publishers instead of patching classes."""

import json
from pathlib import Path

from services import bootstrap
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.relay import Heads
from tests.conftest import make_settings
from tests.factories import open_regies, terms


def test_a_relay_publishes_through_the_publisher_it_is_given(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path, topic_prefix="acme.")
    billing = bootstrap.billing_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1"))
    events, heads = MemoryPublisher(), MemoryPublisher()
    relay = bootstrap.relay("billing", settings, app=billing, publisher=events,
                            heads=Heads(heads, "acme.audit.chain-heads", "billing"))
    while relay.run_once():
        pass
    assert relay.name == "acme.billing.invoices"
    published = [m for p in range(events.partition_count()) for m in events.records(p)]
    assert sorted(json.loads(m.value)["type"] for m in published) == [
        "fr.regie.InvoiceIssued.v2", "fr.regie.RegieOpened.v1", "fr.regie.RegieOpened.v1"]
    assert {m.topic for m in published} == {"acme.billing.invoices"}
    assert relay.heads is not None and relay.heads.publisher is heads


def test_a_consumer_applies_to_the_application_it_is_given(tmp_path: Path) -> None:
    settings = make_settings("memory", tmp_path, topic_prefix="acme.")
    payment = bootstrap.payment_app(settings)
    consumer = bootstrap.consumer("payment", settings, app=payment)
    assert consumer.topic == "acme.billing.invoices"
    assert consumer.handle == payment.apply_billing_event
    assert consumer.dead_letters is payment.dead_letters
    billing = bootstrap.billing_app(settings)
    assert bootstrap.consumer("billing", settings, app=billing).topic == "acme.payment.payments"
