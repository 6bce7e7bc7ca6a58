"""docs/subscribers.md, checked: the example subscriber and kcat against the real broker,
and the promise that a consumer written for InvoiceIssued v1 reads what we publish now.
"""

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

import events
from events import decode
from services.bootstrap import billing_app, payment_app
from tests.conftest import make_settings
from tests.factories import deliver, open_regies, terms, wire_messages

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "subscriber" / "consumer.py"
EXAMPLES = Path(events.__file__).parent / "examples"
PARTITIONS = 3


def golden(name: str, version: int = 1) -> dict[str, Any]:
    text = (EXAMPLES / name / f"v{version}.json").read_text(encoding="utf-8")
    message: dict[str, Any] = json.loads(text)
    return message


def wire(message: dict[str, Any]) -> bytes:
    """As the relays write it: one line of JSON."""
    return json.dumps(message, ensure_ascii=False, sort_keys=True).encode("utf-8")


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("subscriber_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- a consumer written for v1 ---------------------------------------------------------------


def v1_reader(value: bytes) -> dict[str, Any]:
    """A subscriber's InvoiceIssued handler written against v1 and never touched since."""
    event = json.loads(value)
    assert event["type"].startswith("fr.regie.InvoiceIssued.v")  # by name, any version
    data = event["data"]
    return {
        "id": event["id"],
        "family": data["family_id"],
        "email": data["payer_email"],
        "invoice": (data["regie"], data["number"], data["label"]),
        "dates": (data["issued_on"], data["payable_until"], data["due_on"]),
        "lines": [(x["label"], x["quantity"], x["unit_price_cents"]) for x in data["lines"]],
        "amount_cents": data["amount_cents"],
    }


def test_a_v1_reader_reads_v2_as_it_read_v1() -> None:
    v1, v2 = golden("InvoiceIssued", 1), golden("InvoiceIssued", 2)
    assert (v1["type"], v2["type"]) == ("fr.regie.InvoiceIssued.v1", "fr.regie.InvoiceIssued.v2")
    assert v1_reader(wire(v2)) == v1_reader(wire(v1))
    example = load_example()
    assert example.describe(v2) == example.describe(v1)


def test_the_example_says_to_erase_a_forgotten_family() -> None:
    assert load_example().describe(golden("FamilyForgotten", 1)) == (
        "family famille-martin forgotten: erase what is kept of it")


def test_a_v1_reader_reads_what_the_billing_relay_publishes_now(tmp_path: Path) -> None:
    billing = billing_app(make_settings("memory", tmp_path))
    open_regies(billing)
    billing.issue_invoice(terms("F-7", family="fam-7", quantity=2, unit=1250,
                                payer_email="parent7@example.org"))
    [value] = [v for _, v in wire_messages(billing) if b"InvoiceIssued" in v]
    published = json.loads(value)
    assert published["type"] == "fr.regie.InvoiceIssued.v2"  # the latest version
    assert published["data"]["payer"] == {"family_id": "fam-7", "email": "parent7@example.org"}
    assert v1_reader(value) == {
        "id": published["id"],
        "family": "fam-7",
        "email": "parent7@example.org",
        "invoice": ("SPORTS", "F-7", "Vacances sportives"),
        "dates": ("2025-02-26", "2030-12-31", "2030-12-31"),
        "lines": [("Séjour", 2, 1250)],
        "amount_cents": 2500,
    }


def test_our_own_consumer_reads_v1_history_and_a_v2_republish_of_it(tmp_path: Path) -> None:
    payment = payment_app(make_settings("memory", tmp_path))
    history = [(0, wire(golden("RegieOpened"))), (1, wire(golden("InvoiceIssued", 1)))]
    assert deliver(payment, history) == 2
    assert payment.to_pay_summary("famille-martin") == [
        {"code": "SPORTS", "name": "Direction des sports", "count": 1, "total_cents": 2500}
    ]
    # The same event again, now as v2 (a republish after the upgrade): already applied.
    assert deliver(payment, [(2, wire(golden("InvoiceIssued", 2)))]) == 0
    assert payment.to_pay_summary("famille-martin")[0]["total_cents"] == 2500


# --- the example subscriber and kcat against the broker -------------------------------------


class Subscriber:
    """examples/subscriber/consumer.py in a process of its own; what it prints, line by line."""

    def __init__(self, bootstrap: str, topics: list[str], group: str, db: Path, log: Path):
        self.lines: list[str] = []
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--bootstrap", bootstrap,
                 "--topics", ",".join(topics), "--group", group, "--db", str(db)],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT,
            )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8").rstrip("\n"))

    def ids(self) -> list[str]:
        return [word[3:] for line in list(self.lines) for word in line.split()[1:2]
                if word.startswith("id=")]

    def wait_for(self, ids: set[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= set(self.ids()):
            if self.proc.poll() is not None:
                raise AssertionError(f"the example died:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"never printed {sorted(ids - set(self.ids()))}; printed {self.lines};\n"
                    f"{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=60) == 0, self.log.read_text()[-3000:]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)


@contextmanager
def subscriber(*args: Any) -> Iterator[Subscriber]:
    s = Subscriber(*args)
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop()


class Topics:
    """Two fresh topics, like billing.invoices and payment.payments, and a producer."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.billing = f"{prefix}billing.invoices"
        self.payment = f"{prefix}payment.payments"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (self.billing, self.payment)])
        finally:
            admin.close()
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.sent: dict[str, list[tuple[str, bytes]]] = {self.billing: [], self.payment: []}

    def send(self, topic: str, message: dict[str, Any] | bytes, key: str | None = None,
             partition: int | None = None) -> None:
        value = message if isinstance(message, bytes) else wire(message)
        key = key if key is not None else json.loads(value)["partitionkey"]
        self.producer.send(topic, value=value, key=key.encode("utf-8"), partition=partition)
        self.producer.flush()
        self.sent[topic].append((key, value))

    def markers(self, round_: str) -> set[str]:
        """A new event on every partition: once all are printed, every record before them
        in every partition has been read."""
        ids = set()
        for topic, base in ((self.billing, golden("InvoiceCancelled")),
                            (self.payment, golden("PaymentAbandoned"))):
            for partition in range(PARTITIONS):
                event_id = f"/test/marker/{round_}/{topic}/{partition}"
                self.send(topic, {**base, "id": event_id}, partition=partition)
                ids.add(event_id)
        return ids

    def close(self) -> None:
        self.producer.close()


@pytest.fixture
def topics(kafka: Any, topic_prefix: str) -> Iterator[Topics]:
    t = Topics(kafka.bootstrap, topic_prefix)
    yield t
    t.close()


def committed_everything(bootstrap: str, topics: list[str], group: str) -> bool:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        ends = consumer.end_offsets(parts)
        return all((consumer.committed(tp) or 0) == ends[tp] for tp in parts)
    finally:
        consumer.close()


@pytest.mark.kafka
def test_the_example_prints_each_event_once_and_resumes_where_it_stopped(
    kafka: Any, topics: Topics, tmp_path: Path
) -> None:
    # The history of one invoice, from before the upgrade (InvoiceIssued v1) ...
    for name in ("RegieOpened", "InvoiceIssued"):
        topics.send(topics.billing, golden(name))
    for name in ("PaymentRequested", "PaymentConfirmed", "RefundNeeded"):
        topics.send(topics.payment, golden(name))
    topics.send(topics.billing, golden("InvoiceSettled"))
    # ... the same event republished as v2 (same id), a redelivered confirmation ...
    topics.send(topics.billing, golden("InvoiceIssued", 2))
    topics.send(topics.payment, golden("PaymentConfirmed"))
    # ... what the billing relay publishes today, and a record that is not an event.
    billing = billing_app(make_settings("memory", tmp_path))
    open_regies(billing)
    billing.issue_invoice(terms("F-9", family="fam-9"))
    for _, value in wire_messages(billing):
        topics.send(topics.billing, value)
    topics.send(topics.billing, b"not json", key="junk")

    events_sent = [json.loads(v) for t in topics.sent.values() for _, v in t if v != b"not json"]
    expected = {e["id"] for e in events_sent}
    assert len(events_sent) - len(expected) == 2  # the two duplicates
    all_topics = [topics.billing, topics.payment]
    group, db = f"example-{uuid.uuid4().hex[:8]}", tmp_path / "subscriber.sqlite3"
    log = tmp_path / "subscriber.log"

    # 1. Everything once, the duplicates and the junk included.
    with subscriber(kafka.bootstrap, all_topics, group, db, log) as s:
        marks1 = topics.markers("1")
        s.wait_for(expected | marks1)
        s.stop()
    assert Counter(s.ids()) == Counter(expected | marks1), s.lines
    issued = next(line for line in s.lines if "invoice F-9 of SPORTS" in line)
    assert issued.startswith("fr.regie.InvoiceIssued.v2 id=/regie/billing/")
    assert " key=fam-9 " in issued and "2500 cents for fam-9 <parent@example.org>" in issued
    assert "not a Régie event" in log.read_text()
    assert committed_everything(kafka.bootstrap, all_topics, group)

    # 2. Same group, an empty SQLite file: only what is new, thanks to the committed offsets.
    with subscriber(kafka.bootstrap, all_topics, group, tmp_path / "fresh.sqlite3", log) as s:
        marks2 = topics.markers("2")
        s.wait_for(marks2)
        s.stop()
    assert Counter(s.ids()) == Counter(marks2), s.lines

    # 3. A new group with the first SQLite file: the whole topic again, yet only what that
    #    file has not seen is printed (the ids of round 2, and round 3's).
    with subscriber(kafka.bootstrap, all_topics, group + "-b", db, log) as s:
        marks3 = topics.markers("3")
        s.wait_for(marks2 | marks3)
        s.stop()
    assert Counter(s.ids()) == Counter(marks2 | marks3), s.lines


def kcat(*args: str) -> list[str]:
    exe = shutil.which("kcat")
    if exe is None:
        pytest.fail("kcat is required (Debian package kcat: apt-get install -y kcat)")
    out = subprocess.run([exe, *args], capture_output=True, timeout=60, check=True)
    return out.stdout.decode("utf-8").splitlines()


@pytest.mark.kafka
def test_kcat_reads_the_topic_as_the_guide_says(kafka: Any, topics: Topics) -> None:
    for name in ("RegieOpened", "InvoiceIssued", "InvoiceSettled"):
        topics.send(topics.billing, golden(name))
    topics.send(topics.billing, golden("InvoiceIssued", 2))
    sent = Counter((k, decode(v).id) for k, v in topics.sent[topics.billing])

    # `kcat -b HOST:PORT -C -t billing.invoices -f '%k %s\n'`, told to stop at the end (-e).
    lines = kcat("-b", kafka.bootstrap, "-C", "-t", topics.billing, "-f", "%k %s\n", "-e", "-q")
    read = Counter((k, decode(v).id) for k, v in (line.split(" ", 1) for line in lines))
    assert read == sent

    # The group form: a second run of the same group reads only what is new.
    group = f"kcat-{uuid.uuid4().hex[:8]}"
    grouped = ("-b", kafka.bootstrap, "-G", group, "-X", "auto.offset.reset=earliest",
               "-f", "%k %s\n", "-e", "-q", topics.billing)
    assert len(kcat(*grouped)) == len(lines)
    assert kcat(*grouped) == []
    topics.send(topics.billing, golden("InvoiceCancelled"))
    [line] = kcat(*grouped)
    assert line.startswith("famille-martin {") and "fr.regie.InvoiceCancelled.v1" in line


def test_the_subscribers_file_goes_under_var(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, it must not leave an untracked file there."""
    example = load_example()
    monkeypatch.delenv("SUBSCRIBER_DB", raising=False)
    assert example.parse_args([]).db == Path("var") / "subscriber.sqlite3"
    db = example.open_db(tmp_path / "var" / "subscriber.sqlite3")  # var/ made if missing
    db.close()
    assert (tmp_path / "var" / "subscriber.sqlite3").exists()
    assert "var/" in (ROOT / ".gitignore").read_text().splitlines()
