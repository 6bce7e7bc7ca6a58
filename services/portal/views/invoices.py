"""The family's home, its invoices to pay per régie, and the history of its invoices."""

from typing import Any

from flask import Blueprint, render_template

from services.portal import formatting as fmt
from services.portal.context import crumbs, family, login_required, portal

bp = Blueprint("invoices", __name__)


@bp.get("/")
@login_required
def home() -> Any:
    return render_template("home.html", section="accueil", crumbs=None)


@bp.get("/factures")
@login_required
def billing() -> Any:
    n = sum(r["count"] for r in portal().payments.to_pay(family()))
    text = fmt.count(n, "facture à payer", "factures à payer") if n else "Aucune facture"
    return render_template("billing.html", section="facturation", count_text=text,
                           crumbs=crumbs(("Facturation", None)))


@bp.get("/factures/a-payer")
@login_required
def to_pay() -> Any:
    regies = [
        {**r, "total": fmt.euros(r["total_cents"]),
         "count_text": fmt.count(r["count"], "facture à payer", "factures à payer")}
        for r in sorted(portal().payments.to_pay(family()), key=lambda r: (r["name"], r["code"]))
    ]
    return render_template("to_pay.html", section="facturation", regies=regies,
                           crumbs=crumbs(("Factures à payer", None)))


@bp.get("/factures/historique")
@login_required
def history() -> Any:
    rows = []
    for h in portal().payments.history(family()):
        payment = ""
        if h["status"] == "paid" and h.get("paid_at"):
            payment = f"Le {fmt.moment(h['paid_at'])}"
            if h.get("paid_by"):
                payment += f" par {fmt.means(h['paid_by'])}"
        rows.append({
            **h, "issued": fmt.day(h["issued_on"]), "total": fmt.euros(h["total_cents"]),
            "status": fmt.invoice_status(h["status"], bool(h.get("payment_id")),
                                         h.get("paid_by")),
            "payment": payment, "status_code": h["status"],
        })
    return render_template("history.html", section="facturation", rows=rows,
                           crumbs=crumbs(("Historique des factures", None)))
