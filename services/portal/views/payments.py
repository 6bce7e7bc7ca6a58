"""Paying: the summary of a régie's invoices (step 1/2), off to PayFiP, and its return
(step 2/2). Anything a URL or a form names that is not this family's is answered 404."""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from services.payment.domain import MIN_PAYMENT_CENTS
from services.portal import formatting as fmt
from services.portal.accounts import Account
from services.portal.context import crumbs, family, login_required, portal
from services.portal.payments import (
    FINAL,
    IN_PROGRESS,
    NotFound,
    Payments,
    Refused,
    Reservation,
    reservation,
)

log = logging.getLogger(__name__)
bp = Blueprint("payments", __name__)


def api() -> Payments:
    return portal().payments


def regie_name(regie: str) -> str:
    """The régie's name; 404 if this family owes it nothing."""
    name = next((r["name"] for r in api().to_pay(family()) if r["code"] == regie), None)
    if name is None:
        abort(404)
    return str(name)


def own_reservation(payment_id: str) -> tuple[dict[str, Any], Reservation] | None:
    try:
        payment = api().payment(payment_id)
    except NotFound:
        return None
    if payment.get("family_id") != family():
        return None
    length = timedelta(minutes=portal().settings.reservation_minutes)
    return payment, reservation(payment, length)


