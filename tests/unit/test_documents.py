"""The documents' layout and their verification codes, without any store."""

from datetime import date
from pathlib import Path
from typing import Any

from services.documents import codes
from services.payment.journal import to_pdf
from tests.documents import pdf_text, squeezed, to_png

HASH = "ab" * 32


def payment(means: str, cents: int, n: int, **more: Any) -> dict[str, Any]:
    return {"id": f"id-{means}-{n}", "means": means, "amount_cents": cents,
            "paid_at": f"2025-03-03T{8 + n % 10:02d}:{n % 60:02d}:00+01:00",
            "refdet": f"REF-{means}-{n}", "numauto": "123456" if means == "card" else None,
            "invoices": f"S-{n}", "status": "confirmed", "family_id": "fam-1", **more}


def journal() -> dict[str, Any]:
    # Enough card payments to need a second page.
    rows = [payment("card", 2500, n) for n in range(40)]
    rows += [payment("direct_debit", 1000, 1), payment("direct_debit", 1500, 2),
             payment("cash", 2000, 1, acted_by="agent.accueil@mairie.example"),
             payment("cheque", 3000, 1), payment("cheque", 450, 2),
             payment("cesu", 1800, 1), payment("ancv", 2000, 1), payment("refund", -700, 1)]
    total = sum(r["amount_cents"] for r in rows)
    return {"regie": "SPORTS", "date": date(2025, 3, 3), "payments": rows,
            "totals": {"count": len(rows), "amount_cents": total},
            "not_paid": [{**payment("card", 900, 99), "status": "refused"}],
            "chain_root": HASH, "chain_head": {"notification_id": 77, "hash": HASH},
            "code": str(codes.make("journal", 77, HASH))}


def test_the_journal_lists_every_means_with_its_subtotal_on_numbered_pages(
        tmp_path: Path) -> None:
    content = to_pdf(journal(), "Direction des sports", "Ville de Saint-Exemple")
    text = pdf_text(content, tmp_path, "journal")
    flat = squeezed(text)
    pages = [page for page in text.split("\f") if page.strip()]
    assert len(pages) > 1
    for n, page in enumerate(pages, 1):
        # The collectivité and the régie head every page, its number and the count end it.
        assert "Ville de Saint-Exemple" in page and "Régie « Direction des sports »" in page
        assert f"Page {n} / {len(pages)}" in page
    for subtotal in ("Sous-total Carte bancaire 1 000,00 €", "Sous-total Prélèvement 25,00 €",
                     "Sous-total Espèces 20,00 €", "Sous-total Chèques 34,50 €",
                     "Sous-total CESU 18,00 €", "Sous-total Chèques-vacances ANCV 20,00 €",
                     "Sous-total Remboursements -7,00 €"):
        assert subtotal in flat, subtotal
    assert "Total de la journée 48 1 110,50 €" in flat
    assert "REF-cheque-2" in flat and "4,50 €" in flat
    # Who took the money at the counter, as the event recorded it.
    assert "agent.accueil@mairie.example" in flat.replace("\n", "")
    assert "Tentatives non abouties" in flat and "REF-card-99" in flat and "refusé" in flat
    assert "Date et signature" in flat
    assert f"événement 77, {HASH}" in flat.replace("\n", "")
    assert journal()["code"] in flat


def test_the_layout_is_a_real_one(tmp_path: Path) -> None:
    """The first page as an image: its tables and header are drawn, not a text dump."""
    png = to_png(to_pdf(journal(), "Direction des sports", "Ville de Saint-Exemple"), tmp_path,
                 "journal")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert png.stat().st_size > 10_000


def test_a_code_names_its_kind_and_position_and_reads_back_however_typed() -> None:
    code = codes.make("certificate", 42, HASH, b"key")
    text = str(code)
    assert text.startswith("A42-") and len(text) == len("A42-XXXX-XXXX")
    for typed in (text, text.lower(), text.replace("-", " "), f"  {text.replace('-', '')} "):
        assert codes.parse(typed) == code
    assert codes.matches(code, HASH, b"key")
    # Another chain hash (the history altered), another key, another kind: no match.
    assert not codes.matches(code, "cd" * 32, b"key")
    assert not codes.matches(code, HASH, b"other")
    assert not codes.matches(codes.Code("invoice", 42, code.mac), HASH, b"key")
    for junk in ("", "A42", "Z42-AAAA-AAAA", "A42-AAAA-AAA1", "A-AAAA-AAAA"):
        assert codes.parse(junk) is None
