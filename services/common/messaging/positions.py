"""Positions kept in a service's own database: how far a relay published, where a
consumer resumes reading a topic."""

from typing import Protocol

from services.common.storage.persistence import SqlStore


class Positions(Protocol):
    def get(self, name: str) -> int: ...

    def set(self, name: str, position: int) -> None: ...

    def set_many(self, positions: dict[str, int]) -> None: ...

    def all(self) -> dict[str, int]:
        """Every position by name: what /metrics reads the lags from."""
        ...


class MemoryPositions:
    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    def get(self, name: str) -> int:
        return self._positions.get(name, 0)

    def set(self, name: str, position: int) -> None:
        self._positions[name] = position

    def set_many(self, positions: dict[str, int]) -> None:
        self._positions.update(positions)

    def all(self) -> dict[str, int]:
        return dict(self._positions)


class SqlPositions:
    """Kept in the service's own database, beside its events."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        with store.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}positions "
                "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )

    def get(self, name: str) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}positions WHERE name = ?", (name,)
        )
        return int(rows[0]["position"]) if rows else 0

    def set(self, name: str, position: int) -> None:
        self.set_many({name: position})

    def set_many(self, positions: dict[str, int]) -> None:
        # One executemany: on PostgreSQL, one round trip for a relay's position and its
        # partitions' ends rather than one per name.
        with self.store.transaction() as c:
            c.executemany(
                "INSERT INTO {schema}positions (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                list(positions.items()),
            )

    def all(self) -> dict[str, int]:
        rows = self.store.fetchall("SELECT name, position FROM {schema}positions")
        return {row["name"]: int(row["position"]) for row in rows}
