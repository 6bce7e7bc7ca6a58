"""Consumes a topic of Régie events into an application, exactly once in effect.

The position that matters is not Kafka's offset but each message's ``notificationid``,
which increases along each aggregate's events. It is tracked per aggregate (the message's
subject) in the consuming service's own store, in the same transaction as the events it
produces, so the partition a key lands on does not matter: a redelivery, a full
republish or a re-partitioned topic is recognised and skipped. An event that does not
follow the last one applied for its aggregate (``OutOfOrder``) makes the consumer read
the topic again from the start rather than apply it.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Tracking

from events import Envelope, EnvelopeError, decode
from services.common.errors import OutOfOrder
from services.common.positions import Positions
from services.common.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Tracking], bool]


def tracking_for(topic: str, message: Envelope) -> Tracking:
    return Tracking(f"{topic}/{message.subject}", message.notification_id)


def handle_record(topic: str, partition: int, value: bytes, handle: Handler) -> bool:
    try:
        message = decode(value)
    except EnvelopeError as e:
        # Not ours to fix, and retrying cannot help: say so loudly and move on.
        log.error("%s[%d]: skipping a message that is not a valid event: %s", topic, partition, e)
        return False
    return handle(message, tracking_for(topic, message))


class TrackedConsumer:
    """Reads every partition of one topic; no consumer group.

    Our position lives in our own store (see the module doc), so a group would only add
    its failure modes: noida-db never evicts a member killed with -9, leaving its group
    in rebalance for good, and Tansu answers each join after half the session timeout.
    Kafka offsets are kept beside our events as a hint for where to resume, and trusted
    only after checking that the record before it is still the one we read there.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        handle: Handler,
        positions: Positions,
        on_idle: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.handle = handle
        self.positions = positions
        self.on_idle = on_idle

    def _key(self, partition: int, suffix: str = "") -> str:
        return f"{self.topic}@{partition}{suffix}"

    def _connect(self, from_start: bool) -> tuple[Any, list[Any]] | None:
        from kafka import TopicPartition

        from services.common.kafka import consumer

        client = consumer(self.settings)
        partitions = client.partitions_for_topic(self.topic)
        if not partitions:
            client.close()
            return None
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        same_shape = (
            not from_start and self.positions.get(f"{self.topic}#partitions") == len(tps)
        )
        starts = {}
        for tp in tps:
            hint = self.positions.get(self._key(tp.partition)) if same_shape else 0
            expected = self.positions.get(self._key(tp.partition, "#nid"))
            if hint and not self._still_there(client, tp, hint - 1, expected):
                log.warning("%s: the topic is not the one we read; reading it again", tp)
                hint = 0
            starts[tp] = hint
        client.assign(tps)
        for tp, offset in starts.items():
            client.seek(tp, offset)
        self.positions.set(f"{self.topic}#partitions", len(tps))
        return client, tps

    def _still_there(self, client: Any, tp: Any, offset: int, notification_id: int) -> bool:
        client.assign([tp])
        client.seek(tp, offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            records = client.poll(timeout_ms=0).get(tp, [])
            if records:
                record = records[0]
                if record.offset != offset:
                    return False
                try:
                    return decode(record.value).notification_id == notification_id
                except EnvelopeError:
                    # A message that was not an event is remembered as 0 (see _save).
                    return notification_id == 0
            time.sleep(0.02)
        return False

    def _save(self, batches: dict[Any, list[Any]]) -> None:
        marks: dict[str, int] = {}
        for tp, records in batches.items():
            last = records[-1]
            marks[self._key(tp.partition)] = last.offset + 1
            try:
                marks[self._key(tp.partition, "#nid")] = decode(last.value).notification_id
            except EnvelopeError:
                marks[self._key(tp.partition, "#nid")] = 0
        self.positions.set_many(marks)

    def _reads_still_there(self, tps: list[Any]) -> bool:
        """Is the last record we read in each partition still there, the same?

        A broker that lost the topic while we were reading it lets us go on from our old
        offsets in a new, different log: this notices it within ``verify_every``.
        """
        from services.common.kafka import consumer

        probe = consumer(self.settings)
        try:
            for tp in tps:
                offset = self.positions.get(self._key(tp.partition))
                expected = self.positions.get(self._key(tp.partition, "#nid"))
                if offset and not self._still_there(probe, tp, offset - 1, expected):
                    return False
            return True
        finally:
            probe.close()

    def run_forever(self, stop: threading.Event, verify_every: float = 10.0) -> None:
        backoff = 0.2
        client: Any = None
        checked = verified = 0.0
        from_start = False
        while not stop.is_set():
            try:
                if client is None:
                    connected = self._connect(from_start)
                    if connected is None:
                        # The topic does not exist yet: its relay has not started.
                        stop.wait(1.0)
                        continue
                    client, tps = connected
                    from_start = False
                    checked = verified = time.monotonic()
                # poll(0) then sleep, rather than a blocking poll: noida-db answers fetches
                # at once instead of waiting, and kafka-python would spin a core on it.
                batches = client.poll(timeout_ms=0)
                for tp, records in batches.items():
                    for record in records:
                        handle_record(tp.topic, tp.partition, record.value, self.handle)
                if batches:
                    self._save(batches)
                if self.on_idle is not None:
                    self.on_idle()
                if time.monotonic() - checked > 5:
                    checked = time.monotonic()
                    if len(client.partitions_for_topic(self.topic) or ()) != len(tps):
                        raise OutOfOrder("its partition count changed")
                if time.monotonic() - verified > verify_every:
                    verified = time.monotonic()
                    if not self._reads_still_there(tps):
                        raise OutOfOrder("it is no longer the log we read")
                if not batches:
                    stop.wait(self.settings.poll_interval)
                backoff = 0.2
            except OutOfOrder as e:
                log.warning("%s: %s; reading the topic again from the start", self.topic, e)
                from_start = True
                if client is not None:
                    client.close()
                    client = None
            except Exception:
                log.exception("consuming %s failed; retrying in %.1fs", self.topic, backoff)
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        log.exception("closing the consumer")
                    client = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        if client is not None:
            client.close()
