"""The "to pay" read model: per family and régie, the invoices still to pay.

Built only from the payment service's own event history, so that it can be dropped and
rebuilt at any time. Each batch of changes commits together with the position it reached,
so a crash or a second runner never applies an event twice.
"""

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Protocol

from services.common.persistence import SqlStore
from services.payment import domain

NAME = "to-pay"


@dataclass(frozen=True)
class RegieRow:
    code: str
    name: str


@dataclass(frozen=True)
class InvoiceRow:
    id: str
    family_id: str
    regie: str
    number: str
    label: str
    issued_on: date
    payable_until: date
    due_on: date
    total_cents: int
    amount_due_cents: int
    status: str
    payment_id: str | None = None


@dataclass(frozen=True)
class InvoiceChange:
    id: str
    status: str | None = None
    amount_due_cents: int | None = None
    payment_id: str | None = None
    clear_payment: bool = False

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        row = dict(row)
        if self.status is not None:
            row["status"] = self.status
        if self.amount_due_cents is not None:
            row["amount_due_cents"] = self.amount_due_cents
        if self.payment_id is not None or self.clear_payment:
            row["payment_id"] = self.payment_id
        return row


Change = RegieRow | InvoiceRow | InvoiceChange


def changes_for(event: Any) -> list[Change]:
    """What one payment-side domain event changes in the read model."""
    if isinstance(event, domain.Regie.Registered):  # type: ignore[attr-defined]
        return [RegieRow(event.code, event.name)]
    if isinstance(event, domain.Invoice.Registered):  # type: ignore[attr-defined]
        return [
            InvoiceRow(
                id=str(event.originator_id),
                family_id=event.family_id,
                regie=event.regie,
                number=event.number,
                label=event.label,
                issued_on=event.issued_on,
                payable_until=event.payable_until,
                due_on=event.due_on,
                total_cents=event.amount_cents,
                amount_due_cents=event.amount_cents,
                status=domain.OPEN,
            )
        ]
    invoice_id = str(event.originator_id)
    if isinstance(event, domain.Invoice.Cancelled):  # type: ignore[attr-defined]
        return [InvoiceChange(invoice_id, status=domain.CANCELLED)]
    if isinstance(event, domain.Invoice.Transferred):  # type: ignore[attr-defined]
        return [InvoiceChange(invoice_id, status=domain.TRANSFERRED)]
    if isinstance(event, domain.Invoice.Reserved):  # type: ignore[attr-defined]
        return [InvoiceChange(invoice_id, payment_id=event.payment_id)]
    if isinstance(event, domain.Invoice.Released):  # type: ignore[attr-defined]
        return [InvoiceChange(invoice_id, clear_payment=True)]
    if isinstance(event, domain.Invoice.Paid):  # type: ignore[attr-defined]
        # Whole invoices only, for now: what was due is paid.
        return [InvoiceChange(invoice_id, status=domain.PAID, amount_due_cents=0,
                              clear_payment=True)]
    return []


class ToPayStore(Protocol):
    def position(self) -> int: ...

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        """Apply and move from ``expected`` to ``position`` atomically; False if another
        runner moved first (nothing applied)."""

    def open_lines(self, family_id: str, regie: str | None = None) -> list[domain.ToPayLine]: ...

    def regie_names(self) -> dict[str, str]: ...

    def reset(self) -> None:
        """Forget everything, position included."""

    def snapshot(self) -> dict[str, Any]:
        """The whole model as plain data, for comparing a rebuild with the live one."""


def _line(row: dict[str, Any] | InvoiceRow) -> domain.ToPayLine:
    r = asdict(row) if isinstance(row, InvoiceRow) else row
    return domain.ToPayLine(
        id=r["id"],
        regie=r["regie"],
        number=r["number"],
        label=r["label"],
        issued_on=_date(r["issued_on"]),
        payable_until=_date(r["payable_until"]),
        amount_due_cents=int(r["amount_due_cents"]),
        total_cents=int(r["total_cents"]),
        payment_id=r.get("payment_id"),
    )


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _order(lines: Iterable[domain.ToPayLine]) -> list[domain.ToPayLine]:
    return sorted(lines, key=lambda line: (line.regie, line.issued_on, line.number))


class MemoryToPayStore:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._position = 0
        self._regies: dict[str, str] = {}
        self._invoices: dict[str, InvoiceRow] = {}

    def position(self) -> int:
        return self._position

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        if self._position != expected:
            return False
        for change in changes:
            if isinstance(change, RegieRow):
                self._regies[change.code] = change.name
            elif isinstance(change, InvoiceRow):
                self._invoices[change.id] = change
            elif change.id in self._invoices:
                row = self._invoices[change.id]
                self._invoices[change.id] = InvoiceRow(**change.apply(asdict(row)))
        self._position = position
        return True

    def open_lines(self, family_id: str, regie: str | None = None) -> list[domain.ToPayLine]:
        return _order(
            _line(row)
            for row in self._invoices.values()
            if row.family_id == family_id
            and row.status == domain.OPEN
            and (regie is None or row.regie == regie)
        )

    def regie_names(self) -> dict[str, str]:
        return dict(self._regies)

    def snapshot(self) -> dict[str, Any]:
        return {
            "regies": dict(sorted(self._regies.items())),
            "invoices": {
                k: {**asdict(v), "issued_on": v.issued_on.isoformat(),
                    "payable_until": v.payable_until.isoformat(), "due_on": v.due_on.isoformat()}
                for k, v in sorted(self._invoices.items())
            },
        }


