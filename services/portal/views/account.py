"""Log-in, log-out, the one-time link that sets a password, and deleting one's account."""

from typing import Any

from flask import (
    Blueprint,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from services.portal.accounts import PASSWORD_MIN, AccountError
from services.portal.context import crumbs, login_required, portal
from services.portal.sessions import log_in, log_out, safe_next

bp = Blueprint("account", __name__)

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
