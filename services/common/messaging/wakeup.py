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
  folder with inotify, which costs nothing while nothing is written. Polling the file's
  ``PRAGMA data_version`` every 2 ms instead cost 4.3% of a core while idle (measured).
- Anything else (the in-memory store, a system without inotify): ``Sleep``, the poll alone.
"""

import logging
import threading
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

    # Seconds a wake-up waits for the writes that woke it to be quiet; 0: none.
    settle = 0.0
    # Pauses after a wake-up at which the waiter is told to look again, for a store that
    # may wake it before the commit is visible; empty: none.
    again: tuple[float, ...] = ()

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._again: list[float] = []

    def wait(self, timeout: float) -> bool:
        woken = self._flag.is_set()
        while not woken and self._again:
            pause = self._again.pop(0)
            if pause >= timeout:
                self._again.clear()
            elif not self._flag.wait(pause):
                return True  # look again
            else:
                woken = True
        if not woken and not self._flag.wait(timeout):
            return False
        self._flag.clear()
        while self.settle and self._flag.wait(self.settle):
            self._flag.clear()
        self._again = list(self.again)
        return True

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


class FileWakeup(_Watcher):
    """Watch an SQLite database's folder with inotify for writes to the file or its WAL.

    The folder, not the files: SQLite deletes the WAL when its last connection closes and
    makes it again, which would end a watch on the file itself. A commit writes several
    pages, then syncs the WAL to disk, and only then updates the WAL index (shared memory,
    which inotify does not see) that makes it visible to readers: the sync took from under
    a millisecond to tens of them here. So a wake-up is given once the writes have been
    quiet for ``settle`` seconds, and the relay is told to look again 2, 10 and 40 ms later
    (three more reads of the log, and only after a write: the relay's own write of its
    position wakes it too); a commit still not visible after that is published by the poll.
    """

    settle = 0.001
    again = (0.002, 0.008, 0.030)

    def __init__(self, database: Path) -> None:
        from inotify_simple import INotify, flags

        super().__init__(f"watch {database.name}")
        self.names = {database.name, f"{database.name}-wal"}
        self._inotify = INotify()
        self._inotify.add_watch(str(database.parent), flags.MODIFY | flags.CREATE)

    def _watch(self) -> None:
        try:
            while not self._closed.is_set():
                # Bounded, so that close() is noticed within a second.
                if any(e.name in self.names for e in self._inotify.read(timeout=1000)):
                    self.wake()
        except Exception:
            log.exception("watching %s failed; polling only", sorted(self.names))
        finally:
            self._inotify.close()


def file_wakeup(database: Path) -> Sleep:
    """A FileWakeup started on ``database``; the poll alone where inotify is missing."""
    try:
        return FileWakeup(database).start()
    except (OSError, ImportError, AttributeError) as e:  # not Linux, or no inotify left
        log.warning("no inotify for %s (%s); the relay polls only", database, e)
        return Sleep()
