"""Reminders: which invoices are due for one, and what the payer reads. Pure Python.

An invoice is reminded once per online-payment deadline, in the ``days_before`` days before
it: a pass missed (the scheduler down for a day) still reminds it before the deadline, and a
deadline that moves gets a reminder of its own.
"""

from collections.abc import Collection
from datetime import date, timedelta
from html import escape

from services.common.french import day, euros
from services.common.mail import Letter
from services.payment.domain import Invoice


def is_due(invoice: Invoice, reminded: Collection[date], today: date, days_before: int) -> bool:
    """Still to pay online (open, no payment in flight, deadline not passed), its deadline
    within ``days_before`` days, and not reminded of that deadline yet."""
    return (
        invoice.why_not_payable(today) is None
        and invoice.payable_until <= today + timedelta(days=days_before)
        and invoice.payable_until not in reminded
    )


def letter(invoice: Invoice, to: str, regie_name: str, portal_url: str) -> Letter:
    """The reminder of one invoice, in French: only that invoice, only to its payer."""
    number, deadline = invoice.number, day(invoice.payable_until)
    amount = euros(invoice.amount_due_cents)
    text = (
        "Bonjour,\n\n"
        f"La facture n° {number} « {invoice.label} » ({regie_name}), d'un montant de "
        f"{amount} restant à payer, peut être payée en ligne jusqu'au {deadline} inclus.\n\n"
        f"Vous pouvez la payer sur le portail des familles : {portal_url}\n\n"
        "Si vous l'avez déjà réglée, ne tenez pas compte de ce message.\n\n"
        f"{regie_name}\n"
    )
    html = (
        '<!DOCTYPE html>\n<html lang="fr"><body>\n<p>Bonjour,</p>\n'
        f"<p>La facture n° <strong>{escape(number)}</strong> « {escape(invoice.label)} » "
        f"({escape(regie_name)}), d'un montant de <strong>{escape(amount)}</strong> restant "
        f"à payer, peut être payée en ligne jusqu'au <strong>{escape(deadline)}</strong> "
        "inclus.</p>\n"
        f'<p>Vous pouvez la payer sur <a href="{escape(portal_url)}">le portail des '
        "familles</a>.</p>\n"
        "<p>Si vous l'avez déjà réglée, ne tenez pas compte de ce message.</p>\n"
        f"<p>{escape(regie_name)}</p>\n</body></html>\n"
    )
    subject = f"Rappel : facture n° {number} à payer en ligne d'ici le {deadline}"
    return Letter(to=to, subject=subject, text=text, html=html)
