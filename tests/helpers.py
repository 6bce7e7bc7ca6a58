"""Helpers shared by several test modules, so that no test module imports another."""

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.domain import CanCreateTimestamp
from flask.testing import FlaskClient

from events import PAYMENT_PAYMENTS
from services import bootstrap
from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.messaging.consumer import TrackedConsumer, handle_record
from services.common.messaging.deadletters import DeadLetter
from services.common.messaging.memory import MemoryBroker, MemoryPublisher, MemorySubscriber
from services.common.messaging.positions import SqlPositions
from services.common.messaging.relay import Heads, KafkaPublisher, Relay
from services.common.privacy import keys, sealing
from services.common.settings import Settings
from services.common.storage.chain import GENESIS, link
from services.common.storage.persistence import KEYS_PER_STATEMENT, SqlStore
from services.payment import domain
from services.payment.application import PaymentApp, ReturnUrls
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire
from tests.conftest import make_settings
from tests.factories import deliver, issued, relay_messages, terms, wire_messages
from tests.threads import Threads


def fixed_bytes_and_clock(monkeypatch: pytest.MonkeyPatch, at: datetime) -> None:
    """The families' keys, the sealing nonces and every event's timestamp made the same in
    every run, so that two ways of storing the same things can be compared byte for byte."""
    counter = itertools.count()

    def urandom(n: int) -> bytes:
        return bytes((next(counter) * 7 + k) % 256 for k in range(n))

    fixed = SimpleNamespace(urandom=urandom)
    monkeypatch.setattr(keys, "os", fixed)
    monkeypatch.setattr(sealing, "os", fixed)
    monkeypatch.setattr(CanCreateTimestamp, "create_timestamp", staticmethod(lambda: at))


def same_creation(made: Any, reference: Any) -> None:
    """An aggregate made by a fast path has the creation event (type, fields in the same
    order) and the state that the library's construction gives ``reference``."""
    (event,) = made.collect_events()
    (expected,) = reference.collect_events()
    assert type(event) is type(expected)
    assert list(vars(event).items()) == [
        (k, event.timestamp if k == "timestamp" else v) for k, v in vars(expected).items()]

    def state(aggregate: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(aggregate).items()
                if k not in ("_created_on", "_modified_on")}

    assert state(made) == state(reference)
    assert made.created_on == made.modified_on == event.timestamp
    assert vars(event.mutate(None)) == vars(made)


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")


# --- through a broker ---------------------------------------------------------------------
def kafka_settings(tmp_path: Path, bootstrap: str, kind: str, backend: str = "sqlite") -> Settings:
    return make_settings(backend, tmp_path, kafka_bootstrap=bootstrap, kafka_broker=kind,
                         topic_prefix=f"t{uuid.uuid4().hex[:8]}.", kafka_partitions=6)


# --- payments on the fake gateway ---------------------------------------------------------
NOW = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
URLS = ReturnUrls("http://pay.test/payfip/notification", "http://pay.test/payfip/return")


def iid(number: str, regie: str = "SPORTS") -> str:
    return str(Invoice.create_id(regie, number))


class Clock:
    """PayFiP's clock as a test moves it: NOW until told otherwise."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def setup(settings: Settings, gateway: FakeGateway | None = None,
          clock: Callable[[], datetime] | None = None) -> tuple[BillingApp, PaymentApp]:
    """Billing and payment with the usual invoices; payment pays through ``gateway`` (a
    fake PayFiP of its own if none is given) at ``clock``'s time (NOW if none is given)."""
    billing, payment = issued(
        settings,
        terms("S-1", family="fam-1", unit=2500),
        terms("S-2", family="fam-1", unit=1250),
        terms("S-3", family="fam-2", unit=4000),
        terms("S-4", family="fam-1", unit=50),
        terms("S-5", family="fam-1", unit=700),
        terms("C-1", family="fam-1", regie="CANTINE", unit=1000),
        gateway=gateway if gateway is not None else FakeGateway(), clock=clock or Clock(),
    )
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-5"), "doublon")
    deliver(payment, wire_messages(billing))
    return billing, payment


