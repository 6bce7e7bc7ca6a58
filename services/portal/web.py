"""The families' portal: Flask, server-rendered French pages over the payment API.

A family only ever sees its own data: the family id comes from the signed session, never
from a URL or a form, and anything a URL or a form names that is not this family's (a
régie it owes nothing to, an invoice, a payment) is answered 404, like a missing page.
"""

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from jinja2 import DictLoader
from werkzeug.exceptions import HTTPException

from services.common.settings import max_body_bytes
from services.payment.domain import MIN_PAYMENT_CENTS
from services.portal import formatting as fmt
from services.portal.accounts import (
    PASSWORD_MIN,
    Account,
    AccountError,
    Accounts,
    SqliteAccounts,
)
from services.portal.payments import (
    FINAL,
    IN_PROGRESS,
    NotFound,
    PaymentApi,
    Payments,
    Refused,
    Reservation,
    Unavailable,
    reservation,
)
from services.portal.settings import PortalSettings
from services.portal.templates import ASSETS, TEMPLATES

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

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
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.accounts_db).parent / "portal-secret.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        key = secrets.token_urlsafe(48)
        f.write(key)
    return key


def session_mark(account: Account) -> str:
    """Changes with the password: a new password ends every session opened with the old."""
    return hashlib.sha256((account.password_hash or "").encode()).hexdigest()[:16]


