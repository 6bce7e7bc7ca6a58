"""Outbox relay: publishes a service's committed events to Kafka from its notification log.

No dual writes: the API only stores events; this process reads them back in notification
order, sends them, waits for the broker's acknowledgement, and only then records how far it
got. A crash between the two repeats a batch (at least once); consumers drop the repeats.
"""

import logging
import threading
import time
from typing import Any, Protocol

from services.common.outbox import Outgoing, ToWire
from services.common.positions import Positions

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """The broker, as the relay sees it."""

    def publish(self, messages: list[Outgoing]) -> None:
        """Send and wait until every message is acknowledged, or raise."""

    def ensure_topic(self, partitions: int = 0) -> tuple[int, bool]:
        """Create the topic if missing, or re-create it if its partition count is not
        ``partitions`` (when given); return its count and whether it was (re)created."""

    def close(self) -> None: ...


class Relay:
    def __init__(
        self,
        app: Any,
        to_wire: ToWire,
        publisher: Publisher,
        positions: Positions,
        name: str,
        batch_size: int = 500,
        verify_every: float = 2.0,
    ) -> None:
        self.app = app
        self.to_wire = to_wire
        self.publisher = publisher
        self.positions = positions
        self.name = name
        self.batch_size = batch_size
        self.verify_every = verify_every
        self._verified_at = float("-inf")

    def verify_topic(self) -> None:
        """Republish everything if the topic is not the one we have been filling.

        A broker that lost its data (a memory broker restarted, a disk lost, a topic
        deleted) must get the whole history again, or subscribers would never see it.
        We notice it as a topic we had to create, or one whose partition count changed:
        some brokers re-create a topic on the first client that names it, with their
        default count, and we then re-create it with ours, so that each key keeps its
        partition. Republishing is safe: consumers skip what they already applied.
        """
        shape_key = f"{self.name}#partitions"
        known = self.positions.get(shape_key)
        partitions, created = self.publisher.ensure_topic(known)
        if created and self.positions.get(self.name):
            log.warning("%s: the broker lost the topic; republishing from the start", self.name)
            self.positions.set(self.name, 0)
        if partitions != known:
            self.positions.set(shape_key, partitions)
        self._verified_at = time.monotonic()

    def run_once(self) -> int:
        """Publish the next batch; return how many notifications it covered."""
        if time.monotonic() - self._verified_at > self.verify_every:
            self.verify_topic()
        position = self.positions.get(self.name)
        notifications = self.app.recorder.select_notifications(
            position, self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        messages: list[Outgoing] = []
        for n in notifications:
            messages.extend(self.to_wire(self.app.mapper.to_domain_event(n), n.id))
        if messages:
            self.publisher.publish(messages)
        self.positions.set(self.name, notifications[-1].id)
        return len(notifications)

    def run_forever(self, stop: threading.Event, poll_interval: float = 0.1) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    stop.wait(poll_interval)
                backoff = 0.2
            except Exception:
                log.exception("%s: publishing failed; retrying in %.1fs", self.name, backoff)
                self._verified_at = float("-inf")
                self.publisher.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


class KafkaPublisher:
    def __init__(self, settings: Any, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._producer: Any = None

    def _get(self) -> Any:
        if self._producer is None:
            from services.common.kafka import producer

            self._producer = producer(self.settings)
        return self._producer

    def publish(self, messages: list[Outgoing]) -> None:
        producer = self._get()
        futures = [
            producer.send(m.topic, key=m.key.encode("utf-8"), value=m.value) for m in messages
        ]
        producer.flush(timeout=10)
        for future in futures:
            future.get(timeout=1)  # flush returned: each is already settled

    def ensure_topic(self, partitions: int = 0) -> tuple[int, bool]:
        from services.common.kafka import ensure_topic

        return ensure_topic(self.settings, self.topic, partitions)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=2)
            except Exception:
                log.exception("closing the producer")
            self._producer = None

