"""Auditors' tools: export and import the history, and the state as of a past moment."""

import csv
import io
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.formats import PARIS
from services import bootstrap, cli
from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.settings import Settings
from services.common.storage.history import import_into, read, records, write
from services.payment.documents import verify
from services.payment.gateway import FakeGateway
from services.payment.projections import MemoryToPayStore, catch_up
from tests.conftest import make_settings
from tests.documents import code_in, pdf_text, squeezed
from tests.factories import URLS, deliver, open_regies, terms, wire_messages


def moment() -> datetime:
    time.sleep(0.01)  # events recorded before and after differ in their timestamps
    now = datetime.now(UTC)
    time.sleep(0.01)
    return now


def build(settings: Settings) -> tuple[Any, Any, dict[str, Any]]:
    """A history with a snapshot of the live read model taken at two moments."""
    gateway = FakeGateway()
    billing = billing_app(settings)
    payment = payment_app(settings, gateway=gateway, urls=URLS)
    open_regies(billing)
    for i in range(12):
        billing.issue_invoice(terms(f"A-{i}", family=f"fam-{i % 3}", unit=1000 + i))
    deliver(payment, wire_messages(billing))
    seen = {"t1": (moment(), payment.to_pay.snapshot())}
    billing.cancel_invoice(Invoice.create_id("SPORTS", "A-0"), "doublon")
    billing.issue_invoice(terms("C-1", family="fam-1", regie="CANTINE"))
    deliver(payment, wire_messages(billing))
    p = payment.request_payment("fam-1", "SPORTS", [str(Invoice.create_id("SPORTS", "A-1"))],
                                "parent@example.org")
    gateway.decide(p.idop, "P")  # type: ignore[arg-type]
    payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
    payment.refresh()
    seen["t2"] = (moment(), payment.to_pay.snapshot())
    return billing, payment, seen


def test_as_of_any_past_moment_equals_what_was_live(store_settings: Settings) -> None:
    _, payment, seen = build(store_settings)
    for when, live in seen.values():
        past = MemoryToPayStore()
        catch_up(payment, past, until=when, batch_size=5)
        assert past.snapshot() == live
    before_anything = MemoryToPayStore()
    catch_up(payment, before_anything, until=datetime(2000, 1, 1, tzinfo=UTC))
    assert not any(before_anything.snapshot().values())


def test_export_filters_and_round_trips(store_settings: Settings, tmp_path: Path) -> None:
    billing, payment, _ = build(store_settings)
    everything = list(records(payment, "payment"))
    assert [r["position"] for r in everything] == sorted(r["position"] for r in everything)
    fam1 = list(records(payment, "payment", family="fam-1"))
    assert fam1 and all(r["family_id"] == "fam-1" for r in fam1)
    assert {r["type"] for r in fam1} >= {"Invoice.Registered", "Payment.Confirmed"}
    cantine = list(records(billing, "billing", regie="CANTINE"))
    assert {r["data"].get("number") for r in cantine} >= {"C-1"}
    assert all(r["regie"] == "CANTINE" for r in cantine)

    out = io.StringIO()
    assert write(records(payment, "payment"), out, "jsonl") == len(everything)
    fresh = payment_app(make_settings("sqlite", tmp_path / "jsonl"))
    out.seek(0)
    assert import_into(fresh, read(out)) == len(everything)
    fresh.refresh()
    assert fresh.to_pay.snapshot() == payment.to_pay.snapshot()
    with pytest.raises(ValueError, match="not empty"):
        import_into(fresh, [])


def test_the_csv_export_reads_in_a_spreadsheet(store_settings: Settings) -> None:
    _, payment, _ = build(store_settings)
    out = io.StringIO()
    write(records(payment, "payment"), out, "csv")
    out.seek(0)
    rows = list(csv.DictReader(out))
    assert list(rows[0]) == ["position", "recorded_at", "service", "type", "aggregate_id",
                             "version", "regie", "family_id", "amount_cents", "payload"]
    issued = next(r for r in rows if r["type"] == "Invoice.Registered")
    assert issued["regie"] == "SPORTS" and issued["amount_cents"] == "1000"
    assert json.loads(issued["payload"])["number"] == "A-0"
    assert datetime.fromisoformat(issued["recorded_at"]).tzinfo is not None
    # The stored bytes stay in the JSONL export, the one that imports.
    assert all(len(r) == 10 for r in rows)
    fresh = payment_app(make_settings("sqlite", Path(store_settings.var_dir) / "fresh"))
    out.seek(0)
    with pytest.raises(ValueError, match="JSONL"):
        import_into(fresh, read(out))


