"""The payment service's documents: what each one shows, and what a verification code
attests. The layout is services.documents'; the data and the checks are here."""

from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import UUID

from services.common.errors import NotFound
from services.common.storage.chain import TABLE as CHAIN_TABLE
from services.common.storage.persistence import SqlStore
from services.documents import codes, render
from services.payment import domain

if TYPE_CHECKING:  # the application prints the journal's code: imported by it
    from services.payment.application import PaymentApp

TITLES = {"invoice": "Facture", "certificate": "Facture acquittée",
          "receipt": "Reçu de paiement au guichet", "journal": "Journal des paiements"}


def _key(app: "PaymentApp") -> bytes:
    key: bytes = getattr(app.recorder, "chain_key", b"")
    return key


def chain_link(app: "PaymentApp", position: int) -> tuple[str, str] | None:
    """The chain's hash at ``position`` and the day it was recorded; None without one."""
    if position <= 0 or not hasattr(app.recorder, "datastore"):
        return None  # the in-memory store of the unit tests keeps no chain
    rows = SqlStore(app).fetchall(
        f"SELECT hash, day FROM {{schema}}{CHAIN_TABLE} WHERE notification_id = ?",
        (position,))
    return (str(rows[0]["hash"]), str(rows[0]["day"])) if rows else None


def code_for(app: "PaymentApp", kind: str, position: int | None) -> str | None:
    found = chain_link(app, position or 0)
    return None if found is None else str(codes.make(kind, position or 0, found[0], _key(app)))


def _family_invoice(app: "PaymentApp", family_id: str, invoice_id: UUID) -> dict[str, Any]:
    app.refresh()
    row = app.to_pay.invoice(str(invoice_id))
    # Another family's invoice is not found either: its existence is not theirs to know.
    if row is None or row["family_id"] != family_id:
        raise NotFound("invoice_id", "no such invoice for this family")
    return row


def _regie(app: "PaymentApp", code: str) -> dict[str, str]:
    return {"regie": code, "regie_name": app.to_pay.regie_names().get(code, code)}


def invoice_pdf(app: "PaymentApp", family_id: str, invoice_id: UUID) -> bytes:
    row = _family_invoice(app, family_id, invoice_id)
    invoice: domain.Invoice = app.repository.get(invoice_id)
    return render.pdf("invoice.html", app.collectivite,
                      title=f"Facture n° {row['number']}", invoice=row,
                      lines=getattr(invoice, "lines", None) or [], **_regie(app, row["regie"]),
                      code=code_for(app, "invoice", row["issued_position"]))


def certificate_pdf(app: "PaymentApp", family_id: str, invoice_id: UUID) -> bytes:
    row = _family_invoice(app, family_id, invoice_id)
    if row["status"] != domain.PAID or not row["paid_position"]:
        raise NotFound("invoice_id", "this invoice is not paid: it has no certificate")
    return render.pdf("certificate.html", app.collectivite, title="Facture acquittée", invoice=row,
                      **_regie(app, row["regie"]),
                      code=code_for(app, "certificate", row["paid_position"]))


def receipt_pdf(app: "PaymentApp", payment_id: UUID) -> bytes:
    payment = app.get_counter_payment(payment_id)
    app.refresh()
    row = app.to_pay.counter_payment(str(payment_id))
    return render.pdf(
        "receipt.html", app.collectivite, title="Reçu de paiement au guichet",
        payment={**payment.terms, "allocations": payment.allocations,
                 "unallocated_cents": payment.unallocated_cents, "by": payment.by},
        **_regie(app, payment.regie),
        code=code_for(app, "receipt", row["position"] if row else None))


def journal_code(app: "PaymentApp", journal: dict[str, Any]) -> str | None:
    """The journal attests the history as it stood at the day's end: its chain head."""
    head = journal.get("chain_head")
    return code_for(app, "journal", head["notification_id"]) if head else None


def verify(app: "PaymentApp", text: str) -> dict[str, Any]:
    """Whether ``text`` is the code of a document this service made, and what it attests.

    Never a family's id, name or e-mail: anyone may ask."""
    code = codes.parse(text)
    found = chain_link(app, code.position) if code else None
    if code is None or found is None or not codes.matches(code, found[0], _key(app)):
        return {"authentic": False}
    day = found[1]
    if code.kind == "journal":
        return {"authentic": True, "kind": code.kind, "document": TITLES[code.kind],
                "number": f"historique arrêté à l'événement {code.position}",
                "date": date.fromisoformat(day), "status": "arrêté"}
    app.refresh()
    row = app.to_pay.attested(code.kind, code.position)
    if row is None:
        return {"authentic": False}
    attests: dict[str, Any] = {"authentic": True, "kind": code.kind,
                               "document": TITLES[code.kind], **_regie(app, row["regie"])}
    if code.kind == "receipt":
        return {**attests, "number": row["invoices"] or "avoir",
                "amount_cents": row["amount_cents"], "date": date.fromisoformat(row["day"]),
                "means": render.means(row["means"]), "status": "encaissé"}
    when = row["issued_on"] if code.kind == "invoice" else (row["paid_at"] or "")[:10]
    return {**attests, "number": row["number"], "amount_cents": row["total_cents"],
            "date": date.fromisoformat(when), "status": render.STATUS[row["status"]]}


def journal(app: "PaymentApp", regie: str, day: date) -> dict[str, Any]:
    """The day's journal with its verification code, printed on the PDF: the portal's
    /verifier checks it against the day's chain head."""
    day_journal = app.journal(regie, day)
    day_journal["code"] = journal_code(app, day_journal)
    return day_journal
