"""Régie's parts as separate processes, for the end-to-end tests."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests

from services.common.messaging.broker import free_port
from services.common.settings import Settings
from services.run import SERVED, served_argv
from tests.conftest import make_settings
from tests.factories import invoice_payload

ISSUER, READER, PAYER = "issuer-token", "reader-token", "payer-token"
# The simulator's test cards: the first is paid, the second refused.
CARD_OK, CARD_REFUSED = "4970 1000 0000 0002", "4970 1000 0000 0003"
TOKENS = f"{ISSUER}:issuer,{READER}:reader,{PAYER}:payer"
# Every part of a whole-system run with PayFiP played by the simulator.
SIM_PARTS = ("payfip-sim", "billing-api", "payment-api", "relay", "consumer", "payment-relay",
             "billing-consumer")


class System:
    def __init__(self, settings: Settings, env: dict[str, str], logs: Path) -> None:
        self.settings = settings
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.billing = f"http://127.0.0.1:{env['BILLING_PORT']}"
        self.payment = f"http://127.0.0.1:{env['PAYMENT_PORT']}"

    def argv(self, name: str) -> list[str]:
        if name in SERVED:
            # Served as `regie run` serves it; BILLING_PORT for billing-api, and so on.
            port = self.env[name.removesuffix("-api").replace("-", "_").upper() + "_PORT"]
            return served_argv(name, port)
        commands = {
            "relay": ["relay", "billing"],
            "consumer": ["consume", "payment"],
            "payment-relay": ["relay", "payment"],
            "billing-consumer": ["consume", "billing"],
            "reconciler": ["reconcile"],
        }
        return [sys.executable, "-m", "services.cli", *commands[name]]

    def start(self, name: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                self.argv(name), env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill9(name)

    def wait_up(self, *more: str) -> None:
        for url in (self.billing, self.payment, *more):
            # Generous: on a busy machine, servers of two workers each import the whole
            # application twice over before the first answer.
            deadline = time.monotonic() + 90
            while True:
                try:
                    if requests.get(f"{url}/health", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start: see {self.logs}"
                for name, proc in self.procs.items():
                    assert proc.poll() is None, f"{name} died: see {self.logs}/{name}.log"
                time.sleep(0.1)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(f"{self.billing}{path}", json=body, timeout=60,
                             headers={"Authorization": f"Bearer {ISSUER}"})

    def to_pay(self, family: str) -> dict[str, Any]:
        r = requests.get(f"{self.payment}/families/{family}/to-pay", timeout=10,
                         headers={"Authorization": f"Bearer {READER}"})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def all_to_pay(self, families: list[str]) -> dict[str, Any]:
        return {family: self.to_pay(family) for family in families}

    def regie_lines(self, family: str, regie: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.payment}/families/{family}/to-pay/{regie}", timeout=10,
                         headers={"Authorization": f"Bearer {READER}"})
        r.raise_for_status()
        return r.json()["invoices"]  # type: ignore[no-any-return]


class SimSystem(System):
    """A whole system whose PayFiP is the simulator, on its own port."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sim = f"http://127.0.0.1:{self.env['PAYFIP_SIM_PORT']}"

    def sim_config(self, **config: Any) -> None:
        r = requests.post(f"{self.sim}/_sim/config", json=config, timeout=5)
        assert r.ok, r.text


S = TypeVar("S", bound=System)


def sim_system(cls: type[S], tmp: Path, kafka: Any, *more_ports: str, tokens: str = TOKENS) -> S:
    """A whole system on SQLite and ``kafka`` (a fresh topic prefix), logging under ``tmp``,
    with PayFiP played by the simulator.

    Billing, payment, the simulator and each of ``more_ports`` get a free port. Whatever else
    a run needs goes into the system's ``env`` before anything starts.
    """
    prefix = f"p{uuid.uuid4().hex[:8]}."
    settings = make_settings("sqlite", tmp, kafka_bootstrap=kafka.bootstrap,
                             kafka_broker=kafka.kind, topic_prefix=prefix)
    ports = {k: str(free_port()) for k in
             ("BILLING_PORT", "PAYMENT_PORT", "PAYFIP_SIM_PORT", *more_ports)}
    sim = f"http://127.0.0.1:{ports['PAYFIP_SIM_PORT']}"
    env = dict(os.environ)
    env.update(
        ports, REGIE_VAR_DIR=str(settings.var_dir), PERSISTENCE_MODULE=settings.persistence,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap, KAFKA_BROKER=kafka.kind,
        KAFKA_TOPIC_PREFIX=prefix,
        REGIE_TOKENS=tokens,
        REGIE_POLL_INTERVAL="0.05",
        PAYFIP_SERVICE_URL=f"{sim}/tpa/services/securite",
        PAYFIP_PAYMENT_URL=f"{sim}/tpa/paiementws.web",
        # PayFiP sends the browser back to the payment API.
        PAYMENT_PUBLIC_URL=f"http://127.0.0.1:{ports['PAYMENT_PORT']}",
    )
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return cls(settings, env, logs)


@contextmanager
def running(s: S, parts: tuple[str, ...], *urls: str) -> Iterator[S]:
    """``s`` with ``parts`` started and billing, payment and ``urls`` answering; all
    stopped after."""
    try:
        for name in parts:
            s.start(name)
        s.wait_up(*urls)
        yield s
    finally:
        s.stop_all()


def issue(s: System, family: str, number: str, cents: int, regie: str = "SPORTS",
          label: str = "Vacances sportives") -> str:
    r = s.post("/invoices", invoice_payload(number=number, family=family, regie=regie,
                                            unit=cents, label=label))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
