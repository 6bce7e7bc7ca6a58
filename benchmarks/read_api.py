"""6. The read API under gunicorn, as `regie run` serves it: GET /families/{id}/to-pay for
families with 20 and with 2,000 open invoices, driven by wrk over real sockets, against
/health of the same server in the same run.

The server is started with the very options `regie run` gives it (``services.run.SERVED``),
on a SQLite store (`make run`'s embedded default) in the run's temporary folder. wrk is a
Debian package (`make system-deps` installs it); without it the figures say so and the run
fails, rather than leaving them out.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

import requests

from benchmarks.harness import (
    HOST,
    ROOT,
    Figure,
    Run,
    cpu_seconds,
    invoice_terms,
    make_settings,
    say,
    settings_env,
)
from benchmarks.reads import apply_polls, billing_polls
from services.bootstrap import payment_app
from services.common.messaging.broker import free_port
from services.common.settings import Settings
from services.run import SERVED, Served

TOKEN = "tok-reader"
FACTORY = "services.bootstrap:payment_api()"
# Families of each size; the requests go round them, so no one family's rows stay hot.
FAMILIES = {20: 50, 2000: 2}
# wrk's open connections: as many requests in flight as `regie run` serves threads.
CONNECTIONS = 8
SECONDS = 3  # each wrk run
ROUNDS = 3  # /health and each read in turn, this many times; the figures are the medians
GOALS = {"ratio": ">= 0.5x /health", "p99": "p99 <= 20 ms"}
WRK_MISSING = "wrk is not installed: `make system-deps` (or apt-get install wrk) installs it"


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    rate: float  # requests per second
    p99: float  # seconds
    errors: int  # non-2xx answers, socket errors and timeouts
    cpu: float = float("nan")  # the server's CPU seconds (user + system) per request


def family(size: int, k: int) -> str:
    return f"fam{size}-{k}"


def load_families(settings: Settings) -> None:
    """Open invoices for FAMILIES, issued in billing and consumed by payment as the
    pipeline would (billing.invoices records, applied per poll)."""
    terms = [replace(invoice_terms(i, f"R{size}"), family_id=family(size, i % count))
             for size, count in FAMILIES.items() for i in range(size * count)]
    payment = payment_app(settings)
    try:
        apply_polls(payment, billing_polls(settings, terms), True)
        totals = {family(size, 0): payment.to_pay_summary(family(size, 0))
                  for size in FAMILIES}
    finally:
        payment.close()
    for size in FAMILIES:
        got = totals[family(size, 0)]
        if [r["count"] for r in got] != [size]:
            raise RuntimeError(f"{family(size, 0)}: to-pay has {got}, not {size} invoices")


@contextlib.contextmanager
def serve(settings: Settings, served: Served, folder: Path) -> Iterator[tuple[str, int]]:
    """The payment API under gunicorn with ``served``'s options; yields its base URL and
    the pid of gunicorn's master."""
    port = free_port()
    metrics = folder / f"metrics-{port}"
    metrics.mkdir(parents=True)
    env = {**os.environ, **settings_env(settings), "PROMETHEUS_MULTIPROC_DIR": str(metrics),
           "REGIE_LOG_LEVEL": "WARNING"}
    log = folder / f"gunicorn-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *served.argv(f"{HOST}:{port}", FACTORY)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
            start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not answering after 60 s; see {log}")
            time.sleep(0.2)
        # Every worker up before measuring: one still importing would take a core.
        while log.read_text(errors="replace").count("Booting worker") < served.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every gunicorn worker booted after 60 s; see {log}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """Requests per second, p99 and errors from ``wrk --latency``'s report."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if rate is None or p99 is None:
        raise RuntimeError(f"wrk's report is not what was expected:\n{output}")
    errors = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", output, re.M)
    sockets = re.search(r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), "
                        r"timeout (\d+)", output, re.M)
    return Load(float(rate.group(1)), _seconds(p99.group(1)),
                (int(errors.group(1)) if errors else 0)
                + (sum(int(n) for n in sockets.groups()) if sockets else 0))


def server_cpu(master: int) -> float:
    """CPU seconds gunicorn's master and workers have used so far."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return float("nan")
    return sum(cpu_seconds(pid) for pid in [master, *map(int, children)])


