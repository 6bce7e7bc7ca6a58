"""The CSV exports open in a spreadsheet as text, never as formulas; amounts stay numbers."""

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from services.bootstrap import billing_app
from services.common.storage import history
from services.common.storage.spreadsheet import text_cell
from services.payment.journal import to_csv
from tests.conftest import make_settings
from tests.factories import open_regies, terms


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_text_cell_that_would_start_a_formula_is_quoted(start: str) -> None:
    assert text_cell(f"{start}HYPERLINK(\"http://x\")") == f"'{start}HYPERLINK(\"http://x\")"


@pytest.mark.parametrize("value", ["SPORTS", "2025-03-01T10:00:00+00:00", "{\"a\": 1}", "",
                                   None, -500, 0, "a=b"])
def test_other_cells_are_left_as_they_are(value: object) -> None:
    assert text_cell(value) == value


def test_journal_csv_quotes_text_cells_and_keeps_negative_amounts() -> None:
    journal = {"payments": [{
        "paid_at": "2025-03-01T10:00:00+00:00", "means": "card", "amount_cents": -500,
        "refdet": "=cmd|' /C calc'!A0", "idop": "@SUM(A1:A9)", "numauto": "+123",
        "invoices": "-2-3 \tX", "family_id": "\rfam", "id": "p-1", "acted_by": "=staff",
    }]}
    rows = list(csv.reader(io.StringIO(to_csv(journal))))
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert cells == {
        "paid_at": "2025-03-01T10:00:00+00:00", "means": "card", "amount_cents": "-500",
        "refdet": "'=cmd|' /C calc'!A0", "idop": "'@SUM(A1:A9)", "numauto": "'+123",
        "invoices": "'-2-3 \tX", "family_id": "'\rfam", "id": "p-1", "by": "'=staff",
    }


def test_export_csv_quotes_a_family_id_a_spreadsheet_would_compute(tmp_path: Path) -> None:
    billing = billing_app(make_settings("memory", tmp_path))
    open_regies(billing)
    # "-2-3" is a valid family id, and a formula (=-2-3) to a spreadsheet.
    billing.issue_invoice(terms("F-1", family="-2-3"))
    out = io.StringIO()
    history.write(history.records(billing, "billing"), out, "csv")
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    issued = [r for r in rows if r["type"] == "Invoice.Issued"]
    assert len(issued) == 1, [r["type"] for r in rows]
    assert issued[0]["family_id"] == "'-2-3"
    assert issued[0]["amount_cents"] == "2500" and issued[0]["version"] == "1"
    assert issued[0]["payload"].startswith("{")
    assert all(r["position"].isdigit() for r in rows)
    assert date.fromisoformat(issued[0]["recorded_at"][:10])
