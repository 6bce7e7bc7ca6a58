"""`make run`: the whole system on one machine with the embedded defaults."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from services import demo
from services.bootstrap import ensure_dev_tokens
from services.common.auth import format_tokens
from services.common.settings import Settings, get


class Supervisor:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            # Own session: Ctrl-C reaches only us, and we stop the parts in order.
            proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
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


def run(load_demo: bool = True) -> int:
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    tokens = ensure_dev_tokens(settings)
    # The payment API and the reconciler add up their PayFiP call metrics here; counts of
    # a previous run would belong to processes long gone.
    metrics_dir = (settings.var_dir / "metrics").resolve()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    env = dict(os.environ, REGIE_TOKENS=format_tokens(tokens),
               REGIE_VAR_DIR=str(settings.var_dir.resolve()),
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
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
        reader = next(t for t, role in tokens.items() if role == "reader")
        env.setdefault("PORTAL_RETURN_URL", f"{portal_url}/paiement/retour")
        env.setdefault("PORTAL_PAYMENT_URL", f"http://127.0.0.1:{payment_port}")
        env.setdefault("PORTAL_PAYMENT_TOKEN", reader)
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
                             factory])
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
        print("Ctrl-C stops everything.", flush=True)
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
