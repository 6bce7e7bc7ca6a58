"""Payment HTTP API: load, call the application, dump."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from uuid import UUID

from flask import Flask, Response, redirect, request, url_for
from flask.views import MethodView
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from events import PAYMENT_PAYMENTS
from events.formats import PARIS
from services.common.errors import NotFound
from services.common.settings import Settings
from services.common.web.app import PUBLIC, Blueprint, create_flask
from services.common.web.auth import Auth, acting
from services.common.web.metrics import StoredState, registry
from services.payment import documents, domain
from services.payment.application import PaymentApp
from services.payment.journal import to_csv
from services.payment.projections import history_key
from services.payment.schemas import (
    CounterPaymentIn,
    CounterPaymentOut,
    CreditRefundIn,
    History,
    Journal,
    JournalQuery,
    NotificationIn,
    PageQuery,
    PaymentIn,
    PaymentOut,
    RefundList,
    RefundOut,
    RefundPaidIn,
    RefundsQuery,
    ToPay,
    ToPayInvoices,
    Verification,
    VerificationQuery,
    cursor_after,
)

# The portal's payer reads what a family owes and has paid; only it pays (and the operator).
# The back office's cashier reads what a family owes, at the counter.
READERS = ("reader", "auditor", "payer")


def paris_today() -> date:
    return datetime.now(PARIS).date()


def payment_figures(service: PaymentApp) -> list[Metric]:
    """The payment read models' counts, per régie (never per family, payer or idop)."""
    service.refresh()  # whoever recorded last, the counts include it
    payments = GaugeMetricFamily("regie_payments", "payments by régie and status",
                                 labels=["regie", "status"])
    late = CounterMetricFamily(
        "regie_late_confirmations", "confirmations PayFiP gave after the payment was freed, "
        "expired or abandoned", labels=["regie"])
    refunds = CounterMetricFamily(
        "regie_refunds_needed", "invoices paid by a confirmation but no longer open (paid "
        "again, cancelled, transferred): their money must be refunded", labels=["regie"])
    refund_cents = CounterMetricFamily(
        "regie_refunds_needed_cents", "what those refunds amount to, in cents", labels=["regie"])
    anomalies = CounterMetricFamily(
        "regie_anomalies", "PayFiP answers that did not match their order (regie anomalies)",
        labels=["regie"])
    # Every régie's counters from 0, not from their first event: Prometheus' increase()
    # would not see the first one on a series that appears with it.
    totals = {code: {"late": 0, "refunds": 0, "refund_cents": 0, "anomalies": 0}
              for code in service.to_pay.regie_names()}
    for row in service.to_pay.figures():
        payments.add_metric([row["regie"], row["status"]], row["payments"])
        regie = totals.setdefault(row["regie"], {"late": 0, "refunds": 0, "refund_cents": 0,
                                                 "anomalies": 0})
        for name in regie:
            regie[name] += row[name]
    for code, counts in sorted(totals.items()):
        for family, name in ((late, "late"), (refunds, "refunds"),
                             (refund_cents, "refund_cents"), (anomalies, "anomalies")):
            family.add_metric([code], counts[name])
    return [payments, late, refunds, refund_cents, anomalies]


