"""The baselines the benchmarks measure Régie against store what they say they store."""

import sqlite3
from pathlib import Path

from benchmarks.batch_issue import library_alone_rate
from benchmarks.harness import invoice_terms, make_settings


def test_the_library_alone_stores_the_invoices_as_the_library_does_without_chain_or_seal(
        tmp_path: Path) -> None:
    """The batch figure's second baseline: eventsourcing's own save of the same invoices,
    in a file of its own, with no chain rows and the e-mail addresses as given."""
    assert library_alone_rate(make_settings(tmp_path), 30) > 0
    conn = sqlite3.connect(tmp_path / "alone.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = conn.execute("SELECT topic, state FROM stored_events").fetchall()
    finally:
        conn.close()
    assert not any("chain" in t for t in tables)
    assert [t for t, _ in rows] == ["services.billing.domain:Invoice.Issued"] * 30
    assert invoice_terms(0).payer_email.encode() in rows[0][1]
    assert not (tmp_path / "billing.db").exists()
