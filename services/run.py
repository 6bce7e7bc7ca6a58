"""`make run`: the whole system on one machine with the embedded defaults."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from services import demo
from services.bootstrap import ensure_dev_tokens
from services.common.auth import TokenError, format_tokens
from services.common.settings import SERVICES, Settings, get

TOKEN_SETTINGS = ("REGIE_TOKENS", "BILLING_TOKENS", "PAYMENT_TOKENS", "PORTAL_PAYMENT_TOKEN")


class Supervisor:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            # Own session: Ctrl-C reaches only us, and we stop the parts in order.
            proc = subprocess.Popen(
                argv, env=self.env if env is None else env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.children.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [name for name, proc in self.children if proc.poll() is not None]

    def stop(self) -> None:
        # Last started, first stopped: the broker goes last so relays can flush.
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait()


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _venv_bin() -> Path:
    """Where this interpreter's scripts are, as short as the current folder allows."""
    bin_dir = Path(sys.executable).parent
    return bin_dir.relative_to(Path.cwd()) if bin_dir.is_relative_to(Path.cwd()) else bin_dir


def how_to_run_commands() -> str:
    """The operators' commands as this environment has them: `regie` is not on PATH."""
    bin_dir = _venv_bin()
    return f"""{bin_dir / "regie"} --help   (or `. {bin_dir / "activate"}`, then `regie --help`)
  e.g. regie settings, regie as-of now, regie journal --regie SPORTS --date today
  {bin_dir / "python"} -m services.portal accounts create --family ID --email E"""


def part_tokens(tokens: dict[str, str], environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The token settings each part is started with; a part not named gets none.

    The APIs get the run's tokens (and their own setting when the environment has one);
    the portal gets one payer token, never a token of another role.
    """
    payer = environ.get("PORTAL_PAYMENT_TOKEN") or next(
        (t for t, role in tokens.items() if role == "payer"), None)
    if payer is None:
        raise TokenError("REGIE_TOKENS has no payer token for the portal: add one "
                         "(TOKEN:payer) or set PORTAL_PAYMENT_TOKEN")
    parts = {"portal": {"PORTAL_PAYMENT_TOKEN": payer}}
    for service in SERVICES:
        own = f"{service.upper()}_TOKENS"
        parts[f"{service}-api"] = {"REGIE_TOKENS": format_tokens(tokens),
                                   **({own: environ[own]} if environ.get(own) else {})}
    return parts


def run(load_demo: bool = True) -> int:
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    tokens = ensure_dev_tokens(settings)
    try:
        given = part_tokens(tokens, os.environ)
    except TokenError as e:
        print(e, file=sys.stderr)
        return 2
    # Each part gets only the tokens it uses: the APIs theirs, the portal its payer one.
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_SETTINGS}
    env["REGIE_VAR_DIR"] = str(settings.var_dir.resolve())
    python = sys.executable
    sup = Supervisor(env, settings.var_dir / "logs")
    billing_port, payment_port = get("BILLING_PORT"), get("PAYMENT_PORT")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        from services.common.broker import wait_ready

        if settings.kafka_broker != "external":
            sup.start("broker", [python, "-m", "services.cli", "broker"])
        wait_ready(settings.kafka_bootstrap, timeout=30)
        sim_port = get("PAYFIP_SIM_PORT")
        # Unless told otherwise, the parts find each other on the ports chosen here.
        sim = f"http://127.0.0.1:{sim_port}"
        env.setdefault("PAYFIP_SERVICE_URL", f"{sim}/tpa/services/securite")
        env.setdefault("PAYFIP_PAYMENT_URL", f"{sim}/tpa/paiementws.web")
        env.setdefault("PAYMENT_PUBLIC_URL", f"http://127.0.0.1:{payment_port}")
        portal_port = get("PORTAL_PORT")
        portal_url = f"http://127.0.0.1:{portal_port}"
        env.setdefault("PORTAL_RETURN_URL", f"{portal_url}/paiement/retour")
        env.setdefault("PORTAL_PAYMENT_URL", f"http://127.0.0.1:{payment_port}")
        env.setdefault("PORTAL_ACCOUNTS_DB", str((settings.var_dir / "portal.db").resolve()))
        env.setdefault("PORTAL_PUBLIC_URL", portal_url)
        for name, port, factory in (
            ("payfip-sim", sim_port, "services.payfip_sim.app:create_app()"),
            ("billing-api", billing_port, "services.billing.web:create_app()"),
            ("payment-api", payment_port, "services.payment.web:create_app()"),
            ("portal", portal_port, "services.portal.web:create_app()"),
        ):
            # One worker: the embedded SQLite store wants a single writing process.
            sup.start(name, [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--threads", "8", "--no-control-socket",
                             factory], env=dict(env, **given.get(name, {})))
        for name, command in (
            ("billing-relay", ["relay", "billing"]),
            ("payment-consumer", ["consume", "payment"]),
            ("payment-relay", ["relay", "payment"]),
            ("billing-consumer", ["consume", "billing"]),
            ("reconciler", ["reconcile"]),
        ):
            sup.start(name, [python, "-m", "services.cli", *command])
        billing_url = f"http://127.0.0.1:{billing_port}"
        payment_url = f"http://127.0.0.1:{payment_port}"
        wait_http(f"{billing_url}/health")
        wait_http(f"{payment_url}/health")
        wait_http(f"http://127.0.0.1:{sim_port}/health")
        wait_http(f"{portal_url}/health")
        issuer = next(t for t, role in tokens.items() if role == "issuer")
        login = ""
        if load_demo:
            from services.portal.demo import ensure_account

            demo.load(billing_url, issuer)
            email, password = ensure_account(Path(env["PORTAL_ACCOUNTS_DB"]))
            login = f"  (demo family: {email} / {password})"
        print(f"""
Régie is running (data under {settings.var_dir}/, logs under {settings.var_dir}/logs/).
  family portal {portal_url}{login}
  billing API   {billing_url}   (OpenAPI: {billing_url}/openapi.json)
  payment API   {payment_url}   (OpenAPI: {payment_url}/openapi.json)
  PayFiP (simulator)  http://127.0.0.1:{sim_port}/tpa/paiementws.web
  Kafka         {settings.kafka_bootstrap}
  demo family   {payment_url}/families/{demo.FAMILY}/to-pay
Tokens (send as "Authorization: Bearer TOKEN"):""", flush=True)
        for token, role in tokens.items():
            print(f"  {role:9} {token}")
        print(f"""Commands (in another terminal, from this folder):
  {how_to_run_commands()}
Ctrl-C stops everything.""", flush=True)
        while not stop.is_set():
            dead = sup.dead()
            if dead:
                print(f"stopped unexpectedly: {', '.join(dead)} (see the logs)", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    finally:
        print("stopping…", file=sys.stderr, flush=True)
        sup.stop()
