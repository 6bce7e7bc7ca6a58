"""What both services' event stores share: transcodings, schema creation, SQL dialect."""

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from functools import partial
from typing import Any, NamedTuple, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Transcoding
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteTransaction,
)

from services.common.settings import Settings


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


def register_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(DateAsISO())


@contextmanager
def _held(settings: Settings, service: str, name: str,
          schema: str | None = None) -> Iterator[None]:
    """Hold the lock ``name`` of ``service``'s store across processes; others wait for it.

    A PostgreSQL advisory lock (making ``schema`` first, when given), or a lock file beside
    the SQLite file; nothing to share for the in-memory store.
    """
    if not settings.is_postgres():
        if settings.persistence != "eventsourcing.sqlite":
            yield
            return
        import fcntl

        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.var_dir / f"{service}.{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    import psycopg
    from psycopg import sql

    key = settings.schema(service) if name == "db" else f"{settings.schema(service)}/{name}"
    with psycopg.connect(
        dbname=settings.postgres_dbname,
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password or None,
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            if schema is not None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


@contextmanager
def schema_lock(settings: Settings, service: str) -> Iterator[None]:
    """Make the service's schema, and hold a lock while its tables are created.

    `eventsourcing` creates tables, not schemas. Its table creation is not safe when two
    processes (an API and its relay, say) start at once: PostgreSQL fails one of them on a
    duplicate type name, SQLite on its tracking migration row. An advisory lock per schema,
    or a lock file beside the SQLite file (`SERVICE.db.lock`), serialises it.
    """
    with _held(settings, service, "db", schema=settings.schema(service)):
        yield


@contextmanager
def exclusive(settings: Settings, service: str, name: str) -> Iterator[None]:
    """Hold the lock ``name`` of ``service``'s store across processes; others wait for it.

    For a job that acts outside the store before it records what it did (an e-mail sent):
    two runs at once would both act.
    """
    with _held(settings, service, name):
        yield


# The longest pause between two tries for SQLite's write lock. SQLite's own wait (its busy
# handler) pauses 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms between tries:
# beside a writer committing every few milliseconds (an API issuing invoices), a relay's
# position write so waited up to 430 ms, 34 ms at the 99th percentile, for a lock that
# was free most of the time.
_LOCK_RETRY = 0.001
_pause = time.sleep  # a test counts the pauses


class _ImmediateTransaction(SQLiteTransaction):
    def __init__(self, connection: Any, *, commit: bool, timeout: float) -> None:
        super().__init__(connection, commit=commit)
        self.timeout = timeout

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        raw = self.connection._sqlite_conn
        # The lock is tried without SQLite's wait, and again after a pause of at most
        # _LOCK_RETRY, until the connection's own timeout (its busy timeout, which
        # eventsourcing sets from the same value, is put back for everything else).
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self.timeout
            pause = _LOCK_RETRY / 8
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return cursor
                except sqlite3.OperationalError as e:
                    # Any kind of busy (its extended codes: a log being recovered...).
                    if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or \
                            time.monotonic() >= deadline:
                        raise
                _pause(pause)
                pause = min(pause * 2, _LOCK_RETRY)
        finally:
            raw.execute(f"PRAGMA busy_timeout = {round(self.timeout * 1000)}")


@contextmanager
def write_transaction(datastore: Any) -> Iterator[Any]:
    """A transaction that will write: on SQLite it takes the write lock as it begins.

    `eventsourcing` begins every SQLite transaction with a plain (deferred) BEGIN. Such a
    transaction holds a read snapshot from its first statement; if another connection
    commits before its first write, SQLite refuses the upgrade at once ("database is
    locked") instead of waiting, because waiting would not make the snapshot current.
    BEGIN IMMEDIATE waits for the lock before reading anything: tried every millisecond
    at most, up to the store's lock timeout (``_ImmediateTransaction``).
    """
    if not isinstance(datastore, SQLiteDatastore):
        with datastore.transaction(commit=True) as cursor:
            yield cursor
        return
    timeout = datastore.pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
    with datastore.get_connection(commit=True) as conn, \
            _ImmediateTransaction(conn, commit=True, timeout=timeout) as cursor, cursor:
        yield cursor


def _sqlite_file(app: Application[Any]) -> SQLiteDatastore | None:
    datastore = getattr(app.recorder, "datastore", None)
    if isinstance(datastore, SQLiteDatastore) and not datastore.pool.is_sqlite_memory_mode:
        return datastore
    return None


def commit_without_sync(app: Application[Any]) -> None:
    """Make ``app``'s SQLite connections commit without syncing the write-ahead log
    (``synchronous=NORMAL``); nothing on another store.

    Only for a consumer's own application: after a power cut (not a crash of the process:
    the system still writes what it was given) its last commits may be gone, each poll
    whole with its tracking rows, and it reads those messages again. A relay syncs the
    log before it publishes what it read (``log_sync``), and a later synced commit (an
    API's) syncs everything before it, so nothing seen outside is lost. See
    docs/operations.md, "How durable a commit is".
    """
    datastore = _sqlite_file(app)
    if datastore is not None:
        _synchronous(datastore.pool, "NORMAL")


def _synchronous(pool: Any, level: str) -> Callable[[], Any]:
    """Set ``synchronous`` on the pool's idle connections and on those it makes from now
    on; return how it made them before. eventsourcing makes the pool's connections and has
    no setting for this."""
    make = pool._create_connection

    def create() -> Any:
        conn = make()
        conn._sqlite_conn.execute(f"PRAGMA synchronous={level}")
        return conn

    pool._create_connection = create
    _idle_synchronous(pool, level)
    return make  # type: ignore[no-any-return]


def _idle_synchronous(pool: Any, level: str) -> None:
    """Set ``synchronous`` on the connections waiting in the pool."""
    for conn in list(pool._pool):
        conn._sqlite_conn.execute(f"PRAGMA synchronous={level}")


@contextmanager
def unsynced_while(app: Application[Any]) -> Iterator[None]:
    """``app``'s SQLite commits unsynced (``synchronous=NORMAL``) inside the block, as they
    were after it, with the log synced once at its end (``log_sync``); nothing on another
    store.

    For writes that may be lost and made again, each commit whole: a power cut inside the
    block may take its last commits, never half of one. Connections checked out of the
    pool while the block runs keep the level they had.
    """
    datastore = _sqlite_file(app)
    if datastore is None:
        yield
        return
    pool: Any = datastore.pool
    with datastore.get_connection(commit=False) as conn:
        level = int(conn._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0])
    make = _synchronous(pool, "NORMAL")
    try:
        yield
    finally:
        pool._create_connection = make
        _idle_synchronous(pool, str(level))
        log_sync(app)()


