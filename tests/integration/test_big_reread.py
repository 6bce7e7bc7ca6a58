"""A re-read from the start of a topic bigger than one fetch kafka-python accepts.

noida-db ignores ``fetch_max_bytes`` and ``max_partition_fetch_bytes``: it answers a fetch
with everything from the asked offsets to the end of every partition named. kafka-python
refuses any answer over ``receive_message_max_bytes`` (100 MB by default) with
InvalidReceiveError and fetches again, forever. Fewer, bigger records cross that size
quickly; the real case is a few hundred thousand invoices.
"""

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka.protocol import parser

from services.common.messaging.kafka import KafkaPublisher, KafkaSubscriber
from services.common.messaging.outbox import Outgoing
from tests.conftest import make_settings

PARTITIONS = 3
RECORDS = 120
VALUE = 900_000  # under the producer's 1 MiB request limit; 120 of them make 108 MB


@pytest.mark.kafka
def test_a_topic_bigger_than_one_fetch_is_read_again_from_the_start(
    tmp_path: Path, kafka: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings("memory", tmp_path, kafka_bootstrap=kafka.bootstrap,
                             kafka_broker=kafka.kind, kafka_partitions=PARTITIONS)
    topic = f"b{uuid.uuid4().hex[:8]}.big"
    publisher = KafkaPublisher(settings, topic)
    subscriber = KafkaSubscriber(settings, topic)
    # The size of every answer the client takes in, to show what one fetch holds.
    frames: list[int] = []
    validate = parser.KafkaProtocol._validate_frame_size

    def noting(self: Any, nbytes: int) -> None:
        frames.append(nbytes)
        validate(self, nbytes)

    monkeypatch.setattr(parser.KafkaProtocol, "_validate_frame_size", noting)
    try:
        publisher.ensure_topic(PARTITIONS)
        for first in range(0, RECORDS, 10):
            publisher.publish([Outgoing(topic, f"fam-{i}", i.to_bytes(4, "big") * (VALUE // 4))
                               for i in range(first, first + 10)])
        subscriber.seek(dict.fromkeys(range(PARTITIONS), 0))
        seen: set[int] = set()
        deadline = time.monotonic() + 45  # a guard against the endless loop, not a timing
        while len(seen) < RECORDS and time.monotonic() < deadline:
            for records in subscriber.poll().values():
                seen.update(int.from_bytes(r.value[:4], "big") for r in records)
            time.sleep(0.01)
        assert seen == set(range(RECORDS))
        # One partition at a time: no answer held more than the largest partition.
        assert max(frames) < 0.6 * RECORDS * VALUE
    finally:
        subscriber.close()
        publisher.close()
