"""Amounts, dates and states as a French reader expects them."""

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


def moment(value: str | None) -> str:
    """An ISO timestamp -> '26/02/2025 à 14:32', Paris time."""
    if not value:
        return ""
    t = datetime.fromisoformat(value)
    if t.tzinfo is not None:
        t = t.astimezone(PARIS)
    return t.strftime("%d/%m/%Y à %H:%M")


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


WHY_NOT_PAYABLE = {
    "payment_in_progress": "Un paiement de cette facture est en cours : attendez son "
                           "résultat avant de la payer à nouveau.",
    "online_payment_deadline_passed": "La date limite de paiement en ligne est dépassée : "
                                      "payez-la directement auprès du service.",
}


def why_not_payable(reason: str | None) -> str:
    return WHY_NOT_PAYABLE.get(reason or "", "Cette facture ne peut pas être payée en ligne.")


INVOICE_STATUS = {
    "open": "À payer",
    "paid": "Payée",
    "cancelled": "Annulée",
    "transferred": "Transmise au Trésor public",
}


def invoice_status(status: str, payment_in_progress: bool = False) -> str:
    if status == "open" and payment_in_progress:
        return "Paiement en cours"
    return INVOICE_STATUS.get(status, status)


MEANS = {"card": "carte bancaire", "direct_debit": "prélèvement"}
RESULTRANS_MEANS = {"P": "carte bancaire", "V": "prélèvement"}


def means(paid_by: str | None) -> str:
    return MEANS.get(paid_by or "", "")


# A payment's state, as the family reads it on "Retour du paiement".
OUTCOMES = {
    "confirmed": ("payé", "Votre paiement est accepté",
                  "Merci : la somme a été payée. La facture apparaît comme payée dans "
                  "l'historique de vos factures."),
    "refused": ("refusé", "Votre paiement a été refusé",
                "Votre banque a refusé le paiement : aucune somme n'a été prélevée. Les "
                "factures restent à payer ; vous pouvez réessayer, avec un autre moyen de "
                "paiement si besoin."),
    "abandoned": ("annulé", "Vous avez annulé le paiement",
                  "Aucune somme n'a été prélevée. Les factures restent à payer."),
    "expired": ("non abouti", "Le paiement n'a pas abouti",
                "Le délai pour payer sur PayFiP est dépassé : aucune somme n'a été prélevée. "
                "Les factures restent à payer."),
    "failed": ("non abouti", "Le paiement n'a pas pu commencer",
               "PayFiP n'a pas pu ouvrir le paiement : aucune somme n'a été prélevée. "
               "Réessayez plus tard."),
}
PENDING = ("en cours de traitement", "Paiement en cours de traitement",
           "Nous attendons la réponse de PayFiP. Cette page se mettra à jour d'elle-même "
           "dès que le résultat sera connu.")


def outcome(status: str) -> tuple[str, str, str]:
    return OUTCOMES.get(status, PENDING)
