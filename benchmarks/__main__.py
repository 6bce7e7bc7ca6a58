"""Throughput and latency of the Régie backbone, each against a raw baseline of the same run.

    .venv/bin/python -m benchmarks [BENCHMARK...] [--invoices N]      (or `make bench`)

Runs the benchmarks named (all of them by default, in this order): batch-issue
(benchmarks/batch_issue.py), delay (benchmarks/delay.py), drain (benchmarks/drain.py) and
reads (benchmarks/reads.py: the consumer's apply per poll and per message, the family reads)
and read-api (benchmarks/read_api.py: the payment API under gunicorn, driven by wrk); each
prints its details, and the run ends with one table: figure, baseline, ratio, goal. It exits
with 1 when a figure could not be measured (wrk missing, errors answered).

Everything lives in a temporary folder, a broker on a free port of 127.0.0.1 and throwaway
PostgreSQL schemas; all of it is removed at the end, also on error or Ctrl-C. The relay and
the consumers run as child processes (``--role``, benchmarks/roles.py); each stops on SIGTERM,
when the run goes away, or after a time limit.
"""

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import batch_issue, delay, drain, read_api, reads, rebuild
from benchmarks.harness import Figure, Run, say, table
from benchmarks.roles import ROLES

BENCHMARKS: dict[str, Callable[[Run], list[Figure]]] = {
    "batch-issue": batch_issue.run,
    "delay": delay.run,
    "drain": drain.run,
    "reads": reads.run,
    "read-api": read_api.run,
    "rebuild": rebuild.run,
}


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of counts") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                        help=f"which to run, of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--invoices", type=int, default=20000,
                        help="invoices for the batch and backlog figures (default 20000)")
    parser.add_argument("--drain-consumers", type=_counts, default=(1, 2), metavar="N[,N]",
                        help="payment consumer processes of each drain (default 1,2)")
    parser.add_argument("--rss-messages", type=int, default=0, metavar="N",
                        help="drain: also read a topic of N messages from the start with the "
                        "consumer's Kafka reader and give its RSS and the broker's")
    parser.add_argument("--events", type=int, default=200_000,
                        help="events in the store the rebuild replays (default 200000)")
    parser.add_argument("--store", metavar="DIR",
                        help="keep the rebuild's stores in DIR (a SQLite file and a "
                        "PostgreSQL schema per size) and reuse them in later runs")
    parser.add_argument("--latency-count", type=int, default=200,
                        help="invoices for the delay figure (default 200)")
    parser.add_argument("--pace-ms", type=float, default=5.0,
                        help="milliseconds between two invoices for the delay figure")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="REGIE_POLL_INTERVAL of the relay and the payment consumer "
                             "(default 0.1, as `make run`)")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="seconds the delay figure's relay and consumer are left idle "
                             "to measure their CPU (default 10)")
    parser.add_argument("--no-http", dest="http", action="store_false",
                        help="skip the HTTP batch figure")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false",
                        help="skip the PostgreSQL batch figure")
    parser.add_argument("--api-models", default="", metavar="WxT,...",
                        help="read-api: also measure gunicorn with W workers of T threads "
                             "(e.g. 1x8,2x1), beside the options `regie run` uses")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return ROLES[args.role](json.loads(args.spec))
    if args.invoices < 1 or args.latency_count < 1 or args.events < 1:
        parser.error("counts must be positive")
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}: choose among {', '.join(BENCHMARKS)}")
    chosen = [name for name in BENCHMARKS if name in args.benchmarks] or list(BENCHMARKS)

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="regie-bench-"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    say(f"Régie backbone benchmark: {args.invoices} invoices, {os.cpu_count()} CPUs, "
        f"load average {load}")
    figures: list[Figure] = []
    try:
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, root, ignore_errors=True)
            bench = Run(args, root, cleanup)
            for name in chosen:
                say()
                figures += BENCHMARKS[name](bench)
    except KeyboardInterrupt:
        say("interrupted; cleaned up")
        return 130
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    say()
    say(table(figures))
    say()
    say(f"done in {time.monotonic() - started:.0f}s, load average {load}")
    failed = [f.name for f in figures if f.failed]
    if failed:
        say(f"FAILED: {'; '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
