"""The Kafka side of the messaging ports (KafkaPublisher, KafkaSubscriber), and the
kafka-python clients they use, configured the same way everywhere."""

import logging
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewPartitions, NewTopic
from kafka.errors import (
    IncompatibleBrokerVersion,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)

from services.common.messaging.outbox import Outgoing
from services.common.messaging.ports import Ack, Record
from services.common.settings import Settings

log = logging.getLogger(__name__)

# What one fetch may bring. Apache Kafka honours the two fetch limits, so an answer holds at
# most FETCH_MAX_BYTES (plus one batch when a single one is bigger). noida-db ignores them and
# answers with everything from the asked offsets to the end of each partition named, so a
# re-read from the start brings a whole partition at once: KafkaSubscriber asks for one
# partition at a time while catching up, and the client accepts an answer up to
# RECEIVE_MAX_BYTES rather than kafka-python's 100 MB, past which it would refuse the answer
# and fetch it again forever.
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 8 * 1024 * 1024
RECEIVE_MAX_BYTES = 512 * 1024 * 1024


def producer(settings: Settings) -> KafkaProducer:
    # One request in flight per connection keeps each partition in the order we send.
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        retries=5,
        max_in_flight_requests_per_connection=1,
        linger_ms=5,
        batch_size=262144,
        # Give up on a batch within seconds: a relay stuck retrying into a topic the broker
        # re-made differently would not notice it until the batch expires.
        request_timeout_ms=5000,
        delivery_timeout_ms=8000,
        max_block_ms=8000,
        # A topic must only ever be created by ensure_topic, so that a relay notices an
        # emptied broker instead of writing into an auto-created, shorter history.
        allow_auto_create_topics=False,
    )


def consumer(settings: Settings, **extra: Any) -> KafkaConsumer:
    """A consumer without a group: partitions are assigned and positioned by the caller."""
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        # Past the end (the topic was re-created): read it all again, repeats are skipped.
        auto_offset_reset="earliest",
        max_poll_records=1000,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        fetch_max_bytes=FETCH_MAX_BYTES,
        receive_message_max_bytes=RECEIVE_MAX_BYTES,
        metadata_max_age_ms=5000,
        allow_auto_create_topics=False,
        **extra,
    )


def ensure_topic(settings: Settings, name: str, partitions: int = 0) -> tuple[int, bool]:
    """Make sure the topic exists, with ``partitions`` partitions when that is given.

    Returns its partition count and whether it had to be made or mended here. Brokers
    re-create a lost topic with their default count on the first client that names it
    (noida-db with 1, Tansu with 4), and keys must keep their partitions: a topic with
    too few is given more, or, where the broker cannot, deleted and created again.
    """
    wanted = partitions or settings.kafka_partitions
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    mended = False
    deadline = time.monotonic() + 30
    try:
        while True:
            if name not in set(admin.list_topics()):
                try:
                    admin.create_topics(
                        [NewTopic(name, num_partitions=wanted, replication_factor=1)]
                    )
                    log.info("created topic %s with %d partitions", name, wanted)
                    return wanted, True
                except TopicAlreadyExistsError:
                    pass  # another client was quicker, or a deletion is in progress
            else:
                count = len(admin.describe_topics([name])[0]["partitions"])
                if not partitions or count == partitions:
                    return count, mended
                log.warning("topic %s has %d partitions instead of %d: mending it",
                            name, count, partitions)
                mended = True
                try:
                    if count > partitions:
                        raise IncompatibleBrokerVersion("cannot remove partitions")
                    admin.create_partitions({name: NewPartitions(total_count=partitions)})
                except (IncompatibleBrokerVersion, KafkaError):
                    admin.delete_topics([name])
            if time.monotonic() > deadline:
                raise KafkaError(f"could not make topic {name} with {wanted} partitions")
            time.sleep(0.2)
    finally:
        admin.close()


def end_offsets(settings: Settings, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """Each partition's end offset, as the high watermark of a fetch.

    ListOffsets alone is right on Apache Kafka and noida-db, but Tansu answers it with the
    base offset of the partition's last batch + 1, which would look like lost records.
    Tansu's offset is still inside that last batch, so a fetch from just before it, on any
    of the three, reads one batch at most and brings back the right high watermark.
    """
    from kafka import TopicPartition

    client = consumer(settings)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(client.partitions_for_topic(topic) or ())]
        listed = client.end_offsets(tps)
        ends = {tp.partition: 0 for tp in tps if not listed[tp]}
        pending = [tp for tp in tps if listed[tp]]
        if pending:
            client.assign(pending)
        for tp in pending:
            client.seek(tp, listed[tp] - 1)
        deadline = time.monotonic() + timeout
        while pending:
            client.poll(timeout_ms=100)
            for tp in list(pending):
                highwater = client.highwater(tp)
                if highwater is not None:
                    ends[tp.partition] = highwater
                    pending.remove(tp)
            if pending and time.monotonic() > deadline:
                raise KafkaError(f"no fetch from {topic} answered within {timeout}s")
        return ends
    finally:
        client.close()


