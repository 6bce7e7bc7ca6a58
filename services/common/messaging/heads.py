"""Chain heads on the wire: the ChainHead message a relay publishes, and reading heads back
from where they were kept (a JSONL file, or the audit.chain-heads topic) for verify."""

import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import IO, Any

from events import EnvelopeError, decode, encode
from services.common.messaging.outbox import Outgoing
from services.common.storage.chain import Head

NAME = "ChainHead"


def to_message(head: Head, topic: str, now: datetime) -> Outgoing:
    value = encode(
        NAME,
        {"service": head.service, "notification_id": head.notification_id,
         "hash": head.hash, "day": date.fromisoformat(head.day)},
        # The same head published twice is the same message: readers may deduplicate.
        id=f"/regie/{head.service}/chain/{head.notification_id}",
        source=f"/regie/{head.service}",
        time=now,
        subject="event_chain",
        key=head.service,
        notification_id=head.notification_id,
        sequence=head.notification_id,
    )
    return Outgoing(topic, head.service, value)


def from_record(raw: bytes | str) -> Head:
    """A head from a ChainHead message as published, or from its bare ``data`` object
    (``{"service", "notification_id", "hash", "day"}``, as copied from a journal)."""
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if isinstance(value, dict) and "specversion" not in value:
        value = {"specversion": "1.0", "id": "-", "source": "-", "type":
                 f"fr.regie.{NAME}.v1", "time": "2000-01-01T00:00:00+00:00", "subject": "-",
                 "datacontenttype": "application/json", "partitionkey": "-", "sequence": 1,
                 "notificationid": 1, "data": value}
    try:
        message = decode(json.dumps(value))
    except EnvelopeError as e:
        raise ValueError(str(e)) from None
    if message.name != NAME:
        raise ValueError(f"a {message.name} message, not a {NAME}")
    data: dict[str, Any] = message.data
    return Head(data["service"], data["notification_id"], data["hash"],
                data["day"].isoformat())


def read_file(lines: IO[str], name: str = "heads") -> Iterator[Head]:
    """The heads of a JSONL file, one message (or bare head) a line; blank lines skipped."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                yield from_record(line)
            except ValueError as e:
                raise ValueError(f"{name} line {number} is not a chain head: {e}") from None


def read_topic(settings: Any, topic: str, timeout: float = 30.0) -> list[Head]:
    """Every head on the topic, from its beginning to its end as it is now."""
    import time

    from kafka import TopicPartition

    from services.common.messaging.kafka import consumer, end_offsets

    ends = end_offsets(settings, topic)
    if not ends:
        raise LookupError(f"no topic {topic} on {settings.kafka_bootstrap}")
    client = consumer(settings)
    heads: list[Head] = []
    try:
        tps = [TopicPartition(topic, p) for p, end in ends.items() if end]
        if not tps:
            return heads
        client.assign(tps)
        client.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while any(client.position(tp) < ends[tp.partition] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
            for records in client.poll(timeout_ms=200).values():
                for r in records:
                    if r.offset < ends[r.partition]:
                        heads.append(_from_topic(r, topic))
    finally:
        client.close()
    return heads


def _from_topic(record: Any, topic: str) -> Head:
    try:
        return from_record(record.value)
    except ValueError as e:
        raise ValueError(f"{topic}[{record.partition}]@{record.offset} is not a chain head: "
                         f"{e}") from None


def for_service(heads: Iterable[Head], service: str) -> list[Head]:
    return [h for h in heads if h.service == service]
