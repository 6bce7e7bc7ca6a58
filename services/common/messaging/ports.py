"""The broker, as the relay and the consumer see it: two small ports.

``Publisher`` is the relay's side (send and wait for the acknowledgement; make the topic;
read each partition's end), ``Subscriber`` the consumer's (every partition of one topic, no
consumer group, read from offsets the consumer keeps itself). Each has a Kafka adapter
(``kafka.KafkaPublisher``, ``kafka.KafkaSubscriber``) and an in-memory one over one log
(``memory.MemoryBroker``); tests/integration/test_publisher_contract.py and
test_subscriber_contract.py hold both sides to the same answers.
"""

from typing import NamedTuple, Protocol

from services.common.messaging.outbox import Outgoing


class Ack(NamedTuple):
    """Where the broker says it put a record."""

    partition: int
    offset: int


class Record(NamedTuple):
    """A record as the consumer reads it back."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


class Publisher(Protocol):
    """The broker, as the relay sees it."""

    def publish(self, messages: list[Outgoing]) -> list[Ack]:
        """Send and wait until every message is acknowledged, or raise; return where each
        one was put, in the order of ``messages``."""

    def ensure_topic(self, partitions: int = 0) -> tuple[int, bool]:
        """Create the topic if missing, or re-create it if its partition count is not
        ``partitions`` (when given); return its count and whether it was (re)created."""

    def end_offsets(self) -> dict[int, int]:
        """Each partition's end offset now: the offset its next record will get."""

    def close(self) -> None: ...


class Subscriber(Protocol):
    """One topic, as the consumer reads it: every partition, from offsets it chooses."""

    def partitions(self) -> int:
        """How many partitions the topic has now; 0 when it does not exist."""

    def seek(self, offsets: dict[int, int]) -> None:
        """Read the partitions given, each from its offset; an offset past a partition's
        end (a topic made again, shorter) reads that partition from its start."""

    def poll(self, timeout: float = 0.0) -> dict[int, list[Record]]:
        """What was put since the last poll, by partition, in order; waiting up to
        ``timeout`` seconds for something to come."""

    def highwater(self, partition: int) -> int | None:
        """The partition's end offset as the last poll saw it; None before any."""

    def record_at(self, partition: int, offset: int) -> Record | None:
        """The record at that place, if the topic has one there."""

    def close(self) -> None: ...
