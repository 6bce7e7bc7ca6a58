"""The régisseur's daily payment journal as CSV and PDF (from PaymentApp.journal)."""

import csv
import io
from pathlib import Path
from typing import Any

from services.common.spreadsheet import safe_row

CSV_COLUMNS = ("paid_at", "means", "amount_cents", "refdet", "idop", "numauto", "invoices",
               "family_id", "id", "by")
# The CSV's names for the read model's columns, where they differ.
CSV_SOURCES = {"by": "acted_by"}
CSV_NUMBERS = frozenset({"amount_cents"})
MEANS = {"card": "Carte bancaire", "direct_debit": "Prélèvement", "cash": "Espèces",
         "cheque": "Chèques", "cesu": "CESU", "ancv": "Chèques-vacances ANCV",
         "transfer": "Virements", "credit": "Avoirs", "refund": "Remboursements"}
STATUS = {"refused": "refusé", "abandoned": "abandonné", "expired": "expiré",
          "failed": "échec", "requested": "en cours", "started": "en cours"}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def to_csv(journal: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in journal["payments"]:
        cells = safe_row({c: row.get(CSV_SOURCES.get(c, c)) for c in CSV_COLUMNS},
                         CSV_NUMBERS)
        writer.writerow([cells[c] for c in CSV_COLUMNS])
    return out.getvalue()


def euros(cents: int) -> str:
    # Refunds are negative: the sign goes before the whole amount.
    sign, cents = ("-", -cents) if cents < 0 else ("", cents)
    return sign + f"{cents // 100:,}".replace(",", " ") + f",{cents % 100:02d} €"


def to_pdf(journal: dict[str, Any], regie_name: str) -> bytes:
    """One A4 page per ~40 payments: by type, totals, the unpaid attempts apart, the root."""
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", format="A4")
    unicode_font = FONT.exists()
    if unicode_font:
        pdf.add_font("DejaVu", fname=str(FONT))
        family = "DejaVu"
    else:  # core fonts know no euro sign: spell it out rather than fail
        family = "Helvetica"

    def text(value: str) -> str:
        return value if unicode_font else value.replace("€", "EUR").encode(
            "latin-1", "replace").decode("latin-1")

    pdf.add_page()
    pdf.set_font(family, size=14)
    day = journal["date"]
    day_fr = day.strftime("%d/%m/%Y") if hasattr(day, "strftime") else str(day)
    pdf.cell(0, 10, text(f"Journal des paiements — {regie_name} ({journal['regie']})"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=11)
    pdf.cell(0, 8, text(f"Journée du {day_fr}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font(family, size=9)
    for means, label in MEANS.items():
        rows = [r for r in journal["payments"] if r.get("means") == means]
        if not rows:
            continue
        pdf.set_font(family, size=10)
        pdf.cell(0, 7, text(label), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, size=8)
        for r in rows:
            line = (f"{(r.get('paid_at') or '')[11:16]}  {r['refdet']}  "
                    f"n° auto {r.get('numauto') or '-'}  factures {r['invoices']}  "
                    f"{euros(r['amount_cents'])}")
            pdf.cell(0, 5, text(line), new_x="LMARGIN", new_y="NEXT")
        pdf.cell(0, 6, text(f"Sous-total {label.lower()} : "
                            f"{euros(sum(r['amount_cents'] for r in rows))}"),
                 new_x="LMARGIN", new_y="NEXT")
    totals = journal["totals"]
    pdf.set_font(family, size=10)
    pdf.ln(2)
    pdf.cell(0, 7, text(f"Total : {totals['count']} paiement(s), "
                        f"{euros(totals['amount_cents'])}"), new_x="LMARGIN", new_y="NEXT")
    if journal["not_paid"]:
        pdf.ln(2)
        pdf.cell(0, 7, text("Tentatives non abouties"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, size=8)
        for r in journal["not_paid"]:
            pdf.cell(0, 5, text(f"{r['refdet']}  {STATUS.get(r['status'], r['status'])}  "
                                f"{euros(r['amount_cents'])}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(family, size=7)
    chain_head = journal.get("chain_head")
    at = f"événement {chain_head['notification_id']}, " if chain_head else ""
    pdf.cell(0, 5, text(f"Empreinte de l'historique en fin de journée (regie verify --heads) : "
                        f"{at}{journal.get('chain_root') or 'aucune'}"),
             new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
