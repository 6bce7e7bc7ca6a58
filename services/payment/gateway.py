"""The PayFiP gateway port, and an in-memory fake of it for unit tests."""

import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from events.formats import NUMCLI, PARIS, exact
from services.payment.domain import MAX_PAYMENT_CENTS, MIN_PAYMENT_CENTS


class GatewayError(Exception):
    """PayFiP refused (a fault ``code`` such as R3, P1, P5) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


UNREACHABLE = "unreachable"  # timeouts, HTTP errors: no answer from PayFiP at all

FAULT_MESSAGES = {
    "A1": "Adresse mél non renseignée.",
    "A2": "Adresse mél incorrecte.",
    "D1": "URL de redirection incorrecte.",
    "M1": "Le format du montant n'est pas conforme.",
    "M3": "Le montant doit être supérieur ou égal à 1 euro.",
    "M5": "Le montant dépasse le maximum autorisé.",
    "N1": "URL de notification incorrecte.",
    "R3": "Le format du paramètre REFDET n'est pas conforme.",
    "S1": "Le mode de saisie n'est pas conforme.",
    "T1": "Le numéro de client n'est pas conforme.",
    "T2": "Le numéro de client est inconnu de PayFiP.",
}


@dataclass(frozen=True)
class PaymentOrder:
    """What creerPaiementSecurise needs."""

    numcli: str
    saisie: str
    exer: str
    refdet: str
    amount_cents: int
    email: str
    objet: str
    urlnotif: str
    urlredirect: str


@dataclass(frozen=True)
class Result:
    """What recupererDetailPaiementSecurise answered, raw beside the fields we use."""

    resultrans: str
    numauto: str
    dattrans: str  # DDMMYYYY, Europe/Paris
    heurtrans: str  # HHMM, Europe/Paris
    amount_cents: int
    raw: dict[str, Any]


class Gateway(Protocol):
    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        """Return the idop and the raw answer, or raise GatewayError."""

    def result(self, idop: str) -> Result:
        """Return the outcome, or raise GatewayError (P5 in progress, P1 unknown, …)."""

    def payment_url(self, idop: str) -> str: ...


class CallMeter(Protocol):
    def payfip_call(self, operation: str, seconds: float, error_code: str | None) -> None:
        """One PayFiP call took ``seconds``; ``error_code`` if it failed."""


class MeasuredGateway:
    """Any Gateway, its calls timed and their failures counted by PayFiP's fault code.

    Measured here, at the port's edge, so the real client and the fake count alike.
    """

    CREATE = "creerPaiementSecurise"
    RESULT = "recupererDetailPaiementSecurise"

    def __init__(self, gateway: Gateway, meter: CallMeter) -> None:
        self.gateway = gateway
        self.meter = meter

    def _measured(self, operation: str, call: Any, *args: Any) -> Any:
        start = time.perf_counter()
        code: str | None = None
        try:
            return call(*args)
        except GatewayError as e:
            code = e.code
            raise
        except Exception:
            code = "error"  # a bug or an answer we could not read: still a failed call
            raise
        finally:
            self.meter.payfip_call(operation, time.perf_counter() - start, code)

    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        return self._measured(self.CREATE, self.gateway.create, order)  # type: ignore[no-any-return]

    def result(self, idop: str) -> Result:
        return self._measured(self.RESULT, self.gateway.result, idop)  # type: ignore[no-any-return]

    def payment_url(self, idop: str) -> str:
        return self.gateway.payment_url(idop)


# What creerPaiementSecurise checks, in PayFiP's order, as the simulator does it
# (docs/payfip-simulator.md): the first failure wins.
NUMCLI_RE = re.compile(exact(NUMCLI))
REFDET_RE = re.compile(r"^[A-Za-z0-9]{6,30}\Z")
MONTANT_RE = re.compile(r"^[0-9]+\Z")
URL_RE = re.compile(r"^https?://[^\s/?#]+\S*\Z")


def creation_fault(order: PaymentOrder, unknown_numcli: frozenset[str] = frozenset()
                   ) -> str | None:
    """The fault code PayFiP answers this order with, or None if it takes it."""
    numcli = order.numcli.strip()
    mel = order.email.strip()
    montant = str(order.amount_cents)
    checks = [
        (not NUMCLI_RE.match(numcli), "T1"),
        (numcli in unknown_numcli, "T2"),
        (not REFDET_RE.match(order.refdet.strip()), "R3"),
        (not mel, "A1"),
        ("@" not in mel or not 6 <= len(mel) <= 80, "A2"),
        (not MONTANT_RE.match(montant), "M1"),
        (MONTANT_RE.match(montant) is not None and int(montant) < MIN_PAYMENT_CENTS, "M3"),
        (MONTANT_RE.match(montant) is not None and int(montant) >= MAX_PAYMENT_CENTS, "M5"),
        (not URL_RE.match(order.urlnotif.strip()), "N1"),
        (not URL_RE.match(order.urlredirect.strip()), "D1"),
        (order.saisie.strip() not in ("T", "X", "W"), "S1"),
    ]
    return next((code for failed, code in checks if failed), None)


@dataclass
class FakeGateway:
    """PayFiP in memory: outcomes are set by the test with ``decide``.

    It checks an order as PayFiP does (the same fault codes as the simulator), keeps the
    numauto given at the decision, and can be cut off (``unreachable``); the contract suite
    in tests/integration/test_gateway_contract.py runs it beside the real client.
    """

    fail_create: GatewayError | None = None
    unreachable: bool = False
    unknown_numcli: frozenset[str] = frozenset({"999999"})
    orders: dict[str, PaymentOrder] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    numautos: dict[str, str] = field(default_factory=dict)
    purged: set[str] = field(default_factory=set)
    # Answer fields that differ from the order, per idop: PayFiP answering for another debt.
    tampered: dict[str, dict[str, str]] = field(default_factory=dict)
    # When each outcome was decided, as PayFiP's DDMMYYYY and HHMM (Paris time).
    decided_at: dict[str, tuple[str, str]] = field(default_factory=dict)
    lookups: int = 0  # recupererDetailPaiementSecurise calls, answered or not
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def _reach(self) -> None:
        if self.unreachable:
            raise GatewayError(UNREACHABLE, "HTTP error: PayFiP did not answer (fake)")

    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        self._reach()
        if self.fail_create is not None:
            raise self.fail_create
        code = creation_fault(order, self.unknown_numcli)
        if code is not None:
            raise GatewayError(code, FAULT_MESSAGES.get(code, "Erreur fonctionnelle"))
        idop = str(uuid.uuid4())
        self.orders[idop] = order
        return idop, {"idOp": idop}

    def decide(self, idop: str, resultrans: str, at: datetime | None = None) -> None:
        """PayFiP's page decided ``resultrans``; the transaction is dated 26/02/2025 14:30
        in Paris unless ``at`` is given."""
        self.outcomes[idop] = resultrans
        if at is not None:
            local = at.astimezone(PARIS)
            self.decided_at[idop] = (f"{local:%d%m%Y}", f"{local:%H%M}")
        # Given once, at the decision, as PayFiP does: every later lookup answers the same.
        self.numautos[idop] = f"{next(self._numbers):06d}-tip" if resultrans in ("P", "V") else ""

    def result(self, idop: str) -> Result:
        self.lookups += 1
        self._reach()
        if idop not in self.orders or idop in self.purged:
            raise GatewayError("P1", "IdOp incorrect")
        if idop not in self.outcomes:
            raise GatewayError("P5", "Résultat de la transaction non connu")
        order = self.orders[idop]
        resultrans = self.outcomes[idop]
        numauto = self.numautos.get(idop, "")
        dattrans, heurtrans = self.decided_at.get(idop, ("26022025", "1430"))
        raw = {"idOp": idop, "resultrans": resultrans, "numauto": numauto,
               "dattrans": dattrans, "heurtrans": heurtrans, "montant": str(order.amount_cents),
               "refdet": order.refdet, "numcli": order.numcli, "exer": order.exer,
               **self.tampered.get(idop, {})}
        return Result(resultrans, numauto, raw["dattrans"], raw["heurtrans"],
                      int(raw["montant"] or 0), raw)

    def payment_url(self, idop: str) -> str:
        return f"https://payfip.example/tpa/paiementws.web?idop={idop}"