INVOICE_COLUMNS = (
    "id", "family_id", "regie", "number", "label", "issued_on", "payable_until", "due_on",
    "total_cents", "amount_due_cents", "status", "payment_id",
)
# Raised whenever the tables change shape: a store built by an older version is then
# dropped and rebuilt from the history, which is what event sourcing is for.
VERSION = 2


class SqlToPayStore:
    """The read model in the payment service's own database (SQLite or PostgreSQL)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.create()
        if self._version() != VERSION:
            self.reset()

    def _version(self) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}view_positions WHERE name = ?", (f"{NAME}#version",)
        )
        return int(rows[0]["position"]) if rows else 0

    def create(self) -> None:
        with self.store.transaction() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}view_regies "
                "(code TEXT PRIMARY KEY, name TEXT NOT NULL)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}view_invoices ("
                "id TEXT PRIMARY KEY, family_id TEXT NOT NULL, regie TEXT NOT NULL, "
                "number TEXT NOT NULL, label TEXT NOT NULL, issued_on TEXT NOT NULL, "
                "payable_until TEXT NOT NULL, due_on TEXT NOT NULL, "
                "total_cents BIGINT NOT NULL, amount_due_cents BIGINT NOT NULL, "
                "status TEXT NOT NULL, payment_id TEXT)"
            )
            c.execute(
                "CREATE INDEX IF NOT EXISTS view_invoices_family "
                "ON {schema}view_invoices (family_id, status)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS {schema}view_positions "
                "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )
            c.execute(
                "INSERT INTO {schema}view_positions (name, position) VALUES (?, 0), (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (NAME, f"{NAME}#version", VERSION),
            )

    def reset(self) -> None:
        with self.store.transaction() as c:
            for table in ("view_regies", "view_invoices", "view_positions"):
                c.execute(f"DROP TABLE IF EXISTS {{schema}}{table}")
        self.create()

    def position(self) -> int:
        rows = self.store.fetchall(
            "SELECT position FROM {schema}view_positions WHERE name = ?", (NAME,)
        )
        return int(rows[0]["position"]) if rows else 0

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        with self.store.transaction() as c:
            moved = c.execute(
                "UPDATE {schema}view_positions SET position = ? WHERE name = ? AND position = ?",
                (position, NAME, expected),
            )
            if moved != 1:
                return False
            for change in changes:
                if isinstance(change, RegieRow):
                    c.execute(
                        "INSERT INTO {schema}view_regies (code, name) VALUES (?, ?) "
                        "ON CONFLICT (code) DO UPDATE SET name = excluded.name",
                        (change.code, change.name),
                    )
                elif isinstance(change, InvoiceRow):
                    row = asdict(change)
                    values = tuple(
                        v.isoformat() if isinstance(v, date) else v
                        for v in (row[k] for k in INVOICE_COLUMNS)
                    )
                    c.execute(
                        f"INSERT INTO {{schema}}view_invoices ({', '.join(INVOICE_COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in INVOICE_COLUMNS)}) "
                        "ON CONFLICT (id) DO NOTHING",
                        values,
                    )
                else:
                    rows = c.query(
                        "SELECT status, amount_due_cents, payment_id "
                        "FROM {schema}view_invoices WHERE id = ?", (change.id,)
                    )
                    if rows:
                        row = change.apply(rows[0])
                        c.execute(
                            "UPDATE {schema}view_invoices SET status = ?, amount_due_cents = ?, "
                            "payment_id = ? WHERE id = ?",
                            (row["status"], row["amount_due_cents"], row["payment_id"],
                             change.id),
                        )
        return True

    def open_lines(self, family_id: str, regie: str | None = None) -> list[domain.ToPayLine]:
        query = "SELECT * FROM {schema}view_invoices WHERE family_id = ? AND status = ?"
        params: tuple[Any, ...] = (family_id, domain.OPEN)
        if regie is not None:
            query += " AND regie = ?"
            params += (regie,)
        return _order(_line(r) for r in self.store.fetchall(query, params))

    def regie_names(self) -> dict[str, str]:
        rows = self.store.fetchall("SELECT code, name FROM {schema}view_regies")
        return {r["code"]: r["name"] for r in rows}

    def snapshot(self) -> dict[str, Any]:
        invoices = self.store.fetchall("SELECT * FROM {schema}view_invoices ORDER BY id")
        return {
            "regies": dict(sorted(self.regie_names().items())),
            "invoices": {
                r["id"]: {k: (int(r[k]) if k.endswith("_cents") else r[k])
                          for k in INVOICE_COLUMNS}
                for r in invoices
            },
        }


def catch_up(
    app: Any,
    store: ToPayStore,
    batch_size: int = 1000,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Apply every event recorded since the store's position; return how many were read."""
    done = 0
    while True:
        position = store.position()
        notifications = app.recorder.select_notifications(
            position, batch_size, inclusive_of_start=False
        )
        if not notifications:
            return done
        changes: list[Change] = []
        for n in notifications:
            changes.extend(changes_for(app.mapper.to_domain_event(n)))
        if store.apply(changes, position, notifications[-1].id):
            done += len(notifications)
            if progress is not None:
                progress(len(notifications))