def wrk(wrk_path: str, url: str, paths: list[str], seconds: float, folder: Path,
        master: int = 0) -> Load:
    """wrk on ``paths`` in turn, CONNECTIONS connections, one wrk thread; with ``master``,
    the CPU the server used per request."""
    before = server_cpu(master) if master else 0.0
    script = folder / "paths.lua"
    quoted = ", ".join(f'"{p}"' for p in paths)
    script.write_text(f"local paths = {{{quoted}}}\nlocal i = 0\n"
                      "request = function()\n  i = i % #paths + 1\n"
                      "  return wrk.format(nil, paths[i])\nend\n")
    out = subprocess.run(
        [wrk_path, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script),
         "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    load = parse_wrk(out)
    if master:
        used = server_cpu(master) - before
        load = replace(load, cpu=used / max(1.0, load.rate * seconds))
    return load


def measure(wrk_path: str, url: str, master: int, folder: Path) -> dict[str, Load]:
    """/health and the to-pay reads, in turn, ROUNDS times; the median of each."""
    targets = {"/health": ["/health"]} | {
        f"to-pay, {size:,} invoices": [f"/families/{family(size, k)}/to-pay"
                                       for k in range(count)]
        for size, count in FAMILIES.items()}
    for paths in targets.values():  # warm: imports, connections, SQLite's page cache
        wrk(wrk_path, url, paths, 1, folder)
    runs: dict[str, list[Load]] = {name: [] for name in targets}
    for _ in range(ROUNDS):
        for name, paths in targets.items():
            runs[name].append(wrk(wrk_path, url, paths, SECONDS, folder, master))
    return {name: Load(median(r.rate for r in loads), median(r.p99 for r in loads),
                       sum(r.errors for r in loads), median(r.cpu for r in loads))
            for name, loads in runs.items()}


def models(bench: Run) -> list[Served]:
    """`regie run`'s options first, then any others asked for (``--api-models 1x8,2x1``)."""
    asked = getattr(bench.options, "api_models", "") or ""
    others = [Served(*map(int, m.split("x"))) for m in asked.split(",") if m.strip()]
    return [SERVED["payment-api"], *(m for m in others if m != SERVED["payment-api"])]


def run(bench: Run) -> list[Figure]:
    served = SERVED["payment-api"]
    label = f"{served.workers} worker(s) x {served.threads} threads"
    say(f"6. Read API under gunicorn as `regie run` serves it ({label}), wrk "
        f"-c{CONNECTIONS}, against /health of the same server")
    names = [f"GET to-pay, {size:,} invoices per family, gunicorn {served.workers}x"
             f"{served.threads}" for size in FAMILIES]
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        say(f"    NOT MEASURED: {WRK_MISSING}")
        return [Figure(name, "NOT MEASURED", "wrk missing", "n/a", GOALS["ratio"], failed=True)
                for name in names]
    folder = bench.root / "read-api"
    folder.mkdir()
    settings = make_settings(folder / "var", tokens=f"{TOKEN}:reader")
    started = time.monotonic()
    load_families(settings)
    say(f"    {', '.join(f'{c} families of {s:,}' for s, c in FAMILIES.items())} open invoices "
        f"loaded in {time.monotonic() - started:.1f}s (SQLite)")
    figures: list[Figure] = []
    for model in models(bench):
        with serve(settings, model, folder) as (url, master):
            loads = measure(wrk_path, url, master, folder)
        health = loads.pop("/health")
        say(f"    gunicorn {model.workers}x{model.threads}  /health {health.rate:7.0f} req/s "
            f"p99 {health.p99 * 1000:5.1f} ms, server CPU {health.cpu * 1000:.2f} ms/req")
        for (name, got), size in zip(loads.items(), FAMILIES, strict=True):
            ratio = got.rate / health.rate
            say(f"    gunicorn {model.workers}x{model.threads}  {name:24s} {got.rate:7.0f} req/s "
                f"p99 {got.p99 * 1000:5.1f} ms, server CPU {got.cpu * 1000:.2f} ms/req | "
                f"{ratio:.2f}x /health"
                + (f" | {got.errors} ERRORS" if got.errors or health.errors else ""))
            title = (f"GET to-pay, {size:,} invoices per family, gunicorn "
                     f"{model.workers}x{model.threads}")
            ours = model == served
            figures.append(Figure(
                title, f"{got.rate:,.0f} req/s, p99 {got.p99 * 1000:.1f} ms",
                f"/health {health.rate:,.0f} req/s, p99 {health.p99 * 1000:.1f} ms",
                f"{ratio:.2f}x", f"{GOALS['ratio']}, {GOALS['p99']}" if ours else "",
                failed=bool(got.errors or health.errors)))
    return figures
