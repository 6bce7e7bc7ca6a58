"""Régie's parts as separate processes, for the end-to-end tests."""

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from services.common.settings import Settings

ISSUER, READER = "issuer-token", "reader-token"


class System:
    def __init__(self, settings: Settings, env: dict[str, str], logs: Path) -> None:
        self.settings = settings
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.billing = f"http://127.0.0.1:{env['BILLING_PORT']}"
        self.payment = f"http://127.0.0.1:{env['PAYMENT_PORT']}"

    def argv(self, name: str) -> list[str]:
        py = sys.executable
        gunicorn = [py, "-m", "gunicorn", "--workers", "1", "--threads", "8",
                    "--no-control-socket"]
        if name.endswith("-api"):
            service = name.removesuffix("-api")
            port = self.env[f"{service.upper()}_PORT"]
            return [*gunicorn, "--bind", f"127.0.0.1:{port}",
                    f"services.{service}.web:create_app()"]
        if name == "payfip-sim":
            return [*gunicorn, "--bind", f"127.0.0.1:{self.env['PAYFIP_SIM_PORT']}",
                    "services.payfip_sim.app:create_app()"]
        commands = {
            "relay": ["relay", "billing"],
            "consumer": ["consume", "payment"],
            "payment-relay": ["relay", "payment"],
            "billing-consumer": ["consume", "billing"],
            "reconciler": ["reconcile"],
        }
        return [py, "-m", "services.cli", *commands[name]]

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
            deadline = time.monotonic() + 30
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
