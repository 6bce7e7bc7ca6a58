"""Wake-ups for a relay: word, soon after a commit, that the notification log may have grown.

A relay that only polls sees a new event half a poll interval late on average. A wake-up
lets it look at once. It is a hint, never the data: the relay still reads the log, and still
polls at its interval, so a wake-up that is lost, or a listener that is down, costs at most
one interval, never an event.

- PostgreSQL: eventsourcing's recorder sends a NOTIFY on the events table's channel in each
  transaction that inserts events, and PostgreSQL delivers it once that transaction commits.
  ``ListenWakeup`` keeps one connection LISTENing on that channel.
- SQLite, a file: nothing tells other processes of a commit, but the commit writes the
  database's write-ahead log (eventsourcing opens it in WAL mode). ``FileWakeup`` watches the
  folder with inotify, which costs nothing while nothing is written, and after a write
  watches ``PRAGMA data_version`` until the commit shows (``CommitWatch``). Polling
  ``data_version`` every 2 ms all the time instead cost 4.3% of a core while idle
  (measured).
- Anything else (the in-memory store, a system without inotify): ``Sleep``, the poll alone.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Wakeup(Protocol):
    def wait(self, timeout: float) -> bool:
        """Return once woken (True), or after ``timeout`` seconds (False). A wake-up that
        came since the last ``wait`` returned ends this one at once."""

    def wake(self) -> None:
        """End the current or next ``wait`` now."""

    def close(self) -> None: ...


class Sleep:
    """No word from the store: each wait lasts its timeout, unless ``wake`` ends it."""

    def __init__(self) -> None:
        self._flag = threading.Event()

    def wait(self, timeout: float) -> bool:
        woken = self._flag.wait(timeout)
        self._flag.clear()
        return woken

    def wake(self) -> None:
        self._flag.set()

    def close(self) -> None:
        pass


class _Watcher(Sleep):
    """A wake-up fed by a thread of its own, which ``close`` ends within a second."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=name, daemon=True)

    def start(self) -> "_Watcher":
        self._thread.start()
        return self

    def _watch(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closed.set()


class ListenWakeup(_Watcher):
    """LISTEN on the channel eventsourcing's PostgreSQL recorder notifies on each insert.

    Its own connection (``connect`` makes one), outside the store's pool. Lost, it is made
    again, doubling the pause up to 30 s; meanwhile the relay polls. A wake-up is given on
    each (re)connection: what was committed while no one listened is read then.
    """

    def __init__(self, connect: Callable[[], Any], channel: str) -> None:
        super().__init__(f"listen {channel}")
        self.connect = connect
        self.channel = channel
        # Set once LISTEN is in place, with the server process that listens.
        self.listening = threading.Event()
        self.backend_pid: int | None = None

    def _watch(self) -> None:
        from psycopg import sql

        pause = 0.2
        while not self._closed.is_set():
            try:
                with self.connect() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = conn.info.backend_pid
                    self.listening.set()
                    self.wake()
                    pause = 0.2
                    while not self._closed.is_set():
                        # Bounded, so that close() is noticed within a second.
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except Exception as e:
                self.listening.clear()
                log.warning("listening on %s failed (%s: %s); polling, listening again in "
                            "%.1fs", self.channel, type(e).__name__, e, pause)
                self._closed.wait(pause)
                pause = min(pause * 2, 30.0)


class CommitWatch:
    """When to look at ``PRAGMA data_version`` after a write, and when to wake the relay.

    A write is not yet a commit others can read: SQLite writes the pages, syncs the WAL,
    and only then updates the WAL index (shared memory, which inotify does not see); the
    sync took from under a millisecond to tens of them here. So from a write on, this
    looks every millisecond (then every 5, from 10 ms after the last write), and wakes the
    relay when the version changes. It stops looking once a commit shows and no write came
    since the look before: SQLite writes one transaction at a time, each only after the one
    before it is visible, so every write seen before that look belonged to a commit that
    now shows. A write seen with the commit (it may be the next transaction's) keeps it
    looking. A write that commits nothing new (a checkpoint) is watched for ``window``
    seconds, then dropped; a commit slower to show than that is published by the poll.
    """

    def __init__(self, version: int, window: float) -> None:
        self.version = version
        self.window = window
        self.last_write = float("-inf")

    def looked(self, now: float, wrote: bool, version: int) -> tuple[bool, float | None]:
        """A look at ``now`` found ``version``, and ``wrote``: whether writes came since
        the look before (read before the version). Returns whether to wake the relay and
        the seconds until the next look, None for none until the next write."""
        if wrote:
            self.last_write = now
        woke = version != self.version
        if woke:
            self.version = version
            if not wrote:
                return True, None
        since = now - self.last_write
        if since >= self.window:
            return woke, None
        return woke, 0.001 if since < 0.01 else 0.005


class FileWakeup(_Watcher):
    """Watch an SQLite database's folder with inotify for writes to the file or its WAL.

    The folder, not the files: SQLite deletes the WAL when its last connection closes and
    makes it again, which would end a watch on the file itself. After a write, the file's
    ``PRAGMA data_version``, which changes once another connection's commit is visible, is
    looked at until the commit shows (see ``CommitWatch``).
    """

    window = 0.1

    def __init__(self, database: Path) -> None:
        from inotify_simple import INotify, flags

        super().__init__(f"watch {database.name}")
        self.database = database
        self.names = {database.name, f"{database.name}-wal"}
        self._inotify = INotify()
        self._inotify.add_watch(str(database.parent), flags.MODIFY | flags.CREATE)

    def _written(self, timeout_ms: int) -> bool:
        return any(e.name in self.names for e in self._inotify.read(timeout=timeout_ms))

    def _watch(self) -> None:
        import sqlite3

        try:
            # Reads only; a read-only open would fail while the WAL is missing.
            with contextlib.closing(sqlite3.connect(
                    self.database, isolation_level=None, check_same_thread=False)) as conn:

                def version() -> int:
                    return int(conn.execute("PRAGMA data_version").fetchone()[0])

                watch = CommitWatch(version(), self.window)
                pause: float | None = None
                while not self._closed.is_set():
                    # The pause is spent waiting for a write, which ends it early: one
                    # call instead of a sleep and a look at the writes. Bounded, so that
                    # close() is noticed within a second. The writes are read before the
                    # version: one made after this read is seen by the next look.
                    wrote = self._written(1000 if pause is None else round(pause * 1000))
                    if pause is None and not wrote:
                        continue
                    woke, pause = watch.looked(time.monotonic(), wrote, version())
                    if woke:
                        self.wake()
        except Exception:
            log.exception("watching %s failed; polling only", self.database)
        finally:
            self._inotify.close()


def file_wakeup(database: Path) -> Sleep:
    """A FileWakeup started on ``database``; the poll alone where inotify is missing."""
    try:
        return FileWakeup(database).start()
    except (OSError, ImportError, AttributeError) as e:  # not Linux, or no inotify left
        log.warning("no inotify for %s (%s); the relay polls only", database, e)
        return Sleep()
