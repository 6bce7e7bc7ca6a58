"""Chain heads published outside the database, and `regie verify --heads` against them."""

import uuid
from pathlib import Path
from typing import Any

import pytest

from events import AUDIT_CHAIN_HEADS
from services import bootstrap, cli
from services.billing.integration import make_to_wire
from services.bootstrap import billing_app
from services.common.messaging.heads import from_record
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.ports import Publisher
from services.common.messaging.positions import MemoryPositions
from services.common.messaging.relay import Heads, KafkaPublisher, Relay
from services.common.settings import Settings
from services.common.storage.chain import head, today
from tests.conftest import make_settings
from tests.factories import open_regies, terms
from tests.helpers import recompute, rewrite_an_amount, tamper

TOPIC = "billing.invoices"


def billing(settings: Settings) -> Any:
    app = billing_app(settings)
    open_regies(app)
    app.issue_batch([terms(f"H-{i}", family=f"fam-{i % 3}") for i in range(12)])
    return app


def relay(app: Any, heads: Heads) -> Relay:
    return Relay(app, make_to_wire(app, TOPIC), MemoryPublisher(), MemoryPositions(),
                 name=TOPIC, batch_size=5, heads=heads)


def grow(app: Any, r: Relay) -> None:
    """Three rounds of two invoices, each relayed: three heads (16, 18, 20)."""
    for round in range(3):
        app.issue_batch([terms(f"G-{round}-{i}") for i in range(2)])
        while r.run_once():
            pass


def published(broker: MemoryPublisher) -> list[Any]:
    return [from_record(m.value) for p in range(broker.partition_count())
            for m in broker.records(p)]


def test_a_relay_publishes_the_head_through_its_port(store_settings: Settings) -> None:
    app = billing(store_settings)
    broker = MemoryPublisher(partitions=1)
    r = relay(app, Heads(broker, AUDIT_CHAIN_HEADS.name, "billing", every=0))
    assert r.run_once() == 5
    assert published(broker) == [head(app, "billing")]
    app.issue_invoice(terms("H-late"))
    while r.run_once():
        pass
    heads = published(broker)
    assert heads[-1] == head(app, "billing")
    assert heads[-1].notification_id == app.recorder.max_notification_id()
    assert heads[-1].day == today()
    # Heads go to their own topic, keyed by the service.
    assert {m.key for m in broker.records(0)} == {"billing"}


def test_the_last_head_of_a_day_is_published_when_the_day_is_over(
    store_settings: Settings,
) -> None:
    app = billing(store_settings)
    days = [today()]
    broker = MemoryPublisher(partitions=1)
    r = relay(app, Heads(broker, AUDIT_CHAIN_HEADS.name, "billing", every=3600,
                         day=lambda: days[-1]))
    r.run_once()
    assert len(published(broker)) == 1  # the first run's
    app.issue_invoice(terms("H-evening"))
    r.run_once()
    assert len(published(broker)) == 1  # not due: the minute has not passed
    days.append("9999-12-31")
    r.run_once()
    heads = published(broker)
    assert len(heads) == 2
    assert heads[-1] == head(app, "billing", days[0]) == head(app, "billing")


def heads_file(tmp_path: Path, broker: MemoryPublisher) -> Path:
    path = tmp_path / "heads.jsonl"
    path.write_bytes(b"".join(m.value + b"\n" for m in broker.records(0)))
    return path


def test_regie_verify_against_a_file_of_heads(
    store_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = billing(store_settings)
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    broker = MemoryPublisher(partitions=1)
    grow(app, relay(app, Heads(broker, AUDIT_CHAIN_HEADS.name, "billing", every=0)))
    path = heads_file(tmp_path, broker)
    assert cli.main(["verify", "billing", "--heads", str(path)]) == 0
    assert "chain intact, all 3 heads reached" in capsys.readouterr().out
    last = head(app, "billing")
    assert last is not None
    cut = last.notification_id - 2
    tamper(app, "DELETE FROM {events} WHERE {nid} > ?", cut)
    tamper(app, "DELETE FROM {schema}event_chain WHERE notification_id > ?", cut)
    assert cli.main(["verify", "billing"]) == 0  # the chain alone sees nothing
    capsys.readouterr()
    assert cli.main(["verify", "billing", "--heads", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"head billing event {last.notification_id}" in out
    assert f"the store ends at event {cut}" in out
    # A file that is not one of heads is refused, naming the line.
    path.write_text('{"service": "billing", "notification_id": 1, "hash": "x", '
                    '"day": "2025-02-26"}\n')
    assert cli.main(["verify", "billing", "--heads", str(path)]) == 1
    assert "line 1 is not a chain head" in capsys.readouterr().err


@pytest.mark.kafka
def test_heads_go_to_the_topic_and_verify_reads_them_back(
    kafka: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings("sqlite", tmp_path, kafka_bootstrap=kafka.bootstrap,
                             kafka_broker=kafka.kind, topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
                             kafka_partitions=2)
    app = billing(settings)
    topic = settings.topic(AUDIT_CHAIN_HEADS.name)
    heads_out: Publisher = KafkaPublisher(settings, topic)
    r = Relay(app, make_to_wire(app, settings.topic(TOPIC)),
              KafkaPublisher(settings, settings.topic(TOPIC)), MemoryPositions(),
              name=settings.topic(TOPIC), heads=Heads(heads_out, topic, "billing", every=0))
    try:
        grow(app, r)
    finally:
        r.publisher.close()
        heads_out.close()
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(settings))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.topic_prefix)
    assert cli.main(["verify", "billing", "--heads", "kafka"]) == 0
    assert "chain intact, all 3 heads reached" in capsys.readouterr().out
    # An amount changed by hand and the chain recomputed: only the heads show it.
    rewrite_an_amount(app, 17)
    recompute(app)
    assert cli.main(["verify", "billing", "--heads", "kafka"]) == 1
    out = capsys.readouterr().out
    assert "chain intact, 1 of 3 heads reached, then head billing event 18" in out
    assert "rewritten" in out


def test_regie_relay_publishes_heads_on_the_prefixed_topic_at_the_set_interval(
    tmp_path: Path,
) -> None:
    settings = make_settings("sqlite", tmp_path, topic_prefix="acme.", heads_interval=15.0)
    heads = bootstrap.relay_heads("payment", settings)
    assert (heads.topic, heads.service, heads.every) == ("acme.audit.chain-heads", "payment",
                                                         15.0)
    assert isinstance(heads.publisher, KafkaPublisher)
    assert heads.publisher.topic == heads.topic
