"""`make run`: the whole system on one machine with the embedded defaults."""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from services import demo
from services.bootstrap import ensure_dev_tokens
from services.common.settings import SERVICES, Settings
from services.common.web.auth import format_tokens

TOKEN_SETTINGS = ("REGIE_TOKENS", "BILLING_TOKENS", "PAYMENT_TOKENS", "PORTAL_PAYMENT_TOKEN",
                  "BACKOFFICE_TOKEN")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """How long a dead part waits before it is started again.

    Doubling from ``first`` up to ``cap``, so that a part that dies at once (its database or
    broker unreachable, say) is retried soon, then rarely, never in a tight loop; a part that
    had run ``stable`` seconds before dying is starting afresh and waits ``first`` again.
    """

    first: float = 1.0
    cap: float = 30.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** (failures - 1)))


class Supervisor:
    """Starts the parts of `regie run`, restarts those that die, stops them all.

    Each part gets its own session, so that Ctrl-C reaches only us, and so that the part
    and whatever it started (gunicorn's workers, the broker binary) form one process group
    that is signalled as a whole: nothing it started outlives it.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.env = env
        self.log_dir = log_dir
        self.backoff = backoff
        self.clock = clock
        self.argv: dict[str, list[str]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self.restart_at: dict[str, float] = {}

    def start(self, name: str, argv: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a part; ``env`` replaces the run's environment for it (and its restarts)."""
        self.argv[name] = argv
        self.envs[name] = self.env if env is None else env
        self.failures.setdefault(name, 0)
        return self._spawn(name)

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                self.argv[name], env=self.envs[name], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.procs[name] = proc
        self.started_at[name] = self.clock()
        self.restart_at.pop(name, None)
        return proc

    def pid(self, name: str) -> int | None:
        """The part's pid while it runs; None while it waits to be started again."""
        return None if name in self.restart_at else self.procs[name].pid

    def dead(self) -> list[str]:
        """The parts that died since the last ``supervise``."""
        return [name for name, proc in self.procs.items()
                if name not in self.restart_at and proc.poll() is not None]

    def supervise(self) -> None:
        """Schedule the restart of each part that died; start those whose pause is over."""
        now = self.clock()
        for name in self.dead():
            proc = self.procs[name]
            _kill_group(proc.pid, signal.SIGKILL)  # what it started must not hold its port
            ran = now - self.started_at[name]
            self.failures[name] = 1 if ran >= self.backoff.stable else self.failures[name] + 1
            delay = self.backoff.delay(self.failures[name])
            self.restart_at[name] = now + delay
            log.warning("%s exited (%s) after %.0fs; restarting in %.0fs (see %s)",
                        name, _how(proc.returncode), ran, delay, self.log_dir / f"{name}.log")
        for name, due in list(self.restart_at.items()):
            if due <= now:
                proc = self._spawn(name)
                log.warning("%s restarted (pid %d)", name, proc.pid)

    def stop(self) -> None:
        self.restart_at.clear()
        # Last started, first stopped: the broker goes last so relays can flush.
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop; killing it", file=sys.stderr)
            # Whatever is left of the group (the part did not stop, or left a child).
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    # Already gone, or nothing of the group is left: either way nothing of ours to stop.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _how(returncode: int) -> str:
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a real-time signal has no name
        return f"killed by signal {-returncode}"


@dataclass(frozen=True)
class Served:
    """How gunicorn serves one web part: ``workers`` processes of ``threads`` threads."""

    workers: int
    threads: int

    def argv(self, bind: str, factory: str) -> list[str]:
        """gunicorn's arguments (after ``gunicorn`` or ``python -m gunicorn``)."""
        # Several workers each listen on a socket of their own (SO_REUSEPORT), and the
        # kernel spreads new connections over them. On one shared socket the worker already
        # awake takes nearly every connection of a burst, and keeps them while they are kept
        # alive: 8 client connections all went to one of 2 workers in most tries, which then
        # served alone while the other idled (docs/benchmarks.md, the read API).
        spread = ["--reuse-port"] if self.workers > 1 else []
        return ["--bind", bind, "--workers", str(self.workers), "--threads", str(self.threads),
                *spread, "--no-control-socket", factory]


