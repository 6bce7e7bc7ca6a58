"""Consumes a topic of Régie events into an application, exactly once in effect.

The position that matters is not Kafka's offset but each message's ``notificationid``,
which increases along each aggregate's events. It is tracked per aggregate (the message's
subject) in the consuming service's own store, in the same transaction as the events it
produces, so the partition a key lands on does not matter: a redelivery, a full
republish or a re-partitioned topic is recognised and skipped. An event that does not
follow the last one applied for its aggregate (``OutOfOrder``) makes the consumer read
the topic again from the start rather than apply it.

A poll's messages are applied in one transaction when the application can (a
``BatchHandler``); a batch that fails for any reason is applied again message by message,
which either records each once or stops at the one that cannot be, as before.

A message that cannot be read is never skipped: it is parked as a dead letter (see
``services.common.messaging.deadletters``), with every later message of its subject behind it,
until ``retry`` applies them once the code can read them.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eventsourcing.persistence import Tracking
from marshmallow import ValidationError

from events import Envelope, EnvelopeError, decode
from events.envelope import EnvelopeSchema
from services.common.errors import OutOfOrder
from services.common.messaging.deadletters import DeadLetter, DeadLetters
from services.common.messaging.ports import Record, Subscriber
from services.common.messaging.positions import Positions
from services.common.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Tracking], bool]
# Applies many messages in one transaction, each subject's tracking with them, or raises
# with nothing applied; returns how many were new.
BatchHandler = Callable[[list[tuple[Envelope, Tracking]]], int]

_ENVELOPE = EnvelopeSchema()


def tracking_for(topic: str, message: Envelope) -> Tracking:
    return Tracking(f"{topic}/{message.subject}", message.notification_id)


def peek(value: bytes) -> tuple[str, int] | None:
    """The subject and notification id of a message whose envelope is sound, whatever its
    data or its (type, version); None for bytes that are not an envelope at all."""
    try:
        envelope = _ENVELOPE.load(json.loads(value))
    except (ValueError, TypeError, ValidationError):
        return None
    return envelope["subject"], envelope["notificationid"]


class Intake:
    """Applies the messages of one topic that can be read, and parks the others.

    Built once per batch: it reads which subjects are held (have a parked message) when it
    starts and keeps that up to date as it parks, so a batch costs one query on the
    dead-letter table, however long it is.
    """

    def __init__(self, topic: str, handle: Handler, dead_letters: DeadLetters,
                 handle_batch: BatchHandler | None = None) -> None:
        self.topic = topic
        self.handle = handle
        self.handle_batch = handle_batch
        self.dead_letters = dead_letters
        self.held = dead_letters.held_subjects(topic)
        # Per (partition, offset), the notification id of each record read whole: the
        # consumer keeps the last one of each partition without reading it again.
        self.notification_ids: dict[tuple[int, int], int] = {}

    def record(self, partition: int, offset: int, key: bytes | None, value: bytes) -> bool:
        """Apply one record; False if it was already applied or has been parked."""
        message = self._readable(partition, offset, key, value)
        if message is None:
            return False
        return self.handle(message, tracking_for(self.topic, message))

    def records(self, batches: dict[int, list[Record]]) -> int:
        """Apply a poll's records, in one transaction if the application can; how many
        were new."""
        if self.handle_batch is None:
            return sum(self.record(partition, r.offset, r.key, r.value)
                       for partition, records in batches.items() for r in records)
        # Parking depends only on the bytes and on what is parked already, never on what
        # gets applied: park first, then apply what is left.
        ready = [message for partition, records in batches.items() for r in records
                 if (message := self._readable(partition, r.offset, r.key, r.value))]
        if not ready:
            return 0
        batch = [(message, tracking_for(self.topic, message)) for message in ready]
        try:
            return self.handle_batch(batch)
        except Exception as e:
            # Nothing of the batch was recorded: one by one, each message is recorded once
            # or raises where the batch could not go on (out of order, database gone).
            log.info("%s: a batch of %d failed (%s: %s); applying it message by message",
                     self.topic, len(batch), type(e).__name__, e)
        return sum(self.handle(message, tracking) for message, tracking in batch)

    def _readable(self, partition: int, offset: int, key: bytes | None, value: bytes
                  ) -> Envelope | None:
        """The record's message, or None once it is parked."""
        try:
            message = decode(value)
        except EnvelopeError as e:
            head = peek(value)
            self._park(DeadLetter(
                self.topic, partition, offset, key, value, str(e),
                subject=head[0] if head else None,
                notification_id=head[1] if head else None,
            ))
            return None
        # The envelope is sound, so this is what ``peek`` would find.
        self.notification_ids[partition, offset] = message.notification_id
        first_parked = self.held.get(message.subject)
        # A lower notification id came before the parked one: applied already, or never
        # held. An equal one is the parked event itself, republished.
        if first_parked is not None and message.notification_id >= first_parked:
            self._park(DeadLetter(
                self.topic, partition, offset, key, value,
                f"held behind an earlier parked message of {message.subject}",
                subject=message.subject, notification_id=message.notification_id,
            ))
            return None
        return message

    def _park(self, letter: DeadLetter) -> None:
        if self.dead_letters.park(letter):
            log.error("%s: parked as a dead letter (subject %s): %s",
                      letter.where, letter.subject or "unknown", letter.error)
        if letter.subject is not None and letter.notification_id is not None:
            known = self.held.get(letter.subject, letter.notification_id)
            self.held[letter.subject] = min(known, letter.notification_id)


