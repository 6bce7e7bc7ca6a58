"""A subscriber to Régie's events, written as any other system would write one.

It uses plain kafka-python and the standard library only (no Régie code): a consumer
group, offsets committed by hand after the records are handled, and idempotent handling
by event id, kept in a small SQLite file, so that Kafka's at-least-once delivery and
Régie's republishing never make it act twice. It prints one line per new event.

    python examples/subscriber/consumer.py --bootstrap 127.0.0.1:9092

Options may also come from the environment: KAFKA_BOOTSTRAP_SERVERS, SUBSCRIBER_TOPICS
(comma-separated), SUBSCRIBER_GROUP, SUBSCRIBER_DB. Stop it with Ctrl-C or SIGTERM: it
leaves its group cleanly, and the next start resumes after the last committed record.
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import CommitFailedError

TYPE = re.compile(r"^fr\.regie\.([A-Za-z]+)\.v([0-9]+)$")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit below
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS handled ("
        " source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,"
        " topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,"
        " PRIMARY KEY (source, id))"
    )
    return db


def describe(event: dict[str, Any]) -> str:
    """What the event says, read the way a v1 reader reads it: by the fields it knows.

    A newer version of an event keeps the fields of the older ones, so matching on the
    event's name and accepting any version works; fields added later are just ignored.
    """
    match = TYPE.match(event["type"])
    name = match.group(1) if match else event["type"]
    data = event["data"]
    if name == "InvoiceIssued":
        return (f"invoice {data['number']} of {data['regie']}: {data['amount_cents']} cents "
                f"for {data['family_id']} <{data['payer_email']}>")
    if name in ("InvoiceCancelled", "InvoiceTransferred", "InvoiceSettled"):
        return f"invoice {data['number']} of {data['regie']}: {name[len('Invoice'):].lower()}"
    if name == "RegieOpened":
        return f"régie {data['code']}: {data['name']}"
    if name == "FamilyForgotten":
        # This subscriber keeps only ids; one that kept e-mail addresses or names would
        # erase them here, in the same transaction as the event's id.
        return f"family {data['family_id']} forgotten: erase what is kept of it"
    if name.startswith("Payment") or name == "RefundNeeded":
        return f"payment {data['payment_id']} of {data['family_id']}: {name}"
    return f"{name}: {event['subject']}"  # a type this subscriber does not know yet


def handle(db: sqlite3.Connection, record: Any) -> None:
    """Act on one record once, whatever the number of times it is delivered."""
    try:
        event = json.loads(record.value)
        source, event_id, event_type = event["source"], event["id"], event["type"]
    except (ValueError, TypeError, KeyError) as e:
        # Retrying cannot fix it: say so and go on, or the partition would stall.
        log(f"{record.topic}[{record.partition}]@{record.offset}: not a Régie event ({e})")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        inserted = db.execute(
            "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
            (source, event_id, event_type, record.topic, record.partition, record.offset),
        ).rowcount
        if inserted:
            # The work itself goes here, in the same transaction as the id: a crash before
            # COMMIT does it again on redelivery, never zero times.
            key = record.key.decode("utf-8") if record.key is not None else ""
            print(f"{event_type} id={event_id} key={key} {describe(event)}", flush=True)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class Assignments(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked: Any) -> None:
        pass  # nothing to flush: offsets are committed after every batch

    def on_partitions_assigned(self, assigned: Any) -> None:
        names = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        log(f"assigned: {names or 'nothing'}")


def run(bootstrap: str, topics: list[str], group: str, db_path: Path) -> None:
    db = open_db(db_path)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,  # commit only what has been handled
        auto_offset_reset="earliest",  # a new group starts with the whole history
        client_id=f"{group}-example",
    )
    consumer.subscribe(topics=topics, listener=Assignments())
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"reading {', '.join(topics)} from {bootstrap} as group {group}")
    try:
        while not stopping:
            batches = consumer.poll(timeout_ms=500)
            if not batches:
                continue
            for records in batches.values():
                for record in records:  # in offset order, one partition at a time
                    handle(db, record)
            try:
                consumer.commit()  # the positions after what was just handled
            except CommitFailedError as e:
                # The group rebalanced meanwhile: another member gets these records
                # again, and the ids already handled make them harmless.
                log(f"commit failed, records will be redelivered: {e}")
    finally:
        consumer.close()  # leaves the group at once; nothing left to commit
        db.close()
        log("stopped")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Print each new Régie event once.")
    parser.add_argument("--bootstrap", default=env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                        help="Kafka bootstrap servers, host:port[,host:port] (%(default)s)")
    parser.add_argument("--topics", default=env("SUBSCRIBER_TOPICS",
                                                "billing.invoices,payment.payments"),
                        help="comma-separated topics (%(default)s)")
    parser.add_argument("--group", default=env("SUBSCRIBER_GROUP", "example-subscriber"),
                        help="consumer group: the offsets committed are this group's "
                             "(%(default)s)")
    # Under var/, which git ignores, when started from the repository's root.
    parser.add_argument("--db", type=Path, default=Path(env("SUBSCRIBER_DB",
                                                            "var/subscriber.sqlite3")),
                        help="SQLite file of the event ids already handled (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run(args.bootstrap, [t for t in args.topics.split(",") if t], args.group, args.db)


if __name__ == "__main__":
    main()
