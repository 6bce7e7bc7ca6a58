"""`make run` as an operator uses it: start, demo data visible, Ctrl-C, start again."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from services import demo
from services.common.messaging.broker import free_port
from services.common.web.auth import ROLES

pytestmark = pytest.mark.kafka


class Run:
    """A `regie run` in the background; its output is read as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"], env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None or self.reader.is_alive(), (
                f"regie run ended before printing {text!r}:\n{self.output[-4000:]}")
            assert time.monotonic() < deadline, self.output[-4000:]
            time.sleep(0.1)


def start(env: dict[str, str]) -> tuple[Run, dict[str, str]]:
    run = Run(env)
    run.wait_for("Ctrl-C stops everything")
    tokens = dict(
        (m.group(1), m.group(2)) for m in re.finditer(
            rf"^\s+({'|'.join(ROLES)})\s+(\S+)$", run.output, re.MULTILINE))
    return run, tokens


def stop(run: Run) -> None:
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=60) == 0, run.output[-4000:]


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
        # Each régie named too: its RegieOpened travels under its code, an invoice under
        # its family, so on a broker with several partitions an invoice may be applied
        # first, its régie shown by its code until the RegieOpened comes.
        if r.ok and len(body["regies"]) == 2 and all(
                x["name"] != x["code"] for x in body["regies"]):
            return body
        time.sleep(0.2)
    raise AssertionError(f"demo data never reached to-pay: {body}")


def run_env(tmp_path: Path, broker: str = "noida") -> tuple[dict[str, str], dict[str, int]]:
    """Its own ports and var dir, so that it collides with nothing else on the machine."""
    ports = {name: free_port()
             for name in ("BILLING_PORT", "PAYMENT_PORT", "PAYFIP_SIM_PORT", "PORTAL_PORT",
                          "BACKOFFICE_PORT", "SMTP_PORT", "KAFKA")}
    env = {k: v for k, v in os.environ.items() if k not in ("REGIE_TOKENS",)}
    env.update(
        REGIE_VAR_DIR=str(tmp_path / "var"), PERSISTENCE_MODULE="eventsourcing.sqlite",
        BILLING_PORT=str(ports["BILLING_PORT"]), PAYMENT_PORT=str(ports["PAYMENT_PORT"]),
        PAYFIP_SIM_PORT=str(ports["PAYFIP_SIM_PORT"]), PORTAL_PORT=str(ports["PORTAL_PORT"]),
        BACKOFFICE_PORT=str(ports["BACKOFFICE_PORT"]),
        SMTP_PORT=str(ports["SMTP_PORT"]),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['KAFKA']}", KAFKA_BROKER=broker,
    )
    return env, ports


def processes_of(var_dir: Path) -> dict[int, str]:
    """Every process on the machine started for this var dir (they inherit its setting),
    with its command line."""
    found = {}
    marker = f"REGIE_VAR_DIR={var_dir.resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(v.startswith(marker) for v in environ) and cmdline:  # zombies have none
            found[int(entry.name)] = cmdline
    return found


def part_pid(var_dir: Path, command: str) -> int:
    """The pid of the part whose command line ends with ``command``, once it runs."""
    deadline = time.monotonic() + 60
    while True:
        pids = [pid for pid, cmd in processes_of(var_dir).items() if cmd.endswith(command)]
        if len(pids) == 1:
            return pids[0]
        assert time.monotonic() < deadline, f"{command}: {pids}"
        time.sleep(0.2)


