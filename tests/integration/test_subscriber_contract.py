"""One contract for the consumer's ``Subscriber`` port, on both of its sides.

``MemorySubscriber`` (over the in-memory broker the relay's fake publishes to) and
``KafkaSubscriber`` on noida-db and on Tansu must answer alike: every partition read in
order from the offsets asked, each record with its key, the end offsets seen, the record at
a place, and a partition read from its start when asked past its end.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from services.common.messaging.kafka import KafkaPublisher, KafkaSubscriber
from services.common.messaging.memory import MemoryBroker, MemoryPublisher, MemorySubscriber
from services.common.messaging.outbox import Outgoing
from services.common.messaging.ports import Publisher, Record, Subscriber
from tests.conftest import make_settings

PARTITIONS = 3


class Ends(NamedTuple):
    publisher: Publisher
    subscriber: Subscriber
    topic: str


def memory(request: pytest.FixtureRequest, tmp_path: Path) -> Ends:
    broker = MemoryBroker()
    return Ends(MemoryPublisher(PARTITIONS, broker, "contract"),
                MemorySubscriber(broker, "contract"), "contract")


def real(fixture: str) -> Callable[[pytest.FixtureRequest, Path], Ends]:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> Ends:
        broker: Any = request.getfixturevalue(fixture)
        settings = make_settings("memory", tmp_path, kafka_bootstrap=broker.bootstrap,
                                 kafka_broker=broker.kind, kafka_partitions=PARTITIONS)
        topic = f"c{uuid.uuid4().hex[:8]}.contract"
        return Ends(KafkaPublisher(settings, topic), KafkaSubscriber(settings, topic), topic)

    return make


@pytest.fixture(params=[
    pytest.param(memory, id="memory"),
    pytest.param(real("kafka"), id="noida", marks=pytest.mark.kafka),
    pytest.param(real("tansu"), id="tansu", marks=[pytest.mark.kafka, pytest.mark.tansu]),
])
def ends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ends]:
    e = request.param(request, tmp_path)
    yield e
    e.subscriber.close()
    e.publisher.close()


def publish(e: Ends, keys: list[str], first: int = 0) -> list[tuple[int, int]]:
    acks = e.publisher.publish([Outgoing(e.topic, key, f"{first + i}".encode())
                                for i, key in enumerate(keys)])
    return [(a.partition, a.offset) for a in acks]


def read(subscriber: Subscriber, count: int) -> dict[int, list[Record]]:
    """Poll until ``count`` records came (a real broker hands them over in its own time)."""
    got: dict[int, list[Record]] = {}
    deadline = time.monotonic() + 30
    while sum(map(len, got.values())) < count and time.monotonic() < deadline:
        for partition, records in subscriber.poll().items():
            got.setdefault(partition, []).extend(records)
        time.sleep(0.02)
    return got


def test_no_topic_has_no_partitions_until_it_is_made(ends: Ends) -> None:
    assert ends.subscriber.partitions() == 0
    ends.publisher.ensure_topic(PARTITIONS)
    assert ends.subscriber.partitions() == PARTITIONS


def test_every_record_is_read_in_order_with_its_key(ends: Ends) -> None:
    ends.publisher.ensure_topic(PARTITIONS)
    keys = [f"fam-{i % 5}" for i in range(30)]
    placed = publish(ends, keys)
    ends.subscriber.seek(dict.fromkeys(range(PARTITIONS), 0))
    got = read(ends.subscriber, 30)
    for partition, records in got.items():
        assert [r.offset for r in records] == list(range(len(records)))
        assert {r.partition for r in records} == {partition}
    by_value = {int(r.value): r for records in got.values() for r in records}
    assert sorted(by_value) == list(range(30))
    for i, (partition, offset) in enumerate(placed):
        assert (by_value[i].partition, by_value[i].offset) == (partition, offset)
        assert by_value[i].key == keys[i].encode()
    ends_now = ends.publisher.end_offsets()
    assert {p: ends.subscriber.highwater(p) for p in got} == {p: ends_now[p] for p in got}


def test_reading_resumes_where_asked_and_finds_a_record_by_its_place(ends: Ends) -> None:
    ends.publisher.ensure_topic(PARTITIONS)
    placed = publish(ends, ["fam-1"] * 6)
    partition = placed[0][0]
    ends.subscriber.seek({partition: 4})
    got = read(ends.subscriber, 2)
    assert [(r.offset, r.value) for r in got[partition]] == [(4, b"4"), (5, b"5")]
    at = ends.subscriber.record_at(partition, 2)
    assert at is not None and (at.partition, at.offset, at.value) == (partition, 2, b"2")
    assert ends.subscriber.record_at(partition, 6) is None
    publish(ends, ["fam-1"], first=6)  # still reading from where it was
    assert [r.value for r in read(ends.subscriber, 1)[partition]] == [b"6"]


def test_an_offset_past_the_end_reads_the_partition_from_its_start(ends: Ends) -> None:
    ends.publisher.ensure_topic(PARTITIONS)
    placed = publish(ends, ["fam-2"] * 3)
    partition = placed[0][0]
    ends.subscriber.seek({partition: 50})  # a topic made again, shorter than was read
    assert [r.offset for r in read(ends.subscriber, 3)[partition]] == [0, 1, 2]
