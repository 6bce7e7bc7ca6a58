"""Consumes a topic of Régie events into an application, exactly once in effect.

The position that matters is not Kafka's offset but each message's ``notificationid``,
which increases per key. It is tracked per key (per family) in the consuming service's own
store, in the same transaction as the events it produces, so the partition a key lands on
does not matter. Kafka offsets are committed too, but only to resume faster: a
redelivery, a lost group offset, a full republish or a re-partitioned topic is recognised
and skipped.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Tracking

from events import Envelope, EnvelopeError, decode
from services.common.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Tracking], bool]


def tracking_for(topic: str, message: Envelope) -> Tracking:
    return Tracking(f"{topic}/{message.key}", message.notification_id)


def handle_record(topic: str, partition: int, value: bytes, handle: Handler) -> bool:
    try:
        message = decode(value)
    except EnvelopeError as e:
        # Not ours to fix, and retrying cannot help: say so loudly and move on.
        log.error("%s[%d]: skipping a message that is not a valid event: %s", topic, partition, e)
        return False
    return handle(message, tracking_for(topic, message))


class TrackedConsumer:
    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        handle: Handler,
        on_idle: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.handle = handle
        self.on_idle = on_idle

    def run_forever(self, stop: threading.Event) -> None:
        from services.common.kafka import consumer

        backoff = 0.2
        client: Any = None
        while not stop.is_set():
            try:
                if client is None:
                    client = consumer(self.settings, self.topic, self.group)
                # Once partitions are assigned, poll(0) then sleep rather than a blocking
                # poll: noida-db answers fetches at once instead of waiting, and kafka-python
                # would spin a core on it. Joining the group needs a blocking poll.
                batches = client.poll(timeout_ms=0 if client.assignment() else 500)
                for tp, records in batches.items():
                    for record in records:
                        handle_record(tp.topic, tp.partition, record.value, self.handle)
                if batches:
                    try:
                        client.commit()
                    except Exception as e:  # only a hint for the next start: see module doc
                        log.warning("offset commit failed: %s", e)
                if self.on_idle is not None:
                    self.on_idle()
                if not batches:
                    stop.wait(self.settings.poll_interval)
                backoff = 0.2
            except Exception:
                log.exception("consuming %s failed; retrying in %.1fs", self.topic, backoff)
                if client is not None:
                    try:
                        client.close(autocommit=False)
                    except Exception:
                        log.exception("closing the consumer")
                    client = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        if client is not None:
            client.close(autocommit=False)
