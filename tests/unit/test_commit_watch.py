"""When the SQLite wake-up looks at ``PRAGMA data_version``: from a write until its commit
shows, and no longer, unless another write came meanwhile (a wake-up is never missed)."""

from services.common.messaging.wakeup import CommitWatch

SOON, LATER = 0.001, 0.005


def test_a_commit_that_shows_ends_the_watch_until_the_next_write() -> None:
    watch = CommitWatch(version=5, window=0.1)
    assert watch.looked(0.000, wrote=True, version=5) == (False, SOON)
    assert watch.looked(0.002, wrote=False, version=5) == (False, SOON)
    # Shown, and nothing written since the look before: that write was this commit's.
    assert watch.looked(0.004, wrote=False, version=6) == (True, None)


def test_a_write_seen_with_a_commit_keeps_the_watch_until_its_own_commit() -> None:
    watch = CommitWatch(version=5, window=0.1)
    assert watch.looked(0.000, wrote=True, version=5) == (False, SOON)
    # The first commit shows, but a write came since the last look: a second commit may
    # still be on its way (SQLite writes one transaction at a time, after the first).
    assert watch.looked(0.002, wrote=True, version=6) == (True, SOON)
    assert watch.looked(0.004, wrote=False, version=6) == (False, SOON)
    assert watch.looked(0.006, wrote=False, version=7) == (True, None)


def test_a_write_that_commits_nothing_is_watched_for_the_window_then_dropped() -> None:
    watch = CommitWatch(version=5, window=0.1)
    assert watch.looked(0.000, wrote=True, version=5) == (False, SOON)
    assert watch.looked(0.009, wrote=False, version=5) == (False, SOON)
    assert watch.looked(0.050, wrote=False, version=5) == (False, LATER)
    assert watch.looked(0.100, wrote=False, version=5) == (False, None)
    # The next write starts a watch again.
    assert watch.looked(0.500, wrote=True, version=5) == (False, SOON)
    assert watch.looked(0.501, wrote=False, version=6) == (True, None)
