"""A relay is woken by a commit to its store, from another connection as from another
process: LISTEN/NOTIFY on PostgreSQL, inotify on an SQLite file.

Each relay here polls once an hour: an event it publishes within the test's timeout was
published because a wake-up came, not because the poll came round.
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from events import BILLING_INVOICES
from services.bootstrap import billing_app, relay
from services.common.messaging.memory import MemoryPublisher
from services.common.messaging.relay import Heads, Relay
from services.common.messaging.wakeup import FileWakeup, ListenWakeup
from services.common.settings import Settings
from tests.conftest import drop_schemas, make_settings, pg_connect
from tests.factories import open_regies, terms
from tests.helpers import wait_for
from tests.threads import Threads

HOUR = 3600.0


def numbers(events: MemoryPublisher) -> set[str]:
    return {json.loads(m.value)["data"].get("number", "")
            for p in range(events.partition_count()) for m in events.records(p)}


def start(settings: Settings, threads: Threads) -> tuple[Relay, MemoryPublisher]:
    """A relay of billing's events as `regie relay billing` builds it, on the in-memory
    broker, polling every ``settings.poll_interval``; its start-up publishing done."""
    events = MemoryPublisher(partitions=6)
    heads = Heads(MemoryPublisher(partitions=1), "audit.chain-heads", "billing", every=HOUR)
    r = relay("billing", settings, publisher=events, heads=heads)
    threads.run("relay", r.run_forever, settings.poll_interval)
    topic = settings.topic(BILLING_INVOICES.name)
    wait_for(lambda: r.positions.get(topic) == r.app.recorder.max_notification_id(), 30,
             "the régies published at the start")
    return r, events


def test_a_commit_wakes_the_relay_before_its_poll(store_settings: Settings) -> None:
    settings = replace(store_settings, poll_interval=HOUR)
    writer = billing_app(settings)  # another connection, as the billing API's
    open_regies(writer)
    threads = Threads()
    try:
        r, events = start(settings, threads)
        if settings.is_postgres():
            assert isinstance(r.wakeup, ListenWakeup)
            wait_for(r.wakeup.listening.is_set, 30, "LISTEN in place")
        else:
            assert isinstance(r.wakeup, FileWakeup)
        writer.issue_invoice(terms("W-1"))
        wait_for(lambda: "W-1" in numbers(events), 20, "W-1 published on the commit's wake-up")
        writer.issue_invoice(terms("W-2"))
        wait_for(lambda: "W-2" in numbers(events), 20, "W-2 published on the commit's wake-up")
    finally:
        threads.stop_all()  # a stop also ends the hour's wait at once


def test_a_lost_listen_connection_is_made_again_and_the_poll_covers_the_gap(
    tmp_path: Path,
) -> None:
    settings = make_settings("postgres", tmp_path, poll_interval=0.3)
    threads = Threads()
    try:
        writer = billing_app(settings)
        open_regies(writer)
        r, events = start(settings, threads)
        listen: Any = r.wakeup
        wait_for(listen.listening.is_set, 30, "LISTEN in place")
        old = listen.backend_pid
        with pg_connect() as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        # Committed while no one may be listening: the poll, or the wake-up given when the
        # connection is made again, gets it out.
        writer.issue_invoice(terms("L-1"))
        wait_for(lambda: "L-1" in numbers(events), 20, "L-1 published without its NOTIFY")
        wait_for(lambda: listen.listening.is_set() and listen.backend_pid not in (None, old),
                 30, "LISTEN in place again, on a new connection")
    finally:
        threads.stop_all()
        drop_schemas(settings.schema_prefix)