def request(payment: PaymentApp, *numbers: str, family: str = "fam-1",
            regie: str = "SPORTS") -> domain.Payment:
    return payment.request_payment(
        family_id=family, regie=regie, invoice_ids=[iid(n, regie) for n in numbers],
        email="parent@example.org",
    )


def decided(payment: PaymentApp, gateway: FakeGateway, resultrans: str, *numbers: str,
            regie: str = "SPORTS") -> domain.Payment:
    """A payment requested, decided ``resultrans`` on PayFiP, and PayFiP's answer read."""
    p = request(payment, *numbers, regie=regie)
    gateway.decide(p.idop, resultrans)  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    return p


# --- parked messages ----------------------------------------------------------------------
def letter(offset: int, subject: str | None = None, nid: int | None = None,
           partition: int = 0, topic: str = "billing.invoices") -> DeadLetter:
    return DeadLetter(topic, partition, offset, b"fam-\xff", b"\x00raw\xff" + bytes([offset]),
                      f"error {offset}", subject=subject, notification_id=nid)


# --- a stored history changed by hand -----------------------------------------------------
def events_table(store: SqlStore) -> str:
    return "{schema}billing_events" if store.postgres else "stored_events"


def tamper(billing: Any, statement: str, *params: Any) -> None:
    store = SqlStore(billing)
    # SQLite numbers its events by rowid, PostgreSQL by a notification_id column.
    statement = statement.replace("{events}", events_table(store))
    statement = statement.replace("{nid}", "notification_id" if store.postgres else "rowid")
    with store.transaction() as c:
        c.execute(statement, params)


def recompute(billing: Any) -> None:
    """What someone who can write the tables but has no key does after changing events."""
    store = SqlStore(billing)
    previous = GENESIS
    with store.transaction() as c:
        for n in billing.recorder.select_notifications(1, 10_000):
            previous = link(previous, n.id, n.originator_id, n.originator_version, n.topic,
                            n.state)
            c.execute("UPDATE {schema}event_chain SET hash = ? WHERE notification_id = ?",
                      (previous, n.id))


def rewrite_an_amount(billing: Any, position: int) -> None:
    state = billing.recorder.select_notifications(position, 1)[0].state
    assert b"2500" in state
    tamper(billing, "UPDATE {events} SET state = ? WHERE {nid} = ?",
           state.replace(b"2500", b"2400"), position)


# --- the counter: a cashier's token, a cheque, billing learning of payments --------------

TOKENS = {"c": "cashier", "o": "operator", "r": "reader"}
CASHIER = {"Authorization": "Bearer c"}


def cheque(amount_cents: int, reference: str | None = "1234567", **more: Any) -> dict[str, Any]:
    return {"regie": "SPORTS", "family_id": "fam-1", "means": "cheque",
            "amount_cents": amount_cents, "reference": reference, "received_on": "2025-03-03",
            **more}


def to_billing(billing: BillingApp, payment: PaymentApp) -> None:
    messages = relay_messages(payment, make_to_wire(payment, PAYMENT_PAYMENTS.name))
    for offset, (partition, value) in enumerate(messages):
        handle_record(PAYMENT_PAYMENTS.name, partition, value, billing.apply_payment_event,
                      billing.dead_letters, offset)


def to_pay(client: FlaskClient) -> list[tuple[str, int]]:
    body = client.get("/families/fam-1/to-pay/SPORTS", headers={"Authorization": "Bearer r"})
    return [(i["number"], i["amount_due_cents"]) for i in body.json["invoices"]]  # type: ignore[index]


# --- through the broker --------------------------------------------------------------


