"""A broker in memory: topics of partitioned logs, a ``Publisher`` and a ``Subscriber`` over
them. What the relay's and the consumer's tests use; a test can also make it lose records,
as a broker killed before they reached its disk."""

import time
import zlib

from services.common.messaging.outbox import Outgoing
from services.common.messaging.ports import Ack, Record


class MemoryBroker:
    """Topics, each a list of partitions, each a list of records; a key keeps its partition."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[Outgoing]]] = {}

    def log(self, topic: str) -> list[list[Outgoing]] | None:
        return self.topics.get(topic)


class MemoryPublisher:
    """The relay's side of a ``MemoryBroker`` (its own one unless given), for one topic."""

    def __init__(self, partitions: int = 6, broker: MemoryBroker | None = None,
                 topic: str = "memory") -> None:
        self.default_partitions = partitions
        self.broker = broker or MemoryBroker()
        self.topic = topic

    @property
    def _log(self) -> list[list[Outgoing]] | None:
        return self.broker.log(self.topic)

    def publish(self, messages: list[Outgoing]) -> list[Ack]:
        log = self._log
        if log is None:
            # As the real producer: topics are only ever made by ensure_topic.
            raise LookupError("the topic does not exist")
        acks = []
        for m in messages:
            partition = zlib.crc32(m.key.encode("utf-8")) % len(log)
            log[partition].append(m)
            acks.append(Ack(partition, len(log[partition]) - 1))
        return acks

    def ensure_topic(self, partitions: int = 0) -> tuple[int, bool]:
        log = self._log
        if log is not None and (not partitions or len(log) == partitions):
            return len(log), False
        self.broker.topics[self.topic] = [[] for _ in range(partitions or self.default_partitions)]
        return len(self.broker.topics[self.topic]), True

    def end_offsets(self) -> dict[int, int]:
        return {p: len(records) for p, records in enumerate(self._log or [])}

    def close(self) -> None:
        pass

    # What a test makes the broker do, and sees of it.

    def partition_count(self) -> int:
        return len(self._log or [])

    def records(self, partition: int) -> list[Outgoing]:
        return list((self._log or [])[partition])

    def lose_tail(self, partition: int, count: int) -> list[Outgoing]:
        """Forget the partition's last ``count`` records, as a broker killed before they
        reached its disk; return them."""
        log = self._log
        assert log is not None
        lost = log[partition][-count:]
        del log[partition][-count:]
        return lost

    def delete_topic(self) -> None:
        self.broker.topics.pop(self.topic, None)


class MemorySubscriber:
    """The consumer's side of a ``MemoryBroker``, for one topic."""

    def __init__(self, broker: MemoryBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self._next: dict[int, int] = {}
        self._seen: dict[int, int] = {}

    def _partition(self, partition: int) -> list[Outgoing]:
        log = self.broker.log(self.topic) or []
        return log[partition] if partition < len(log) else []

    def partitions(self) -> int:
        return len(self.broker.log(self.topic) or [])

    def seek(self, offsets: dict[int, int]) -> None:
        self._next = dict(offsets)
        self._seen = {}

    def poll(self, timeout: float = 0.0) -> dict[int, list[Record]]:
        batches = self._poll()
        if not batches and timeout > 0:
            time.sleep(timeout)
            batches = self._poll()
        return batches

    def _poll(self) -> dict[int, list[Record]]:
        batches = {}
        for partition, start in self._next.items():
            records = self._partition(partition)
            if start > len(records):  # as Kafka's auto_offset_reset=earliest
                start = 0
            self._seen[partition] = len(records)
            if start < len(records):
                batches[partition] = [self._record(partition, o, records[o])
                                      for o in range(start, len(records))]
            self._next[partition] = len(records)
        return batches

    def highwater(self, partition: int) -> int | None:
        return self._seen.get(partition)

    def record_at(self, partition: int, offset: int) -> Record | None:
        records = self._partition(partition)
        return self._record(partition, offset, records[offset]) if offset < len(records) else None

    @staticmethod
    def _record(partition: int, offset: int, m: Outgoing) -> Record:
        return Record(partition, offset, m.key.encode("utf-8"), m.value)

    def close(self) -> None:
        pass
