"""The régisseur's back office: Flask, server-rendered French pages under /guichet/.

Staff accounts (cashiers) log in; every act goes to the APIs with the back office's cashier
token and the staff member's id, which the APIs record in the events' ``by``. Families are
found by their id only: the system keeps no names. Bad input re-displays the form with
why (422) and sends nothing to the APIs.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from events.formats import PARIS
from services.backoffice.desk import Desk, RegieApis
from services.backoffice.settings import BackofficeSettings
from services.backoffice.staff import Staff, StaffAccounts, staff_of
from services.common.web.site import configure_site, kept_secret_key, limit_failed_log_ins
from services.portal import formatting as fmt
from services.portal.accounts import PASSWORD_MIN, AccountError, SqliteAccounts, normalise_email
from services.portal.payments import NotFound, Refused, Unavailable
from services.portal.sessions import safe_next

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

PREFIX = "/guichet"
FAMILY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")  # as the payment API accepts it
REGIE_CODE = re.compile(r"^[A-Z0-9_-]{1,16}\Z")
COUNTER_MEANS = {"cash": "Espèces", "cheque": "Chèque", "cesu": "CESU",
                 "ancv": "Chèques-vacances ANCV", "transfer": "Virement"}
REFUND_MEANS = {"cash": "Espèces", "cheque": "Chèque", "transfer": "Virement"}
SESSION_KEY = "session_id"

ERRORS = {
    400: ("Demande incorrecte", "La demande n'a pas pu être traitée. Revenez à la page "
                                "précédente et recommencez."),
    404: ("Page introuvable", "Cette page n'existe pas, ou ce qu'elle désigne est inconnu."),
    405: ("Demande incorrecte", "Cette page ne s'utilise pas de cette façon."),
    500: ("Erreur du service", "Une erreur est survenue. Réessayez dans quelques instants."),
    503: ("Service momentanément indisponible", "Les services de facturation ou de paiement "
          "ne répondent pas pour le moment. Réessayez dans quelques instants : rien n'a été "
          "enregistré."),
}

bp = Blueprint("desk", __name__, url_prefix=PREFIX)


@dataclass(frozen=True)
class Backoffice:
    settings: BackofficeSettings
    accounts: StaffAccounts
    desk: Desk


def backoffice() -> Backoffice:
    found: Backoffice = current_app.extensions["backoffice"]
    return found


def today() -> date:
    return datetime.now(PARIS).date()


# --- sessions: the cookie carries a random id; the accounts' database decides ---------------

def idle() -> timedelta:
    return timedelta(minutes=backoffice().settings.session_idle_minutes)


def logged_in() -> Staff | None:
    session_id = session.get(SESSION_KEY)
    if not session_id:
        return None
    account = backoffice().accounts.session_account(session_id, idle())
    if account is None:
        session.clear()
        return None
    return staff_of(account)


def staff() -> Staff:
    found: Staff = g.staff
    return found


def login_required(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.staff is None:
            return redirect(url_for("desk.login", suivant=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# --- what the forms say, read and checked here first, in French -----------------------------

class FormError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


AMOUNT = re.compile(r"^(\d{1,9})(?:[.,](\d{1,2}))?\Z")


def cents(field: str, text: str) -> int:
    """'10,00', '10.5', '1 250' euros -> cents; a FormError for anything else."""
    cleaned = re.sub(r"[\s\u202f\u00a0]", "", text).removesuffix("€")
    found = AMOUNT.match(cleaned)
    amount = int(found[1]) * 100 + int((found[2] or "0").ljust(2, "0")) if found else 0
    if amount <= 0:
        raise FormError(field, "Indiquez un montant en euros, par exemple 10,00.")
    return amount


def day_of(field: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as e:
        raise FormError(field, "Indiquez une date, par exemple 2025-03-05.") from e


def reference_of(means: str, text: str, field: str = "reference") -> str | None:
    reference = text.strip() or None
    if reference is None and means != "cash":
        raise FormError(field, "Une référence est nécessaire, sauf pour des espèces "
                               "(numéro de chèque, de titres ou libellé du virement).")
    if reference is not None and len(reference) > 200:
        raise FormError(field, "La référence compte au plus 200 caractères.")
    return reference


def refused(e: Refused) -> str:
    return f"Le service a refusé l'opération : {e.message}"


# --- log-in, log-out, one-time links -------------------------------------------------------

@bp.route("/connexion", methods=["GET", "POST"])
def login() -> Any:
    return render_login()


def render_login(error: str | None = None, status: int | None = None) -> Any:
    next_url = safe_next(request.args.get("suivant"))
    email = request.form.get("email", "").strip()
    if request.method == "POST" and error is None:
        users = backoffice().accounts
        account = users.authenticate(email, request.form.get("password", ""))
        if account is not None:
            session.clear()  # a new session at each log-in
            session.permanent = True
            session[SESSION_KEY] = users.open_session(account, idle())
            return redirect(next_url or url_for("desk.home"), 303)
        error = "Adresse électronique ou mot de passe incorrect."
    return render_template("login.html", email=email, error=error, next_url=next_url), \
        status or (401 if error else 200)


@bp.post("/deconnexion")
def logout() -> Any:
    session_id = session.get(SESSION_KEY)
    if session_id:
        backoffice().accounts.close_session(session_id)
    session.clear()
    flash("Vous êtes déconnecté.", "info")
    return redirect(url_for("desk.login"), 303)


@bp.route("/compte/activer/<token>", methods=["GET", "POST"])
def activate(token: str) -> Any:
    users = backoffice().accounts
    account = users.for_link(token)
    gone = ("error.html", {"heading": "Lien expiré ou déjà utilisé",
                           "message": "Ce lien n'est plus valable. Demandez-en un nouveau à "
                                      "l'exploitant."})
    if account is None:
        return render_template(gone[0], **gone[1]), 404
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
                if done is None:
                    return render_template(gone[0], **gone[1]), 404
                session.clear()
                flash("Votre mot de passe est enregistré : connectez-vous.", "info")
                return redirect(url_for("desk.login"), 303)
    return render_template("activate.html", email=account.email, error=error,
                           minimum=PASSWORD_MIN), (422 if error else 200)


# --- the desk --------------------------------------------------------------------------------

@bp.get("/")
@login_required
def home() -> Any:
    return render_template("home.html", family_id="", error=None)


@bp.get("/familles")
@login_required
def search() -> Any:
    family_id = request.args.get("famille", "").strip()
    if not FAMILY_ID.match(family_id):
        error = ("Identifiant de famille : de 1 à 64 lettres sans accent, chiffres, points, "
                 "tirets ou soulignés.")
        return render_template("home.html", family_id=family_id, error=error), 422
    return redirect(url_for("desk.family", family_id=family_id), 303)


@bp.get("/familles/<family_id>")
@login_required
def family(family_id: str) -> Any:
    if not FAMILY_ID.match(family_id):
        raise NotFound("not a family id")
    regies = [{**r, "total": fmt.euros(r["total_cents"]),
               "count_text": fmt.count(r["count"], "facture ouverte", "factures ouvertes")}
              for r in backoffice().desk.to_pay(family_id)]
    return render_template("family.html", family_id=family_id, regies=regies)


def regie_page(family_id: str, regie: str, errors: dict[str, str] | None = None,
               form: dict[str, str] | None = None) -> Any:
    if not (FAMILY_ID.match(family_id) and REGIE_CODE.match(regie)):
        raise NotFound("not a family or a régie")
    invoices = [{**i, "due": fmt.euros(i["amount_due_cents"]), "total": fmt.euros(
        i["total_cents"]), "issued": fmt.day(i["issued_on"]),
        "until": fmt.day(i["payable_until"])}
        for i in backoffice().desk.open_invoices(family_id, regie)]
    owed = sum(i["amount_due_cents"] for i in invoices)
    return render_template(
        "regie.html", family_id=family_id, regie=regie, invoices=invoices,
        owed=fmt.euros(owed), means=COUNTER_MEANS, errors=errors or {},
        form={"received_on": today().isoformat(), **(form or {})},
    ), (422 if errors else 200)


@bp.get("/familles/<family_id>/<regie>")
@login_required
def regie(family_id: str, regie: str) -> Any:
    return regie_page(family_id, regie)


@bp.post("/familles/<family_id>/<regie>/encaissement")
@login_required
def take_payment(family_id: str, regie: str) -> Any:
    form = {k: request.form.get(k, "") for k in ("means", "amount", "reference",
                                                 "received_on")}
    try:
        if form["means"] not in COUNTER_MEANS:
            raise FormError("means", "Choisissez un moyen de paiement.")
        amount = cents("amount", form["amount"])
        reference = reference_of(form["means"], form["reference"])
        received_on = day_of("received_on", form["received_on"])
        if not (FAMILY_ID.match(family_id) and REGIE_CODE.match(regie)):
            raise NotFound("not a family or a régie")
        paid = backoffice().desk.take_payment(staff().id, regie, family_id, form["means"],
                                              amount, reference, received_on)
    except FormError as e:
        return regie_page(family_id, regie, {e.field: e.message}, form)
    except Refused as e:
        return regie_page(family_id, regie, {"payment": refused(e)}, form)
    flash(f"Encaissement de {fmt.euros(paid['amount_cents'])} enregistré.", "info")
    return redirect(url_for("desk.receipt", payment_id=paid["id"]), 303)


@bp.post("/familles/<family_id>/<regie>/avoir")
@login_required
def credit_note(family_id: str, regie: str) -> Any:
    form = {k: request.form.get(k, "") for k in ("invoice_id", "credit_amount", "reason")}
    try:
        if not form["invoice_id"]:
            raise FormError("invoice_id", "Choisissez la facture.")
        amount = cents("credit_amount", form["credit_amount"])
        reason = form["reason"].strip()
        if not 1 <= len(reason) <= 500:
            raise FormError("reason", "Indiquez le motif de l'avoir (500 caractères au plus).")
        done = backoffice().desk.credit_note(staff().id, form["invoice_id"], amount, reason)
    except FormError as e:
        return regie_page(family_id, regie, {e.field: e.message}, form)
    except Refused as e:
        return regie_page(family_id, regie, {"credit": refused(e)}, form)
    invoice = done["invoice"]
    flash(f"Avoir de {fmt.euros(amount)} enregistré sur la facture {invoice['number']}.",
          "info")
    return redirect(url_for("desk.regie", family_id=family_id, regie=regie), 303)


@bp.get("/encaissements/<payment_id>")
@login_required
def receipt(payment_id: str) -> Any:
    paid = backoffice().desk.counter_payment(payment_id)
    lines = [{**a, "amount": fmt.euros(a["amount_cents"])} for a in paid["allocations"]]
    return render_template(
        "receipt.html", paid=paid, lines=lines, amount=fmt.euros(paid["amount_cents"]),
        unallocated=fmt.euros(paid["unallocated_cents"]),
        means=COUNTER_MEANS.get(paid["means"], paid["means"]),
        received=fmt.day(paid["received_on"]), recorded=fmt.moment(paid.get("recorded_at")),
        # The payment API serves the laid-out receipt, with its verification code.
        pdf=str(paid.get("receipt_url") or "").endswith("/receipt.pdf"))


@bp.get("/encaissements/<payment_id>/recu.pdf")
@login_required
def receipt_pdf(payment_id: str) -> Any:
    pdf = backoffice().desk.receipt_pdf(payment_id)
    return Response(pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="recu-{payment_id}.pdf"'})


def refunds_page(errors: dict[str, str] | None = None, failed: str = "",
                 form: dict[str, str] | None = None) -> Any:
    rows = [{**r, "amount": fmt.euros(r["amount_cents"]), "asked": fmt.moment(
        r.get("asked_at"))} for r in backoffice().desk.refunds_due()]
    return render_template("refunds.html", refunds=rows, means=REFUND_MEANS,
                           errors=errors or {}, failed=failed,
                           form={"paid_on": today().isoformat(), **(form or {})}), \
        (422 if errors else 200)


@bp.get("/remboursements")
@login_required
def refunds() -> Any:
    return refunds_page()


@bp.post("/remboursements/<refund_id>/paye")
@login_required
def refund_paid(refund_id: str) -> Any:
    form = {k: request.form.get(k, "") for k in ("means", "reference", "paid_on")}
    try:
        if form["means"] not in REFUND_MEANS:
            raise FormError("means", "Choisissez comment le remboursement a été payé.")
        reference = reference_of(form["means"], form["reference"])
        paid_on = day_of("paid_on", form["paid_on"])
        done = backoffice().desk.mark_refund_paid(staff().id, refund_id, form["means"],
                                                  reference, paid_on)
    except FormError as e:
        return refunds_page({e.field: e.message}, refund_id, form)
    except Refused as e:
        return refunds_page({"refund": refused(e)}, refund_id, form)
    flash(f"Remboursement de {fmt.euros(done['amount_cents'])} à {done['family_id']} "
          "marqué payé.", "info")
    return redirect(url_for("desk.refunds"), 303)


@bp.get("/journal")
@login_required
def journal() -> Any:
    return render_template("journal.html", regie="", day=today().isoformat(), error=None)


@bp.get("/journal.csv")
@login_required
def journal_csv() -> Any:
    regie, day = request.args.get("regie", "").strip().upper(), request.args.get("date", "")
    try:
        if not REGIE_CODE.match(regie):
            raise FormError("regie", "Indiquez le code de la régie, par exemple SPORTS.")
        when = day_of("date", day)
        text = backoffice().desk.journal_csv(regie, when)
    except FormError as e:
        return render_template("journal.html", regie=regie, day=day, error=e), 422
    except NotFound:
        error = FormError("regie", f"Aucune régie de code {regie}.")
        return render_template("journal.html", regie=regie, day=day, error=error), 404
    name = f"journal-{regie}-{when.isoformat()}.csv"
    return Response(text, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- the application -------------------------------------------------------------------------

def secret_key(settings: BackofficeSettings) -> str:
    """BACKOFFICE_SECRET_KEY, or a random key kept beside the accounts' database."""
    return kept_secret_key(settings.secret_key,
                           Path(settings.accounts_db).parent / "backoffice-secret.key")


