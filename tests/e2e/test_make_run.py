"""`make run` as an operator uses it: start, demo data visible, Ctrl-C, start again."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from services.common.auth import ROLES
from services.common.broker import free_port

pytestmark = pytest.mark.kafka


def start(env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tokens: dict[str, str] = {}
    seen: list[str] = []
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        seen.append(line)
        match = re.match(rf"^\s+({'|'.join(ROLES)})\s+(\S+)$", line)
        if match:
            tokens[match.group(1)] = match.group(2)
        if "Ctrl-C stops everything" in line:
            return proc, tokens
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError("regie run ended before it was ready:\n" + "".join(seen[-40:]))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def to_pay(env: dict[str, str], token: str) -> Any:
    url = f"http://127.0.0.1:{env['PAYMENT_PORT']}/families/famille-martin/to-pay"
    deadline = time.monotonic() + 30
    body: Any = None
    while time.monotonic() < deadline:
        r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        body = r.json()
        if r.ok and len(body["regies"]) == 2:
            return body
        time.sleep(0.2)
    raise AssertionError(f"demo data never reached to-pay: {body}")


@pytest.mark.parametrize("broker", ["noida", "tansu"])
def test_make_run_twice(tmp_path: Path, broker: str) -> None:
    ports = {name: free_port()
             for name in ("BILLING_PORT", "PAYMENT_PORT", "PAYFIP_SIM_PORT", "PORTAL_PORT",
                          "KAFKA")}
    env = {k: v for k, v in os.environ.items() if k not in ("REGIE_TOKENS",)}
    env.update(
        REGIE_VAR_DIR=str(tmp_path / "var"), PERSISTENCE_MODULE="eventsourcing.sqlite",
        BILLING_PORT=str(ports["BILLING_PORT"]), PAYMENT_PORT=str(ports["PAYMENT_PORT"]),
        PAYFIP_SIM_PORT=str(ports["PAYFIP_SIM_PORT"]), PORTAL_PORT=str(ports["PORTAL_PORT"]),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['KAFKA']}", KAFKA_BROKER=broker,
    )
    want = {"regies": [
        {"code": "CANTINE", "count": 1, "name": "Restauration scolaire", "total_cents": 1000},
        {"code": "SPORTS", "count": 1, "name": "Direction des sports", "total_cents": 2500},
    ]}
    proc, tokens = start(env)
    try:
        assert set(tokens) == set(ROLES)
        assert to_pay(env, tokens["reader"]) == want
        # The portal's payer token reads to-pay lists; only it pays; billing is not its.
        assert to_pay(env, tokens["payer"]) == want
        payments = f"http://127.0.0.1:{env['PAYMENT_PORT']}/payments"
        assert requests.post(payments, json={}, timeout=5, headers={
            "Authorization": f"Bearer {tokens['reader']}"}).status_code == 403
        assert requests.get(f"http://127.0.0.1:{env['BILLING_PORT']}/regies", timeout=5, headers={
            "Authorization": f"Bearer {tokens['payer']}"}).status_code == 403
        portal = requests.get(f"http://127.0.0.1:{ports['PORTAL_PORT']}/connexion", timeout=5)
        assert portal.status_code == 200 and 'lang="fr"' in portal.text
    finally:
        stop(proc)
    for port in ports.values():
        assert port_closed(port), f"port {port} still open after Ctrl-C"

    # A second run finds its data and its tokens again, and the demo data is not doubled
    # (Tansu keeps nothing: its relay publishes the whole history again).
    again, tokens_again = start(env)
    try:
        assert tokens_again == tokens
        assert to_pay(env, tokens["reader"]) == want
        r = requests.get(f"http://127.0.0.1:{env['BILLING_PORT']}/regies", timeout=5,
                         headers={"Authorization": f"Bearer {tokens['reader']}"})
        assert [x["code"] for x in r.json()["regies"]] == ["CANTINE", "SPORTS"]
    finally:
        stop(again)
