"""Outbox relay: publishes a service's committed events to Kafka from its notification log.

No dual writes: the API only stores events; this process reads them back in notification
order, sends them, waits for the broker's acknowledgement, and only then records how far it
got. A crash between the two repeats a batch (at least once); consumers drop the repeats.

An acknowledged record is not always a kept one: a broker that acknowledges before its
data is on disk (noida-db) and is killed at once comes back without the last records it
acknowledged. So the relay also records, with its position, the end offset it reached in
each partition; a partition found shorter than that, or a record given an offset below it,
means the broker lost records, and the whole history is published again.

The relay looks at the log when a wake-up (services/common/messaging/wakeup.py) tells it
of a commit: PostgreSQL's NOTIFY, or inotify on the SQLite file. It also polls every
``poll_interval``, so a lost wake-up delays an event by one interval at most.

A relay also publishes its service's chain head (see services/common/storage/chain.py) on the
audit.chain-heads topic, through a second Publisher: at least every ``Heads.every``
seconds, and the last head of each day once that day is over (Paris time), so that the
history can be checked later against heads kept outside the database.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.common.messaging.heads import to_message
from services.common.messaging.kafka import KafkaPublisher
from services.common.messaging.outbox import Outgoing, ToWire
from services.common.messaging.ports import Ack, Publisher
from services.common.messaging.positions import Positions
from services.common.messaging.wakeup import Sleep, Wakeup
from services.common.privacy.sealing import domain_events
from services.common.storage.chain import Head, head, today

# Ack and KafkaPublisher stay importable from here, where callers of the relay look for them.
__all__ = ["Ack", "Heads", "KafkaPublisher", "Publisher", "Relay"]

log = logging.getLogger(__name__)


@dataclass
class Heads:
    """Where, and how often, a relay publishes its service's chain head."""

    publisher: Publisher
    topic: str
    service: str
    every: float = 60.0
    # The day (Paris, ISO) now; a test moves it.
    day: Callable[[], str] = field(default=today)


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
        heads: Heads | None = None,
        wakeup: Wakeup | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.to_wire = to_wire
        self.publisher = publisher
        self.positions = positions
        self.name = name
        self.batch_size = batch_size
        self.verify_every = verify_every
        self._verified_at = float("-inf")
        self.heads = heads
        self._head_at = float("-inf")
        self._head_day: str | None = None
        self._heads_topic_ready = False
        self.wakeup: Wakeup = wakeup if wakeup is not None else Sleep()
        # Makes what was read durable before it is published (see log_sync).
        self.sync = sync if sync is not None else (lambda: None)

    def publish_heads(self) -> list[Head]:
        """Publish the chain's head if one is due; return what was published."""
        h = self.heads
        if h is None:
            return []
        day = h.day()
        due: list[Head] = []
        if self._head_day is not None and day != self._head_day:
            # The day is over: its last head is the one a day's journal prints.
            ended = head(self.app, h.service, self._head_day)
            if ended is not None:
                due.append(ended)
        periodic = time.monotonic() - self._head_at >= h.every
        if periodic:
            current = head(self.app, h.service)
            if current is not None and current not in due:
                due.append(current)
        if due:
            self.sync()
            if not self._heads_topic_ready:
                h.publisher.ensure_topic()
                self._heads_topic_ready = True
            now = datetime.now(UTC)
            h.publisher.publish([to_message(x, h.topic, now) for x in due])
        # Only once published: a failure is tried again on the next run.
        self._head_day = day
        if periodic:
            self._head_at = time.monotonic()
        return due

    def _end_key(self, partition: int) -> str:
        return f"{self.name}#end@{partition}"

    def _republish(self, why: str, ends: dict[int, int]) -> None:
        """Start again from the first notification, the topic's present ``ends`` taken
        as the new marks to check against."""
        log.warning("%s: %s; republishing from the start", self.name, why)
        self.positions.set_many({self.name: 0, **{self._end_key(p): e for p, e in ends.items()}})

    def verify_topic(self) -> None:
        """Republish everything if the topic is not the one we have been filling.

        A broker that lost its data (a memory broker restarted, a disk lost, a topic
        deleted) must get the whole history again, or subscribers would never see it.
        We notice it as a topic we had to create, or one whose partition count changed:
        some brokers re-create a topic on the first client that names it, with their
        default count, and we then re-create it with ours, so that each key keeps its
        partition. A broker that lost only the tail of a partition shows it as an end
        offset lower than the one we reached. Republishing is safe: consumers skip what
        they already applied.
        """
        shape_key = f"{self.name}#partitions"
        known = self.positions.get(shape_key)
        partitions, created = self.publisher.ensure_topic(known)
        if created:
            empty = dict.fromkeys(range(partitions), 0)
            if self.positions.get(self.name):
                self._republish("the broker lost the topic", empty)
            else:
                self.positions.set_many({self._end_key(p): 0 for p in empty})
        else:
            ends = self.publisher.end_offsets()
            shorter = sorted(p for p, end in ends.items()
                             if end < self.positions.get(self._end_key(p)))
            if shorter:
                self._republish(f"the broker lost records of partitions {shorter}", ends)
        if partitions != known:
            self.positions.set(shape_key, partitions)
        self._verified_at = time.monotonic()

    def lag(self) -> int:
        """How many notifications are not published yet, for a metrics collector.

        Counted by notification id: an id a rolled-back transaction took and never used
        counts too, so it can be a few more than the events waiting.
        """
        last = self.app.recorder.max_notification_id() or 0
        return max(0, last - self.positions.get(self.name))

    def run_once(self) -> int:
        """Publish the next batch; return how many notifications it covered."""
        if time.monotonic() - self._verified_at > self.verify_every:
            self.verify_topic()
        self.publish_heads()
        # The position and each partition's reached end in one read: one query a page
        # rather than one more per partition written. Only this relay writes them.
        known = self.positions.all()
        position = known.get(self.name, 0)
        notifications = self.app.recorder.select_notifications(
            position, self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        messages: list[Outgoing] = []
        # The page's events read back at once: one query for their families' keys.
        events = domain_events(self.app.mapper, notifications)
        for n, event in zip(notifications, events, strict=True):
            messages.extend(self.to_wire(event, n.id))
        marks = {self.name: notifications[-1].id}
        if messages:
            self.sync()
            first: dict[int, int] = {}
            for ack in self.publisher.publish(messages):
                first.setdefault(ack.partition, ack.offset)
                key = self._end_key(ack.partition)
                marks[key] = max(marks.get(key, 0), ack.offset + 1)
            # The broker gives each record the partition's end offset: one below what we
            # reached means records we saw acknowledged are gone, whatever the end says now.
            went_back = sorted(p for p, offset in first.items()
                               if offset < known.get(self._end_key(p), 0))
            if went_back:
                self._republish(f"the broker lost records of partitions {went_back}",
                                self.publisher.end_offsets())
                return len(notifications)
        self.positions.set_many(marks)
        return len(notifications)

    def run_forever(self, stop: threading.Event, poll_interval: float = 0.1) -> None:
        # A stop must end a wait for a wake-up at once, as it ends stop.wait().
        def wake_on_stop() -> None:
            stop.wait()
            self.wakeup.wake()

        threading.Thread(target=wake_on_stop, name="relay stop", daemon=True).start()
        try:
            self._run(stop, poll_interval)
        finally:
            self.wakeup.close()

    def _run(self, stop: threading.Event, poll_interval: float) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    # A wake-up that comes while run_once reads is kept: this returns at once.
                    self.wakeup.wait(poll_interval)
                backoff = 0.2
            except Exception:
                log.exception("%s: publishing failed; retrying in %.1fs", self.name, backoff)
                self._verified_at = float("-inf")
                self._heads_topic_ready = False
                self.publisher.close()
                if self.heads is not None:
                    self.heads.publisher.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
