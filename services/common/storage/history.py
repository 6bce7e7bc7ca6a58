"""The event history for auditors: streaming export and import, and state as of a date."""

import base64
import csv
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import IO, Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from services.common.storage.spreadsheet import safe_row

# Event attributes that are bookkeeping, not content.
META = ("originator_id", "originator_version", "timestamp", "originator_topic")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def records(app: Any, service: str, *, regie: str | None = None, family: str | None = None,
            since: datetime | None = None, until: datetime | None = None,
            page: int = 1000) -> Iterator[dict[str, Any]]:
    """Every stored event in order, decoded beside its raw stored form, page by page.

    Each row names the régie and family of its aggregate (from the aggregate's first
    event). Memory holds one page and a bounded cache of those names, whatever the size
    of the history.
    """
    owners: OrderedDict[Any, tuple[str | None, str | None]] = OrderedDict()
    after = 0
    while True:
        batch = app.recorder.select_notifications(after, page, inclusive_of_start=False)
        if not batch:
            return
        for n in batch:
            event = app.mapper.to_domain_event(n)
            data = {k: v for k, v in event.__dict__.items() if k not in META}
            owner_regie, owner_family = _owner(app, n.originator_id, n.originator_version,
                                               data, owners)
            if regie is not None and owner_regie != regie:
                continue
            if family is not None and owner_family != family:
                continue
            if since is not None and event.timestamp < since:
                continue
            if until is not None and event.timestamp > until:
                continue
            yield {
                "service": service,
                "position": n.id,
                "aggregate_id": str(n.originator_id),
                "version": n.originator_version,
                "type": n.topic.rsplit(":", 1)[-1],
                "recorded_at": event.timestamp.isoformat(),
                "regie": owner_regie,
                "family_id": owner_family,
                "data": _jsonable(data),
                "topic": n.topic,
                "state": base64.b64encode(n.state).decode(),
            }
        after = batch[-1].id


OWNER_CACHE = 10_000


def _named(data: dict[str, Any]) -> tuple[str | None, str | None]:
    return data.get("regie") or data.get("code"), data.get("family_id")


def _owner(app: Any, aggregate_id: Any, version: int, data: dict[str, Any],
           cache: "OrderedDict[Any, tuple[str | None, str | None]]"
           ) -> tuple[str | None, str | None]:
    """The régie and family named by the aggregate's first event."""
    if version == 1:
        return _named(data)
    if aggregate_id in cache:
        cache.move_to_end(aggregate_id)
        return cache[aggregate_id]
    first = list(app.events.get(aggregate_id, lte=1))
    named = _named({k: v for k, v in first[0].__dict__.items() if k not in META}) if first \
        else (None, None)
    cache[aggregate_id] = named
    if len(cache) > OWNER_CACHE:
        cache.popitem(last=False)
    return named


# What an auditor reads in a spreadsheet; the stored bytes (topic, state) stay in the
# JSONL export, the lossless one that `import` loads.
CSV_COLUMNS = ("position", "recorded_at", "service", "type", "aggregate_id", "version",
               "regie", "family_id", "amount_cents", "payload")
CSV_NUMBERS = frozenset({"position", "version", "amount_cents"})


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return safe_row({
        **{k: row[k] for k in CSV_COLUMNS if k in row},
        "amount_cents": row["data"].get("amount_cents"),
        "payload": json.dumps(row["data"], ensure_ascii=False, sort_keys=True),
    }, CSV_NUMBERS)


def write(rows: Iterable[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    writer = csv.DictWriter(out, CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for row in rows:
        if writer is not None:
            writer.writerow(_csv_row(row))
        else:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def read(lines: IO[str]) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL export; a CSV export is refused, it lacks the stored bytes."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or "state" not in row:
            raise ValueError(f"line {number} is not a row of a JSONL export: import loads "
                             "`regie export --format jsonl` (the CSV export is for reading)")
        yield row


def import_into(app: Any, rows: Iterable[dict[str, Any]], page: int = 1000) -> int:
    """Store exported events, as they were, into an empty store (to re-run projections)."""
    if app.recorder.max_notification_id():
        raise ValueError("the store is not empty: import only into a new one")
    count = 0
    chunk: list[StoredEvent] = []
    for row in rows:
        chunk.append(StoredEvent(
            originator_id=UUID(row["aggregate_id"]),
            originator_version=int(row["version"]),
            topic=row["topic"],
            state=base64.b64decode(row["state"]),
        ))
        if len(chunk) >= page:
            app.recorder.insert_events(chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        app.recorder.insert_events(chunk)
        count += len(chunk)
    return count