def nothing_left(var_dir: Path, ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 10
    while processes_of(var_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(var_dir) == {}
    for name, port in ports.items():
        assert port_closed(port), f"{name} {port} still open"


@pytest.mark.parametrize("broker", ["noida", "tansu"])
def test_make_run_twice(tmp_path: Path, broker: str) -> None:
    env, ports = run_env(tmp_path, broker)
    want = {"regies": [
        {"code": "CANTINE", "count": 1, "name": "Restauration scolaire", "total_cents": 1000},
        {"code": "SPORTS", "count": 1, "name": "Direction des sports", "total_cents": 2500},
    ]}
    first, tokens = start(env)
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
        desk = requests.get(f"http://127.0.0.1:{ports['BACKOFFICE_PORT']}/guichet/connexion",
                            timeout=5)
        assert desk.status_code == 200 and "Connexion au guichet" in desk.text
    finally:
        stop(first)
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


def test_tokens_without_a_needed_role_are_named_and_nothing_is_left_running(
        tmp_path: Path) -> None:
    env, ports = run_env(tmp_path)
    env["REGIE_TOKENS"] = "tok-issuer-0123456789:issuer,tok-auditor-0123456789:auditor"
    done = subprocess.run([sys.executable, "-m", "services.cli", "run"], env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 1
    assert "regie run: REGIE_TOKENS has no token with the role payer" in done.stderr
    nothing_left(tmp_path / "var", ports)


def test_a_port_already_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    """The web parts' workers bind with SO_REUSEPORT, which would let this run share a port
    silently with what already listens there (another run of the same user, say)."""
    env, ports = run_env(tmp_path)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", ports["PAYMENT_PORT"]))
        squatter.listen()
        run = subprocess.Popen([sys.executable, "-m", "services.cli", "run"], env=env,
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, stderr = run.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # It started: Ctrl-C stops what it started, which a kill would leave running.
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=120)
            raise AssertionError("regie run started with the payment API's port taken") from None
    assert run.returncode == 1, stderr
    assert stderr.splitlines()[-1].startswith(
        f"regie run: already in use: payment-api ({ports['PAYMENT_PORT']}); "), stderr
    assert not (tmp_path / "var" / "logs").exists()
    nothing_left(tmp_path / "var", ports)


def test_a_start_that_fails_part_way_stops_every_process_it_started(tmp_path: Path) -> None:
    env, ports = run_env(tmp_path)
    env["REGIE_START_TIMEOUT"] = "20"
    # The portal cannot keep its secret key beside an accounts database under a file, so it
    # never answers; by the time the start gives up, the broker and every other part have
    # been started.
    (tmp_path / "a-file").write_text("")
    env["PORTAL_ACCOUNTS_DB"] = str(tmp_path / "a-file" / "portal.db")
    done = subprocess.run([sys.executable, "-m", "services.cli", "run"], env=env,
                          text=True, capture_output=True, timeout=180)
    assert done.returncode == 1, done.stderr
    failure = done.stderr.splitlines()[-1]
    assert failure.startswith("regie run: not answering after 20s: "), done.stderr
    assert f"portal (http://127.0.0.1:{ports['PORTAL_PORT']}/health)" in failure
    assert (tmp_path / "var" / "logs" / "reconciler.log").exists()
    nothing_left(tmp_path / "var", ports)


def test_a_part_that_dies_is_restarted_and_the_system_keeps_serving(tmp_path: Path) -> None:
    env, ports = run_env(tmp_path)
    var_dir = tmp_path / "var"
    run, tokens = start(env)
    try:
        assert to_pay(env, tokens["reader"])["regies"]
        reconciler = part_pid(var_dir, "services.cli reconcile")
        relay = part_pid(var_dir, "services.cli relay billing")
        os.kill(reconciler, signal.SIGKILL)
        os.kill(relay, signal.SIGKILL)
        run.wait_for("reconciler exited (killed by SIGKILL)")
        run.wait_for("billing-relay exited (killed by SIGKILL)")
        assert part_pid(var_dir, "services.cli reconcile") != reconciler
        again = part_pid(var_dir, "services.cli relay billing")
        assert again != relay
        run.wait_for(f"billing-relay restarted (pid {again})")
        # The restarted relay publishes what billing accepts from now on.
        issuer = {"Authorization": f"Bearer {tokens['issuer']}"}
        invoice = dict(demo.INVOICES[1], number="RS-2025-03-0001")
        r = requests.post(f"http://127.0.0.1:{env['BILLING_PORT']}/invoices", json=invoice,
                          headers=issuer, timeout=10)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while to_pay(env, tokens["reader"])["regies"][0]["count"] != 2:
            assert time.monotonic() < deadline, "the new invoice never reached to-pay"
            time.sleep(0.2)
        assert run.proc.poll() is None
    finally:
        stop(run)
    nothing_left(var_dir, ports)