def regie_lines(regie: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """This family's invoices at the régie as it may act on them now, and the payments
    left open on PayFiP's page that it may go back to."""
    now = datetime.now(UTC)
    held: dict[str, tuple[dict[str, Any], Reservation] | None] = {}
    lines = []
    for line in api().to_pay_regie(family(), regie):
        payment_id = line.get("payment_id")
        if line.get("reason") == IN_PROGRESS and payment_id:
            if payment_id not in held:
                held[payment_id] = own_reservation(payment_id)
            by = held[payment_id]
            if by is not None and by[1].over(now):
                # The payment API frees such an invoice for the next payment asked.
                line = {**line, "payable": True, "reason": None}
            elif by is not None and by[1].until is not None:
                line = {**line, "reserved_until": fmt.moment(by[1].until)}
        lines.append(line)
    resumable = [
        {**payment, "resume_until": fmt.moment(r.resume_until),
         "amount": fmt.euros(payment["amount_cents"]),
         "numbers": ", ".join(a["number"] for a in payment.get("allocations", []))}
        for payment, r in filter(None, held.values()) if r.resumable(now)]
    return lines, resumable


def render_summary(regie: str, name: str, lines: list[dict[str, Any]],
                   resumable: list[dict[str, Any]], selected: set[str] | None = None,
                   error: str | None = None, status: int = 200) -> Any:
    # PayFiP refuses a payment under its minimum: a small invoice can only go with
    # others of the régie, and not at all while all of them together stay under it.
    open_cents = sum(line["amount_due_cents"] for line in lines if line["payable"])
    too_small = open_cents < MIN_PAYMENT_CENTS
    invoices = []
    for line in lines:
        payable = line["payable"] and not too_small
        small = payable and line["amount_due_cents"] < MIN_PAYMENT_CENTS
        invoices.append({
            **line, "payable": payable,
            "checked": payable and (selected is None or line["id"] in selected),
            "issued": fmt.day(line["issued_on"]),
            "due": fmt.euros(line["amount_due_cents"]),
            "total": fmt.euros(line["total_cents"]),
            "reason": fmt.under_minimum(MIN_PAYMENT_CENTS, with_others=False)
            if line["payable"] and too_small
            else fmt.reserved(line["reserved_until"])
            if line.get("reserved_until") else fmt.why_not_payable(line.get("reason")),
            "minimum": fmt.under_minimum(MIN_PAYMENT_CENTS, with_others=True)
            if small else None,
        })
    total = sum(i["amount_due_cents"] for i in invoices if i["checked"])
    return render_template(
        "summary.html", section="facturation", regie=regie, regie_name=name,
        invoices=invoices, selected_total=fmt.euros(total), step=1, error=error,
        resumable=resumable,
        any_payable=any(i["payable"] for i in invoices),
        crumbs=crumbs(("Factures à payer", url_for("invoices.to_pay")), ("Récapitulatif", None)),
    ), status


@bp.get("/factures/a-payer/<regie>")
@login_required
def summary(regie: str) -> Any:
    name = regie_name(regie)
    return render_summary(regie, name, *regie_lines(regie))


@bp.post("/factures/a-payer/<regie>")
@login_required
def pay(regie: str) -> Any:
    name = regie_name(regie)
    lines, resumable = regie_lines(regie)
    chosen = request.form.getlist("invoice_ids")
    known = {line["id"]: line for line in lines}
    if any(i not in known for i in chosen) or len(set(chosen)) != len(chosen):
        abort(404)  # another family's invoice, another régie's, or made up
    if not chosen:
        return render_summary(regie, name, lines, resumable, set(),
                              "Sélectionnez au moins une facture à payer.", 422)
    if any(not known[i]["payable"] for i in chosen):
        return render_summary(regie, name, lines, resumable, set(chosen),
                              "Une des factures choisies ne peut plus être payée en "
                              "ligne : voyez la raison indiquée sous la facture.", 409)
    chosen_cents = sum(known[i]["amount_due_cents"] for i in chosen)
    if chosen_cents < MIN_PAYMENT_CENTS:
        return render_summary(regie, name, lines, resumable, set(chosen),
                              fmt.selection_under_minimum(chosen_cents, MIN_PAYMENT_CENTS),
                              422)
    account: Account = g.account
    try:
        payment = api().request_payment(account.family_id, regie, chosen, account.email)
    except Refused as e:
        log.warning("payment refused for %s: %s", account.family_id, e.message)
        return render_summary(
            regie, name, *regie_lines(regie), set(chosen),
            "Le paiement n'a pas pu commencer : les factures ont peut-être changé. "
            "Vérifiez votre sélection et recommencez.", 409)
    target = payment.get("redirect_url") or ""
    if urlsplit(target).scheme not in ("http", "https"):
        return redirect(url_for("payments.payment_return", payment=payment["id"]), 303)
    return redirect(target, 303)


def own_payment(payment_id: str) -> dict[str, Any]:
    payment = api().payment(payment_id)
    if payment.get("family_id") != family():
        abort(404)
    return payment


def settled(payment: dict[str, Any]) -> dict[str, Any]:
    """A payment still waiting: ask the payment API to read PayFiP's answer now."""
    if payment["status"] not in FINAL and payment.get("idop"):
        api().browser_return(payment["idop"])
        payment = own_payment(payment["id"])
    return payment


def payment_from_query() -> dict[str, Any]:
    payment_id = request.args.get("payment", "")
    idop = request.args.get("idop") or request.args.get("idOp")
    if not payment_id and idop:
        payment_id = api().browser_return(idop)
    if not payment_id:
        abort(404)
    return own_payment(payment_id)


@bp.get("/paiement/retour")
@login_required
def payment_return() -> Any:
    payment = settled(payment_from_query())
    status = payment["status"]
    # reserved_until null on a payment still waiting: its invoices were released.
    released = "reserved_until" in payment and payment["reserved_until"] is None
    word, heading, message = fmt.outcome(status, payment.get("resultrans"), released)
    pending = status not in FINAL
    numbers = ", ".join(a["number"] for a in payment.get("allocations", []))
    regie_name = next((h["regie_name"] for h in api().history(family())
                       if h["regie"] == payment["regie"]), payment["regie"])
    return render_template(
        "return.html", section="facturation", step=2, status=status, word=word,
        heading=heading, message=message, pending=pending,
        state_url=url_for("payments.payment_state", payment=payment["id"]),
        here=url_for("payments.payment_return", payment=payment["id"]),
        regie_name=regie_name, amount=fmt.euros(payment["amount_cents"]), numbers=numbers,
        refdet=payment["refdet"],
        paid_at=fmt.moment(payment.get("paid_at")) if status == "confirmed" else "",
        paid_at_label=fmt.paid_at_label(payment.get("resultrans")),
        means=fmt.RESULTRANS_MEANS.get(payment.get("resultrans") or "", "")
        if status == "confirmed" else "",
        numauto=payment.get("numauto") if status == "confirmed" else None,
        crumbs=crumbs(("Factures à payer", url_for("invoices.to_pay")),
                      ("Retour du paiement", None)),
    )


# PayFiP's browser return may come straight here: PAYMENT_PUBLIC_URL set to the portal,
# PAYMENT_NOTIFICATION_URL to the payment API.
bp.add_url_rule("/payfip/return", endpoint="payfip_return", view_func=payment_return)


@bp.get("/paiement/etat")
@login_required
def payment_state() -> Any:
    payment = settled(own_payment(request.args.get("payment", "")))
    return {"status": payment["status"], "final": payment["status"] in FINAL}
