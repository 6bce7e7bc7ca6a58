"""One contract for the ``Gateway`` port, run on both of its implementations.

``FakeGateway`` (in memory, what the payment tests use) and ``PayFiPGateway`` (eopayment's
SOAP client, here aimed at the PayFiP simulator served for real on a free port) must answer
alike: whatever the payment service was tested against with the fake holds on the wire.
Each test gets a ``Subject``: the gateway and the test's levers over "PayFiP" (decide an
outcome, refuse the next creation, purge an idop, cut PayFiP off).
"""

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

import pytest
import requests

from services.common.messaging.broker import free_port
from services.payfip_sim.model import SimSettings
from services.payment.gateway import (
    UNREACHABLE,
    FakeGateway,
    Gateway,
    GatewayError,
    PaymentOrder,
)
from services.payment.payfip import PayFiPGateway
from tests.payfip import PAGE_PATH, SERVICE_PATH, served_sim

UNKNOWN_NUMCLI = "999999"
OUTCOMES = ("P", "V", "R", "Z", "A")


def order(**changes: Any) -> PaymentOrder:
    base = PaymentOrder(
        numcli="000001", saisie="T", exer="2025",
        refdet="SPORTS" + uuid.uuid4().hex[:12].upper(), amount_cents=3750,
        email="parent@example.org", objet="Factures S 1 S 2",
        urlnotif="http://127.0.0.1:9/payfip/notification",
        urlredirect="http://127.0.0.1:9/payfip/return",
    )
    return replace(base, **changes)


@dataclass
class Subject:
    """A gateway and what a test can make its PayFiP do."""

    gateway: Gateway
    decide: Callable[[str, str], None]  # idop, resultrans
    refuse_next_create: Callable[[str], None]  # with this fault code
    purge: Callable[[str], None]  # the nightly purge forgets this idop
    known: Callable[[], set[str]]  # the idops PayFiP holds
    # Ways to lose PayFiP: each gives a gateway whose calls get no answer.
    cut_offs: dict[str, Callable[[], Gateway]]


# -- the fake ----------------------------------------------------------------------------


def fake_subject() -> Subject:
    fake = FakeGateway()

    def refuse(code: str) -> None:
        fake.fail_create = GatewayError(code, "refused by the test")

    def cut_off() -> Gateway:
        fake.unreachable = True
        return fake

    return Subject(
        gateway=fake, decide=fake.decide, refuse_next_create=refuse, purge=fake.purged.add,
        known=lambda: set(fake.orders) - fake.purged, cut_offs={"unreachable": cut_off},
    )


# -- the simulator -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    settings = SimSettings(
        unknown_numcli=frozenset({UNKNOWN_NUMCLI}), notify_timeout=0.5, public_url=""
    )
    with served_sim(settings) as url:
        yield url


@pytest.fixture(scope="module")
def sim_gateway(sim_url: str) -> PayFiPGateway:
    # Built once: eopayment loads its bundled WSDL and XSDs for each client.
    return PayFiPGateway(sim_url + SERVICE_PATH, sim_url + PAGE_PATH, timeout=10.0)


