"""The child processes of a run, each started as ``python -m benchmarks --role NAME``.

The relay and the payment consumer are built by the composition root as `regie relay` and
`regie consume` build them, with a timing hook injected into each: the relay gets a
publisher that notes when the broker acknowledged a message, and the consumer a payment app
whose to-pay store is wrapped in a clock. Nothing of the services is patched.
"""

import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks.harness import child_stop
from services.common.messaging.outbox import Outgoing
from services.common.settings import Settings
from services.payment.projections import Change, ToPayStore, made_invoices


class VisibilityClock:
    """The payment consumer's to-pay store, timestamping what each commit makes visible.

    ``apply`` returns once its transaction has committed, so the time taken right after it
    is the first instant a reader of to-pay can see those invoices (to within microseconds).
    Polling the read model from another process would add the polling period and compete
    for the 2 cores. time.monotonic() is CLOCK_MONOTONIC, one clock for every process here.
    """

    def __init__(self, inner: ToPayStore, out: Any) -> None:
        self.inner = inner
        self.out = out

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        done = self.inner.apply(changes, expected, position)
        if done:
            now = time.monotonic()
            ids = [i for i, _, _ in made_invoices(changes)]
            if ids:
                self.out.write("".join(f"{i} {now!r}\n" for i in ids))
                self.out.flush()
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)



class TimedPublisher:
    """The relay's publisher, noting when the broker acknowledged each message."""

    def __init__(self, inner: Any, out: Any) -> None:
        self.inner = inner
        self.out = out

    def publish(self, messages: list[Outgoing]) -> Any:
        acks = self.inner.publish(messages)  # returns once every message is acknowledged
        now = time.monotonic()
        # orjson: the standard library's parse took 6 µs of the relay's 80 µs of CPU a
        # message, which the drain's figures counted as the relay's.
        self.out.write("".join(f"{orjson.loads(m.value)['subject']} {now!r}\n"
                               for m in messages))
        self.out.flush()
        return acks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def role_relay(spec: dict[str, Any]) -> int:
    """`regie relay billing` as the composition root builds it, with a timed publisher."""
    from events import BILLING_INVOICES
    from services.bootstrap import relay
    from services.common.messaging.kafka import KafkaPublisher

    stop = child_stop(spec["lifetime"])
    settings = Settings()
    with open(spec["out"], "a") as out:
        publisher = TimedPublisher(
            KafkaPublisher(settings, settings.topic(BILLING_INVOICES.name)), out)
        relay("billing", settings, publisher=publisher).run_forever(
            stop, settings.poll_interval)
    return 0


def role_consume(spec: dict[str, Any]) -> int:
    """`regie consume payment` as the composition root builds it, its payment app's to-pay
    store wrapped in a clock."""
    from services.bootstrap import consumer, payment_app

    stop = child_stop(spec["lifetime"])
    settings = Settings()
    with open(spec["out"], "a") as out:
        app = payment_app(settings)
        app.to_pay = VisibilityClock(app.to_pay, out)
        out.write(f"hooked {time.monotonic()!r}\n")
        out.flush()
        consumer("payment", settings, app=app).run_forever(stop)
    return 0


def role_plain_consume(spec: dict[str, Any]) -> int:
    """A plain kafka-python consumer: every partition of the topic from the start, no group.

    mode "block": poll(timeout_ms=100), the usual loop; mode "sleep": poll(0) and sleep the
    poll interval when nothing came, as TrackedConsumer does. Writes "partition offset time".
    """
    return _plain_consume(spec, None)