# How `regie run` serves each web part; docker-compose.yml gives the same options
# (tests/unit/test_compose.py checks it), and benchmarks/read_api.py measures the payment
# API as served here. The payment API answers reads with one SQLite or PostgreSQL query
# each: in one process, 8 threads spend more time handing the GIL to one another at each
# sqlite3 call than answering, while worker processes read side by side (SQLite's WAL lets
# several processes read; the schema lock in services.common.storage.persistence makes
# workers starting together create the tables one at a time). docs/benchmarks.md has the
# measurements behind the numbers.
SERVED: dict[str, Served] = {
    # Its state lives in the process: one worker, or a payment would not be found again.
    "payfip-sim": Served(workers=1, threads=8),
    "billing-api": Served(workers=1, threads=8),
    "payment-api": Served(workers=2, threads=4),
    # Their sessions, CSRF tokens and accounts hold across workers (docs/portal.md).
    "portal": Served(workers=2, threads=4),
    "backoffice": Served(workers=2, threads=4),
}


# The app gunicorn serves for each web part.
APPS: dict[str, str] = {
    "payfip-sim": "services.payfip_sim.app:create_app()",
    "billing-api": "services.bootstrap:billing_api()",
    "payment-api": "services.bootstrap:payment_api()",
    "portal": "services.portal.web:create_app()",
    "backoffice": "services.backoffice.web:create_app()",
}


def served_argv(name: str, port: str | int) -> list[str]:
    """The command that serves the web part ``name`` on ``port`` of 127.0.0.1, as `regie run`
    starts it (and the end-to-end tests, so that they test what is run)."""
    return [sys.executable, "-m", "gunicorn", *SERVED[name].argv(f"127.0.0.1:{port}", APPS[name])]


class StartError(RuntimeError):
    pass


def ports_in_use(ports: Mapping[str, int]) -> list[str]:
    """The parts (as "name (port)") whose port something already listens on."""
    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            # As gunicorn binds: a port a run just stopped left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{name} ({port})")
    return taken


