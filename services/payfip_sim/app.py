"""The PayFiP simulator's Flask application: SOAP endpoint, payment page, control API.

Run it with ``gunicorn --workers 1 --threads 8 'services.payfip_sim.app:create_app()'``:
its state is in memory, so a second worker would be a second, separate PayFiP.
"""

import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, request

from services.common.settings import max_body_bytes
from services.common.web.app import error_body
from services.payfip_sim import pages, soap
from services.payfip_sim.model import (
    OPERATIONS,
    RESULTS,
    ConfigError,
    Fault,
    PageRefusal,
    SimPayment,
    SimSettings,
    Simulator,
)
from services.payfip_sim.notifier import Notifier

log = logging.getLogger(__name__)

XML = "text/xml; charset=utf-8"
PAGE_PATH = "/tpa/paiementws.web"
REFUSAL_STATUS = {"unknown": 404, "decided": 409, "expired": 410}

bp = Blueprint("payfip_sim", __name__)


def _sim() -> Simulator:
    sim: Simulator = current_app.extensions["payfip_sim"]
    return sim


def _notifier() -> Notifier:
    notifier: Notifier = current_app.extensions["payfip_sim_notifier"]
    return notifier


def return_url(payment: SimPayment) -> str:
    """``urlredirect`` with ``idop`` added to whatever query it already has."""
    parts = urlsplit(payment.urlredirect)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.append(("idop", payment.idop))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _decide(idop: str, resultrans: str, decided_by: str) -> SimPayment:
    payment = _sim().decide(idop, resultrans, decided_by)
    log.info("idop %s decided %s by %s", idop, resultrans, decided_by)
    _notifier().notify(payment, _sim().config())
    return payment


# -- SOAP ------------------------------------------------------------------------------


def _soap(body: bytes, status: int) -> Response:
    return Response(body, status=status, content_type=XML)


def _endpoint() -> str:
    base = _sim().settings.public_url or request.url_root
    return base.rstrip("/") + soap.ENDPOINT_PATH


@bp.get(soap.ENDPOINT_PATH)
def soap_documents() -> Response:
    if "wsdl" in {key.lower() for key in request.args}:
        return Response(soap.wsdl(_endpoint()), content_type=XML)
    if "xsd" in request.args:
        text = soap.schema(request.args["xsd"], _endpoint())
        if text is None:
            return Response("Unknown schema", status=404, mimetype="text/plain")
        return Response(text, content_type=XML)
    return Response(
        "PaiementSecuriseService (simulateur PayFiP): POST SOAP 1.1 here; WSDL at ?wsdl\n",
        mimetype="text/plain",
    )


@bp.post(soap.ENDPOINT_PATH)
def soap_call() -> Response:
    if request.mimetype != "text/xml":
        # SOAP 1.1 over HTTP is text/xml only; JAX-WS refuses anything else this way.
        return _soap(soap.client_fault(f"Unsupported Content-Type: {request.mimetype}"), 415)
    try:
        operation, arg0 = soap.parse_request(request.get_data())
    except soap.SoapClientError as e:
        return _soap(soap.client_fault(str(e)), 500)
    if operation not in OPERATIONS:
        return _soap(soap.client_fault(f"Cannot find dispatch method for {operation}"), 500)

    sim = _sim()
    failure, sleep_seconds = sim.take_failure(operation)
    if failure == "timeout":
        # Then carry on: a call the client gave up on may still have taken effect.
        log.info("%s: sleeping %.1fs before answering", operation, sleep_seconds)
        sim.sleep(sleep_seconds)
    elif failure == "http500":
        return Response("Internal Server Error\n", status=500, mimetype="text/plain")
    elif failure == "tech":
        return _soap(soap.unavailable_fault(), 500)
    elif failure is not None:
        return _soap(soap.business_fault(failure, Fault(failure).libelle), 500)

    try:
        if operation == "creerPaiementSecurise":
            values: list[tuple[str, str | None]] = [("idOp", sim.create(arg0).idop)]
        elif operation == "recupererDetailPaiementSecurise":
            values = sim.detail(arg0.get("idOp")).detail()
        else:
            values = sim.client(arg0.get("numCli"))
    except Fault as fault:
        log.info("%s: fault %s", operation, fault)
        return _soap(soap.business_fault(fault.code, fault.libelle), 500)
    return _soap(soap.response(operation, values), 200)


# -- payment page ----------------------------------------------------------------------


