"""The simulator's state: idops, their results, the test controls, a clock that can be moved.

Everything lives in memory behind one lock, because gunicorn serves the simulator with
threads and a test may decide a payment while the payment service polls it.
"""

import random
import re
import threading
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.common.settings import get as get_setting

PARIS = ZoneInfo("Europe/Paris")
# PayFiP forgets nothing for 15 minutes; after that an unpaid idop can no longer be paid
# and answers P5 until the nightly purge turns it into P1.
IDOP_LIFETIME = timedelta(minutes=15)

RESULTS = ("P", "V", "R", "Z", "A")
NOTIFICATION_MODES = ("normal", "drop", "duplicate", "delay")
OPERATIONS = ("creerPaiementSecurise", "recupererDetailPaiementSecurise", "recupererDetailClient")
# Failures that are not a business fault code.
SPECIAL_FAILURES = ("timeout", "http500", "tech")
FAULT_CODE_RE = re.compile(r"^[A-Z][0-9]$")

# Wording close to PayFiP's own, so that messages matched by eopayment's tests
# ("Le format.*REFDET.*conforme", "Adresse.*incorrecte", "IdOp incorrect",
# "sultat de la transaction non connu") match here too.
FAULT_MESSAGES: dict[str, str] = {
    "A1": "Adresse mél non renseignée.",
    "A2": "Adresse mél incorrecte.",
    "D1": "URL de redirection incorrecte.",
    "M1": "Le format du montant n'est pas conforme.",
    "M3": "Le montant doit être supérieur ou égal à 1 euro.",
    "M5": "Le montant dépasse le maximum autorisé.",
    "N1": "URL de notification incorrecte.",
    "P1": "IdOp incorrect.",
    "P3": "IdOp déjà utilisé.",
    "P4": "IdOp enregistré depuis plus de 15 minutes.",
    "P5": "Résultat de la transaction non connu.",
    "R3": "Le format du paramètre REFDET n'est pas conforme.",
    "S1": "Le mode de saisie n'est pas conforme.",
    "T1": "Le numéro de client n'est pas conforme.",
    "T2": "Le numéro de client est inconnu de PayFiP.",
    "T4": "Le client n'a pas d'accès sécurisé au service.",
}

NUMCLI_RE = re.compile(r"^[0-9]{6}$")
REFDET_RE = re.compile(r"^[A-Za-z0-9]{6,30}$")
MONTANT_RE = re.compile(r"^[0-9]+$")
URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
MIN_CENTS = 100
MAX_CENTS = 10_000_000  # excluded: 99 999,99 € is the largest amount PayFiP takes

def setting(name: str) -> str:
    """The simulator's settings are declared with the others, in services.common.settings."""
    return get_setting(name)


@dataclass(frozen=True)
class SimSettings:
    unknown_numcli: frozenset[str] = field(
        default_factory=lambda: frozenset(
            n.strip() for n in setting("PAYFIP_SIM_UNKNOWN_NUMCLI").split(",") if n.strip()
        )
    )
    notify_timeout: float = field(
        default_factory=lambda: float(setting("PAYFIP_SIM_NOTIFY_TIMEOUT"))
    )
    public_url: str = field(default_factory=lambda: setting("PAYFIP_SIM_PUBLIC_URL"))
    enabled: bool = field(default_factory=lambda: setting("PAYFIP_SIM_ENABLED") == "1")


class Fault(Exception):
    """A PayFiP FonctionnelleErreur: answered as a SOAP fault, raised by eopayment."""

    def __init__(self, code: str, libelle: str | None = None) -> None:
        self.code = code
        self.libelle = libelle or FAULT_MESSAGES.get(code, "Erreur fonctionnelle simulée.")
        super().__init__(f"{code}: {self.libelle}")


class PageRefusal(Exception):
    """Why the payment page will not take a decision for an idop."""

    def __init__(self, reason: str) -> None:
        # "unknown" (P1), "decided" (P3), "expired" (P4)
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class SimPayment:
    idop: str
    numcli: str
    exer: str | None
    refdet: str
    montant: str
    mel: str
    objet: str | None
    saisie: str
    urlnotif: str
    urlredirect: str
    created_at: datetime
    resultrans: str | None = None
    numauto: str | None = None
    dattrans: str | None = None
    heurtrans: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None  # "carte", "prelevement", "page" or "control"

    @property
    def amount_cents(self) -> int:
        return int(self.montant)

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def expired(self, now: datetime) -> bool:
        return self.resultrans is None and self.age(now) > IDOP_LIFETIME

    def detail(self) -> list[tuple[str, str | None]]:
        """The ``<return>`` of recupererDetailPaiementSecurise, in the XSD's order."""
        return [
            ("dattrans", self.dattrans),
            ("exer", self.exer),
            ("heurtrans", self.heurtrans),
            ("idOp", self.idop),
            ("mel", self.mel),
            ("montant", self.montant),
            ("numauto", self.numauto),
            ("numcli", self.numcli),
            ("objet", self.objet),
            ("refdet", self.refdet),
            ("resultrans", self.resultrans),
            ("saisie", self.saisie),
        ]

    def as_json(self, now: datetime) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["decided_at"] = self.decided_at.isoformat() if self.decided_at else None
        data["age_seconds"] = round(self.age(now).total_seconds(), 3)
        if self.resultrans is not None:
            data["state"] = "decided"
        elif self.expired(now):
            data["state"] = "expired"
        else:
            data["state"] = "in_progress"
        return data


