"""A hash chain over each service's event history, kept as events are stored.

Each stored event's hash covers its position, its identity, its topic, its stored state
and the previous event's hash, and is written in the same transaction as the event (the
event table is locked by the insert, so the chain has no forks). Altering, deleting or
swapping a stored event afterwards breaks the chain at that position; ``verify`` names it.
The day's root (the last hash recorded that day, Paris time) goes on the payment journal.

A chain kept in the same database only proves that no one changed the history *without
recomputing it*: whoever can write the tables can also truncate them, or rewrite events
and recompute every hash after them. Two things close that gap:

- heads: the relays publish the chain's head (service, position, hash) outside the
  database, and ``check_heads`` names the first head kept elsewhere that the store no
  longer reaches;
- a key (``REGIE_CHAIN_KEY``, kept outside the database): each hash is then an HMAC, which
  no one can recompute without the key. A store chained without a key and given one later
  records, in ``event_chain_key``, the first position chained with it: the hashes before it
  stay plain SHA-256 and still verify.
"""

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, ProgrammingError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder

from events.formats import PARIS
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore, write_transaction

GENESIS = "0" * 64
TABLE = "event_chain"
# One row at most: the first notification id whose hash is keyed.
KEY_TABLE = "event_chain_key"


class ChainKeyMissing(RuntimeError):
    """The chain is keyed from some position on, and no key was given."""

    def __init__(self, position: int) -> None:
        super().__init__(f"the chain is keyed from event {position}: set REGIE_CHAIN_KEY "
                         "(the key it was written with)")


def link(previous: str, notification_id: int, originator_id: UUID | str, version: int,
         topic: str, state: bytes, key: bytes = b"") -> str:
    # Each part then a NUL, then the state: one buffer, hashed in one call.
    data = f"{previous}\x00{notification_id}\x00{originator_id}\x00{version}\x00{topic}\x00"
    message = data.encode() + state
    if key:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def today() -> str:
    """The day now, Paris time, as the chain records it."""
    return datetime.now(PARIS).date().isoformat()


def _links(previous: str, key: bytes, keyed_from: int | None, ids: Sequence[int],
           stored_events: Sequence[StoredEvent]) -> list[tuple[int, str, str]]:
    day = today()
    rows = []
    for nid, s in zip(ids, stored_events, strict=True):
        keyed = keyed_from is not None and nid >= keyed_from
        previous = link(previous, nid, s.originator_id, s.originator_version, s.topic,
                        s.state, key if keyed else b"")
        rows.append((nid, previous, day))
    return rows


def _keyed_from(recorded: int | None, key: bytes, first_id: int) -> tuple[int | None, bool]:
    """From which position the key applies, and whether that is new (to be recorded)."""
    if recorded is not None:
        if not key:
            # Plain hashes after keyed ones would make the history look rewritten.
            raise ChainKeyMissing(recorded)
        return recorded, False
    return (first_id, True) if key else (None, False)


class Chained:
    """Also takes ``trackings=[...]``: a batch of consumed messages records one tracking
    record per aggregate it read, in the same transaction as its events."""

    # Set by the application from REGIE_CHAIN_KEY; empty: plain SHA-256.
    chain_key: bytes = b""

    def _recorded_key_start(self) -> int | None:
        raise NotImplementedError

    def _refuse_without_key(self) -> None:
        # Refused before the transaction: eventsourcing's PostgreSQL recorder commits the
        # events even when the code run after their insert raises.
        if not self.chain_key:
            recorded = self._recorded_key_start()
            if recorded is not None:
                raise ChainKeyMissing(recorded)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        self._refuse_without_key()
        ids: Sequence[int] | None = super().insert_events(  # type: ignore[misc]
            stored_events, **kwargs)
        return ids

    def _insert_trackings(self, c: Any, trackings: Sequence[Tracking]) -> None:
        """A poll's tracking records, in the transaction of its events."""
        for tracking in trackings:
            self._insert_tracking(c, tracking)  # type: ignore[attr-defined]


