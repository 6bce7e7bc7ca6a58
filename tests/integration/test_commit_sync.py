"""How each role's SQLite connections commit: the APIs sync each commit (FULL), the
consumers do not (NORMAL), and a relay syncs the log before it publishes what it read, so
nothing a consumer committed unsynced is ever seen outside the machine before it is on disk.
See docs/operations.md, "How durable a commit is"."""

import os
from pathlib import Path
from typing import Any

from services import bootstrap
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.ports import Ack
from services.common.messaging.relay import Heads
from services.common.messaging.wakeup import Sleep
from services.common.storage.persistence import SqlStore
from tests.conftest import make_settings
from tests.factories import open_regies, terms

FULL, NORMAL = 2, 1


def synchronous(app: Any) -> int:
    # A new connection as well as the one the pool already holds.
    return int(SqlStore(app).fetchall("PRAGMA synchronous")[0]["synchronous"])


def test_the_apis_stores_sync_every_commit(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path)
    assert synchronous(bootstrap.billing_app(settings)) == FULL
    assert synchronous(bootstrap.payment_app(settings)) == FULL


def test_a_consumers_store_commits_without_syncing(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path)
    for service, topic in (("payment", "billing.invoices"), ("billing", "payment.payments")):
        consumer = bootstrap.consumer(service, settings)
        assert consumer.topic == topic
        store = consumer.positions.store  # type: ignore[attr-defined]
        rows = store.fetchall("PRAGMA synchronous")
        assert int(rows[0]["synchronous"]) == NORMAL
        # Every connection of its pool, also one made after the setting.
        datastore = store.datastore
        with datastore.get_connection(commit=False) as a, \
                datastore.get_connection(commit=False) as b:
            assert a is not b
            for conn in (a, b):
                cursor = conn.cursor()
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == NORMAL
    # The same database opened for an API still syncs each commit.
    assert synchronous(bootstrap.payment_app(settings)) == FULL


def test_a_relay_syncs_the_log_before_it_publishes(tmp_path: Path, monkeypatch: Any) -> None:
    settings = make_settings("sqlite", tmp_path)
    billing = bootstrap.billing_app(settings)
    open_regies(billing)
    billing.issue_invoice(terms("F-1"))
    wal = str(settings.var_dir / "billing.db-wal")
    synced: list[str] = []
    real_sync = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_sync(fd)

    class Watched(MemoryPublisher):
        def publish(self, messages: Any) -> list[Ack]:
            # Everything read so far is on disk before any of it leaves.
            assert wal in synced
            synced.clear()
            return super().publish(messages)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    relay = bootstrap.relay("billing", settings, app=billing, publisher=Watched(),
                            heads=Heads(Watched(), "audit.chain-heads", "billing"),
                            wakeup=Sleep())
    published = 0
    while count := relay.run_once():
        published += count
    assert published == 3


def test_a_relays_own_writes_are_not_synced_one_by_one(tmp_path: Path) -> None:
    """Its position and end offsets: lost to a power cut, a batch is published again, which
    consumers skip. Its next sync before publishing syncs them with the rest."""
    settings = make_settings("sqlite", tmp_path)
    for service in ("billing", "payment"):
        relay = bootstrap.relay(service, settings, publisher=MemoryPublisher(),
                                heads=Heads(MemoryPublisher(), "audit.chain-heads", service),
                                wakeup=Sleep())
        assert synchronous(relay.app) == NORMAL