def handle_record(topic: str, partition: int, value: bytes, handle: Handler,
                  dead_letters: DeadLetters, offset: int, key: bytes | None = None) -> bool:
    return Intake(topic, handle, dead_letters).record(partition, offset, key, value)


@dataclass(frozen=True)
class Retried:
    applied: int
    still_parked: list[DeadLetter]


def retry(dead_letters: DeadLetters, handle: Handler) -> Retried:
    """Apply the parked messages again, in the order they were parked.

    One that still cannot be read stays parked, and so does every later one of its
    subject. Each is removed only after ``handle`` recorded it (with its tracking, in one
    transaction): a crash in between leaves it parked, and the next retry finds it
    already applied and removes it. Any other failure (the database gone) stops the retry
    with what is left still parked.
    """
    applied = 0
    still: list[DeadLetter] = []
    blocked: set[tuple[str, str]] = set()
    for letter in dead_letters.all():
        if letter.subject is not None and (letter.topic, letter.subject) in blocked:
            still.append(letter)
            continue
        try:
            message = decode(letter.value)
            handle(message, tracking_for(letter.topic, message))
        except (EnvelopeError, OutOfOrder) as e:
            dead_letters.set_error(letter, str(e))
            still.append(replace(letter, error=str(e)))
            if letter.subject is not None:
                blocked.add((letter.topic, letter.subject))
            continue
        dead_letters.remove(letter)
        applied += 1
    return Retried(applied, still)


def _notification_id(value: bytes) -> int:
    """What a partition's last record is remembered by; 0 for bytes that are not an event.

    From the envelope alone, so that a record parked for its (type, version) is still
    recognised as the same record once an upgrade can read it.
    """
    head = peek(value)
    return head[1] if head else 0


def owned_partitions(count: int, share: tuple[int, int]) -> list[int]:
    """The partitions of a ``count``-partition topic that consumer ``share`` = (index, of
    how many) reads: partition p goes to index p % how many."""
    index, every = share
    return [p for p in range(count) if p % every == index]


class Waits:
    """How the consumer waits for records between two polls.

    A broker that holds an empty fetch until records come (Apache Kafka) is polled with the
    poll interval as timeout: a record is handed over as it arrives, and an idle consumer
    sends a fetch every fetch.max.wait.ms. One that answers at once (noida-db) is polled
    without waiting, with pauses in between: none right after records came, then
    ``shortest``, doubling after each empty poll up to the poll interval, what an idle
    consumer costs.

    A poll that does not wait sends a fetch and returns before its answer: what it hands
    over is what the previous poll's fetch found. So an empty one is followed, ``look_again``
    seconds later, by a second one that reads the answer to its own fetch, so that a record
    that came during a long pause is not left for the next one. Waiting in the poll instead
    would make kafka-python fetch again after each empty answer, for as long as it waits.
    """

    def __init__(self, holds_fetches: bool, longest: float, shortest: float = 0.001) -> None:
        self.holds_fetches = holds_fetches
        self.longest = longest
        self.shortest = min(shortest, longest)
        self.look_again = 0.0 if holds_fetches else self.shortest
        self._next = self.shortest

    def poll_timeout(self) -> float:
        return self.longest if self.holds_fetches else 0.0

    def pause(self, got_records: bool) -> float:
        """Seconds to wait before the next poll."""
        if got_records:
            self._next = self.shortest
            return 0.0
        if self.holds_fetches:
            return 0.0
        pause, self._next = self._next, min(self._next * 2, self.longest)
        return pause


