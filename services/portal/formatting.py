"""Amounts, dates and states as a French reader expects them."""

# Amounts and days are written alike in the reminders' e-mails, moments in the log-in limit
# both sites share: one definition each, shared.
from services.common.french import NBSP, NNBSP, day, euros, moment

__all__ = ["NBSP", "NNBSP", "day", "euros", "moment"]


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


WHY_NOT_PAYABLE = {
    "payment_in_progress": "Un paiement de cette facture est en cours : attendez son "
                           "résultat avant de la payer à nouveau.",
    "online_payment_deadline_passed": "La date limite de paiement en ligne est dépassée : "
                                      "payez-la directement auprès du service.",
}


def under_minimum(minimum_cents: int, with_others: bool) -> str:
    """Why an invoice under PayFiP's minimum cannot be paid alone, and how it can be."""
    said = f"PayFiP n'accepte pas de paiement de moins de {euros(minimum_cents)} : "
    if with_others:
        return said + "payez cette facture avec une autre facture de ce service."
    return (said + "vos factures de ce service n'atteignent pas ce montant. Vous pourrez "
            "payer celle-ci avec une prochaine facture de ce service, ou directement auprès "
            "du service.")


def selection_under_minimum(selected_cents: int, minimum_cents: int) -> str:
    return (f"Le total de la sélection, {euros(selected_cents)}, est inférieur au minimum de "
            f"{euros(minimum_cents)} que PayFiP accepte : ajoutez une autre facture de ce "
            "service.")


def reserved(until: str) -> str:
    """An invoice held by a payment in progress, and until when."""
    return (f"Un paiement de cette facture est en cours : elle lui est réservée jusqu'au "
            f"{until}. S'il n'aboutit pas, vous pourrez la payer à nouveau ensuite.")


def why_not_payable(reason: str | None) -> str:
    return WHY_NOT_PAYABLE.get(reason or "", "Cette facture ne peut pas être payée en ligne.")


INVOICE_STATUS = {
    "open": "À payer",
    "paid": "Payée",
    "cancelled": "Annulée",
    "transferred": "Transmise au Trésor public",
}


def invoice_status(status: str, payment_in_progress: bool = False,
                   paid_by: str | None = None) -> str:
    if status == "open" and payment_in_progress:
        return "Paiement en cours"
    if status == "paid" and paid_by == "direct_debit":
        # PayFiP's V is a debit order the bank carries out days later, not money received.
        return "Prélèvement enregistré"
    return INVOICE_STATUS.get(status, status)


MEANS = {"card": "carte bancaire", "direct_debit": "prélèvement", "cash": "espèces",
         "cheque": "chèque", "cesu": "CESU", "ancv": "chèques-vacances ANCV",
         "transfer": "virement", "credit": "avoir"}
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
# PayFiP's V: the family signed a one-off SEPA debit; the bank takes the money later.
DIRECT_DEBIT = ("prélèvement enregistré", "Votre prélèvement est enregistré",
                "Merci : le prélèvement est enregistré, la somme sera prélevée sur votre compte "
                "dans les prochains jours. La facture apparaît comme réglée par prélèvement "
                "dans l'historique de vos factures.")
# Still waiting for PayFiP's last word, but the invoices are free again: the family left
# PayFiP's page (its A may yet turn into a payment), or the reservation ran out.
RELEASED = ("non terminé", "Le paiement n'est pas terminé",
            "PayFiP ne nous a pas encore donné de résultat, et les factures peuvent de "
            "nouveau être payées. Si vous avez quitté la page de PayFiP sans payer, aucune "
            "somme n'a été prélevée. Cette page se mettra à jour dès que PayFiP répondra.")
PENDING = ("en cours de traitement", "Paiement en cours de traitement",
           "Nous attendons la réponse de PayFiP. Cette page se mettra à jour d'elle-même "
           "dès que le résultat sera connu.")


def outcome(status: str, resultrans: str | None = None,
            released: bool = False) -> tuple[str, str, str]:
    if status == "confirmed" and resultrans == "V":
        return DIRECT_DEBIT
    return OUTCOMES.get(status, RELEASED if released else PENDING)


def paid_at_label(resultrans: str | None) -> str:
    return "Prélèvement enregistré le" if resultrans == "V" else "Payé le"
