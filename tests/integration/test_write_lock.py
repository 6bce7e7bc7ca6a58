"""Waiting for SQLite's write lock: a write tries again every millisecond at most while
another connection holds the lock, instead of SQLite's own waits, which grow to 100 ms
between tries; and it still gives up after the store's lock timeout."""

import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
from eventsourcing.sqlite import SQLiteDatastore

from services.common.storage import persistence
from services.common.storage.persistence import write_transaction


def store(tmp_path: Path, lock_timeout: int | None = None) -> SQLiteDatastore:
    datastore = SQLiteDatastore(str(tmp_path / "locks.db"), lock_timeout=lock_timeout)
    with write_transaction(datastore) as c:
        c.execute("CREATE TABLE t (n INTEGER)")
    return datastore


def busy_timeout(datastore: SQLiteDatastore) -> int:
    with datastore.get_connection(commit=False) as conn:
        return int(conn._sqlite_conn.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_write_tries_again_every_millisecond_at_most_and_gets_the_lock_once_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datastore = store(tmp_path)
    timeout = busy_timeout(datastore)
    holder = sqlite3.connect(tmp_path / "locks.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        # The holder commits after the writer's 40th try: with SQLite's own waits the
        # writer never comes back here, and gives up after the timeout.
        pauses.append(seconds)
        if len(pauses) == 40:
            holder.execute("COMMIT")

    monkeypatch.setattr(persistence, "_pause", pause, raising=False)
    with write_transaction(datastore) as c:
        c.execute("INSERT INTO t VALUES (2)")
    assert len(pauses) == 40
    assert max(pauses) <= 0.001
    rows = holder.execute("SELECT n FROM t ORDER BY n").fetchall()
    assert rows == [(1,), (2,)]
    # The connection waits as before for anything else.
    assert busy_timeout(datastore) == timeout
    holder.close()


def test_a_write_gives_up_after_the_lock_timeout(tmp_path: Path) -> None:
    datastore = store(tmp_path, lock_timeout=1)
    holder = sqlite3.connect(tmp_path / "locks.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"), \
            write_transaction(datastore) as c:
        c.execute("INSERT INTO t VALUES (2)")
    holder.execute("ROLLBACK")
    holder.close()
    assert busy_timeout(datastore) == 1000
    with write_transaction(datastore) as c:
        c.execute("INSERT INTO t VALUES (3)")


def test_a_write_tries_again_after_any_kind_of_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite answers some waits with an extended busy code (a log being recovered:
    SQLITE_BUSY_RECOVERY), which its own wait retried too."""

    class Raw:
        def __init__(self) -> None:
            self.statements: list[str] = []

        def execute(self, statement: str) -> None:
            self.statements.append(statement)

    class Cursor:
        def __init__(self, answers: list[int]) -> None:
            self.answers = answers

        def execute(self, statement: str) -> None:
            if self.answers:
                error = sqlite3.OperationalError("database is locked")
                error.sqlite_errorcode = self.answers.pop(0)
                raise error

    class Connection:
        def __init__(self) -> None:
            self._sqlite_conn = Raw()
            self.answer = Cursor([261, 5])  # SQLITE_BUSY_RECOVERY, then SQLITE_BUSY
            self.rolled_back = False

        def cursor(self) -> Cursor:
            return self.answer

        def rollback(self) -> None:
            self.rolled_back = True

    monkeypatch.setattr(persistence, "_pause", lambda seconds: None)
    connection = Connection()
    with persistence._ImmediateTransaction(connection, commit=False, timeout=1) as cursor:
        assert cursor is cast(Any, connection.answer)
    assert connection.answer.answers == [] and connection.rolled_back
    assert connection._sqlite_conn.statements[-1] == "PRAGMA busy_timeout = 1000"