def _refusal(refusal: PageRefusal) -> tuple[str, int]:
    return pages.refusal(refusal.reason), REFUSAL_STATUS[refusal.reason]


def _after_decision(idop: str, resultrans: str, decided_by: str) -> Any:
    try:
        payment = _decide(idop, resultrans, decided_by)
    except PageRefusal as refusal:  # decided by another tab or the control API meanwhile
        return _refusal(refusal)
    return redirect(return_url(payment), code=303)


@bp.get(PAGE_PATH)
def home() -> Any:
    try:
        payment = _sim().for_page(request.args.get("idop"))
    except PageRefusal as refusal:
        return _refusal(refusal)
    return pages.home(payment)


@bp.post(PAGE_PATH)
def choose() -> Any:
    idop = request.form.get("idop", "")
    try:
        payment = _sim().for_page(idop)
    except PageRefusal as refusal:
        return _refusal(refusal)
    choice = request.form.get("choix")
    if choice == "carte":
        return pages.card(payment)
    if choice == "prelevement":
        return pages.debit(payment)
    if choice == "annuler":
        return _after_decision(idop, "A", "page")
    return pages.home(payment), 400


def _pay_with(means: str, fields: tuple[str, ...],
              check: Callable[[dict[str, str]], dict[str, str]],
              page: Callable[[SimPayment, dict[str, str], dict[str, str]], str],
              outcome: Callable[[dict[str, str]], str], secret: tuple[str, ...] = ()) -> Any:
    """A means of payment's form posted: cancelled, shown again with its errors (422, the
    ``secret`` fields emptied), or decided by ``outcome`` of the fields' values."""
    idop = request.form.get("idop", "")
    try:
        payment = _sim().for_page(idop)
    except PageRefusal as refusal:
        return _refusal(refusal)
    if request.form.get("action") == "annuler":
        return _after_decision(idop, "A", means)
    values = {name: request.form.get(name, "") for name in fields}
    errors = check(values)
    if errors:
        for name in secret:
            values[name] = ""
        return page(payment, values, errors), 422
    return _after_decision(idop, outcome(values), means)


def card_errors(values: dict[str, str]) -> dict[str, str]:
    errors = {}
    number = values["numero"].replace(" ", "")
    if not (number.isdigit() and 12 <= len(number) <= 19):
        errors["numero"] = "Le numéro de carte doit comporter de 12 à 19 chiffres."
    expiry = values["expiration"].strip()
    month, _, year = expiry.partition("/")
    if not (len(month) == 2 and month.isdigit() and 1 <= int(month) <= 12
            and len(year) == 2 and year.isdigit()):
        errors["expiration"] = "La date d'expiration doit être au format MM/AA."
    cvv = values["cvv"].strip()
    if not (cvv.isdigit() and len(cvv) in (3, 4)):
        errors["cvv"] = "Le cryptogramme visuel doit comporter 3 ou 4 chiffres."
    return errors


def card_outcome(values: dict[str, str]) -> str:
    last_digit = int(values["numero"].replace(" ", "")[-1])
    return "P" if last_digit % 2 == 0 else "R"


@bp.post(PAGE_PATH + "/carte")
def card() -> Any:
    # A security code is never sent back to the browser.
    return _pay_with("carte", ("numero", "expiration", "cvv"), card_errors, pages.card,
                     card_outcome, secret=("cvv",))


def debit_errors(values: dict[str, str]) -> dict[str, str]:
    errors = {}
    if not values["titulaire"].strip():
        errors["titulaire"] = "Indiquez le titulaire du compte."
    iban = values["iban"].replace(" ", "").upper()
    if not (15 <= len(iban) <= 34 and iban[:2].isalpha() and iban[2:4].isdigit()
            and iban.isalnum()):
        errors["iban"] = "L'IBAN doit commencer par 2 lettres et 2 chiffres (15 à 34 caractères)."
    return errors


def debit_outcome(values: dict[str, str]) -> str:
    last = values["iban"].replace(" ", "")[-1]
    refused = last.isdigit() and int(last) % 2 == 1
    return "Z" if refused else "V"


@bp.post(PAGE_PATH + "/prelevement")
def debit() -> Any:
    return _pay_with("prelevement", ("titulaire", "iban"), debit_errors, pages.debit,
                     debit_outcome)


# -- control API for tests -------------------------------------------------------------


