"""Where a relay remembers the last notification it published."""

from typing import Protocol

from services.common.persistence import SqlStore


class Positions(Protocol):
    def get(self, name: str) -> int: ...

    def set(self, name: str, position: int) -> None: ...


class MemoryPositions:
    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    def get(self, name: str) -> int:
        return self._positions.get(name, 0)

    def set(self, name: str, position: int) -> None:
        self._positions[name] = position


class SqlPositions:
    """Kept in the producing service's own database, beside its events."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        with store.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}relay_positions "
                "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )

    def get(self, name: str) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}relay_positions WHERE name = ?", (name,)
        )
        return int(rows[0]["position"]) if rows else 0

    def set(self, name: str, position: int) -> None:
        with self.store.transaction() as c:
            c.execute(
                "INSERT INTO {schema}relay_positions (name, position) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                (name, position),
            )
