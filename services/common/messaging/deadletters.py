"""Dead letters: consumed messages a service could not apply, parked until an operator
retries them (``regie dead-letters list|retry``).

A message is parked when it cannot be read (a broken producer, or a schema version this
code does not know yet during a rolling upgrade), and so is every later message of the
same aggregate (its subject), so that the aggregate's events are still applied in order
once the first one can be. Parking is idempotent on topic/partition/offset.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from services.common.storage.persistence import SqlStore


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: str
    # None when the bytes are not an envelope at all: nothing can be held behind those.
    subject: str | None = None
    notification_id: int | None = None
    first_seen: datetime | None = None

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class DeadLetters(Protocol):
    def park(self, letter: DeadLetter) -> bool:
        """Keep ``letter``; False if it (or the same event elsewhere on the topic) already is."""
        ...

    def held_subjects(self, topic: str) -> dict[str, int]:
        """Each subject with parked messages on ``topic``: its lowest parked notification id."""
        ...

    def all(self) -> list[DeadLetter]:
        """Every parked message, in the order they were parked."""
        ...

    def count(self) -> int: ...

    def set_error(self, letter: DeadLetter, error: str) -> None: ...

    def remove(self, letter: DeadLetter) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _same_event(a: DeadLetter, b: DeadLetter) -> bool:
    """Same place on the topic, or the same event republished at another offset."""
    if (a.topic, a.partition, a.offset) == (b.topic, b.partition, b.offset):
        return True
    return (
        a.subject is not None
        and a.notification_id is not None
        and (a.topic, a.subject, a.notification_id) == (b.topic, b.subject, b.notification_id)
    )


class MemoryDeadLetters:
    def __init__(self) -> None:
        self._letters: list[DeadLetter] = []

    def park(self, letter: DeadLetter) -> bool:
        if any(_same_event(letter, parked) for parked in self._letters):
            return False
        self._letters.append(replace(letter, first_seen=letter.first_seen or _now()))
        return True

    def held_subjects(self, topic: str) -> dict[str, int]:
        held: dict[str, int] = {}
        for letter in self._letters:
            if letter.topic == topic and letter.subject is not None:
                nid = letter.notification_id or 0
                held[letter.subject] = min(held.get(letter.subject, nid), nid)
        return held

    def all(self) -> list[DeadLetter]:
        return list(self._letters)

    def count(self) -> int:
        return len(self._letters)

    def set_error(self, letter: DeadLetter, error: str) -> None:
        self._letters = [
            replace(parked, error=error) if _at(parked, letter) else parked
            for parked in self._letters
        ]

    def remove(self, letter: DeadLetter) -> None:
        self._letters = [parked for parked in self._letters if not _at(parked, letter)]


def _at(a: DeadLetter, b: DeadLetter) -> bool:
    return (a.topic, a.partition, a.offset) == (b.topic, b.partition, b.offset)


_COLUMNS = (
    "topic, kafka_partition, kafka_offset, record_key, value, error, subject, "
    "notification_id, first_seen"
)


class SqlDeadLetters:
    """In the consuming service's own database, beside its events and positions."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        blob = "BYTEA" if store.postgres else "BLOB"
        with store.transaction() as c:
            # ``seq`` keeps the order they were parked in, which is each subject's order.
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}dead_letters ("
                "topic TEXT NOT NULL, kafka_partition INTEGER NOT NULL, "
                "kafka_offset BIGINT NOT NULL, seq BIGINT NOT NULL, "
                f"record_key {blob}, value {blob} NOT NULL, error TEXT NOT NULL, "
                "subject TEXT, notification_id BIGINT, first_seen TEXT NOT NULL, "
                "PRIMARY KEY (topic, kafka_partition, kafka_offset))"
            )

    def park(self, letter: DeadLetter) -> bool:
        with self.store.transaction() as c:
            if letter.subject is not None and letter.notification_id is not None:
                republished = c.query(
                    "SELECT 1 AS found FROM {schema}dead_letters "
                    "WHERE topic = ? AND subject = ? AND notification_id = ?",
                    (letter.topic, letter.subject, letter.notification_id),
                )
                if republished:
                    return False
            row = c.query("SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM {schema}dead_letters")
            inserted = c.execute(
                f"INSERT INTO {{schema}}dead_letters (seq, {_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
                (
                    row[0]["seq"], letter.topic, letter.partition, letter.offset, letter.key,
                    letter.value, letter.error, letter.subject, letter.notification_id,
                    (letter.first_seen or _now()).isoformat(),
                ),
            )
            return bool(inserted)

    def held_subjects(self, topic: str) -> dict[str, int]:
        rows = self.store.fetchall(
            "SELECT subject, MIN(COALESCE(notification_id, 0)) AS nid "
            "FROM {schema}dead_letters WHERE topic = ? AND subject IS NOT NULL GROUP BY subject",
            (topic,),
        )
        return {row["subject"]: int(row["nid"]) for row in rows}

    def all(self) -> list[DeadLetter]:
        rows = self.store.fetchall(
            f"SELECT {_COLUMNS} FROM {{schema}}dead_letters "
            "ORDER BY seq, topic, kafka_partition, kafka_offset"
        )
        return [
            DeadLetter(
                topic=row["topic"],
                partition=int(row["kafka_partition"]),
                offset=int(row["kafka_offset"]),
                key=None if row["record_key"] is None else bytes(row["record_key"]),
                value=bytes(row["value"]),
                error=row["error"],
                subject=row["subject"],
                notification_id=row["notification_id"],
                first_seen=datetime.fromisoformat(row["first_seen"]),
            )
            for row in rows
        ]

    def count(self) -> int:
        rows = self.store.fetchall("SELECT COUNT(*) AS n FROM {schema}dead_letters")
        return int(rows[0]["n"])

    def set_error(self, letter: DeadLetter, error: str) -> None:
        with self.store.transaction() as c:
            c.execute(
                "UPDATE {schema}dead_letters SET error = ? "
                "WHERE topic = ? AND kafka_partition = ? AND kafka_offset = ?",
                (error, letter.topic, letter.partition, letter.offset),
            )

    def remove(self, letter: DeadLetter) -> None:
        with self.store.transaction() as c:
            c.execute(
                "DELETE FROM {schema}dead_letters "
                "WHERE topic = ? AND kafka_partition = ? AND kafka_offset = ?",
                (letter.topic, letter.partition, letter.offset),
            )