def _bad(field: str, message: str, status: int = 400) -> tuple[Response, int]:
    names = {400: "Bad Request", 404: "Not Found", 409: "Conflict"}
    return jsonify(error_body(status, names[status], field, message)), status


def _json_body() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    if body is None and not request.get_data():
        return {}
    return body if isinstance(body, dict) else None


def _from_this_machine() -> bool:
    try:
        peer = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    mapped = getattr(peer, "ipv4_mapped", None)
    return bool(peer.is_loopback or (mapped is not None and mapped.is_loopback))


@bp.before_request
def control_api_for_this_machine_only() -> tuple[Response, int] | None:
    # The controls decide payments and move the clock: they answer only a client on this
    # machine (the tests, make run's), never one through a published port or a network,
    # which reaches the simulator from another address. The peer's address, not a header.
    if request.path.startswith("/_sim/") and not _from_this_machine():
        body = error_body(403, "Forbidden", "client",
                          "the control API answers this machine only", "request")
        return jsonify(body), 403
    return None


@bp.post("/_sim/payments/<idop>/outcome")
def control_outcome(idop: str) -> Any:
    body = _json_body()
    if body is None:
        return _bad("json", "a JSON object is required")
    resultrans = body.get("resultrans")
    if resultrans not in RESULTS:
        return _bad("resultrans", f"one of {', '.join(RESULTS)}")
    try:
        payment = _decide(idop, resultrans, "control")
    except PageRefusal as refusal:
        messages = {"unknown": "unknown idop", "decided": "already decided",
                    "expired": "older than 15 minutes and never paid"}
        status = 404 if refusal.reason == "unknown" else 409
        return _bad("idop", messages[refusal.reason], status)
    return {
        "idop": idop,
        "resultrans": resultrans,
        "redirect_url": return_url(payment),
        "payment": payment.as_json(_sim().clock.now()),
    }


@bp.get("/_sim/payments")
def control_payments() -> Any:
    return _sim().snapshot()


@bp.get("/_sim/payments/<idop>")
def control_payment(idop: str) -> Any:
    payment = _sim().get(idop)
    if payment is None:
        return _bad("idop", "unknown idop", 404)
    return payment.as_json(_sim().clock.now())


@bp.get("/_sim/config")
def control_get_config() -> Any:
    return _sim().config().as_json()


@bp.post("/_sim/config")
def control_config() -> Any:
    body = _json_body()
    if body is None:
        return _bad("json", "a JSON object is required")
    try:
        return _sim().configure(body).as_json()
    except ConfigError as e:
        return _bad(e.name, e.message)


@bp.post("/_sim/reset")
def control_reset() -> Any:
    _sim().reset()
    _notifier().reset()
    return {"status": "reset"}


@bp.post("/_sim/purge")
def control_purge() -> Any:
    body = _json_body()
    if body is None:
        return _bad("json", "a JSON object is required")
    include_decided = body.get("include_decided", False)
    if not isinstance(include_decided, bool):
        return _bad("include_decided", "true or false")
    return {"purged": _sim().purge(include_decided)}


@bp.post("/_sim/clock")
def control_clock() -> Any:
    body = _json_body()
    if body is None:
        return _bad("json", "a JSON object is required")
    seconds = body.get("advance_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return _bad("advance_seconds", "a number of seconds >= 0 is required")
    now = _sim().advance(seconds)
    return {"now": now.isoformat(), "offset_seconds": _sim().clock.offset.total_seconds()}


@bp.get("/_sim/notifications")
def control_notifications() -> Any:
    return {"notifications": _notifier().records()}


@bp.get("/health")
def health() -> Any:
    return {"status": "ok"}


class NotEnabled(RuntimeError):
    """The simulator was started without PAYFIP_SIM_ENABLED=1."""


def create_app(settings: SimSettings | None = None) -> Flask:
    settings = settings if settings is not None else SimSettings()
    if not settings.enabled:
        # It confirms any payment it is asked: started in production by mistake (a wrong
        # command, a compose file without its profile), it must not answer at all.
        raise NotEnabled(
            "the PayFiP simulator takes no real payment and starts only with "
            "PAYFIP_SIM_ENABLED=1 (make run, the tests and compose's dev profile set it)"
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes()
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["payfip_sim"] = Simulator(settings)
    app.extensions["payfip_sim_notifier"] = Notifier(settings.notify_timeout)
    app.register_blueprint(bp)
    return app