@dataclass
class SimConfig:
    """What the tests set through ``POST /_sim/config``."""

    notification: str = "normal"
    delay_seconds: float = 2.0
    # PayFiP is reported to send ``idop``; some clients read ``idOp``: both can be tried.
    notification_field: str = "idop"
    hold: bool = False
    fail: str | None = None
    # How many SOAP calls the failure applies to; None: every call until ``fail`` is cleared.
    fail_count: int | None = 1
    fail_operation: str | None = None
    fail_sleep_seconds: float = 20.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class ConfigError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name}: {message}")


def _number(name: str, value: Any, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(name, f"a number >= {minimum} is required")
    return float(value)


def updated_config(config: SimConfig, changes: dict[str, Any]) -> SimConfig:
    known = {f.name for f in fields(SimConfig)}
    for name in changes:
        if name not in known:
            raise ConfigError(name, f"unknown setting; known: {', '.join(sorted(known))}")
    new = replace(config)
    for name, value in changes.items():
        if name == "notification":
            if value not in NOTIFICATION_MODES:
                raise ConfigError(name, f"one of {', '.join(NOTIFICATION_MODES)}")
            new.notification = value
        elif name in ("delay_seconds", "fail_sleep_seconds"):
            setattr(new, name, _number(name, value))
        elif name == "notification_field":
            if value not in ("idop", "idOp"):
                raise ConfigError(name, "idop or idOp")
            new.notification_field = value
        elif name == "hold":
            if not isinstance(value, bool):
                raise ConfigError(name, "true or false")
            new.hold = value
        elif name == "fail":
            if value is not None and not (
                isinstance(value, str)
                and (value in SPECIAL_FAILURES or FAULT_CODE_RE.match(value))
            ):
                raise ConfigError(
                    name, "null, a fault code such as R3 or P5, timeout, http500 or tech"
                )
            new.fail = value
        elif name == "fail_count":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(name, "null (until cleared) or an integer >= 1")
            new.fail_count = value
        elif name == "fail_operation":
            if value is not None and value not in OPERATIONS:
                raise ConfigError(name, f"null or one of {', '.join(OPERATIONS)}")
            new.fail_operation = value
    return new


class Clock:
    """Real time plus an offset the tests can advance, to age idops without waiting."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _text(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def validate_creation(
    arg0: dict[str, str | None], unknown_numcli: frozenset[str]
) -> dict[str, str | None]:
    """Check creerPaiementSecurise's fields as PayFiP does, raising its fault codes.

    The order matters when several fields are wrong: PayFiP answered A2 for a request
    whose mel had no @ and whose amount was far over the limit, so mel comes before the
    amount.
    """
    numcli = _text(arg0.get("numcli"))
    if not numcli or not NUMCLI_RE.match(numcli):
        raise Fault("T1")
    if numcli in unknown_numcli:
        raise Fault("T2")
    refdet = _text(arg0.get("refdet"))
    if not refdet or not REFDET_RE.match(refdet):
        raise Fault("R3")
    mel = _text(arg0.get("mel"))
    if not mel:
        raise Fault("A1")
    if "@" not in mel or not 6 <= len(mel) <= 80:
        raise Fault("A2")
    montant = _text(arg0.get("montant"))
    if not montant or not MONTANT_RE.match(montant):
        raise Fault("M1")
    if int(montant) < MIN_CENTS:
        raise Fault("M3")
    if int(montant) >= MAX_CENTS:
        raise Fault("M5")
    urlnotif = _text(arg0.get("urlnotif"))
    if not urlnotif or not URL_RE.match(urlnotif):
        raise Fault("N1")
    urlredirect = _text(arg0.get("urlredirect"))
    if not urlredirect or not URL_RE.match(urlredirect):
        raise Fault("D1")
    saisie = _text(arg0.get("saisie"))
    if saisie not in ("T", "X", "W"):
        raise Fault("S1")
    return {
        "numcli": numcli, "refdet": refdet, "mel": mel, "montant": montant,
        "urlnotif": urlnotif, "urlredirect": urlredirect, "saisie": saisie,
        "exer": arg0.get("exer"), "objet": arg0.get("objet"),
    }


def numauto_for(saisie: str) -> str:
    # The only authorisation number ever seen from test mode; production ones vary.
    if saisie == "T":
        return "112233445566-tip"
    return f"{random.randint(0, 999_999_999_999):012d}"


class Simulator:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.clock = Clock()
        self._lock = threading.RLock()
        self._payments: dict[str, SimPayment] = {}
        self._purged: list[str] = []
        self._config = SimConfig()
        self._fail_remaining: int | None = None
        # Set on reset so that a request sleeping in "timeout" mode ends with the test.
        self._wake = threading.Event()

    # -- SOAP operations -------------------------------------------------------------

    def create(self, arg0: dict[str, str | None]) -> SimPayment:
        valid = validate_creation(arg0, self.settings.unknown_numcli)
        with self._lock:
            payment = SimPayment(
                idop=str(uuid.uuid4()),
                numcli=str(valid["numcli"]),
                exer=valid["exer"],
                refdet=str(valid["refdet"]),
                montant=str(valid["montant"]),
                mel=str(valid["mel"]),
                objet=valid["objet"],
                saisie=str(valid["saisie"]),
                urlnotif=str(valid["urlnotif"]),
                urlredirect=str(valid["urlredirect"]),
                created_at=self.clock.now(),
            )
            self._payments[payment.idop] = payment
            return payment

    def detail(self, idop: str | None) -> SimPayment:
        with self._lock:
            payment = self._payments.get(idop or "")
            if payment is None:
                raise Fault("P1")
            if payment.resultrans is None or self._config.hold:
                raise Fault("P5")
            return payment

    def client(self, numcli: str | None) -> list[tuple[str, str | None]]:
        numcli = _text(numcli)
        if not numcli or not NUMCLI_RE.match(numcli):
            raise Fault("T1")
        if numcli in self.settings.unknown_numcli:
            raise Fault("T2")
        return [
            ("libelleN1", "SIMULATEUR PAYFIP"),
            ("libelleN2", f"REGIE {numcli}"),
            ("libelleN3", "COLLECTIVITE DE DEMONSTRATION"),
            ("numcli", numcli),
        ]

    def take_failure(self, operation: str) -> tuple[str | None, float]:
        """The failure the next call of ``operation`` must show, used up as it is taken."""
        with self._lock:
            config = self._config
            if config.fail is None:
                return None, 0.0
            if config.fail_operation is not None and config.fail_operation != operation:
                return None, 0.0
            failure = config.fail
            if self._fail_remaining is not None:
                self._fail_remaining -= 1
                if self._fail_remaining <= 0:
                    self._config = replace(config, fail=None)
                    self._fail_remaining = None
            return failure, config.fail_sleep_seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            wake = self._wake
        wake.wait(seconds)

    # -- the payment page and the control API ----------------------------------------

    def for_page(self, idop: str | None) -> SimPayment:
        with self._lock:
            payment = self._payments.get(idop or "")
            if payment is None:
                raise PageRefusal("unknown")
            if payment.resultrans is not None:
                raise PageRefusal("decided")
            if payment.expired(self.clock.now()):
                raise PageRefusal("expired")
            return payment

    def decide(self, idop: str, resultrans: str, decided_by: str) -> SimPayment:
        if resultrans not in RESULTS:
            raise ValueError(resultrans)
        with self._lock:
            payment = self.for_page(idop)
            now = self.clock.now()
            local = now.astimezone(PARIS)
            paid = resultrans in ("P", "V")
            payment = replace(
                payment,
                resultrans=resultrans,
                numauto=numauto_for(payment.saisie) if paid else None,
                dattrans=local.strftime("%d%m%Y"),
                heurtrans=local.strftime("%H%M"),
                decided_at=now,
                decided_by=decided_by,
            )
            self._payments[idop] = payment
            return payment

    def get(self, idop: str) -> SimPayment | None:
        with self._lock:
            return self._payments.get(idop)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock.now()
            return {
                "now": now.isoformat(),
                "payments": [p.as_json(now) for p in self._payments.values()],
                "purged": list(self._purged),
            }

    def config(self) -> SimConfig:
        with self._lock:
            return replace(self._config)

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        with self._lock:
            new = updated_config(self._config, changes)
            if "fail" in changes or "fail_count" in changes:
                self._fail_remaining = new.fail_count if new.fail is not None else None
            self._config = new
            return replace(new)

    def purge(self, include_decided: bool = False) -> list[str]:
        """The nightly job: idops older than their lifetime become unknown (P1)."""
        with self._lock:
            now = self.clock.now()
            gone = [
                p.idop for p in self._payments.values()
                if p.age(now) > IDOP_LIFETIME and (include_decided or p.resultrans is None)
            ]
            for idop in gone:
                del self._payments[idop]
            self._purged.extend(gone)
            return gone

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self.clock.offset += timedelta(seconds=seconds)
            return self.clock.now()

    def reset(self) -> None:
        with self._lock:
            self._payments.clear()
            self._purged.clear()
            self._config = SimConfig()
            self._fail_remaining = None
            self.clock.offset = timedelta(0)
            self._wake.set()
            self._wake = threading.Event()
