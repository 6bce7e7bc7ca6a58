"""Log-in, log-out, the one-time link that sets a password, and deleting one's account."""

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address

from services.portal import formatting as fmt
from services.portal.accounts import PASSWORD_MIN, AccountError, normalise_email
from services.portal.context import crumbs, login_required, portal
from services.portal.sessions import log_in, log_out, safe_next

bp = Blueprint("account", __name__)

# Failed log-ins allowed per account and per client address, over a moving window.
FAILED_LOG_INS = "5 per 15 minutes"


@bp.route("/connexion", methods=["GET", "POST"])
def login() -> Any:
    return render_login()


def render_login(error: str | None = None, status: int | None = None) -> Any:
    """A POST tries the address and password, unless already refused (``error``, as the
    log-in limit does): a redirect in, or the form again with why."""
    next_url = safe_next(request.args.get("suivant"))
    email = request.form.get("email", "").strip()
    if request.method == "POST" and error is None:
        account = portal().accounts.authenticate(email, request.form.get("password", ""))
        if account is not None:
            log_in(account)
            return redirect(next_url or url_for("invoices.home"), 303)
        error = "Adresse électronique ou mot de passe incorrect."
    return render_template("login.html", email=email, error=error, next_url=next_url,
                           crumbs=None), status or (401 if error else 200)


def failed(response: Response) -> bool:
    return response.status_code == 401


def account_key() -> str:
    return normalise_email(request.form.get("email", ""))


def limit_failed_log_ins(app: Flask) -> Limiter:
    """Five failed log-ins per account and per client address in 15 minutes, then 429.

    Its counts live in this process's memory: each gunicorn worker counts on its own.
    """
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://",
                      strategy="moving-window")
    view: Callable[..., Any] = app.view_functions["account.login"]
    for scope, key in (("connexion-adresse", get_remote_address),
                       ("connexion-compte", account_key)):
        view = limiter.limit(FAILED_LOG_INS, key_func=key, scope=scope, methods=["POST"],
                             deduct_when=failed)(view)
    app.view_functions["account.login"] = view

    @app.errorhandler(RateLimitExceeded)
    def too_many(e: RateLimitExceeded) -> Any:
        # The oldest failure counted leaves the window then: one more try is allowed.
        now = datetime.now(UTC).timestamp()
        limit = limiter.current_limit
        reset_at = limit.reset_at if limit else now + 15 * 60
        retry = max(1, math.ceil(reset_at - now))
        until = fmt.moment(datetime.fromtimestamp(reset_at, UTC))
        body, status = render_login(
            f"Trop de tentatives de connexion. Réessayez après {until}.", 429)
        return body, status, {"Retry-After": str(retry)}

    return limiter


@bp.post("/deconnexion")
def logout() -> Any:
    log_out()
    flash("Vous êtes déconnecté.", "info")
    return redirect(url_for("account.login"), 303)


def link_gone() -> Any:
    return render_template(
        "error.html", heading="Lien expiré ou déjà utilisé",
        message="Ce lien pour choisir votre mot de passe n'est plus valable. "
                "Demandez-en un nouveau au service famille de votre commune."), 404


@bp.route("/compte/activer/<token>", methods=["GET", "POST"])
def activate(token: str) -> Any:
    users = portal().accounts
    account = users.for_link(token)
    if account is None:
        return link_gone()
    error = None
    if request.method == "POST":
        password = request.form.get("password", "")
        if password != request.form.get("confirmation", ""):
            error = "Les deux mots de passe ne sont pas identiques."
        else:
            try:
                done = users.set_password_with_link(token, password)
            except AccountError as e:
                error = str(e).capitalize() + "."
            else:
                if done is None:  # used meanwhile, by another request
                    return link_gone()
                log_out()
                flash("Votre mot de passe est enregistré : connectez-vous.", "info")
                return redirect(url_for("account.login"), 303)
    return render_template("activate.html", email=account.email, error=error,
                           minimum=PASSWORD_MIN, crumbs=None), (422 if error else 200)


@bp.route("/compte/supprimer", methods=["GET", "POST"])
@login_required
def delete() -> Any:
    """The family deletes its log-in, confirming with its password; its invoices stay."""
    error = None
    if request.method == "POST":
        if portal().accounts.delete(g.account, request.form.get("password", "")):
            log_out()
            flash("Votre compte est supprimé. Vos factures restent au service famille.",
                  "info")
            return redirect(url_for("account.login"), 303)
        error = "Mot de passe incorrect : votre compte n'est pas supprimé."
    return render_template("delete_account.html", error=error,
                           crumbs=crumbs(("Supprimer mon compte", None))), \
        (422 if error else 200)