def create_app(settings: BackofficeSettings | None = None,
               accounts: StaffAccounts | None = None, desk: Desk | None = None) -> Flask:
    cfg = settings or BackofficeSettings()
    users = accounts or StaffAccounts(SqliteAccounts(cfg.accounts_db))
    if desk is None and not cfg.token:
        raise RuntimeError("BACKOFFICE_TOKEN: a cashier token of both APIs is needed")
    apis: Desk = desk or RegieApis(cfg.billing_url, cfg.payment_url, cfg.token)

    app = Flask(__name__, static_url_path=f"{PREFIX}/assets")
    app.extensions["backoffice"] = Backoffice(cfg, users, apis)
    configure_site(app, secret_key=secret_key(cfg), cookie="guichet",
                   secure_cookies=cfg.secure_cookies,
                   session_idle_minutes=cfg.session_idle_minutes)
    app.register_blueprint(bp)
    limit_failed_log_ins(app, "desk.login", "guichet", normalise_email, render_login)

    @app.before_request
    def load_staff() -> None:
        g.staff = logged_in() if request.path.startswith(PREFIX) else None

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"staff": g.get("staff")}

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
            "frame-ancestors 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype in ("text/html", "application/json", "text/csv",
                                 "application/pdf"):
            response.headers["Cache-Control"] = "no-store"
        if cfg.secure_cookies:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    def error_page(code: int) -> tuple[str, int]:
        heading, message = ERRORS.get(code, ERRORS[500])
        return render_template("error.html", heading=heading, message=message), code

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError) -> Any:
        return render_template(
            "error.html", heading="Page expirée",
            message="Le formulaire a expiré ou ne vient pas de ce site. Revenez à la page "
                    "précédente, rechargez-la et recommencez."), 400

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

    @app.get("/")
    def root() -> Any:
        return redirect(url_for("desk.home"))

    return app