def safe_next(target: str | None) -> str | None:
    """Only a path of this site: never another host (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


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

    app = Flask(__name__)
    app.jinja_loader = DictLoader(TEMPLATES)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.config.update(
        SECRET_KEY=secret_key(cfg),
        # __Host-: the browser keeps it for this host only, over https only.
        SESSION_COOKIE_NAME="__Host-portail" if cfg.secure_cookies else "portail",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookies,
        PREFERRED_URL_SCHEME="https" if cfg.secure_cookies else "http",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=2),
        WTF_CSRF_TIME_LIMIT=2 * 3600,
        MAX_CONTENT_LENGTH=max_body_bytes(),
    )
    CSRFProtect(app)

    def login_required(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.account is None:
                return redirect(url_for("login", suivant=request.full_path.rstrip("?")))
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    @app.before_request
    def load_account() -> None:
        g.account = None
        email = session.get("email")
        if email:
            account = users.get(email)
            if account is None or session.get("mark") != session_mark(account):
                session.clear()
            else:
                g.account = account

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

    @app.get("/assets/<name>")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            abort(404)
        body, mimetype = ASSETS[name]
        response = Response(body, content_type=mimetype)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    # --- accounts -------------------------------------------------------------------------

    @app.route("/connexion", methods=["GET", "POST"])
    def login() -> Any:
        next_url = safe_next(request.args.get("suivant"))
        email, error = "", None
        if request.method == "POST":
            email = request.form.get("email", "").strip()
            account = users.authenticate(email, request.form.get("password", ""))
            if account is not None:
                session.clear()  # a new session at each login
                session.permanent = True
                session["email"] = account.email
                session["mark"] = session_mark(account)
                return redirect(next_url or url_for("home"), 303)
            error = "Adresse électronique ou mot de passe incorrect."
        return render_template("login.html", email=email, error=error, next_url=next_url,
                               crumbs=None), (401 if error else 200)

    @app.post("/deconnexion")
    def logout() -> Any:
        session.clear()
        flash("Vous êtes déconnecté.", "info")
        return redirect(url_for("login"), 303)

    @app.route("/compte/activer/<token>", methods=["GET", "POST"])
    def activate(token: str) -> Any:
        account = users.for_link(token)
        if account is None:
            return render_template(
                "error.html", heading="Lien expiré ou déjà utilisé",
                message="Ce lien pour choisir votre mot de passe n'est plus valable. "
                        "Demandez-en un nouveau au service famille de votre commune."), 404
        error = None
        if request.method == "POST":
            password = request.form.get("password", "")
            if password != request.form.get("confirmation", ""):
                error = "Les deux mots de passe ne sont pas identiques."
            else:
                try:
                    users.set_password_with_link(token, password)
                except AccountError as e:
                    error = str(e).capitalize() + "."
                else:
                    session.clear()
                    flash("Votre mot de passe est enregistré : connectez-vous.", "info")
                    return redirect(url_for("login"), 303)
        return render_template("activate.html", email=account.email, error=error,
                               minimum=PASSWORD_MIN, crumbs=None), (422 if error else 200)

    # --- pages ----------------------------------------------------------------------------

    def family() -> str:
        account: Account = g.account
        return account.family_id

    def crumbs(*trail: tuple[str, str | None]) -> list[tuple[str, str | None]]:
        return [("Accueil", url_for("home")), *trail]

    @app.get("/")
    @login_required
    def home() -> Any:
        return render_template("home.html", section="accueil", crumbs=None)

    @app.get("/factures")
    @login_required
    def billing() -> Any:
        n = sum(r["count"] for r in api.to_pay(family()))
        text = fmt.count(n, "facture à payer", "factures à payer") if n else "Aucune facture"
        return render_template("billing.html", section="facturation", count_text=text,
                               crumbs=crumbs(("Facturation", None)))

    @app.get("/factures/a-payer")
    @login_required
    def to_pay() -> Any:
        regies = [
            {**r, "total": fmt.euros(r["total_cents"]),
             "count_text": fmt.count(r["count"], "facture à payer", "factures à payer")}
            for r in sorted(api.to_pay(family()), key=lambda r: (r["name"], r["code"]))
        ]
        return render_template("to_pay.html", section="facturation", regies=regies,
                               crumbs=crumbs(("Factures à payer", None)))

    def regie_name(regie: str) -> str:
        """The régie's name; 404 if this family owes it nothing."""
        name = next((r["name"] for r in api.to_pay(family()) if r["code"] == regie), None)
        if name is None:
            abort(404)
        return str(name)

    def own_reservation(payment_id: str) -> tuple[dict[str, Any], Reservation] | None:
        try:
            payment = api.payment(payment_id)
        except NotFound:
            return None
        if payment.get("family_id") != family():
            return None
        length = timedelta(minutes=cfg.reservation_minutes)
        return payment, reservation(payment, length)

    def regie_lines(regie: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """This family's invoices at the régie as it may act on them now, and the payments
        left open on PayFiP's page that it may go back to."""
        now = datetime.now(UTC)
        held: dict[str, tuple[dict[str, Any], Reservation] | None] = {}
        lines = []
        for line in api.to_pay_regie(family(), regie):
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
            crumbs=crumbs(("Factures à payer", url_for("to_pay")), ("Récapitulatif", None)),
        ), status

    @app.get("/factures/a-payer/<regie>")
    @login_required
    def summary(regie: str) -> Any:
        name = regie_name(regie)
        return render_summary(regie, name, *regie_lines(regie))

    @app.post("/factures/a-payer/<regie>")
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
            payment = api.request_payment(account.family_id, regie, chosen, account.email)
        except Refused as e:
            log.warning("payment refused for %s: %s", account.family_id, e.message)
            return render_summary(
                regie, name, *regie_lines(regie), set(chosen),
                "Le paiement n'a pas pu commencer : les factures ont peut-être changé. "
                "Vérifiez votre sélection et recommencez.", 409)
        target = payment.get("redirect_url") or ""
        if urlsplit(target).scheme not in ("http", "https"):
            return redirect(url_for("payment_return", payment=payment["id"]), 303)
        return redirect(target, 303)

    def own_payment(payment_id: str) -> dict[str, Any]:
        payment = api.payment(payment_id)
        if payment.get("family_id") != family():
            abort(404)
        return payment

    def settled(payment: dict[str, Any]) -> dict[str, Any]:
        """A payment still waiting: ask the payment API to read PayFiP's answer now."""
        if payment["status"] not in FINAL and payment.get("idop"):
            api.browser_return(payment["idop"])
            payment = own_payment(payment["id"])
        return payment

    def payment_from_query() -> dict[str, Any]:
        payment_id = request.args.get("payment", "")
        idop = request.args.get("idop") or request.args.get("idOp")
        if not payment_id and idop:
            payment_id = api.browser_return(idop)
        if not payment_id:
            abort(404)
        return own_payment(payment_id)

    @app.get("/paiement/retour")
    @login_required
    def payment_return() -> Any:
        payment = settled(payment_from_query())
        status = payment["status"]
        # reserved_until null on a payment still waiting: its invoices were released.
        released = "reserved_until" in payment and payment["reserved_until"] is None
        word, heading, message = fmt.outcome(status, payment.get("resultrans"), released)
        pending = status not in FINAL
        numbers = ", ".join(a["number"] for a in payment.get("allocations", []))
        regie_name = next((h["regie_name"] for h in api.history(family())
                           if h["regie"] == payment["regie"]), payment["regie"])
        return render_template(
            "return.html", section="facturation", step=2, status=status, word=word,
            heading=heading, message=message, pending=pending,
            state_url=url_for("payment_state", payment=payment["id"]),
            here=url_for("payment_return", payment=payment["id"]),
            regie_name=regie_name, amount=fmt.euros(payment["amount_cents"]), numbers=numbers,
            refdet=payment["refdet"],
            paid_at=fmt.moment(payment.get("paid_at")) if status == "confirmed" else "",
            paid_at_label=fmt.paid_at_label(payment.get("resultrans")),
            means=fmt.RESULTRANS_MEANS.get(payment.get("resultrans") or "", "")
            if status == "confirmed" else "",
            numauto=payment.get("numauto") if status == "confirmed" else None,
            crumbs=crumbs(("Factures à payer", url_for("to_pay")),
                          ("Retour du paiement", None)),
        )

    # PayFiP's browser return may come straight here: PAYMENT_PUBLIC_URL set to the portal,
    # PAYMENT_NOTIFICATION_URL to the payment API.
    app.add_url_rule("/payfip/return", endpoint="payfip_return", view_func=payment_return)

    @app.get("/paiement/etat")
    @login_required
    def payment_state() -> Any:
        payment = settled(own_payment(request.args.get("payment", "")))
        return {"status": payment["status"], "final": payment["status"] in FINAL}

    @app.get("/factures/historique")
    @login_required
    def history() -> Any:
        rows = []
        for h in api.history(family()):
            payment = ""
            if h["status"] == "paid" and h.get("paid_at"):
                payment = f"Le {fmt.moment(h['paid_at'])}"
                if h.get("paid_by"):
                    payment += f" par {fmt.means(h['paid_by'])}"
            rows.append({
                **h, "issued": fmt.day(h["issued_on"]), "total": fmt.euros(h["total_cents"]),
                "status": fmt.invoice_status(h["status"], bool(h.get("payment_id")),
                                             h.get("paid_by")),
                "payment": payment,
            })
        return render_template("history.html", section="facturation", rows=rows,
                               crumbs=crumbs(("Historique des factures", None)))

    return app