def _force_close(producer: KafkaProducer) -> None:
    """Stop ``producer``'s network thread without sending what it still holds (its pending
    records fail), then close it, which no longer has anything to wait for."""
    sender: Any = producer._sender
    sender.force_close()
    sender.join(timeout=5)
    try:
        producer.close(timeout=0)
    except Exception:
        log.exception("closing the producer")


class KafkaPublisher:
    """The relay's side of Kafka for one topic: send, and wait for the acknowledgements."""

    def __init__(self, settings: Any, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._producer: Any = None

    def _get(self) -> Any:
        if self._producer is None:
            self._producer = producer(self.settings)
        return self._producer

    def publish(self, messages: list[Outgoing]) -> list[Ack]:
        producer = self._get()
        futures = [
            producer.send(m.topic, key=m.key.encode("utf-8"), value=m.value) for m in messages
        ]
        producer.flush(timeout=10)
        acks = []
        for future in futures:
            meta = future.get(timeout=1)  # flush returned: each is already settled
            acks.append(Ack(meta.partition, meta.offset))
        return acks

    def ensure_topic(self, partitions: int = 0) -> tuple[int, bool]:
        return ensure_topic(self.settings, self.topic, partitions)

    def end_offsets(self) -> dict[int, int]:
        return end_offsets(self.settings, self.topic)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=2)
        except KafkaTimeoutError:
            # kafka-python 3.0.12 gives up at its flush while records are still pending
            # (the broker went away) and leaves its network thread running for good; its
            # finaliser later fails the same way. The records are dropped: nothing
            # acknowledged them, so the relay publishes them again from its position.
            _force_close(producer)
        except Exception:
            log.exception("closing the producer")


class KafkaSubscriber:
    """The consumer's side of Kafka for one topic: every partition assigned, no group."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._client: KafkaConsumer | None = None
        # Each partition's end when it was sought: the partitions left waiting while
        # another catches up have fetched nothing yet, and their lag must still show.
        self._ends_at_seek: dict[int, int] = {}

    def _get(self) -> KafkaConsumer:
        if self._client is None:
            self._client = consumer(self.settings)
        return self._client

    def partitions(self) -> int:
        return len(self._get().partitions_for_topic(self.topic) or ())

    def seek(self, offsets: dict[int, int]) -> None:
        from kafka import TopicPartition

        client = self._get()
        tps = {p: TopicPartition(self.topic, p) for p in sorted(offsets)}
        client.assign(list(tps.values()))
        # Past the end is read from the start here, not left to auto_offset_reset: Tansu
        # answers such a fetch with nothing rather than with OffsetOutOfRange.
        ends = end_offsets(self.settings, self.topic) if offsets else {}
        self._ends_at_seek = ends
        for partition, offset in offsets.items():
            client.seek(tps[partition], 0 if offset > ends.get(partition, 0) else offset)

    def _one_partition_while_behind(self, client: KafkaConsumer) -> None:
        """Fetch only the first partition still behind its end while more than one is.

        A broker that ignores the fetch limits (noida-db) answers with the rest of every
        partition asked: one at a time, an answer holds one partition's rest, not the
        topic's. Once at most one is behind (live reading), all are fetched together, so
        that new records on any partition come with the next fetch. A partition whose end
        is not known (neither fetched nor seen at the seek) counts as behind.
        """
        assigned = sorted(client.assignment(), key=lambda tp: tp.partition)
        behind = []
        for tp in assigned:
            end = self.highwater(tp.partition)
            if end is None or client.position(tp) < end:
                behind.append(tp)
        if len(behind) > 1:
            client.pause(*[tp for tp in assigned if tp != behind[0]])
            client.resume(behind[0])
        else:
            client.resume(*assigned)

    def poll(self, timeout: float = 0.0) -> dict[int, list[Record]]:
        client = self._get()
        self._one_partition_while_behind(client)
        # kafka-python fetches again each time an empty answer comes within the timeout:
        # on noida-db, which answers at once, a timeout spins a core for as long (there the
        # caller polls without waiting and pauses between, see consumer.Waits).
        batches = client.poll(timeout_ms=round(timeout * 1000))
        return {tp.partition: [Record(tp.partition, r.offset, r.key, r.value) for r in records]
                for tp, records in batches.items()}

    def highwater(self, partition: int) -> int | None:
        from kafka import TopicPartition

        found: int | None = self._get().highwater(TopicPartition(self.topic, partition))
        return found if found is not None else self._ends_at_seek.get(partition)

    def record_at(self, partition: int, offset: int) -> Record | None:
        """Read with a client of its own, so that the assignment being read is not moved."""
        from kafka import TopicPartition

        tp = TopicPartition(self.topic, partition)
        probe = consumer(self.settings)
        try:
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                records = probe.poll(timeout_ms=0).get(tp, [])
                if records:
                    r = records[0]
                    return Record(partition, r.offset, r.key, r.value) if r.offset == offset \
                        else None
                time.sleep(0.02)
            return None
        finally:
            probe.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
