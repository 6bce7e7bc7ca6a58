"""Jinja HTML templates to PDF, laid out by WeasyPrint (CSS paged media)."""

from datetime import date, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from events.formats import PARIS

MEANS = {"card": "Carte bancaire", "direct_debit": "Prélèvement", "cash": "Espèces",
         "cheque": "Chèques", "cesu": "CESU", "ancv": "Chèques-vacances ANCV",
         "transfer": "Virements", "credit": "Avoirs", "refund": "Remboursements"}
# PayFiP's resultrans, as the history keeps it for online payments.
RESULTRANS = {"P": "card", "V": "direct_debit"}
STATUS = {"open": "à payer", "paid": "payée", "cancelled": "annulée",
          "transferred": "transmise au Trésor public", "refused": "refusé",
          "abandoned": "abandonné", "expired": "expiré", "failed": "échec",
          "requested": "en cours", "started": "en cours", "confirmed": "encaissé"}


def euros(cents: int) -> str:
    # Refunds are negative: the sign goes before the whole amount.
    sign, cents = ("-", -cents) if cents < 0 else ("", cents)
    return sign + f"{cents // 100:,}".replace(",", " ") + f",{cents % 100:02d} €"


def day(value: date | datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        at = value.astimezone(PARIS) if value.tzinfo else value
        return at.strftime("%d/%m/%Y à %H:%M")
    return value.strftime("%d/%m/%Y")


def means(value: str | None) -> str:
    if not value:
        return ""
    return MEANS.get(RESULTRANS.get(value, value), value)


_env = Environment(loader=PackageLoader("services.documents", "templates"),
                   autoescape=select_autoescape(["html"]))
_env.filters.update(euros=euros, day=day, means=means,
                    status=lambda s: STATUS.get(s or "", s or ""))


def html(template: str, collectivite: str, **context: Any) -> str:
    """``collectivite``: the municipality that issues the document, at its head."""
    return _env.get_template(template).render(collectivite=collectivite, **context)


def pdf(template: str, collectivite: str, **context: Any) -> bytes:
    from weasyprint import HTML  # loads pango: only where a PDF is made

    result: bytes = HTML(string=html(template, collectivite, **context)).write_pdf()
    return result