class Parts(Threads):
    """The payment relay and the billing consumer, each in a thread, each its own app."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.topic = settings.topic(PAYMENT_PAYMENTS.name)

    def start(self, name: str) -> None:
        if name == "relay":
            app: Any = payment_app(self.settings)
            self.run(name, Relay(app, make_to_wire(app, self.topic),
                                 KafkaPublisher(self.settings, self.topic),
                                 SqlPositions(SqlStore(app)), name=self.topic).run_forever,
                     self.settings.poll_interval)
        else:
            app = billing_app(self.settings)
            self.run(name, TrackedConsumer(self.settings, self.topic, app.apply_payment_event,
                                           SqlPositions(SqlStore(app)),
                                           dead_letters=app.dead_letters).run_forever)


def relayed_in_memory(settings: Settings, billing: BillingApp,
                      broker: MemoryBroker | None = None) -> MemoryPublisher:
    """Billing's relay as `regie relay billing` is wired, over an in-memory broker instead of
    Kafka (a new one, or ``broker`` to publish more into), run through billing's events not
    yet published: its publisher, on "billing.invoices" (the records of each partition;
    ``.broker`` for a consumer)."""
    publisher = MemoryPublisher(broker=broker or MemoryBroker(), topic="billing.invoices")
    relay = bootstrap.relay("billing", settings, app=billing, publisher=publisher,
                            heads=Heads(MemoryPublisher(), "audit.chain-heads", "billing"))
    while relay.run_once():
        pass
    return publisher


def consume_in_memory(settings: Settings, broker: MemoryBroker, app: object,
                      until: Callable[[], bool], linger: float = 0.0) -> None:
    """Run the payment consumer of ``settings`` on ``broker``'s "billing.invoices" until
    ``until()`` (30 s at most), then ``linger`` seconds more."""
    consumer = bootstrap.consumer("payment", settings, app=app,
                                  subscribe=lambda: MemorySubscriber(broker, "billing.invoices"))
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run_forever, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not until() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(linger)
    finally:
        stop.set()
        thread.join()


def check_rows_by_keys(store: SqlStore, monkeypatch: Any) -> None:
    """``store.rows_by_keys`` reads every row of a key list longer than one statement takes,
    each statement carrying one chunk of the keys, and nothing for no keys; so does
    ``store.values_by_keys``, its rows by position. On PostgreSQL a chunk goes as one
    array parameter (``= ANY(…)``): a statement of hundreds of placeholders is parsed anew
    by psycopg and by the server each time."""
    with store.transaction() as c:
        c.execute("CREATE TABLE {schema}keyed (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        c.executemany("INSERT INTO {schema}keyed (k, v) VALUES (?, ?)",
                      [(f"k{i:05}", i) for i in range(1200)])
    sizes: list[int] = []
    fetchall = store.fetchall

    def note(statement: str, params: tuple[Any, ...]) -> None:
        if store.postgres:
            assert "IN (" not in statement and len(params) == 1, statement
            sizes.append(len(params[0]))
        else:
            sizes.append(len(params))

    def counted(statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        note(statement, params)
        return fetchall(statement, params)

    monkeypatch.setattr(store, "fetchall", counted)
    statement = "SELECT k, v FROM {schema}keyed WHERE k IN ({keys})"
    # Every other key is absent; one is asked twice.
    wanted = [f"k{i:05}" for i in range(0, 2400, 2)] + ["k00000"]
    rows = store.rows_by_keys(statement, wanted)
    assert sorted(r["v"] for r in rows) == list(range(0, 1200, 2))
    assert len(sizes) > 1 and max(sizes) <= KEYS_PER_STATEMENT and sum(sizes) == 1200
    before = len(sizes)
    assert store.rows_by_keys(statement, []) == [] and len(sizes) == before
    monkeypatch.undo()
    # The same inside a write transaction.
    sizes.clear()
    with store.transaction() as c:
        query = c.query

        def counted_query(statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
            note(statement, params)
            found: list[Any] = query(statement, params)
            return found

        monkeypatch.setattr(c, "query", counted_query)
        rows = c.rows_by_keys(statement, wanted)
    monkeypatch.undo()
    assert sorted(r["v"] for r in rows) == list(range(0, 1200, 2))
    assert len(sizes) > 1 and max(sizes) <= KEYS_PER_STATEMENT and sum(sizes) == 1200
    # The same rows by position (on PostgreSQL each chunk as one array).
    assert sorted(row[1] for row in store.values_by_keys(statement, wanted)) == list(
        range(0, 1200, 2))
    assert store.values_by_keys(statement, []) == []
