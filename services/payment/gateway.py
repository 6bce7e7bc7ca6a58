"""The PayFiP gateway port, and an in-memory fake of it for unit tests."""

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol


class GatewayError(Exception):
    """PayFiP refused (a fault ``code`` such as R3, P1, P5) or could not be reached."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


UNREACHABLE = "unreachable"  # timeouts, HTTP errors: no answer from PayFiP at all


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


@dataclass
class FakeGateway:
    """PayFiP in memory: outcomes are set by the test with ``decide``."""

    fail_create: GatewayError | None = None
    orders: dict[str, PaymentOrder] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    purged: set[str] = field(default_factory=set)
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        if self.fail_create is not None:
            raise self.fail_create
        idop = str(uuid.uuid4())
        self.orders[idop] = order
        return idop, {"idOp": idop}

    def decide(self, idop: str, resultrans: str) -> None:
        self.outcomes[idop] = resultrans

    def result(self, idop: str) -> Result:
        if idop not in self.orders or idop in self.purged:
            raise GatewayError("P1", "IdOp incorrect")
        if idop not in self.outcomes:
            raise GatewayError("P5", "Résultat de la transaction non connu")
        order = self.orders[idop]
        resultrans = self.outcomes[idop]
        numauto = f"{next(self._numbers):06d}-tip" if resultrans in "PV" else ""
        raw = {"idOp": idop, "resultrans": resultrans, "numauto": numauto,
               "dattrans": "26022025", "heurtrans": "1430", "montant": str(order.amount_cents),
               "refdet": order.refdet, "numcli": order.numcli}
        return Result(resultrans, numauto, "26022025", "1430", order.amount_cents, raw)

    def payment_url(self, idop: str) -> str:
        return f"https://payfip.example/tpa/paiementws.web?idop={idop}"
