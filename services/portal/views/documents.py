"""The family's documents (its invoices and their certificates, as PDFs) and the public
page that checks a document's verification code."""

from typing import Any

from flask import Blueprint, Response, render_template, request

from services.portal import formatting as fmt
from services.portal.context import crumbs, family, login_required, portal
from services.portal.payments import Refused

bp = Blueprint("documents", __name__)

# The portal's names for the payment API's documents, as in the URLs the family sees.
FILES = {"facture": "invoice", "facture-acquittee": "certificate"}


@bp.get("/factures/<invoice_id>/<any(facture, 'facture-acquittee'):name>.pdf")
@login_required
def download(invoice_id: str, name: str) -> Any:
    # The payment API checks the invoice is this family's: another's is not found (404).
    content = portal().payments.document(family(), invoice_id, FILES[name])
    return Response(content, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}-{invoice_id}.pdf"'})


@bp.get("/verifier")
def verify() -> Any:
    """Anyone holding a document may check it: the answer names no one."""
    code = request.args.get("code", "").strip()[:40]
    result = None
    if code:
        try:
            result = portal().payments.verify(code)
        except Refused:
            result = {"authentic": False}
        if result.get("authentic"):
            result = {**result, "amount": fmt.euros(result["amount_cents"])
                      if result.get("amount_cents") is not None else None,
                      "day": fmt.day(result["date"]) if result.get("date") else None}
    return render_template("verify.html", code=code, result=result,
                           crumbs=crumbs(("Vérifier un justificatif", None)))