class ChainedSQLiteProcessRecorder(Chained, SQLiteProcessRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {TABLE} (notification_id INTEGER PRIMARY KEY, "
            "hash TEXT NOT NULL, day TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {KEY_TABLE} (notification_id INTEGER NOT NULL)",
        ]

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        # The library begins a deferred transaction; this one reads the chain's last hash
        # while writing, so it takes the write lock first, as every write of ours does.
        self._refuse_without_key()
        with write_transaction(self.datastore) as c:
            return self._insert_events(c, stored_events, **kwargs)

    def _recorded_key_start(self) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT MIN(notification_id) FROM {KEY_TABLE}")
            found = c.fetchone()[0]
        return None if found is None else int(found)

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
                       ) -> Sequence[int] | None:
        ids = self._insert_rows(c, stored_events)
        tracking = kwargs.get("tracking")
        if tracking is not None:
            self._insert_tracking(c, tracking)
        self._insert_trackings(c, kwargs.get("trackings", ()))
        if ids:
            c.execute(f"SELECT hash FROM {TABLE} ORDER BY notification_id DESC LIMIT 1")
            row = c.fetchone()
            previous = row[0] if row else GENESIS
            c.execute(f"SELECT MIN(notification_id) FROM {KEY_TABLE}")
            keyed_from, new = _keyed_from(c.fetchone()[0], self.chain_key, ids[0])
            if new:
                c.execute(f"INSERT INTO {KEY_TABLE} VALUES (?)", (keyed_from,))
            c.executemany(f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
                          _links(previous, self.chain_key, keyed_from, ids, stored_events))
        return ids

    def _insert_rows(self, c: Any, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Insert the events in one ``executemany``; their notification ids (rowids).

        eventsourcing inserts them one statement at a time to read each ``lastrowid``.
        Within this transaction, which holds the write lock, SQLite gives each new row
        the largest rowid plus one, so a batch's rowids follow the largest one before it;
        should they not (a rowid at its maximum), they are read back.
        """
        params = [(s.originator_id.hex if isinstance(s.originator_id, UUID)
                   else s.originator_id, s.originator_version, s.topic, s.state)
                  for s in stored_events]
        if not params:
            return []
        c.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")
        before = c.fetchone()[0] or 0
        c.executemany(self.insert_events_statement, params)
        c.execute("SELECT last_insert_rowid()")
        last = int(c.fetchone()[0])
        if last - before == len(params):
            return list(range(before + 1, last + 1))
        ids = []
        for originator_id, version, _, _ in params:
            c.execute(f"SELECT rowid FROM {self.events_table_name} "
                      "WHERE originator_id = ? AND originator_version = ?",
                      (originator_id, version))
            ids.append(int(c.fetchone()[0]))
        return ids


class ChainedPostgresProcessRecorder(Chained, PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from psycopg.sql import SQL, Identifier

        super().__init__(*args, **kwargs)
        self.chain_table = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                               Identifier(TABLE))
        self.key_table = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                             Identifier(KEY_TABLE))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {} (notification_id BIGINT PRIMARY KEY, "
            "hash TEXT NOT NULL, day TEXT NOT NULL)").format(self.chain_table))
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {} (notification_id BIGINT NOT NULL)"
        ).format(self.key_table))
        # Columns as arrays of plain types, sent in binary: psycopg writes eventsourcing's
        # array of composite values as text, escaping each state byte by byte, in Python.
        self.insert_rows_statement = SQL(
            "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id").format(
                Identifier(self.datastore.schema), Identifier(self.events_table_name),
                Identifier(self.datastore.originator_id_type))
        self.insert_links_statement = SQL(
            "INSERT INTO {} (notification_id, hash, day) "
            "SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[])").format(
                self.chain_table)
        # eventsourcing's single-row tracking upsert, for a whole poll's subjects at once.
        tracking_table = SQL("{}.{}").format(Identifier(self.datastore.schema),
                                             Identifier(self.tracking_table_name))
        self.insert_trackings_statement = SQL(
            "INSERT INTO {0} AS t (application_name, notification_id) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[]) "
            "ON CONFLICT (application_name) DO UPDATE "
            "SET notification_id = EXCLUDED.notification_id "
            "WHERE t.notification_id < EXCLUDED.notification_id "
            "RETURNING notification_id").format(tracking_table)

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
                       ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        self._insert_trackings(curs, kwargs.get("trackings", ()))

    def _insert_trackings(self, curs: Any, trackings: Sequence[Tracking]) -> None:
        """What ``_insert_tracking`` does for each, in one statement: eventsourcing's reads
        each row's answer before the next, a round of the pipeline per subject, which was
        a quarter of the payment consumer's poll (one subject per invoice)."""
        if (not trackings or not self.datastore.single_row_tracking
                or len({t.application_name for t in trackings}) < len(trackings)):
            # Legacy tables, or a subject twice (one upsert cannot change a row twice).
            super()._insert_trackings(curs, trackings)
            return
        curs.execute(self.insert_trackings_statement, (
            [t.application_name for t in trackings],
            [t.notification_id for t in trackings]))
        changed = len(curs.fetchall())
        if changed != len(trackings):
            # As eventsourcing: a position not beyond the one recorded is a message
            # recorded already, so nothing of this transaction may go in.
            raise IntegrityError(f"{len(trackings) - changed} of {len(trackings)} tracking "
                                 "records not beyond those recorded")

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        # As eventsourcing does (the lock keeps commit order = id order; NOTIFY wakes the
        # subscribers), but one statement of plain arrays, whose ids come back in order.
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(self.insert_rows_statement, (
            [s.originator_id for s in stored_events],
            [s.originator_version for s in stored_events],
            [s.topic for s in stored_events],
            [s.state for s in stored_events],
        ))

    def _recorded_key_start(self) -> int | None:
        from psycopg.sql import SQL

        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT MIN(notification_id) AS n FROM {}").format(self.key_table))
            row = curs.fetchone()
            found = row["n"] if row else None
        return None if found is None else int(found)

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                                       **kwargs: Any) -> Sequence[int] | None:
        from psycopg.rows import tuple_row
        from psycopg.sql import SQL

        # The ids by position: eventsourcing's reading made a dict of each row, a tenth of
        # a batch issue's time on PostgreSQL.
        factory = curs.row_factory
        curs.row_factory = tuple_row
        try:
            ids = [row[0] for row in curs.fetchall()]
        finally:
            curs.row_factory = factory
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"{len(ids)} notification ids for {len(stored_events)} "
                                   "events inserted")
        if ids:
            # Still inside the insert's transaction, with the event table locked.
            curs.execute(SQL("SELECT hash FROM {} ORDER BY notification_id DESC LIMIT 1")
                         .format(self.chain_table))
            row = curs.fetchone()
            previous = row["hash"] if row else GENESIS
            curs.execute(SQL("SELECT MIN(notification_id) AS n FROM {}").format(self.key_table))
            keyed_from, new = _keyed_from(curs.fetchone()["n"], self.chain_key, ids[0])
            if new:
                curs.execute(SQL("INSERT INTO {} VALUES (%s)").format(self.key_table),
                             (keyed_from,))
            rows = _links(previous, self.chain_key, keyed_from, ids, stored_events)
            # One statement: an executemany costs a round of the pipeline per row.
            curs.execute(self.insert_links_statement, (
                [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
        return ids


def recorder_topic(persistence: str) -> str | None:
    return {
        "eventsourcing.sqlite": "services.common.storage.chain:ChainedSQLiteProcessRecorder",
        "eventsourcing.postgres": "services.common.storage.chain:ChainedPostgresProcessRecorder",
    }.get(persistence)


def store_env(settings: Settings, service: str) -> dict[str, str]:
    """The `eventsourcing` environment of one service's store: its chained recorder."""
    env = {"PERSISTENCE_MODULE": settings.persistence, "REGIE_CHAIN_KEY": settings.chain_key}
    topic = recorder_topic(settings.persistence)
    if topic:
        env["PROCESS_RECORDER_TOPIC"] = topic
    if settings.is_postgres():
        env.update(
            POSTGRES_DBNAME=settings.postgres_dbname,
            POSTGRES_HOST=settings.postgres_host,
            POSTGRES_PORT=settings.postgres_port,
            POSTGRES_USER=settings.postgres_user,
            POSTGRES_PASSWORD=settings.postgres_password,
            POSTGRES_SCHEMA=settings.schema(service),
        )
    elif settings.persistence == "eventsourcing.sqlite":
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        env["SQLITE_DBNAME"] = str(settings.var_dir / f"{service}.db")
    return env


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


def keyed_from(app: Any) -> int | None:
    """The first position whose hash is keyed (REGIE_CHAIN_KEY), None if none is."""
    rows = SqlStore(app).fetchall(f"SELECT MIN(notification_id) AS n FROM {{schema}}{KEY_TABLE}")
    return int(rows[0]["n"]) if rows and rows[0]["n"] is not None else None


def verify(app: Any, page: int = 1000) -> tuple[int, Break | None]:
    """Recompute the chain over the whole history; return how many events were checked
    and the first break, if any. Raises ChainKeyMissing if part of the chain is keyed and
    the application was given no key."""
    store = SqlStore(app)
    key: bytes = getattr(app.recorder, "chain_key", b"")
    first_keyed = keyed_from(app)
    if first_keyed is not None and not key:
        raise ChainKeyMissing(first_keyed)
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
        keyed = first_keyed is not None and event.id >= first_keyed
        previous = link(previous, event.id, event.originator_id, event.originator_version,
                        event.topic, event.state, key if keyed else b"")
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


@dataclass(frozen=True)
class Head:
    """Where a service's chain stood: its last position, that position's hash, and the
    day (Paris) it was recorded. Kept outside the database, it fixes the history up to it."""

    service: str
    notification_id: int
    hash: str
    day: str


def head(app: Any, service: str, day: str | None = None) -> Head | None:
    """The chain's head now, or at the end of ``day`` (Paris, ISO) when given.

    None for an empty store, or one without a chain (the in-memory one of the unit tests)."""
    if not hasattr(app.recorder, "datastore"):
        return None
    where, params = ("WHERE day <= ? ", (day,)) if day else ("", ())
    rows = SqlStore(app).fetchall(
        f"SELECT notification_id, hash, day FROM {{schema}}{TABLE} {where}"
        "ORDER BY notification_id DESC LIMIT 1", params)
    if not rows:
        return None
    r = rows[0]
    return Head(service, int(r["notification_id"]), str(r["hash"]), str(r["day"]))


def day_root(app: Any, day: str) -> str | None:
    """The last hash recorded on ``day`` (Paris): printing it fixes that day's history."""
    found = head(app, "", day)
    return found.hash if found else None


@dataclass(frozen=True)
class Unreached:
    """A head kept elsewhere that the store no longer leads to."""

    head: Head
    stored: str | None  # the store's hash at that position; None: the position is gone
    last: int  # the store's last chained position

    def __str__(self) -> str:
        h = self.head
        if self.stored is None:
            why = (f"the store ends at event {self.last}: events were removed (truncated "
                   "history)")
        else:
            why = (f"the store has {self.stored[:16]}… there: the history up to it was "
                   "rewritten")
        return (f"head {h.service} event {h.notification_id} ({h.hash[:16]}…, {h.day}) is "
                f"not reached: {why}")


def check_heads(app: Any, heads: Iterable[Head]) -> tuple[int, Unreached | None]:
    """Compare the store's chain with heads kept outside it; return how many distinct
    heads were reached and the first (lowest position) that is not.

    Run it after ``verify``: a chain that verifies and reaches a head holds, up to that
    head, exactly the history that was anchored (changing it means finding another input
    with the same hash, or, when keyed, knowing the key)."""
    store = SqlStore(app)
    last_rows = store.fetchall(f"SELECT MAX(notification_id) AS n FROM {{schema}}{TABLE}")
    last = int(last_rows[0]["n"] or 0)
    reached = 0
    for h in sorted(set(heads), key=lambda h: (h.notification_id, h.hash)):
        rows = store.fetchall(
            f"SELECT hash FROM {{schema}}{TABLE} WHERE notification_id = ?",
            (h.notification_id,))
        stored = str(rows[0]["hash"]) if rows else None
        if stored != h.hash:
            return reached, Unreached(h, stored, last)
        reached += 1
    return reached, None