class TrackedConsumer:
    """Reads its share of one topic's partitions; no consumer group.

    Our position lives in our own store (see the module doc), so a group would only add
    its failure modes: noida-db never evicts a member killed with -9, leaving its group
    in rebalance for good, and Tansu answers each join after half the session timeout.
    Kafka offsets are kept beside our events as a hint for where to resume, and trusted
    only after checking that the record before it is still the one we read there.

    Several processes share a topic by a static assignment (``share`` = (index, count),
    from REGIE_CONSUMER_INDEX / REGIE_CONSUMER_COUNT): each reads the partitions p with
    p % count == index, and keeps its positions under those partitions' keys only. A
    subject's messages all go to one partition (the key is its family), so each
    aggregate has one reader, and its tracking and its dead letters stay as with one
    process. A process killed stops its partitions until it is started again (as
    ``make run`` and compose do); the others go on.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        handle: Handler,
        positions: Positions,
        on_idle: Callable[[], Any] | None = None,
        *,
        dead_letters: DeadLetters,
        subscribe: Callable[[], Subscriber] | None = None,
        handle_batch: BatchHandler | None = None,
        share: tuple[int, int] | None = None,
        highwaters_every: float = 1.0,
    ) -> None:
        self.settings = settings
        self.share = share if share is not None else settings.consumer_share()
        self._told_nothing_to_read = False
        self._topic_partitions = 0
        self.topic = topic
        self.handle = handle
        self.handle_batch = handle_batch
        self.positions = positions
        self.dead_letters = dead_letters
        self.on_idle = on_idle
        # A new reader of the topic for each connection: Kafka's unless one is given.
        self.subscribe = subscribe or self._kafka
        self._highwaters: dict[str, int] = {}
        # High watermarks are written before a batch at most this often (seconds), else
        # with its offsets: /metrics shows a consumer stuck on a batch within that time.
        self.highwaters_every = highwaters_every
        self._highwaters_at = float("-inf")

    def _kafka(self) -> Subscriber:
        from services.common.messaging.kafka import KafkaSubscriber

        return KafkaSubscriber(self.settings, self.topic)

    def _key(self, partition: int, suffix: str = "") -> str:
        return f"{self.topic}@{partition}{suffix}"

    def _connect(self, from_start: bool) -> tuple[Subscriber, list[int]] | None:
        subscriber = self.subscribe()
        count = subscriber.partitions()
        if not count:
            subscriber.close()
            return None
        self._topic_partitions = count
        partitions = owned_partitions(count, self.share)
        if not partitions:
            # More consumers than partitions: this one has nothing to read until the
            # topic is given more.
            if not self._told_nothing_to_read:
                log.warning("%s has %d partitions: none for consumer %d of %d",
                            self.topic, count, self.share[0], self.share[1])
                self._told_nothing_to_read = True
            subscriber.close()
            return None
        same_shape = (
            not from_start and self.positions.get(f"{self.topic}#partitions") == count
        )
        starts = {}
        for partition in partitions:
            hint = self.positions.get(self._key(partition)) if same_shape else 0
            expected = self.positions.get(self._key(partition, "#nid"))
            if hint and not self._still_there(subscriber, partition, hint - 1, expected):
                log.warning("%s[%d]: the topic is not the one we read; reading it again",
                            self.topic, partition)
                hint = 0
            starts[partition] = hint
        subscriber.seek(starts)
        self.positions.set(f"{self.topic}#partitions", count)
        return subscriber, partitions

    @staticmethod
    def _still_there(subscriber: Subscriber, partition: int, offset: int,
                     notification_id: int) -> bool:
        record = subscriber.record_at(partition, offset)
        return record is not None and _notification_id(record.value) == notification_id

    def _save(self, batches: dict[int, list[Record]], intake: Intake,
              highwaters: dict[str, int]) -> None:
        """Record where each partition's reading got to, with the high watermarks, in one
        write."""
        marks = dict(highwaters)
        for partition, records in batches.items():
            last = records[-1]
            marks[self._key(partition)] = last.offset + 1
            nid = intake.notification_ids.get((partition, last.offset))
            marks[self._key(partition, "#nid")] = (
                nid if nid is not None else _notification_id(last.value))
        self.positions.set_many(marks)
        self._highwaters.update(highwaters)

    def _new_highwaters(self, subscriber: Subscriber, partitions: list[int]) -> dict[str, int]:
        """Each partition's high watermark as the last fetch saw it, where it moved: kept
        beside our offsets, so that /metrics reads the lag from the database without
        asking Kafka."""
        seen = {}
        for partition in partitions:
            highwater = subscriber.highwater(partition)
            key = self._key(partition, "#highwater")
            if highwater is not None and self._highwaters.get(key) != highwater:
                seen[key] = highwater
        return seen

    def _note_highwaters(self, highwaters: dict[str, int]) -> None:
        self.positions.set_many(highwaters)
        self._highwaters.update(highwaters)
        self._highwaters_at = time.monotonic()

    def _reads_still_there(self, subscriber: Subscriber, partitions: list[int]) -> bool:
        """Is the last record we read in each partition still there, the same?

        A broker that lost the topic while we were reading it lets us go on from our old
        offsets in a new, different log: this notices it within ``verify_every``.
        """
        for partition in partitions:
            offset = self.positions.get(self._key(partition))
            expected = self.positions.get(self._key(partition, "#nid"))
            if offset and not self._still_there(subscriber, partition, offset - 1, expected):
                return False
        return True

    def run_forever(self, stop: threading.Event, verify_every: float = 10.0) -> None:
        backoff = 0.2
        client: Subscriber | None = None
        partitions: list[int] = []
        checked = verified = 0.0
        refreshed = float("-inf")
        from_start = False
        waits = Waits(self.settings.broker_holds_fetches(), self.settings.poll_interval)
        while not stop.is_set():
            try:
                if client is None:
                    connected = self._connect(from_start)
                    if connected is None:
                        # The topic does not exist yet (its relay has not started), or
                        # it has no partition for this consumer yet.
                        stop.wait(1.0)
                        continue
                    client, partitions = connected
                    from_start = False
                    checked = verified = time.monotonic()
                batches = client.poll(waits.poll_timeout())
                if not batches and waits.look_again:
                    stop.wait(waits.look_again)
                    batches = client.poll()
                highwaters = self._new_highwaters(client, partitions)
                if highwaters and (not batches or time.monotonic() - self._highwaters_at
                                   >= self.highwaters_every):
                    # Before the batch: a consumer stuck on it shows the lag it is stuck
                    # with. Otherwise they go with the batch's offsets, in one write.
                    self._note_highwaters(highwaters)
                    highwaters = {}
                applied = 0
                if batches:
                    intake = Intake(self.topic, self.handle, self.dead_letters,
                                    self.handle_batch)
                    applied = intake.records(batches)
                    # Parked before the offsets move on, each in its own transaction: a
                    # crash between the two reads the records again, and parking them
                    # again changes nothing (it is idempotent on topic/partition/offset).
                    # The other order could lose a message for good.
                    self._save(batches, intake, highwaters)
                if self.on_idle is not None and (
                        applied or time.monotonic() - refreshed >= self.settings.poll_interval):
                    # After what this poll applied; otherwise once an interval, for what
                    # others recorded and did not catch up themselves (each API does).
                    self.on_idle()
                    refreshed = time.monotonic()
                if time.monotonic() - checked > 5:
                    checked = time.monotonic()
                    # The topic's count, not this consumer's share of it.
                    if client.partitions() != self._topic_partitions:
                        raise OutOfOrder("its partition count changed")
                if time.monotonic() - verified > verify_every:
                    verified = time.monotonic()
                    if not self._reads_still_there(client, partitions):
                        raise OutOfOrder("it is no longer the log we read")
                pause = waits.pause(bool(batches))
                if pause:
                    stop.wait(pause)
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
