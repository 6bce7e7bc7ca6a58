"""The régisseur's daily payment journal as CSV and PDF (from PaymentApp.journal)."""

import csv
import io
from typing import Any

from services.common.storage.spreadsheet import safe_row
from services.documents import render
from services.documents.render import MEANS, euros

__all__ = ["CSV_COLUMNS", "MEANS", "euros", "to_csv", "to_pdf"]

CSV_COLUMNS = ("paid_at", "means", "amount_cents", "refdet", "idop", "numauto", "invoices",
               "family_id", "id", "by")
# The CSV's names for the read model's columns, where they differ.
CSV_SOURCES = {"by": "acted_by"}
CSV_NUMBERS = frozenset({"amount_cents"})


def to_csv(journal: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in journal["payments"]:
        cells = safe_row({c: row.get(CSV_SOURCES.get(c, c)) for c in CSV_COLUMNS},
                         CSV_NUMBERS)
        writer.writerow([cells[c] for c in CSV_COLUMNS])
    return out.getvalue()


def to_pdf(journal: dict[str, Any], regie_name: str, collectivite: str) -> bytes:
    """The day's payments by means of payment, each with its subtotal, the summary of the
    subtotals, the unpaid attempts apart, the chain's root and the régisseur's signature."""
    rows = journal["payments"]
    sections = [{"label": label, "rows": found,
                 "total_cents": sum(r["amount_cents"] for r in found)}
                for means, label in MEANS.items()
                if (found := [r for r in rows if r.get("means") == means])]
    return render.pdf("journal.html", collectivite, title=f"Journal des paiements — {regie_name}",
                      journal=journal, sections=sections, regie=journal["regie"],
                      regie_name=regie_name, code=journal.get("code"))
