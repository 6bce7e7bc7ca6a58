"""The families' portal: Flask, server-rendered French pages over the payment API.

A family only ever sees its own data: the family id comes from the session, never from a
URL or a form, and anything a URL or a form names that is not this family's (a régie it owes
nothing to, an invoice, a payment) is answered 404, like a missing page. The pages are
Jinja templates in ``templates/``, the style sheet and the script in ``static/`` (served
under ``/assets/``), the views in three blueprints (``views/``).
"""

import logging
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from services.common.web.site import configure_site, kept_secret_key, limit_failed_log_ins
from services.portal.accounts import Accounts, SqliteAccounts, normalise_email
from services.portal.context import Portal
from services.portal.payments import NotFound, PaymentApi, Payments, Unavailable
from services.portal.sessions import logged_in
from services.portal.settings import PortalSettings
from services.portal.views import account, documents, invoices
from services.portal.views import payments as paying

log = logging.getLogger(__name__)

ERRORS = {
    400: ("Demande incorrecte", "La demande n'a pas pu être traitée. Revenez à la page "
                                "précédente et recommencez."),
    404: ("Page introuvable", "Cette page n'existe pas, ou elle ne concerne pas votre "
                              "famille."),
    405: ("Demande incorrecte", "Cette page ne s'utilise pas de cette façon."),
    500: ("Erreur du service", "Une erreur est survenue. Réessayez dans quelques instants."),
    503: ("Service momentanément indisponible", "Le service des paiements ne répond pas pour "
          "le moment. Réessayez dans quelques instants : aucune somme n'a été prélevée."),
}


def secret_key(settings: PortalSettings) -> str:
    """PORTAL_SECRET_KEY, or a random key kept beside the accounts' database."""
    return kept_secret_key(settings.secret_key,
                           Path(settings.accounts_db).parent / "portal-secret.key")


def create_app(
    settings: PortalSettings | None = None,
    accounts: Accounts | None = None,
    payments: Payments | None = None,
) -> Flask:
    cfg = settings or PortalSettings()
    users = accounts or Accounts(SqliteAccounts(cfg.accounts_db))
    if payments is None and not cfg.payment_token:
        raise RuntimeError("PORTAL_PAYMENT_TOKEN: a payer token of the payment API is needed")
    api: Payments = payments or PaymentApi(cfg.payment_url, cfg.payment_token)

    # The style sheet and the script keep the URLs they always had: /assets/<name>.
    app = Flask(__name__, static_url_path="/assets")
    app.extensions["portal"] = Portal(cfg, users, api)
    configure_site(app, secret_key=secret_key(cfg), cookie="portail",
                   secure_cookies=cfg.secure_cookies,
                   session_idle_minutes=cfg.session_idle_minutes)
    for blueprint in (account.bp, invoices.bp, paying.bp, documents.bp):
        app.register_blueprint(blueprint)
    limit_failed_log_ins(app, "account.login", "connexion", normalise_email, account.render_login)

    @app.before_request
    def load_account() -> None:
        g.account = logged_in()

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"account": g.get("account")}

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype in ("text/html", "application/json"):
            response.headers["Cache-Control"] = "no-store"
        if cfg.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    def error_page(code: int) -> tuple[str, int]:
        heading, message = ERRORS.get(code, ERRORS[500])
        return render_template("error.html", heading=heading, message=message), code

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError) -> Any:
        heading = "Page expirée"
        message = ("Le formulaire a expiré ou ne vient pas de ce site. Revenez à la page "
                   "précédente, rechargez-la et recommencez.")
        return render_template("error.html", heading=heading, message=message), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:
        return error_page(e.code or 500)

    @app.errorhandler(NotFound)
    def api_not_found(e: NotFound) -> Any:
        return error_page(404)

    @app.errorhandler(Unavailable)
    def api_unavailable(e: Unavailable) -> Any:
        log.error("%s", e)
        return error_page(503)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    return app
