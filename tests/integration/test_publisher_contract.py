"""One contract for the relay's ``Publisher`` port, on both of its sides.

``MemoryPublisher`` (what the relay's unit tests use) and ``KafkaPublisher`` on noida-db
and on Tansu must answer alike: where each acknowledged record was put, and each
partition's end offset. The relay trusts both to notice a broker that lost records.
"""

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.messaging.kafka import KafkaPublisher
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.outbox import Outgoing
from services.common.messaging.ports import Publisher
from tests.conftest import make_settings

PARTITIONS = 4


def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Publisher:
    return MemoryPublisher(partitions=PARTITIONS)


def real(fixture: str) -> Callable[[pytest.FixtureRequest, Path], Publisher]:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> Publisher:
        broker: Any = request.getfixturevalue(fixture)
        settings = make_settings("memory", tmp_path, kafka_bootstrap=broker.bootstrap,
                                 kafka_broker=broker.kind, kafka_partitions=PARTITIONS)
        return KafkaPublisher(settings, f"c{uuid.uuid4().hex[:8]}.contract")

    return make


@pytest.fixture(params=[
    pytest.param(memory, id="memory"),
    pytest.param(real("kafka"), id="noida", marks=pytest.mark.kafka),
    pytest.param(real("tansu"), id="tansu", marks=[pytest.mark.kafka, pytest.mark.tansu]),
])
def publisher(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    p = request.param(request, tmp_path)
    yield p
    p.close()


def messages(topic: str, keys: list[str]) -> list[Outgoing]:
    return [Outgoing(topic, key, f'{{"n": {i}}}'.encode()) for i, key in enumerate(keys)]


def topic_of(publisher: Publisher) -> str:
    return getattr(publisher, "topic", "memory")


def test_the_topic_is_made_once(publisher: Publisher) -> None:
    assert publisher.ensure_topic(PARTITIONS) == (PARTITIONS, True)
    assert publisher.ensure_topic(PARTITIONS) == (PARTITIONS, False)
    assert publisher.end_offsets() == dict.fromkeys(range(PARTITIONS), 0)


def test_each_record_is_acknowledged_where_it_was_put(publisher: Publisher) -> None:
    publisher.ensure_topic(PARTITIONS)
    keys = [f"fam-{i % 7}" for i in range(60)]
    seen: dict[int, list[int]] = {}
    where: dict[str, int] = {}
    # Several publishes, so that each partition ends in a batch of several records: a
    # broker that reports the last batch's base offset as the end would show it here.
    for start in range(0, 60, 20):
        acks = publisher.publish(messages(topic_of(publisher), keys[start:start + 20]))
        assert len(acks) == 20
        for key, ack in zip(keys[start:start + 20], acks, strict=True):
            # A key keeps its partition.
            assert where.setdefault(key, ack.partition) == ack.partition
            seen.setdefault(ack.partition, []).append(ack.offset)
    for offsets in seen.values():
        assert offsets == list(range(len(offsets)))  # in order, from 0, no gap
    ends = publisher.end_offsets()
    assert ends == {p: len(seen.get(p, [])) for p in range(PARTITIONS)}
    assert sum(ends.values()) == 60
