"""The families' data keys: a port, its fake, and its SQL side beside the event store."""

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from services.common.storage.persistence import SqlStore

KEY_BYTES = 32


class KeyStore(Protocol):
    def key(self, family_id: str) -> bytes | None:
        """The family's data key, or None: it never had one, or it was destroyed."""

    def keys(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        """The keys these families have now, in one look-up; none is made."""

    def key_or_new(self, family_id: str) -> bytes:
        """The family's data key, made on first use (again after it was forgotten)."""

    def keys_or_new(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        """The keys of many families at once, the missing made (for a batch of events)."""

    def destroy(self, family_id: str, reason: str) -> bool:
        """Destroy the family's key for good; True if it had one."""

    def forgotten(self, family_id: str) -> bool:
        """Whether the family's key was destroyed (and no new one made since)."""

    def families(self) -> list[str]:
        """The families that have a key."""


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._forgotten: set[str] = set()

    def key(self, family_id: str) -> bytes | None:
        return self._keys.get(family_id)

    def keys(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        return {family: self._keys[family] for family in set(family_ids)
                if family in self._keys}

    def key_or_new(self, family_id: str) -> bytes:
        self._forgotten.discard(family_id)
        return self._keys.setdefault(family_id, os.urandom(KEY_BYTES))

    def keys_or_new(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        return {family: self.key_or_new(family) for family in set(family_ids)}

    def destroy(self, family_id: str, reason: str) -> bool:
        self._forgotten.add(family_id)
        return self._keys.pop(family_id, None) is not None

    def forgotten(self, family_id: str) -> bool:
        return family_id in self._forgotten

    def families(self) -> list[str]:
        return sorted(self._keys)


class SqlKeyStore:
    """Keys in their own table of the service's database, never in an event.

    A destroyed key must not survive in the file: on SQLite the row is deleted with
    ``secure_delete`` on (the freed space is zeroed) and the WAL is checkpointed and
    truncated; on PostgreSQL the table is rewritten (``VACUUM FULL``) so that no dead
    tuple keeps it.
    """

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        blob = "BYTEA" if store.postgres else "BLOB"
        with store.transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS {schema}privacy_keys "
                      f"(family_id TEXT PRIMARY KEY, data_key {blob} NOT NULL)")
            c.execute("CREATE TABLE IF NOT EXISTS {schema}privacy_forgotten "
                      "(family_id TEXT PRIMARY KEY, forgotten_at TEXT NOT NULL, "
                      "reason TEXT NOT NULL)")

    def key(self, family_id: str) -> bytes | None:
        rows = self.store.fetchall(
            "SELECT data_key FROM {schema}privacy_keys WHERE family_id = ?", (family_id,))
        return bytes(rows[0]["data_key"]) if rows else None

    def key_or_new(self, family_id: str) -> bytes:
        known = self.key(family_id)
        if known is not None:
            return known
        with self.store.transaction() as c:
            c.execute("INSERT INTO {schema}privacy_keys (family_id, data_key) VALUES (?, ?) "
                      "ON CONFLICT (family_id) DO NOTHING", (family_id, os.urandom(KEY_BYTES)))
            c.execute("DELETE FROM {schema}privacy_forgotten WHERE family_id = ?", (family_id,))
            row = c.query("SELECT data_key FROM {schema}privacy_keys WHERE family_id = ?",
                          (family_id,))
        return bytes(row[0]["data_key"])

    def keys(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        return self._keys_of(sorted(set(family_ids)))

    def keys_or_new(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = sorted(set(family_ids))
        keys = self._keys_of(wanted)
        missing = [family for family in wanted if family not in keys]
        if missing:
            with self.store.transaction() as c:
                c.executemany("INSERT INTO {schema}privacy_keys (family_id, data_key) "
                              "VALUES (?, ?) ON CONFLICT (family_id) DO NOTHING",
                              [(family, os.urandom(KEY_BYTES)) for family in missing])
                c.executemany("DELETE FROM {schema}privacy_forgotten WHERE family_id = ?",
                              [(family,) for family in missing])
            # Read back, in pages rather than one query a family (a batch of new families
            # cost a round trip each): another writer may have made some of them first.
            keys.update(self._keys_of(missing))
            # Destroyed again meanwhile: made anew, as key_or_new does.
            keys.update({family: self.key_or_new(family) for family in missing
                         if family not in keys})
        return keys

    def _keys_of(self, families: list[str]) -> dict[str, bytes]:
        rows = self.store.values_by_keys(
            "SELECT family_id, data_key FROM {schema}privacy_keys WHERE family_id IN ({keys})",
            families)
        return {family: bytes(key) for family, key in rows}

    def destroy(self, family_id: str, reason: str) -> bool:
        with self.store.transaction() as c:
            if not self.store.postgres:
                c.execute("PRAGMA secure_delete = ON")
            had = c.execute("DELETE FROM {schema}privacy_keys WHERE family_id = ?",
                            (family_id,)) > 0
            c.execute("INSERT INTO {schema}privacy_forgotten (family_id, forgotten_at, reason) "
                      "VALUES (?, ?, ?) ON CONFLICT (family_id) DO UPDATE SET "
                      "forgotten_at = excluded.forgotten_at, reason = excluded.reason",
                      (family_id, datetime.now(UTC).isoformat(), reason))
        self._purge()
        return bool(had)

    def _purge(self) -> None:
        datastore = self.store.datastore
        if self.store.postgres:
            with datastore.get_connection() as conn:
                conn.autocommit = True
                try:
                    conn.execute(f"VACUUM FULL {self.store.prefix}privacy_keys")
                finally:
                    conn.autocommit = False
            return
        with datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def forgotten(self, family_id: str) -> bool:
        return bool(self.store.fetchall(
            "SELECT 1 AS x FROM {schema}privacy_forgotten WHERE family_id = ?", (family_id,)))

    def families(self) -> list[str]:
        rows = self.store.fetchall("SELECT family_id FROM {schema}privacy_keys "
                                   "ORDER BY family_id")
        return [row["family_id"] for row in rows]
