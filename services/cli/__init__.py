"""The `regie` command: the parts of the system that run (processes) and the operators'
tools (tools), behind one parser."""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from services.cli import reminders
from services.cli.processes import (
    cmd_broker,
    cmd_consume,
    cmd_reconcile,
    cmd_relay,
    cmd_run,
)
from services.cli.tools import (
    _day,
    _place,
    _when,
    cmd_anomalies,
    cmd_as_of,
    cmd_dead_letters,
    cmd_export,
    cmd_forget,
    cmd_import,
    cmd_journal,
    cmd_replay,
    cmd_settings,
    cmd_verify,
)
from services.common.settings import Settings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regie", description="Régie: municipal invoicing and PayFiP payments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the whole system on one machine, with demo data")
    p.add_argument("--no-demo", action="store_true", help="do not load the demo data")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker")
    p.add_argument("--kind", choices=["noida", "tansu"], help="default: KAFKA_BROKER")
    p.add_argument("--port", type=int, help="default: the port of KAFKA_BOOTSTRAP_SERVERS")
    p.add_argument("--data-dir", help="default: REGIE_VAR_DIR/kafka-KIND")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("relay", help="publish a service's stored events to Kafka")
    p.add_argument("service", choices=["billing", "payment"],
                   help="billing: to billing.invoices; payment: to payment.payments")
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser("consume", help="consume Kafka events into a service")
    p.add_argument("service", choices=["payment", "billing"],
                   help="payment: reads billing.invoices; billing: reads payment.payments")
    p.set_defaults(func=cmd_consume)

    p = sub.add_parser("dead-letters", help="the consumed messages that could not be applied: "
                       "list them, retry them after an upgrade, or drop one")
    p.add_argument("action", choices=["list", "retry", "drop"],
                   help="list: show them; retry: apply them again, in order (exits 1 if "
                   "some stay parked); drop: forget the one at PLACE for good")
    p.add_argument("place", nargs="?", type=_place, metavar="PLACE",
                   help="for drop: TOPIC[PARTITION]@OFFSET, as list shows it")
    p.add_argument("--service", action="append", choices=["payment", "billing"],
                   help="the consuming service (payment reads billing.invoices, billing "
                   "reads payment.payments); repeatable; default: both")
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser("reconcile", help="settle payments whose PayFiP notification never came")
    p.add_argument("--every", type=float, help="seconds between passes "
                   "(default: REGIE_RECONCILE_INTERVAL)")
    p.add_argument("--once", action="store_true", help="one pass: ask PayFiP about each "
                   "payment still waiting, record the answers, say how many, and exit")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("anomalies", help="PayFiP answers that did not match their payment's "
                       "order (amount, refdet, numcli, exer): nothing was paid on them")
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text (one line each, default) or json (with PayFiP's raw answer)")
    p.set_defaults(func=cmd_anomalies)

    p = sub.add_parser("verify", help="check that no stored event was altered, removed or "
                       "reordered (hash chain)")
    # No argparse choices here: with nargs="*" it would refuse the empty default.
    p.add_argument("services", nargs="*", metavar="SERVICE",
                   help="billing or payment; default: both")
    p.add_argument("--heads", metavar="FILE|kafka",
                   help="also check the store against chain heads kept outside it: a JSONL "
                   "file of ChainHead messages (or bare heads), or `kafka` to read the "
                   "audit.chain-heads topic; names the first head the store no longer "
                   "reaches (truncated or rewritten history)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("export", help="the event history as JSONL or CSV, streamed")
    p.add_argument("--service", action="append", choices=["billing", "payment"],
                   help="repeatable; default: both")
    p.add_argument("--regie", help="only the aggregates of this régie")
    p.add_argument("--family", help="only the aggregates of this family")
    p.add_argument("--since", type=_when, help="recorded at or after: ISO date/time (Paris "
                   "time if no offset), today, now, or now-30m, now-2h, now-1d")
    p.add_argument("--until", type=_when, help="recorded at or before; as --since")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                   help="jsonl: lossless, what import loads; csv: readable columns, the "
                   "payload as JSON")
    p.add_argument("--output", help="file (default: standard output)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="load an export into a new, empty store")
    p.add_argument("service", choices=["billing", "payment"])
    p.add_argument("input", help="a JSONL file written by regie export (CSV is for reading)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("as-of", help="the to-pay lists and régie totals at a past moment")
    p.add_argument("moment", type=_when, help="ISO date and time (Paris time if no offset), "
                   "now, today (its start), or a time before now: now-30m, now-2h, now-1d")
    p.add_argument("--family", help="only this family")
    p.set_defaults(func=cmd_as_of)

    p = sub.add_parser("journal", help="a régie's daily payment journal (CSV, PDF, JSON)")
    p.add_argument("--regie", required=True, help="the régie's code")
    p.add_argument("--date", required=True, type=_day,
                   help="YYYY-MM-DD, today or yesterday (Paris time)")
    p.add_argument("--format", choices=["csv", "pdf", "json"], default="csv")
    p.add_argument("--output", help="file (required for PDF; default: standard output)")
    p.set_defaults(func=cmd_journal)

    p = sub.add_parser("replay", help="drop the payment service's read models and rebuild "
                       "them from the history")
    # The three are tables of one read model, kept at one position: whichever is named,
    # all are dropped and rebuilt together. The names stay for the scripts that use them.
    p.add_argument("projection", choices=["all", "to-pay", "history", "journal"],
                   help="all (or any one name: to-pay, history and journal are rebuilt "
                   "together)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    reminders.add_parsers(sub)
    p = sub.add_parser("forget", help="erase a family's personal data on request, or every "
                       "family inactive since a date (retention); amounts and the chain stay")
    p.add_argument("--family", help="the family's id")
    p.add_argument("--inactive-before", type=_day, help="YYYY-MM-DD: every family with no "
                   "open invoice and nothing recorded since that day")
    p.add_argument("--dry-run", action="store_true", help="with --inactive-before: list "
                   "them, erase nothing")
    p.add_argument("--reason", default="demande de la famille",
                   help="why (kept in the record; write no personal data in it)")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("settings", help="list the settings and their current values")
    p.set_defaults(func=cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=Settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python narrates every connection at INFO; its warnings are what operators need.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    # The PDF writer narrates each font it subsets at INFO: dozens of lines per journal.
    logging.getLogger("fontTools").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
        return code
    except BrokenPipeError:
        # `regie export | head`: the reader has what it wanted. Stop quietly, as Unix
        # tools do, and keep Python's last flush at exit from failing on the same pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except Exception as e:  # a clear message and a non-zero exit, not a traceback
        if Settings().log_level == "DEBUG":
            raise
        print(f"regie {args.command}: {e}", file=sys.stderr)
        return 1

