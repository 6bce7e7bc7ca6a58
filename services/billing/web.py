"""Billing HTTP API: load, call the application, dump."""

from typing import Any
from uuid import UUID

from flask import Flask
from flask.views import MethodView
from marshmallow import ValidationError

from events import BILLING_INVOICES
from services.billing.application import BillingApp, Issued
from services.billing.domain import Conflict, Invoice
from services.billing.schemas import (
    BatchIn,
    BatchOut,
    CancelIn,
    CreditedOut,
    CreditNoteIn,
    InvoiceIn,
    InvoiceOut,
    RegieIn,
    RegieList,
    RegieOut,
    TransferIn,
)
from services.common.settings import Settings
from services.common.web.app import Blueprint, create_flask
from services.common.web.auth import Auth, acting
from services.common.web.metrics import StoredState, registry

READERS = ("issuer", "reader", "auditor")


def invoice_out(invoice: Invoice) -> dict[str, Any]:
    return {**invoice.__dict__, "id": str(invoice.id)}


def create_app(billing: BillingApp, tokens: dict[str, str],
               settings: Settings | None = None) -> Flask:
    """The billing API over an application and the tokens it accepts; gunicorn starts it
    through the composition root (services.bootstrap:billing_api())."""
    settings = settings or Settings()
    service = billing
    auth = Auth(tokens)
    metrics = registry(StoredState(service, settings.topic(BILLING_INVOICES.name)))
    app, api = create_flask(__name__, "billing API", service.dead_letters.count, metrics)
    blp = Blueprint("billing", __name__, description="Régies and their invoices")
    invoice_in = InvoiceIn()

    @blp.route("/regies")
    class Regies(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, RegieList)
        def get(self) -> Any:
            return {"regies": [r.as_terms() for r in service.list_regies()]}

        @auth.requires("issuer")
        @blp.arguments(RegieIn)
        @blp.response(201, RegieOut)
        @blp.alt_response(200, schema=RegieOut, description="already open, same settings")
        def post(self, data: dict[str, Any]) -> Any:
            regie, created = service.open_regie(**data)
            return regie.as_terms(), 201 if created else 200

    @blp.route("/invoices")
    class Invoices(MethodView):
        @auth.requires("issuer")
        @blp.arguments(InvoiceIn)
        @blp.response(201, InvoiceOut)
        @blp.alt_response(200, schema=InvoiceOut, description="same invoice issued before")
        def post(self, terms: Any) -> Any:
            issued = service.issue_invoice(terms)
            return invoice_out(issued.invoice), 201 if issued.created else 200

    @blp.route("/invoices/batch")
    class Batch(MethodView):
        @auth.requires("issuer")
        @blp.arguments(BatchIn)
        @blp.response(200, BatchOut)
        def post(self, data: dict[str, Any]) -> Any:
            results: list[dict[str, Any]] = []
            valid: list[tuple[int, Any]] = []
            for i, raw in enumerate(data["invoices"]):
                try:
                    valid.append((i, invoice_in.load(raw)))
                    results.append({"index": i})
                except ValidationError as e:
                    results.append({"index": i, "status": 422, "errors": e.messages})
            outcomes = service.issue_batch([terms for _, terms in valid])
            for (i, _), outcome in zip(valid, outcomes, strict=True):
                if isinstance(outcome, Issued):
                    results[i]["status"] = 201 if outcome.created else 200
                    results[i]["invoice"] = invoice_out(outcome.invoice)
                else:
                    results[i]["status"] = 409 if isinstance(outcome, Conflict) else 422
                    results[i]["errors"] = {outcome.field: [outcome.message]}
            return {"results": results}

    @blp.route("/invoices/<uuid:invoice_id>")
    class InvoiceById(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, InvoiceOut)
        def get(self, invoice_id: UUID) -> Any:
            return invoice_out(service.get_invoice(invoice_id))

    @blp.route("/invoices/<uuid:invoice_id>/cancel")
    class Cancel(MethodView):
        @auth.requires("issuer")
        @blp.arguments(CancelIn)
        @blp.response(200, InvoiceOut)
        def post(self, data: dict[str, Any], invoice_id: UUID) -> Any:
            return invoice_out(service.cancel_invoice(invoice_id, data["reason"]))

    @blp.route("/invoices/<uuid:invoice_id>/transfer")
    class Transfer(MethodView):
        @auth.requires("issuer")
        @blp.arguments(TransferIn)
        @blp.response(200, InvoiceOut)
        def post(self, data: dict[str, Any], invoice_id: UUID) -> Any:
            return invoice_out(service.transfer_invoice(invoice_id, data["reference"]))

    api.register_blueprint(blp)
    api.register_blueprint(credit_notes_blueprint(service, auth))
    return app


def credit_notes_blueprint(service: BillingApp, auth: Auth) -> Blueprint:
    blp = Blueprint("credit-notes", __name__, description="Credit notes (avoirs)")

    @blp.route("/invoices/<uuid:invoice_id>/credit-notes")
    class CreditNotes(MethodView):
        @auth.requires("issuer", "cashier")
        @blp.arguments(CreditNoteIn)
        @blp.response(201, CreditedOut)
        def post(self, data: dict[str, Any], invoice_id: UUID) -> Any:
            invoice, note = service.credit_invoice(invoice_id, data["amount_cents"],
                                                   data["reason"], by=acting(auth))
            return {"credit_note": note, "invoice": invoice_out(invoice)}

    return blp