def log_sync(app: Application[Any]) -> Callable[[], None]:
    """What a relay calls after reading, before it publishes: syncs the SQLite file's
    write-ahead log, so that what it publishes outlives a power cut even when a consumer
    committed it without syncing (``commit_without_sync``). On another store, nothing
    (PostgreSQL's commits are synced, the in-memory store has nothing to sync).

    Any file descriptor syncs the file; a log that is not there has been checkpointed
    into the database, which the checkpoint synced. ``fdatasync``, as SQLite syncs its log:
    the data, not the file's times, so a log the APIs' commits synced costs next to nothing.
    """
    datastore = _sqlite_file(app)
    if datastore is None:
        return lambda: None
    wal = f"{datastore.pool.db_name}-wal"

    def sync() -> None:
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    return sync


class StoredRow(NamedTuple):
    """A stored event as a replay reads it: the fields of eventsourcing's ``Notification``,
    the originator's id as text (``str`` of its UUID, or as the store keeps it when asked:
    ``uuid_text`` then writes it as ``str`` would)."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


# A row as a StoredRow, made in C (its generated __new__ is Python).
_stored_row = partial(tuple.__new__, StoredRow)

# SQLite keeps an id as 32 hex digits; str(UUID) puts in the hyphens.
_SQLITE_ID = ("CASE WHEN length(originator_id) = 32 THEN substr(originator_id, 1, 8) || '-' || "
              "substr(originator_id, 9, 4) || '-' || substr(originator_id, 13, 4) || '-' || "
              "substr(originator_id, 17, 4) || '-' || substr(originator_id, 21) "
              "ELSE originator_id END")


def uuid_text(stored: Any) -> str:
    """An originator's id, as ``stored_events`` reads it with ``ids_as_stored``, written as
    ``str`` of its UUID writes it: what ``_SQLITE_ID`` does in SQLite."""
    if type(stored) is str:
        if len(stored) == 32:
            return f"{stored[:8]}-{stored[8:12]}-{stored[12:16]}-{stored[16:20]}-{stored[20:]}"
        return stored
    return str(stored)


# Keys in one ``IN (…)`` list: SQLite before 3.32 takes at most 999 parameters a statement,
# PostgreSQL's protocol 65,535.
KEYS_PER_STATEMENT = 500
R = TypeVar("R")


class SqlStore:
    """Plain SQL beside an application's event store, in the same database.

    Used for read models and positions that must commit in one transaction with their
    tracking record. Statements are written with ``?`` placeholders and ``{schema}``
    table prefixes; PostgreSQL gets ``%s`` and the service's schema.
    """

    def __init__(self, app: Application[Any]) -> None:
        recorder: Any = app.recorder
        self.datastore: Any = recorder.datastore
        self.postgres = type(self.datastore).__name__.startswith("Postgres")
        self.prefix = f'"{self.datastore.schema}".' if self.postgres else ""
        self.events_table: str | None = getattr(recorder, "events_table_name", None)

    @classmethod
    def in_memory(cls) -> "SqlStore":
        """A private in-memory SQLite database, for applications on the in-memory store."""
        from uuid import uuid4

        from eventsourcing.sqlite import SQLiteDatastore

        store = cls.__new__(cls)
        store.datastore = SQLiteDatastore(f"file:view-{uuid4().hex}?mode=memory&cache=shared")
        store.postgres = False
        store.prefix = ""
        store.events_table = None
        return store

    def sql(self, statement: str) -> str:
        statement = statement.replace("{schema}", self.prefix)
        return statement.replace("?", "%s") if self.postgres else statement

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with write_transaction(self.datastore) as cursor:
            yield _Cursor(self, cursor)

    def fetchall(self, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """The rows of one statement, read in the statement's own transaction.

        Both databases run a lone statement outside BEGIN as a transaction of its own, on
        one snapshot; `eventsourcing`'s read transaction would add a BEGIN and a ROLLBACK:
        two more round trips to PostgreSQL, two more SQLite calls, each handing the GIL to
        another thread and back.
        """
        if self.postgres:
            # Its pooled connections are in autocommit mode.
            with self.datastore.cursor() as cursor, cursor:
                return _Cursor(self, cursor).query(statement, params)
        with self.datastore.get_connection(commit=False) as conn, conn.cursor() as cursor:
            return _Cursor(self, cursor).query(statement, params)

    def rows_by_keys(self, statement: str, keys: Iterable[Any]) -> list[dict[str, Any]]:
        """The rows of ``statement`` for ``keys``, read a chunk of keys at a time: ``{keys}``
        in it stands for one chunk's placeholders, as in ``WHERE id IN ({keys})``. Each key
        is asked once, in order; no keys, no statement.

        On PostgreSQL a chunk goes as one array, ``IN ({keys})`` read as ``= ANY(?)``: a
        statement of 500 placeholders is parsed anew by psycopg (too long for its cache)
        and by the server each time. A chunk of 500 keys took 3.8 ms that way (1.5 ms of
        the client's CPU), against 1.8 ms (0.6 ms) as one array."""
        return _rows_by_keys(self.fetchall, *_keyed(statement, self.postgres), keys)

    def values(self, statement: str, params: tuple[Any, ...] = ()) -> list[Sequence[Any]]:
        """``fetchall``'s rows as plain sequences (by position), for a read whose rows
        are many: a dict per row cost a batch issue as much as the query itself."""
        if self.postgres:
            from psycopg.rows import tuple_row

            with self.datastore.cursor() as cursor, cursor:
                cursor.row_factory = tuple_row
                cursor.execute(self.sql(statement), params)
                rows: list[Sequence[Any]] = cursor.fetchall()
                return rows
        with self.datastore.get_connection(commit=False) as conn, conn.cursor() as cursor:
            raw = getattr(cursor, "sqlite_cursor", cursor)
            raw.execute(self.sql(statement), params)
            # sqlite3.Row: indexed by position as it is.
            found: list[Sequence[Any]] = raw.fetchall()
            return found

    def values_by_keys(self, statement: str, keys: Iterable[Any]) -> list[Sequence[Any]]:
        """``rows_by_keys``, its rows by position (``values``): a dict per row cost a
        batch issue as much as the query itself."""
        return _rows_by_keys(self.values, *_keyed(statement, self.postgres), keys)

    def stored_events(self, after: int, limit: int, ids_as_stored: bool = False
                      ) -> list[StoredRow]:
        """Up to ``limit`` of the application's stored events after notification ``after``,
        in order: what ``select_notifications`` returns, read as plain rows. A replay reads
        millions of them; eventsourcing makes a ``Notification`` and a ``UUID`` of each,
        which cost as much as reading them.

        ``ids_as_stored``: the originators' ids as the store keeps them (on SQLite 32 hex
        digits, which ``uuid_text`` writes as ``str(UUID)``). The ``substr`` calls that put
        the hyphens in took 7% of a replay's CPU in SQLite, row after row; the replay
        writes each originator's id once in Python for its several events, for a third
        of that.
        """
        if self.events_table is None:
            raise RuntimeError("this store has no events table")
        if self.postgres:
            from psycopg.rows import tuple_row

            with self.datastore.transaction(commit=False) as cursor:
                cursor.row_factory = tuple_row
                # In binary: as text, the server writes each bytea state as hex, twice its
                # size, which the client then decodes; reading a replay's pages took 1.6-2
                # times the wall time and the client's CPU. Same values, same types.
                cursor.execute(
                    "SELECT notification_id, originator_id::text, originator_version, topic, "
                    f'state FROM {self.prefix}"{self.events_table}" '
                    "WHERE notification_id > %s ORDER BY notification_id LIMIT %s",
                    (after, limit), binary=True)
                return list(map(_stored_row, cursor.fetchall()))
        with self.datastore.transaction(commit=False) as cursor:
            raw = getattr(cursor, "sqlite_cursor", cursor)
            oid = "originator_id" if ids_as_stored else _SQLITE_ID
            raw.execute(f"SELECT rowid, {oid}, originator_version, topic, state "
                        f"FROM {self.events_table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                        (after, limit))
            return list(map(_stored_row, raw.fetchall()))


def _keyed(statement: str, postgres: bool) -> tuple[str, bool]:
    """``statement`` as ``_rows_by_keys`` sends it, and whether its keys go as an array: on
    PostgreSQL ``IN ({keys})`` becomes ``= ANY(?)``, which the keys, of the column's type
    or text, fill as one parameter."""
    if not postgres:
        return statement, False
    if "IN ({keys})" not in statement:
        raise ValueError("a statement read by keys needs IN ({keys})")
    return statement.replace("IN ({keys})", "= ANY(?)"), True


def _rows_by_keys(query: Callable[[str, tuple[Any, ...]], list[R]],
                  statement: str, as_array: bool, keys: Iterable[Any]) -> list[R]:
    """Each chunk's keys as the placeholders ``{keys}`` stands for, or (``as_array``) as
    the one array parameter of a statement that has its own placeholder for it."""
    ordered = sorted(set(keys))
    rows: list[R] = []
    for start in range(0, len(ordered), KEYS_PER_STATEMENT):
        chunk = ordered[start:start + KEYS_PER_STATEMENT]
        if as_array:
            rows += query(statement, (chunk,))
        else:
            rows += query(statement.replace("{keys}", ", ".join("?" * len(chunk))),
                          tuple(chunk))
    return rows


# From how many rows ``insert_new`` copies them into PostgreSQL (a replay's batches) rather
# than sending one INSERT each: below it, making the staging table costs more than it saves.
COPY_FROM = 200


class _Cursor:
    def __init__(self, store: SqlStore, cursor: Any) -> None:
        self.store = store
        # eventsourcing wraps sqlite3 cursors without exposing rowcount
        self.cursor = getattr(cursor, "sqlite_cursor", cursor)

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        self.cursor.execute(self.store.sql(statement), params)
        return int(self.cursor.rowcount)

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        self.execute(statement, params)
        return self.fetchall()

    def rows_by_keys(self, statement: str, keys: Iterable[Any]) -> list[dict[str, Any]]:
        """``SqlStore.rows_by_keys`` inside this transaction."""
        return _rows_by_keys(self.query, *_keyed(statement, self.store.postgres), keys)

    def executemany(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        self.cursor.executemany(self.store.sql(statement), params)

    def insert_new(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
                   ) -> None:
        """INSERT the rows into ``{schema}table`` but those whose ``id`` is there already:
        ``INSERT … ON CONFLICT (id) DO NOTHING``, row after row.

        Many rows on PostgreSQL are written with COPY into a staging table, and moved from
        there by one such INSERT: psycopg's executemany spends more Python per row than
        the database spends inserting it. The rows must not repeat an id.
        """
        names = ", ".join(columns)
        if not (self.store.postgres and len(rows) >= COPY_FROM):
            self.executemany(
                f"INSERT INTO {{schema}}{table} ({names}) "
                f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT (id) DO NOTHING", rows)
            return
        staging = f"pg_temp.staging_{table}"
        target = self.store.sql(f"{{schema}}{table}")
        # Dropped at the end, or with the transaction if it rolls back.
        self.cursor.execute(f"CREATE TEMP TABLE {staging} (LIKE {target})")
        with self.cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        self.cursor.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {staging} "
                            "ON CONFLICT (id) DO NOTHING")
        self.cursor.execute(f"DROP TABLE {staging}")

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self.cursor.fetchall()]

    def fetchone(self) -> dict[str, Any] | None:
        row = self.cursor.fetchone()
        return None if row is None else dict(row)
