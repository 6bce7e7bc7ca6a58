"""Amounts and dates as a French reader expects them, in pages and e-mails alike."""

from datetime import date, datetime

from events.formats import PARIS

NBSP, NNBSP = "\u00a0", "\u202f"


def euros(cents: int) -> str:
    """2500 -> '25,00 €' (no-break spaces: thousands and before the sign)."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole:,}".replace(",", NNBSP) + f",{rest:02d}{NBSP}€"


def day(value: str | date | None) -> str:
    """'2025-02-26' -> '26/02/2025'."""
    if not value:
        return ""
    d = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    return d.strftime("%d/%m/%Y")


def moment(value: str | datetime | None) -> str:
    """An ISO timestamp -> '26/02/2025 à 14:32', Paris time."""
    if not value:
        return ""
    t = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if t.tzinfo is not None:
        t = t.astimezone(PARIS)
    return t.strftime("%d/%m/%Y à %H:%M")