def create_app(
    payment: PaymentApp,
    tokens: dict[str, str],
    *,
    today: Callable[[], date] = paris_today,
    settings: Settings | None = None,
) -> Flask:
    """The payment API over an application (which holds its PayFiP) and the tokens it
    accepts; gunicorn starts it through the composition root
    (services.bootstrap:payment_api())."""
    config = settings or Settings()
    service = payment
    auth = Auth(tokens)
    state = StoredState(service, config.topic(PAYMENT_PAYMENTS.name),
                        lambda: payment_figures(service))
    metrics = registry(state, service.meters, config.metrics_dir)
    app, api = create_flask(__name__, "payment API", service.dead_letters.count, metrics)
    blp = Blueprint("payment", __name__, description="What families have to pay, per régie")

    @blp.route("/families/<family_id>/to-pay")
    class FamilyToPay(MethodView):
        @auth.requires(*READERS, "cashier")
        @blp.response(200, ToPay)
        def get(self, family_id: str) -> Any:
            return {"regies": service.to_pay_summary(family_id)}

    @blp.route("/families/<family_id>/to-pay/<regie>")
    class FamilyToPayRegie(MethodView):
        @auth.requires(*READERS, "cashier")
        @blp.arguments(PageQuery, location="query")
        @blp.response(200, ToPayInvoices)
        def get(self, page: dict[str, Any], family_id: str, regie: str) -> Any:
            """One page of the family's open invoices in the régie, oldest issued first."""
            if not service.regie_exists(regie):
                raise NotFound("regie", f"unknown régie {regie!r}")
            # One more than asked: whether a next page exists, without counting.
            lines = service.to_pay_lines(family_id, regie, today(), page["limit"] + 1,
                                         page["cursor"])
            more = len(lines) > page["limit"]
            lines = lines[:page["limit"]]
            last = lines[-1] if more else None
            return {"regie": regie, "invoices": lines, "next_cursor": cursor_after(
                None if last is None else [last["issued_on"].isoformat(), last["number"]])}

    @blp.route("/families/<family_id>/history")
    class FamilyHistory(MethodView):
        @auth.requires(*READERS)
        @blp.arguments(PageQuery, location="query")
        @blp.response(200, History)
        def get(self, page: dict[str, Any], family_id: str) -> Any:
            """One page of the family's invoices, newest issued first."""
            rows = service.history(family_id, page["limit"] + 1, page["cursor"])
            more = len(rows) > page["limit"]
            rows = rows[:page["limit"]]
            return {"invoices": rows,
                    "next_cursor": cursor_after(history_key(rows[-1]) if more else None)}

    @blp.route("/regies/<regie>/journal")
    class RegieJournal(MethodView):
        @auth.requires("auditor", "cashier")
        @blp.arguments(JournalQuery, location="query")
        @blp.response(200, Journal)
        @blp.alt_response(200, content_type="text/csv", description="Accept: text/csv")
        def get(self, query: dict[str, Any], regie: str) -> Any:
            if not service.regie_exists(regie):
                raise NotFound("regie", f"unknown régie {regie!r}")
            journal = documents.journal(service, regie, query["date"])
            if request.accept_mimetypes.best_match(["application/json", "text/csv"]) == (
                "text/csv"
            ):
                return Response(to_csv(journal), mimetype="text/csv")
            return journal

    def payment_out(p: domain.Payment) -> dict[str, Any]:
        return {**p.__dict__, "id": str(p.id),
                "redirect_url": service.payfip.gateway.payment_url(p.idop) if p.idop else None,
                "reserved_until": p.reserved_until(service.watch)}

    @blp.route("/payments")
    class Payments(MethodView):
        # A payment reserves invoices and mails a receipt to the address given: the
        # portal's, which checked who the family is, not any reading token's.
        @auth.requires("payer")
        @blp.arguments(PaymentIn)
        @blp.response(201, PaymentOut)
        def post(self, data: dict[str, Any]) -> Any:
            # The amount is never taken from the client: it is what the invoices still owe.
            p = service.request_payment(
                family_id=data["family_id"], regie=data["regie"],
                invoice_ids=[str(i) for i in data["invoice_ids"]], email=data["email"],
            )
            return payment_out(p)

    @blp.route("/payments/<uuid:payment_id>")
    class PaymentById(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, PaymentOut)
        def get(self, payment_id: UUID) -> Any:
            return payment_out(service.get_payment(payment_id))

    @blp.route("/payfip/notification")
    class Notification(MethodView):
        @blp.doc(**PUBLIC)
        @blp.arguments(NotificationIn, location="form")
        @blp.response(200)
        def post(self, data: dict[str, Any]) -> Any:
            """PayFiP's server-to-server call: only an idop, so the result is read back."""
            idop = data["idop"] or data["idOp"]
            if idop:
                service.notified(idop)
            return {"received": True}

    @blp.route("/payfip/return")
    class BrowserReturn(MethodView):
        @blp.doc(**PUBLIC)
        @blp.arguments(NotificationIn, location="query")
        @blp.response(200)
        def get(self, data: dict[str, Any]) -> Any:
            """Where PayFiP sends the family's browser back."""
            idop = data["idop"] or data["idOp"]
            p = service.notified(idop) if idop else None
            if p is None:
                raise NotFound("idop", "no payment with this idop")
            portal = config.portal_return_url
            if portal:  # the family's portal shows the outcome in words
                return redirect(f"{portal}?payment={p.id}", 303)
            # Idops travel in URLs and on Kafka: holding one shows the status, nothing
            # more. A reading token (the portal's) reads the payment, as /payments/<id>.
            if request.headers.get("Authorization") and auth.role() in (*READERS, "operator"):
                return payment_out(p)
            return {"status": p.status}

    api.register_blueprint(blp)
    api.register_blueprint(counter_blueprint(service, auth))
    api.register_blueprint(refunds_blueprint(service, auth))
    api.register_blueprint(documents_blueprint(service, auth))
    return app