def test_the_cli_commands(store_settings: Settings, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    _, payment, seen = build(store_settings)
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    target = tmp_path / "history.jsonl"
    assert cli.main(["export", "--service", "payment", "--output", str(target)]) == 0
    lines = target.read_text().splitlines()
    assert len(lines) == payment.recorder.max_notification_id()
    assert json.loads(lines[0])["service"] == "payment"
    capsys.readouterr()

    when, live = seen["t1"]
    assert cli.main(["as-of", when.isoformat()]) == 0
    state = json.loads(capsys.readouterr().out)
    open_at_t1 = [row for row in live["invoices"].values() if row["status"] == "open"]
    assert state["regies"]["SPORTS"]["count"] == len(open_at_t1)
    assert state["regies"]["SPORTS"]["total_cents"] == sum(
        row["amount_due_cents"] for row in open_at_t1)
    assert set(state["families"]) == {"fam-0", "fam-1", "fam-2"}

    assert cli.main(["as-of", "now"]) == 0
    state = json.loads(capsys.readouterr().out)
    open_now = [row for row in payment.to_pay.snapshot()["invoices"].values()
                if row["status"] == "open"]
    assert sum(r["count"] for r in state["regies"].values()) == len(open_now)
    assert cli.main(["as-of", "now-1d"]) == 0  # before the history began
    assert json.loads(capsys.readouterr().out)["regies"] == {}

    with pytest.raises(SystemExit) as refused:
        cli.main(["as-of", "26/02/2025"])
    assert refused.value.code == 2


def test_regie_journal_as_csv_and_pdf(store_settings: Settings, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str],
                                      caplog: pytest.LogCaptureFixture) -> None:
    _, payment, _ = build(store_settings)
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    confirmed = [p for p in payment.to_pay.snapshot()["payments"].values()
                 if p["status"] == "confirmed"]
    day = confirmed[0]["day"]
    capsys.readouterr()
    assert cli.main(["journal", "--regie", "SPORTS", "--date", day]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("paid_at,means,amount_cents")
    assert [r.split(",")[2] for r in rows[1:]] == ["1001"]  # A-1 paid by card
    assert cli.main(["journal", "--regie", "SPORTS", "--date", "today"]) == 0
    assert capsys.readouterr().out.splitlines() == rows[:1]  # paid on another day
    pdf = tmp_path / "journal.pdf"
    caplog.set_level(logging.INFO)
    assert cli.main(["journal", "--regie", "SPORTS", "--date", day, "--format", "pdf",
                     "--output", str(pdf)]) == 0
    assert not [r for r in caplog.records if r.name.startswith("fontTools")]
    text = pdf_text(pdf.read_bytes(), tmp_path, "read")
    assert "Page 1 / 1" in text and "\f" not in text.rstrip("\f")  # one page
    assert "Sous-total Carte bancaire 10,01 €" in squeezed(text)
    assert "Code de vérification" not in text  # the history had no event that day
    # Today's has one: it attests the chain's head at the day's end, as recorded.
    assert cli.main(["journal", "--regie", "SPORTS", "--date", "today", "--format", "pdf",
                     "--output", str(pdf)]) == 0
    attested = verify(payment, code_in(pdf_text(pdf.read_bytes(), tmp_path, "today")))
    assert (attested["authentic"], attested["kind"], attested["date"]) == (
        True, "journal", datetime.now(PARIS).date())
    assert cli.main(["journal", "--regie", "PISCINE", "--date", day]) == 1
    assert "unknown régie" in capsys.readouterr().err


def test_every_row_names_its_aggregates_regie_and_family(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    billing, payment, _ = build(store_settings)
    cancelled = [r for r in records(billing, "billing") if r["type"] == "Invoice.Cancelled"]
    assert [(r["regie"], r["family_id"]) for r in cancelled] == [("SPORTS", "fam-0")]
    # A cache far smaller than the number of aggregates changes nothing but the speed.
    full = list(records(payment, "payment", family="fam-1"))
    from services.common.storage import history

    monkeypatch.setattr(history, "OWNER_CACHE", 2)
    assert list(records(payment, "payment", family="fam-1")) == full
    assert any(r["type"] == "Payment.Confirmed" for r in full)


def test_replay_all_rebuilds_every_read_model(store_settings: Settings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, payment, _ = build(store_settings)
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    live = payment.to_pay.snapshot()
    assert live["invoices"] and live["payments"]  # to-pay and history; the journal
    for projection in ("all", "to-pay", "history", "journal"):
        with payment.to_pay.store.transaction() as c:  # a read model gone wrong
            c.execute("UPDATE {schema}view_invoices SET status = 'cancelled', paid_by = NULL")
            c.execute("UPDATE {schema}view_payments SET amount_cents = 0")
        assert payment.to_pay.snapshot() != live
        assert cli.main(["replay", projection, "--quiet"]) == 0
        assert payment_app(store_settings).to_pay.snapshot() == live


def test_a_paid_invoice_names_the_payment_that_paid_it(store_settings: Settings) -> None:
    _, payment, _ = build(store_settings)
    paid = [line for line in payment.history("fam-1") if line["status"] == "paid"]
    assert [line["number"] for line in paid] == ["A-1"]
    assert paid[0]["paid_by"] == "card"  # the means, as before
    assert paid[0]["payment_id"] is None  # nothing in progress
    confirmed = [p for p in payment.to_pay.snapshot()["payments"].values()
                 if p["status"] == "confirmed"]
    assert paid[0]["paid_by_payment_id"] == confirmed[0]["id"]
