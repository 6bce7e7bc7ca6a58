"""Payment HTTP API: load, call the application, dump."""

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask
from flask.views import MethodView
from flask_smorest import Blueprint

from services.common.auth import Auth
from services.common.errors import NotFound
from services.common.web import create_flask
from services.payment.application import PaymentApp
from services.payment.schemas import ToPay, ToPayInvoices

PARIS = ZoneInfo("Europe/Paris")
READERS = ("reader", "auditor")


def paris_today() -> date:
    return datetime.now(PARIS).date()


def create_app(
    payment: PaymentApp | None = None,
    tokens: dict[str, str] | None = None,
    today: Callable[[], date] = paris_today,
) -> Flask:
    from services.bootstrap import load_tokens, payment_app

    service = payment if payment is not None else payment_app()
    auth = Auth(tokens if tokens is not None else load_tokens())
    app, api = create_flask(__name__, "payment API")
    blp = Blueprint("payment", __name__, description="What families have to pay, per régie")

    @blp.route("/families/<family_id>/to-pay")
    class FamilyToPay(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, ToPay)
        def get(self, family_id: str) -> Any:
            return {"regies": service.to_pay_summary(family_id)}

    @blp.route("/families/<family_id>/to-pay/<regie>")
    class FamilyToPayRegie(MethodView):
        @auth.requires(*READERS)
        @blp.response(200, ToPayInvoices)
        def get(self, family_id: str, regie: str) -> Any:
            if not service.regie_exists(regie):
                raise NotFound("regie", f"unknown régie {regie!r}")
            return {"regie": regie, "invoices": service.to_pay_lines(family_id, regie, today())}

    api.register_blueprint(blp)
    return app