def own_ports(settings: Settings) -> dict[str, int]:
    """The ports `regie run` listens on itself, by part."""
    ports = {"payfip-sim": settings.payfip_sim_port, "billing-api": settings.billing_port,
             "payment-api": settings.payment_port, "portal": settings.portal_port,
             "backoffice": settings.backoffice_port}
    found = {name: int(port) for name, port in ports.items()}
    if settings.kafka_broker != "external":
        found["broker"] = int(settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
    if settings.smtp_host in ("127.0.0.1", "localhost"):
        found["mail-catcher"] = settings.smtp_port
    return found


def _token(tokens: dict[str, str], role: str, why: str) -> str:
    for token, has in tokens.items():
        if has == role:
            return token
    raise StartError(f"REGIE_TOKENS has no token with the role {role} ({why}); "
                     f"add one as TOKEN:{role}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def wait_until_ready(sup: Supervisor, health: dict[str, str], timeout: float,
                     stop: threading.Event) -> bool:
    """Wait for each part's health URL, restarting parts that die meanwhile; False if
    stopped first. A part that is still silent after ``timeout`` fails the start."""
    deadline = time.monotonic() + timeout
    waiting = dict(health)
    while waiting:
        sup.supervise()
        waiting = {name: url for name, url in waiting.items() if not _answers(url)}
        if not waiting:
            return True
        if stop.is_set():
            return False
        if time.monotonic() > deadline:
            silent = ", ".join(f"{name} ({url})" for name, url in waiting.items())
            raise StartError(f"not answering after {timeout:.0f}s: {silent}; "
                             f"see their logs under {sup.log_dir}/")
        stop.wait(0.2)
    return True


def _venv_bin() -> Path:
    """Where this interpreter's scripts are, as short as the current folder allows."""
    bin_dir = Path(sys.executable).parent
    return bin_dir.relative_to(Path.cwd()) if bin_dir.is_relative_to(Path.cwd()) else bin_dir


def how_to_run_commands() -> str:
    """The operators' commands as this environment has them: `regie` is not on PATH."""
    bin_dir = _venv_bin()
    return f"""{bin_dir / "regie"} --help   (or `. {bin_dir / "activate"}`, then `regie --help`)
  e.g. regie settings, regie as-of now, regie journal --regie SPORTS --date today
  {bin_dir / "python"} -m services.portal accounts create --family ID --email E
  {bin_dir / "python"} -m services.backoffice accounts create --email E --name N"""


def part_tokens(tokens: dict[str, str], environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The token settings each part is started with; a part not named gets none.

    The APIs get the run's tokens (and their own setting when the environment has one);
    the portal gets one payer token, never a token of another role; the back office one
    cashier token.
    """
    payer = environ.get("PORTAL_PAYMENT_TOKEN") or _token(
        tokens, "payer", "the portal reads and pays through the payment API with it")
    cashier = environ.get("BACKOFFICE_TOKEN") or _token(
        tokens, "cashier", "the back office acts on both APIs with it")
    parts = {"portal": {"PORTAL_PAYMENT_TOKEN": payer},
             "backoffice": {"BACKOFFICE_TOKEN": cashier}}
    for service in SERVICES:
        own = f"{service.upper()}_TOKENS"
        parts[f"{service}-api"] = {"REGIE_TOKENS": format_tokens(tokens),
                                   **({own: environ[own]} if environ.get(own) else {})}
    return parts


def run(load_demo: bool = True) -> int:
    settings = Settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    tokens = ensure_dev_tokens(settings)
    # Checked before anything starts: a start that fails half-way has more to undo.
    given = part_tokens(tokens, os.environ)
    given["payfip-sim"] = {"PAYFIP_SIM_ENABLED": "1"}  # it starts only when told to
    issuer = _token(tokens, "issuer", "the demo data is issued with it") if load_demo else ""
    # The web parts' workers bind with SO_REUSEPORT, which would let a second run share a
    # first one's ports without an error, each answering part of the requests.
    taken = ports_in_use(own_ports(settings))
    if taken:
        raise StartError(f"already in use: {', '.join(taken)}; stop what listens there (another "
                         "`regie run`?) or give this run other ports (BILLING_PORT, "
                         "PAYMENT_PORT, PAYFIP_SIM_PORT, PORTAL_PORT, BACKOFFICE_PORT, "
                         "KAFKA_BOOTSTRAP_SERVERS, SMTP_PORT)")
    start_timeout = settings.start_timeout
    # REGIE_CONSUMER_COUNT=N runs N processes of each consumer, each its share.
    _, consumers = settings.consumer_share()
    # The payment API and the reconciler add up their PayFiP call metrics here; counts of
    # a previous run would belong to processes long gone.
    metrics_dir = (settings.var_dir / "metrics").resolve()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    # Each part gets only the tokens it uses: the APIs theirs, the portal its payer one.
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_SETTINGS}
    env.update(REGIE_VAR_DIR=str(settings.var_dir.resolve()),
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    python = sys.executable
    sup = Supervisor(env, settings.var_dir / "logs")
    billing_port, payment_port = settings.billing_port, settings.payment_port
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        from services.common.messaging.broker import wait_ready

        if settings.kafka_broker != "external":
            sup.start("broker", [python, "-m", "services.cli", "broker"])
        wait_ready(settings.kafka_bootstrap, timeout=start_timeout)
        sim_port = settings.payfip_sim_port
        # Unless told otherwise, the parts find each other on the ports chosen here.
        sim = f"http://127.0.0.1:{sim_port}"
        env.setdefault("PAYFIP_SERVICE_URL", f"{sim}/tpa/services/securite")
        env.setdefault("PAYFIP_PAYMENT_URL", f"{sim}/tpa/paiementws.web")
        env.setdefault("PAYMENT_PUBLIC_URL", f"http://127.0.0.1:{payment_port}")
        portal_port = settings.portal_port
        portal_url = f"http://127.0.0.1:{portal_port}"
        env.setdefault("PORTAL_RETURN_URL", f"{portal_url}/paiement/retour")
        env.setdefault("PORTAL_PAYMENT_URL", f"http://127.0.0.1:{payment_port}")
        env.setdefault("PORTAL_ACCOUNTS_DB", str((settings.var_dir / "portal.db").resolve()))
        env.setdefault("PORTAL_PUBLIC_URL", portal_url)
        backoffice_port = settings.backoffice_port
        backoffice_url = f"http://127.0.0.1:{backoffice_port}"
        env.setdefault("BACKOFFICE_BILLING_URL", f"http://127.0.0.1:{billing_port}")
        env.setdefault("BACKOFFICE_PAYMENT_URL", f"http://127.0.0.1:{payment_port}")
        env.setdefault("BACKOFFICE_ACCOUNTS_DB",
                       str((settings.var_dir / "backoffice.db").resolve()))
        env.setdefault("BACKOFFICE_PUBLIC_URL", backoffice_url)
        health = {}
        for name, port in (("payfip-sim", sim_port), ("billing-api", billing_port),
                           ("payment-api", payment_port), ("portal", portal_port),
                           ("backoffice", backoffice_port)):
            sup.start(name, served_argv(name, port), env=dict(env, **given.get(name, {})))
            health[name] = f"http://127.0.0.1:{port}/health"
        # The reminders go to a local catcher, unless SMTP_HOST names a server elsewhere.
        mail = f"{settings.smtp_host}:{settings.smtp_port}"
        if settings.smtp_host in ("127.0.0.1", "localhost"):
            sup.start("mail-catcher", [python, "-m", "services.common.mail_catcher"])
            mail = f"kept as .eml files in {settings.var_dir}/mail/ (SMTP {mail})"
        for name, command in (
            ("billing-relay", ["relay", "billing"]),
            ("payment-consumer", ["consume", "payment"]),
            ("payment-relay", ["relay", "payment"]),
            ("billing-consumer", ["consume", "billing"]),
            ("reconciler", ["reconcile"]),
            ("scheduler", ["scheduler"]),
        ):
            if command[0] != "consume" or consumers == 1:
                sup.start(name, [python, "-m", "services.cli", *command])
                continue
            for index in range(consumers):
                sup.start(f"{name}-{index}", [python, "-m", "services.cli", *command],
                          env=dict(env, REGIE_CONSUMER_INDEX=str(index)))
        billing_url = f"http://127.0.0.1:{billing_port}"
        payment_url = f"http://127.0.0.1:{payment_port}"
        if not wait_until_ready(sup, health, start_timeout, stop):
            return 0
        login, desk_login = "", ""
        if load_demo:
            from services.portal.demo import ensure_account

            demo.load(billing_url, issuer)
            email, password = ensure_account(Path(env["PORTAL_ACCOUNTS_DB"]))
            login = f"  (demo family: {email} / {password})"
            from services.backoffice.demo import ensure_account as ensure_staff

            email, password = ensure_staff(Path(env["BACKOFFICE_ACCOUNTS_DB"]))
            desk_login = f"  (demo cashier: {email} / {password})"
        print(f"""
Régie is running (data under {settings.var_dir}/, logs under {settings.var_dir}/logs/).
  family portal {portal_url}{login}
  back office   {backoffice_url}/guichet/{desk_login}
  billing API   {billing_url}   (OpenAPI: {billing_url}/openapi.json)
  payment API   {payment_url}   (OpenAPI: {payment_url}/openapi.json)
  PayFiP (simulator)  http://127.0.0.1:{sim_port}/tpa/paiementws.web
  e-mail        {mail}
  Kafka         {settings.kafka_bootstrap}
  demo family   {payment_url}/families/{demo.FAMILY}/to-pay
Tokens (send as "Authorization: Bearer TOKEN"):""", flush=True)
        for token, role in tokens.items():
            print(f"  {role:9} {token}")
        print(f"""Commands (in another terminal, from this folder):
  {how_to_run_commands()}
Ctrl-C stops everything; a part that dies is started again.""", flush=True)
        while not stop.is_set():
            sup.supervise()
            stop.wait(0.5)
        return 0
    finally:
        print("stopping…", file=sys.stderr, flush=True)
        sup.stop()