def counter_blueprint(service: PaymentApp, auth: Auth) -> Blueprint:
    """The régisseur's counter: money taken in hand (cashier)."""
    blp = Blueprint("counter", __name__, description="The régisseur's counter")

    def counter_out(p: domain.CounterPayment) -> dict[str, Any]:
        return {**p.terms, "id": str(p.id), "allocations": p.allocations,
                "unallocated_cents": p.unallocated_cents, "by": p.by,
                "recorded_at": p.created_on,
                "receipt_url": url_for("documents.CounterReceipt", payment_id=p.id,
                                       _external=True)}

    @blp.route("/counter-payments")
    class CounterPayments(MethodView):
        @auth.requires("cashier")
        @blp.arguments(CounterPaymentIn)
        @blp.response(201, CounterPaymentOut)
        @blp.alt_response(200, schema=CounterPaymentOut,
                          description="the same reference entered again, same terms")
        def post(self, data: dict[str, Any]) -> Any:
            ids = data["invoice_ids"]
            terms = domain.CounterTerms(
                regie=data["regie"], family_id=data["family_id"], means=data["means"],
                amount_cents=data["amount_cents"], reference=data["reference"],
                received_on=data["received_on"],
                invoice_ids=None if ids is None else tuple(str(i) for i in ids))
            p, created = service.receive_at_counter(terms, by=acting(auth))
            return counter_out(p), 201 if created else 200

    @blp.route("/counter-payments/<uuid:payment_id>")
    class CounterPaymentById(MethodView):
        @auth.requires("cashier")
        @blp.response(200, CounterPaymentOut)
        def get(self, payment_id: UUID) -> Any:
            return counter_out(service.get_counter_payment(payment_id))

    return blp


def refunds_blueprint(service: PaymentApp, auth: Auth) -> Blueprint:
    """What the régie pays back to families (cashier)."""
    blp = Blueprint("refunds", __name__, description="Refunds and the families' credit")

    @blp.route("/families/<family_id>/credits/<regie>/refund")
    class CreditRefund(MethodView):
        @auth.requires("cashier")
        @blp.arguments(CreditRefundIn)
        @blp.response(201, RefundOut)
        def post(self, data: dict[str, Any], family_id: str, regie: str) -> Any:
            return service.ask_credit_refund(family_id, regie, data["amount_cents"],
                                             by=acting(auth))

    @blp.route("/refunds")
    class Refunds(MethodView):
        @auth.requires("cashier")
        @blp.arguments(RefundsQuery, location="query")
        @blp.response(200, RefundList)
        def get(self, query: dict[str, Any]) -> Any:
            return {"refunds": service.refunds(query["status"], query["regie"])}

    @blp.route("/refunds/<uuid:refund_id>/paid")
    class RefundPaid(MethodView):
        @auth.requires("cashier")
        @blp.arguments(RefundPaidIn)
        @blp.response(200, RefundOut)
        def post(self, data: dict[str, Any], refund_id: UUID) -> Any:
            return service.pay_refund(refund_id, data["means"], data["reference"],
                                      data["paid_on"], by=acting(auth))

    return blp


def pdf(content: bytes, name: str) -> Response:
    return Response(content, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"'})


def documents_blueprint(service: PaymentApp, auth: Auth) -> Blueprint:
    """The documents: PDFs for families (through the portal) and cashiers, and the public
    check of a verification code."""
    blp = Blueprint("documents", __name__, description="Invoices, certificates, receipts")

    @blp.route("/families/<family_id>/invoices/<uuid:invoice_id>/invoice.pdf")
    class FamilyInvoicePdf(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, content_type="application/pdf", description="the invoice")
        def get(self, family_id: str, invoice_id: UUID) -> Any:
            return pdf(documents.invoice_pdf(service, family_id, invoice_id),
                       f"facture-{invoice_id}.pdf")

    @blp.route("/families/<family_id>/invoices/<uuid:invoice_id>/certificate.pdf")
    class FamilyCertificatePdf(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, content_type="application/pdf",
                      description="the payment certificate (facture acquittée), once paid")
        def get(self, family_id: str, invoice_id: UUID) -> Any:
            return pdf(documents.certificate_pdf(service, family_id, invoice_id),
                       f"facture-acquittee-{invoice_id}.pdf")

    @blp.route("/counter-payments/<uuid:payment_id>/receipt.pdf")
    class CounterReceipt(MethodView):
        @auth.requires("cashier")
        @blp.response(200, content_type="application/pdf", description="the receipt")
        def get(self, payment_id: UUID) -> Any:
            return pdf(documents.receipt_pdf(service, payment_id), f"recu-{payment_id}.pdf")

    @blp.route("/verifications")
    class Verifications(MethodView):
        @blp.doc(**PUBLIC)
        @blp.arguments(VerificationQuery, location="query")
        @blp.response(200, Verification)
        def get(self, query: dict[str, Any]) -> Any:
            """Whether a document's verification code is authentic, and what it attests."""
            return documents.verify(service, query["code"])

    return blp
