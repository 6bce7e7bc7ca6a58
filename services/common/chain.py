"""A hash chain over each service's event history, kept as events are stored.

Each stored event's hash covers its position, its identity, its topic, its stored state
and the previous event's hash, and is written in the same transaction as the event (the
event table is locked by the insert, so the chain has no forks). Altering, deleting or
swapping a stored event afterwards breaks the chain at that position; ``verify`` names it.
The day's root (the last hash recorded that day, Paris time) goes on the payment journal.
"""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder

from events.formats import PARIS
from services.common.persistence import SqlStore

GENESIS = "0" * 64
TABLE = "event_chain"


def link(previous: str, notification_id: int, originator_id: UUID | str, version: int,
         topic: str, state: bytes) -> str:
    digest = hashlib.sha256()
    for part in (previous, str(notification_id), str(originator_id), str(version), topic):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(state)
    return digest.hexdigest()


def _today() -> str:
    return datetime.now(PARIS).date().isoformat()


class ChainedSQLiteProcessRecorder(SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {TABLE} (notification_id INTEGER PRIMARY KEY, "
            "hash TEXT NOT NULL, day TEXT NOT NULL)",
        ]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
                       ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if ids:
            c.execute(f"SELECT hash FROM {TABLE} ORDER BY notification_id DESC LIMIT 1")
            row = c.fetchone()
            previous = row[0] if row else GENESIS
            day = _today()
            for nid, s in zip(ids, stored_events, strict=True):
                previous = link(previous, nid, s.originator_id, s.originator_version, s.topic,
                                s.state)
                c.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?)", (nid, previous, day))
        return ids


class ChainedPostgresProcessRecorder(PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from psycopg.sql import SQL, Identifier

        super().__init__(*args, **kwargs)
        self.chain_table = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                               Identifier(TABLE))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {} (notification_id BIGINT PRIMARY KEY, "
            "hash TEXT NOT NULL, day TEXT NOT NULL)").format(self.chain_table))

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        from psycopg.sql import SQL

        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if ids:
            # Still inside the insert's transaction, with the event table locked.
            curs.execute(SQL("SELECT hash FROM {} ORDER BY notification_id DESC LIMIT 1")
                         .format(self.chain_table))
            row = curs.fetchone()
            previous = row["hash"] if row else GENESIS
            day = _today()
            rows = []
            for nid, s in zip(ids, stored_events, strict=True):
                previous = link(previous, nid, s.originator_id, s.originator_version, s.topic,
                                s.state)
                rows.append((nid, previous, day))
            curs.executemany(SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(self.chain_table),
                             rows)
        return ids


def recorder_topic(persistence: str) -> str | None:
    return {
        "eventsourcing.sqlite": "services.common.chain:ChainedSQLiteProcessRecorder",
        "eventsourcing.postgres": "services.common.chain:ChainedPostgresProcessRecorder",
    }.get(persistence)


@dataclass(frozen=True)
class Break:
    position: int
    kind: str  # altered, missing, unchained, extra

    def __str__(self) -> str:
        what = {
            "altered": "was altered, or events were reordered, at or after its recording",
            "missing": "is missing: it was recorded, then deleted",
            "unchained": "was not recorded by Régie (no chain entry)",
        }[self.kind]
        return f"event {self.position} {what}"


def verify(app: Any, page: int = 1000) -> tuple[int, Break | None]:
    """Recompute the chain over the whole history; return how many events were checked
    and the first break, if any."""
    store = SqlStore(app)
    previous = GENESIS
    checked = 0
    chain = _chain_rows(store, page)
    events = _all_notifications(app, page)
    expected = next(chain, None)
    event = next(events, None)
    while expected is not None or event is not None:
        if event is None or (expected is not None and expected[0] < event.id):
            assert expected is not None
            return checked, Break(expected[0], "missing")
        if expected is None or event.id < expected[0]:
            return checked, Break(event.id, "unchained")
        previous = link(previous, event.id, event.originator_id, event.originator_version,
                        event.topic, event.state)
        if previous != expected[1]:
            return checked, Break(event.id, "altered")
        checked += 1
        expected = next(chain, None)
        event = next(events, None)
    return checked, None


def _chain_rows(store: SqlStore, page: int) -> Iterator[tuple[int, str]]:
    after = 0
    while True:
        rows = store.fetchall(
            f"SELECT notification_id, hash FROM {{schema}}{TABLE} WHERE notification_id > ? "
            f"ORDER BY notification_id LIMIT {int(page)}", (after,))
        if not rows:
            return
        for r in rows:
            yield int(r["notification_id"]), str(r["hash"])
        after = int(rows[-1]["notification_id"])


def _all_notifications(app: Any, page: int) -> Iterator[Any]:
    after = 0
    while True:
        batch = app.recorder.select_notifications(after, page, inclusive_of_start=False)
        if not batch:
            return
        yield from batch
        after = batch[-1].id


def day_root(app: Any, day: str) -> str | None:
    """The last hash recorded on ``day`` (Paris): printing it fixes that day's history.

    None for a store without a chain (the in-memory one of the unit tests)."""
    if not hasattr(app.recorder, "datastore"):
        return None
    rows = SqlStore(app).fetchall(
        f"SELECT hash FROM {{schema}}{TABLE} WHERE day <= ? "
        "ORDER BY notification_id DESC LIMIT 1", (day,))
    return str(rows[0]["hash"]) if rows else None
