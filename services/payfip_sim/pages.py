"""The payment page, in French like PayFiP's, server-rendered and usable with a keyboard.

Plain forms and real buttons only: every step works without JavaScript, each field has a
visible label, errors are listed at the top (role="alert") and point at their fields.
The pages are the templates under templates/payfip_sim/, their style static/payfip_sim/.
"""

from typing import Any

from flask import render_template

from services.payfip_sim.model import SimPayment

REFUSALS = {
    "unknown": (
        "Opération inconnue",
        "Cette opération de paiement est inconnue ou n'est plus disponible. "
        "Retournez sur le site de votre collectivité pour recommencer.",
    ),
    "decided": (
        "Paiement déjà traité",
        "Ce paiement a déjà été traité : il ne peut pas être payé une seconde fois.",
    ),
    "expired": (
        "Délai dépassé",
        "Le délai de 15 minutes pour effectuer ce paiement est expiré. "
        "Retournez sur le site de votre collectivité pour recommencer.",
    ),
}
def format_amount(cents: int) -> str:
    euros, rest = divmod(cents, 100)
    return f"{euros:,}".replace(",", " ") + f",{rest:02d} €"


def _page(template: str, title: str, **context: Any) -> str:
    return render_template(f"payfip_sim/{template}.html", title=title, **context)


def home(payment: SimPayment) -> str:
    return _page("home", "Paiement", p=payment, amount=format_amount(payment.amount_cents))


def card(payment: SimPayment, values: dict[str, str] | None = None,
         errors: dict[str, str] | None = None) -> str:
    return _page("card", "Paiement par carte bancaire", p=payment,
                 amount=format_amount(payment.amount_cents), values=values or {},
                 errors=errors or {})


def debit(payment: SimPayment, values: dict[str, str] | None = None,
          errors: dict[str, str] | None = None) -> str:
    return _page("debit", "Paiement par prélèvement", p=payment,
                 amount=format_amount(payment.amount_cents), values=values or {},
                 errors=errors or {})


def refusal(reason: str) -> str:
    heading, message = REFUSALS[reason]
    return _page("refusal", heading, heading=heading, message=message)