class RawWriter:
    """Writes again, with plain psycopg, the rows the payment consumer wrote in PostgreSQL
    for a drain's invoices: for the k-th message of the drain, the k-th share of each
    table's rows (``spec["rows"]``, a pickle of {table: (columns, rows, conflict)}), into
    tables made like the payment schema's (``spec["schema"]``), one transaction per poll;
    with the poll's partition offsets, as the consumer keeps them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import pickle

        from psycopg import sql

        from benchmarks.harness import pg_connect

        with open(spec["rows"], "rb") as f:
            self.tables: dict[str, tuple[list[str], list[tuple[Any, ...]], str]] = \
                pickle.load(f)
        self.messages = int(spec["messages"])
        self.done = 0
        self.conn = pg_connect()
        schema = sql.Identifier(spec["schema"])
        # A table whose rows are all new gets them by COPY, psycopg's fastest way in; one
        # whose rows may be there already by INSERT … ON CONFLICT, as the consumer does.
        self.statements: dict[str, Any] = {}
        self.copies: dict[str, Any] = {}
        for table, (columns, _, conflict) in self.tables.items():
            names = sql.SQL(", ").join(map(sql.Identifier, columns))
            if conflict:
                self.statements[table] = sql.SQL("INSERT INTO {}.{} ({}) VALUES ({}) ").format(
                    schema, sql.Identifier(table), names,
                    sql.SQL(", ").join(sql.Placeholder() * len(columns))) + sql.SQL(conflict)
            else:
                self.copies[table] = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                    schema, sql.Identifier(table), names)
        self.offsets = sql.SQL(
            "INSERT INTO {}.positions (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position").format(schema)

    def write(self, records: list[Any]) -> None:
        drained = [r for r in records if r.value != b"warm-up"]
        if not drained:
            return
        first, last = self.done, self.done + len(drained)
        ends: dict[int, int] = {}
        for r in drained:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        with self.conn.transaction(), self.conn.cursor() as cur:
            for table, (_, rows, _) in self.tables.items():
                share = rows[first * len(rows) // self.messages:last * len(rows) // self.messages]
                if not share:
                    continue
                if table in self.copies:
                    with cur.copy(self.copies[table]) as copy:
                        for row in share:
                            copy.write_row(row)
                else:
                    cur.executemany(self.statements[table], share)
            cur.executemany(self.offsets, [(f"raw@{p}", end) for p, end in ends.items()])
        self.done = last

    def close(self) -> None:
        self.conn.close()


def role_raw_consume(spec: dict[str, Any]) -> int:
    """The plain consumer ("block" mode) that also writes, before it notes a poll's
    messages, the rows the payment consumer wrote for as many invoices (``RawWriter``)."""
    writer = RawWriter(spec)
    try:
        return _plain_consume(spec, writer.write)
    finally:
        writer.close()


class LibraryRecorder:
    """Records, for each billing message, what the payment consumer records for a new
    invoice, with eventsourcing alone: the message parsed by the standard library's JSON,
    the payment invoice and its reminders record made by the library's own construction,
    and a poll's events saved by its process recorder in one transaction with one
    tracking record (the poll's last offset). No envelope check, no sealing, no hash chain,
    no read model: less than the consumer does, in the library's own way. Into the schema
    ``spec["prefix"]`` + "library" of the PostgreSQL server the settings name."""

    def __init__(self, spec: dict[str, Any], settings: Settings | None = None) -> None:
        from dataclasses import replace
        from pathlib import Path

        from benchmarks.batch_issue import LibraryAlone, library_app
        from benchmarks.harness import make_settings

        class Library(LibraryAlone):
            """The library's application with its process recorder (tracking records)."""

            def construct_recorder(self) -> Any:
                return self.factory.process_recorder()

        settings = replace(settings, schema_prefix=spec["prefix"]) if settings else \
            make_settings(Path(spec["out"]).parent, persistence="eventsourcing.postgres",
                          schema_prefix=spec["prefix"])
        self.app = library_app(settings, "library", Library)
        self.topic = spec["topic"]

    def write(self, records: list[Any]) -> None:
        import json
        from datetime import date

        from eventsourcing.application import ProcessingEvent
        from eventsourcing.persistence import Tracking

        from services.payment import domain

        drained = [r for r in records if r.value != b"warm-up"]
        if not drained:
            return
        last = drained[-1]
        processing = ProcessingEvent[Any](
            Tracking(f"{self.topic}@{last.partition}", last.offset + 1))
        for record in drained:
            data = json.loads(record.value)["data"]
            invoice = domain.Invoice(
                invoice_id=data["invoice_id"], regie=data["regie"], number=data["number"],
                family_id=data["family_id"], label=data["label"],
                issued_on=date.fromisoformat(data["issued_on"]),
                payable_until=date.fromisoformat(data["payable_until"]),
                due_on=date.fromisoformat(data["due_on"]),
                amount_cents=data["amount_cents"], sequence=1,
                lines=[dict(line) for line in data["lines"]])
            contact = domain.Reminders(invoice_id=data["invoice_id"],
                                       family_id=data["family_id"],
                                       payer_email=data["payer_email"])
            processing.collect_events(invoice, contact)
        self.app._record(processing)

    def close(self) -> None:
        self.app.close()


def role_library_consume(spec: dict[str, Any]) -> int:
    """The plain consumer ("block" mode) that also records, before it notes a poll's
    messages, what the payment consumer records for them, with eventsourcing alone
    (``LibraryRecorder``)."""
    recorder = LibraryRecorder(spec)
    try:
        return _plain_consume(spec, recorder.write)
    finally:
        recorder.close()


def _plain_consume(spec: dict[str, Any], write: Callable[[list[Any]], None] | None) -> int:
    from kafka import KafkaConsumer, TopicPartition

    stop = child_stop(spec["lifetime"])
    consumer = KafkaConsumer(
        bootstrap_servers=spec["bootstrap"], group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(spec["topic"])
        while not partitions and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
            partitions = consumer.partitions_for_topic(spec["topic"])
        if not partitions:
            raise RuntimeError(f"topic {spec['topic']} has no partitions")
        consumer.assign([TopicPartition(spec["topic"], p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        with open(spec["out"], "a") as out:
            while not stop.is_set():
                if spec["mode"] == "block":
                    batches = consumer.poll(timeout_ms=100)
                else:
                    batches = consumer.poll(timeout_ms=0)
                now = time.monotonic()
                if batches and write is not None:
                    write([r for records in batches.values() for r in records])
                    now = time.monotonic()
                if batches:
                    out.write("".join(
                        f"{r.partition} {r.offset} {now!r}\n"
                        for records in batches.values() for r in records
                    ))
                    out.flush()
                elif spec["mode"] != "block":
                    stop.wait(spec["poll_interval"])
    finally:
        consumer.close()
    return 0


def role_subscribe(spec: dict[str, Any]) -> int:
    """The payment consumer's reader of Kafka (KafkaSubscriber) alone: the whole topic from
    the start, as a new consumer or a re-read does, without applying anything; writes
    "done" once every partition is read to its end, then idles until stopped."""
    from services.common.messaging.kafka import KafkaSubscriber

    stop = child_stop(spec["lifetime"])
    subscriber = KafkaSubscriber(Settings(), spec["topic"])
    try:
        count = subscriber.partitions()
        subscriber.seek(dict.fromkeys(range(count), 0))
        read = {p: 0 for p in range(count)}
        with open(spec["out"], "a") as out:
            while not stop.is_set():
                batches = subscriber.poll()
                for partition, records in batches.items():
                    read[partition] = records[-1].offset + 1
                if all(read[p] >= (subscriber.highwater(p) or 1) for p in read):
                    out.write(f"done {time.monotonic()!r}\n")
                    out.flush()
                    stop.wait()
                elif not batches:
                    stop.wait(0.02)
    finally:
        subscriber.close()
    return 0


ROLES: dict[str, Callable[[dict[str, Any]], int]] = {
    "subscribe": role_subscribe,
    "relay": role_relay,
    "consume": role_consume,
    "plain-consume": role_plain_consume,
    "raw-consume": role_raw_consume,
    "library-consume": role_library_consume,
}