def control(sim_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.post(f"{sim_url}/_sim/{path}", json=body or {}, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def sim_subject(sim_url: str, gateway: PayFiPGateway) -> Subject:
    def refuse(code: str) -> None:
        control(sim_url, "config", {"fail": code, "fail_count": 1,
                                    "fail_operation": "creerPaiementSecurise"})

    def purge(idop: str) -> None:
        control(sim_url, "clock", {"advance_seconds": 16 * 60})
        assert idop in control(sim_url, "purge", {"include_decided": True})["purged"]

    def known() -> set[str]:
        answer = requests.get(f"{sim_url}/_sim/payments", timeout=5)
        return {p["idop"] for p in answer.json()["payments"]}

    def failing(fail: str, timeout: float = 10.0) -> Callable[[], Gateway]:
        def cut_off() -> Gateway:
            control(sim_url, "config", {"fail": fail, "fail_count": None,
                                        "fail_sleep_seconds": 5.0})
            return PayFiPGateway(sim_url + SERVICE_PATH, sim_url + PAGE_PATH, timeout)
        return cut_off

    def closed_port() -> Gateway:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        return PayFiPGateway(url + SERVICE_PATH, url + PAGE_PATH, timeout=2.0)

    return Subject(
        gateway=gateway,
        decide=lambda idop, resultrans: control(
            sim_url, f"payments/{idop}/outcome", {"resultrans": resultrans}),
        refuse_next_create=refuse, purge=purge, known=known,
        cut_offs={
            # A client that gives up before PayFiP answers: eopayment's HTTP error.
            "timeout": failing("timeout", timeout=0.3),
            "closed-port": closed_port,
            # Not a PayFiP business fault: a plain 500, and a technical fault.
            "http500": failing("http500"),
            "tech": failing("tech"),
        },
    )


@pytest.fixture(params=["fake", "payfip"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        yield fake_subject()
        return
    sim_url: str = request.getfixturevalue("sim_url")
    control(sim_url, "reset")
    yield sim_subject(sim_url, request.getfixturevalue("sim_gateway"))
    control(sim_url, "reset")


def refused(call: Callable[[], Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        call()
    assert caught.value.message, caught.value
    return caught.value


# -- the contract ------------------------------------------------------------------------


def test_create_answers_an_idop_and_a_payment_page(subject: Subject) -> None:
    first, answer = subject.gateway.create(order())
    second, _ = subject.gateway.create(order())
    assert len(first) == 36 and str(uuid.UUID(first)) == first
    assert second != first
    assert answer["idOp"] == first
    assert subject.gateway.payment_url(first).endswith(f"?idop={first}")
    assert re.match(r"^https?://", subject.gateway.payment_url(first))
    assert {first, second} <= subject.known()


def test_no_result_before_a_decision(subject: Subject) -> None:
    idop, _ = subject.gateway.create(order())
    assert refused(lambda: subject.gateway.result(idop)).code == "P5"
    # Asking does not change anything: still in progress.
    assert refused(lambda: subject.gateway.result(idop)).code == "P5"


@pytest.mark.parametrize("resultrans", OUTCOMES)
def test_each_outcome_is_read_back(subject: Subject, resultrans: str) -> None:
    placed = order(amount_cents=4321)
    idop, _ = subject.gateway.create(placed)
    other, _ = subject.gateway.create(order())
    subject.decide(idop, resultrans)

    result = subject.gateway.result(idop)
    assert result.resultrans == resultrans
    assert result.amount_cents == placed.amount_cents
    assert re.fullmatch(r"[0-9]{8}", result.dattrans)
    assert re.fullmatch(r"[0-9]{4}", result.heurtrans)
    datetime.strptime(result.dattrans + result.heurtrans, "%d%m%Y%H%M")  # a real moment
    if resultrans in ("P", "V"):
        assert result.numauto  # the authorisation number of a payment
    else:
        assert result.numauto == ""
    assert result.raw["idOp"] == idop
    assert result.raw["resultrans"] == resultrans
    assert result.raw["refdet"] == placed.refdet
    assert int(result.raw["montant"]) == placed.amount_cents
    # The answer is stored and may be logged: the payer's address it repeats is not kept.
    assert "mel" not in result.raw and placed.email not in str(result.raw)
    # The same answer every time: a notification and the browser return both read it.
    assert subject.gateway.result(idop) == result
    # The other idop is untouched.
    assert refused(lambda: subject.gateway.result(other)).code == "P5"


def test_an_unknown_idop_is_p1(subject: Subject) -> None:
    assert refused(lambda: subject.gateway.result(str(uuid.uuid4()))).code == "P1"
    assert refused(lambda: subject.gateway.result("not an idop")).code == "P1"


@pytest.mark.parametrize("decided", [False, True], ids=["undecided", "decided"])
def test_a_purged_idop_is_p1(subject: Subject, decided: bool) -> None:
    idop, _ = subject.gateway.create(order())
    if decided:
        subject.decide(idop, "P")
    subject.purge(idop)
    assert refused(lambda: subject.gateway.result(idop)).code == "P1"
    assert idop not in subject.known()


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param({"numcli": "12345"}, "T1", id="numcli-5-digits"),
        pytest.param({"numcli": UNKNOWN_NUMCLI}, "T2", id="numcli-unknown"),
        pytest.param({"refdet": "ABCD"}, "R3", id="refdet-too-short"),
        pytest.param({"refdet": "R" * 31}, "R3", id="refdet-too-long"),
        pytest.param({"refdet": "SPORTS-2025-01"}, "R3", id="refdet-hyphens"),
        pytest.param({"email": ""}, "A1", id="email-missing"),
        pytest.param({"email": "parent.example.org"}, "A2", id="email-no-at"),
        pytest.param({"email": "p" * 69 + "@example.org"}, "A2", id="email-81-chars"),
        pytest.param({"email": "a@b.c"}, "A2", id="email-5-chars"),
        # PayFiP checks the mel before the amount.
        pytest.param({"email": "nope", "amount_cents": 10**9}, "A2", id="email-before-amount"),
        pytest.param({"amount_cents": -100}, "M1", id="amount-negative"),
        pytest.param({"amount_cents": 0}, "M3", id="amount-zero"),
        pytest.param({"amount_cents": 99}, "M3", id="amount-under-1-euro"),
        pytest.param({"amount_cents": 10_000_000}, "M5", id="amount-100000-euros"),
        pytest.param({"urlnotif": "pay.test/payfip/notification"}, "N1", id="urlnotif"),
        pytest.param({"urlredirect": "ftp://pay.test/return"}, "D1", id="urlredirect"),
        pytest.param({"saisie": "P"}, "S1", id="saisie"),
    ],
)
def test_payfip_refuses_a_bad_order(subject: Subject, changes: dict[str, Any],
                                    code: str) -> None:
    assert refused(lambda: subject.gateway.create(order(**changes))).code == code
    assert subject.known() == set()  # no idop was made


def test_the_limits_of_an_order_are_taken(subject: Subject) -> None:
    for changes in ({"amount_cents": 100}, {"amount_cents": 9_999_999},
                    {"refdet": "ABCDEF"}, {"refdet": "a" * 30},
                    {"email": "a@b.fr"}, {"email": "p" * 68 + "@example.org"},
                    {"objet": ""}, {"saisie": "W"}):
        idop, _ = subject.gateway.create(order(**changes))
        assert refused(partial(subject.gateway.result, idop)).code == "P5", changes


@pytest.mark.parametrize("code", ["R3", "A2", "T4", "P3"])
def test_a_refusal_carries_payfips_code(subject: Subject, code: str) -> None:
    subject.refuse_next_create(code)
    assert refused(lambda: subject.gateway.create(order())).code == code
    assert subject.known() == set()


def test_an_unreachable_payfip(subject: Subject) -> None:
    idop, _ = subject.gateway.create(order())
    subject.decide(idop, "P")
    for how, cut_off in subject.cut_offs.items():
        gone = cut_off()
        assert refused(partial(gone.create, order())).code == UNREACHABLE, how
        assert refused(partial(gone.result, idop)).code == UNREACHABLE, how
