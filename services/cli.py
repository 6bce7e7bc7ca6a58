"""The `regie` command: run the parts of the system, and the operators' tools."""

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import date, datetime

    from services.common.messaging.deadletters import DeadLetter
    from services.common.messaging.relay import Heads
    from services.common.storage.chain import Head

from services.common.settings import SETTINGS, Settings, is_secret


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_broker(args: argparse.Namespace) -> int:
    from services.common.messaging import broker

    settings = Settings()
    kind = args.kind or settings.kafka_broker
    port = args.port or int(settings.kafka_bootstrap.rsplit(":", 1)[-1])
    data_dir = Path(args.data_dir or settings.var_dir / f"kafka-{kind}")
    proc = broker.start(kind, port, data_dir, settings.var_dir / f"kafka-{kind}.log")
    print(f"{kind} broker on 127.0.0.1:{port} (pid {proc.pid})", flush=True)
    stop = _stop_on_signals()
    while not stop.is_set() and proc.poll() is None:
        stop.wait(0.5)
    if proc.poll() is None:
        proc.terminate()
        proc.wait()
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from events import BILLING_INVOICES, PAYMENT_PAYMENTS
    from services.bootstrap import billing_app, payment_app, positions
    from services.common.messaging.outbox import ToWire
    from services.common.messaging.relay import KafkaPublisher, Relay

    settings = Settings()
    app: Any
    to_wire: ToWire
    if args.service == "billing":
        from services.billing.integration import make_to_wire as billing_to_wire

        app = billing_app(settings)
        topic = settings.topic(BILLING_INVOICES.name)
        to_wire = billing_to_wire(app, topic)
    else:
        from services.payment.integration import make_to_wire as payment_to_wire

        app = payment_app(settings)
        topic = settings.topic(PAYMENT_PAYMENTS.name)
        to_wire = payment_to_wire(app, topic)
    relay = Relay(
        app, to_wire, KafkaPublisher(settings, topic),
        positions(settings, args.service, app), name=topic,
        heads=_relay_heads(settings, args.service),
    )
    logging.getLogger(__name__).info("relaying %s events to %s", args.service, topic)
    relay.run_forever(_stop_on_signals(), settings.poll_interval)
    return 0


def _relay_heads(settings: Settings, service: str) -> "Heads":
    from events import AUDIT_CHAIN_HEADS
    from services.common.messaging.relay import Heads, KafkaPublisher

    topic = settings.topic(AUDIT_CHAIN_HEADS.name)
    return Heads(KafkaPublisher(settings, topic), topic, service, settings.heads_interval)


def cmd_consume(args: argparse.Namespace) -> int:
    from events import BILLING_INVOICES, PAYMENT_PAYMENTS
    from services.bootstrap import billing_app, payment_app, positions
    from services.common.messaging.consumer import TrackedConsumer

    settings = Settings()
    if args.service == "payment":
        # payment_app is looked up here, at run time: the benchmarks swap it for a clock.
        payment = payment_app(settings)
        topic = settings.topic(BILLING_INVOICES.name)
        consumer = TrackedConsumer(
            settings, topic, payment.apply_billing_event,
            positions(settings, "payment", payment), on_idle=payment.refresh,
            dead_letters=payment.dead_letters,
        )
    else:
        billing = billing_app(settings)
        topic = settings.topic(PAYMENT_PAYMENTS.name)
        consumer = TrackedConsumer(
            settings, topic, billing.apply_payment_event, positions(settings, "billing", billing),
            dead_letters=billing.dead_letters,
        )
    logging.getLogger(__name__).info("%s consuming %s", args.service, topic)
    consumer.run_forever(_stop_on_signals())
    return 0


def _print_letter(letter: "DeadLetter") -> None:
    seen = letter.first_seen.isoformat(timespec="seconds") if letter.first_seen else "-"
    print(f"  {letter.where}  subject={letter.subject or '-'}  first seen {seen}  "
          f"error: {letter.error}")


def _place(text: str) -> tuple[str, int, int]:
    """TOPIC[PARTITION]@OFFSET, as `regie dead-letters list` shows a message's place."""
    import re

    match = re.fullmatch(r"(.+)\[([0-9]+)\]@([0-9]+)", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a place as list shows it: TOPIC[PARTITION]@OFFSET")
    return match.group(1), int(match.group(2)), int(match.group(3))


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from services.bootstrap import billing_app, payment_app
    from services.common.messaging.consumer import retry

    if (args.action == "drop") != (args.place is not None):
        raise ValueError("drop needs the place of one message (TOPIC[PARTITION]@OFFSET), "
                         "and only drop takes one")
    parked_left = dropped = 0
    for service in args.service or ["payment", "billing"]:
        # The consuming side of each service: payment reads billing.invoices, billing
        # reads payment.payments.
        if service == "payment":
            payment = payment_app()
            app: Any = payment
            handle = payment.apply_billing_event
        else:
            app = billing_app()
            handle = app.apply_payment_event
        if args.action == "list":
            letters = app.dead_letters.all()
            print(f"{service}: {len(letters)} dead letter(s)")
            for letter in letters:
                _print_letter(letter)
            continue
        if args.action == "drop":
            for letter in app.dead_letters.all():
                if (letter.topic, letter.partition, letter.offset) == args.place:
                    app.dead_letters.remove(letter)
                    print(f"{service}: dropped {letter.where}")
                    dropped += 1
            continue
        done = retry(app.dead_letters, handle)
        if service == "payment":
            payment.refresh()
        print(f"{service}: {done.applied} applied, {len(done.still_parked)} still parked")
        for letter in done.still_parked:
            _print_letter(letter)
        parked_left += len(done.still_parked)
    if args.action == "drop" and not dropped:
        topic, partition, offset = args.place
        raise ValueError(f"no dead letter at {topic}[{partition}]@{offset}")
    # A retry that leaves messages parked is not done: scripts and operators must notice.
    return 1 if parked_left else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services.bootstrap import payfip_gateway, payment_app
    from services.payment.gateway import MeasuredGateway

    settings = Settings()
    app = payment_app(settings)
    # Timed and counted like the API's calls; with PROMETHEUS_MULTIPROC_DIR shared with the
    # payment API, its /metrics shows them.
    gateway = MeasuredGateway(payfip_gateway(settings), app.meters)
    every = args.every if args.every is not None else settings.reconcile_interval
    if args.once:
        app.refresh()
        watched = len(app.to_pay.watched_payments())
        settled = app.reconcile(gateway, datetime.now(UTC))
        print(f"one pass: asked PayFiP about {watched} payment(s) under watch; "
              f"{settled} closed")
        return 0
    stop = _stop_on_signals()
    log = logging.getLogger(__name__)
    log.info("asking PayFiP about payments under watch every %.1fs", every)
    while True:
        try:
            app.refresh()
            settled = app.reconcile(gateway, datetime.now(UTC))
        except Exception:
            # The database or the read model failed for the whole pass: the next pass
            # tries again; a reconciler that stops would leave payments unwatched.
            log.exception("reconciliation pass failed; next one in %.1fs", every)
            settled = 0
        if settled:
            log.info("closed %d payment(s) under watch", settled)
        if stop.wait(every):
            return 0


def cmd_anomalies(args: argparse.Namespace) -> int:
    from services.bootstrap import payment_app

    found = payment_app().anomalies()
    if args.format == "json":
        print(json.dumps(found, ensure_ascii=False, indent=2))
        return 0
    for a in found:
        wrong = ", ".join(f"{f}={a['answer'].get(f)!r} (asked {a['expected'][f]!r})"
                          for f in a["fields"])
        print(f"{a['recorded_at']} payment {a['payment_id']} {a['regie']} idop {a['idop']} "
              f"{a['status']}: {wrong}")
    if not found:
        print("no anomalies")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from services.bootstrap import billing_app, payment_app
    from services.common.messaging.heads import for_service
    from services.common.storage.chain import check_heads, keyed_from, verify

    failed = False
    unknown = set(args.services) - {"billing", "payment"}
    if unknown:
        raise ValueError(f"unknown service {', '.join(sorted(unknown))}: billing or payment")
    heads = _heads(args.heads) if args.heads else None
    for service in args.services or ["billing", "payment"]:
        app = billing_app() if service == "billing" else payment_app()
        checked, broken = verify(app)
        if broken is not None:
            failed = True
            print(f"{service}: chain broken after {checked} good events: {broken}")
            continue
        intact = "chain intact"
        if getattr(app.recorder, "chain_key", b""):
            # Shown, so that a chain stripped of its key and recomputed plain is noticed.
            first = keyed_from(app)
            intact += f" (keyed from event {first})" if first else " (no event keyed yet)"
        if heads is None:
            print(f"{service}: {checked} events, {intact}")
            continue
        mine = for_service(heads, service)
        reached, unreached = check_heads(app, mine)
        if not mine:
            failed = True
            print(f"{service}: {checked} events, {intact}, but no head of {service} in "
                  f"{args.heads}: nothing to check it against")
        elif unreached is not None:
            failed = True
            print(f"{service}: {checked} events, {intact}, {reached} of {len(set(mine))} "
                  f"heads reached, then {unreached}")
        else:
            print(f"{service}: {checked} events, {intact}, all {reached} heads reached")
    return 1 if failed else 0


def _heads(source: str) -> "list[Head]":
    """Heads kept outside the database: `kafka` (the audit.chain-heads topic) or a file."""
    from events import AUDIT_CHAIN_HEADS
    from services.common.messaging.heads import read_file, read_topic

    if source == "kafka":
        settings = Settings()
        return read_topic(settings, settings.topic(AUDIT_CHAIN_HEADS.name))
    with open(source, encoding="utf-8") as lines:
        return list(read_file(lines, source))

RELATIVE = {"m": "minutes", "h": "hours", "d": "days"}


def _when(text: str, now: "datetime | None" = None) -> "datetime":
    """An ISO date/time (Paris time unless it has an offset), `now`, `today` (its start,
    Paris time) or a time before now such as `now-30m`, `now-2h`, `now-1d`."""
    import re
    from datetime import datetime, timedelta

    from events.formats import PARIS

    now = now or datetime.now(PARIS)
    word = text.strip().lower()
    if word == "now":
        return now
    if word == "today":
        return now.astimezone(PARIS).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
    ago = re.fullmatch(r"now-(\d+)([mhd])", word)
    if ago:
        return now - timedelta(**{RELATIVE[ago[2]]: int(ago[1])})
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # a local date and time, as a régisseur would type it
        moment = moment.replace(tzinfo=PARIS)
    return moment


def _service_app(service: str) -> Any:
    from services.bootstrap import billing_app, payment_app

    return billing_app() if service == "billing" else payment_app()


def cmd_export(args: argparse.Namespace) -> int:
    from services.common.storage.history import records, write

    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        total = 0
        for service in args.service or ["billing", "payment"]:
            rows = records(_service_app(service), service, regie=args.regie,
                           family=args.family, since=args.since, until=args.until)
            total += write(rows, out, args.format)
    finally:
        if args.output:
            out.close()
    print(f"exported {total} events", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from services.common.storage.history import import_into, read

    app = _service_app(args.service)
    with open(args.input, newline="") as lines:
        rows = (r for r in read(lines) if r["service"] == args.service)
        count = import_into(app, rows)
    print(f"{args.service}: imported {count} events")
    return 0


def cmd_as_of(args: argparse.Namespace) -> int:
    import json

    from services.bootstrap import payment_app
    from services.payment import domain
    from services.payment.projections import MemoryToPayStore, catch_up

    app = payment_app()
    past = MemoryToPayStore()
    catch_up(app, past, until=args.moment)
    names = past.regie_names()
    families = sorted({row["family_id"] for row in past.snapshot()["invoices"].values()
                       if row["status"] == domain.OPEN})
    if args.family:
        families = [f for f in families if f == args.family]
    lists = {f: domain.summarise(past.open_lines(f), names) for f in families}
    totals: dict[str, dict[str, Any]] = {}
    for entries in lists.values():
        for e in entries:
            t = totals.setdefault(e["code"], {"name": e["name"], "count": 0, "total_cents": 0})
            t["count"] += e["count"]
            t["total_cents"] += e["total_cents"]
    print(json.dumps({"as_of": args.moment.isoformat(), "regies": totals, "families": lists},
                     ensure_ascii=False, indent=2))
    return 0


def _day(text: str, today: "date | None" = None) -> "date":
    """YYYY-MM-DD, `today` or `yesterday` (Paris time)."""
    from datetime import date, datetime, timedelta

    from events.formats import PARIS

    today = today or datetime.now(PARIS).date()
    word = text.strip().lower()
    if word in ("today", "yesterday"):
        return today - timedelta(days=word == "yesterday")
    return date.fromisoformat(text)


def cmd_journal(args: argparse.Namespace) -> int:
    import json

    from services.bootstrap import payment_app
    from services.payment.journal import to_csv, to_pdf

    app = payment_app()
    app.refresh()
    if not app.regie_exists(args.regie):
        raise ValueError(f"unknown régie {args.regie!r}")
    journal = app.journal(args.regie, args.date)
    if args.format == "pdf":
        if not args.output:
            raise ValueError("a PDF needs --output FILE")
        name = app.to_pay.regie_names().get(args.regie, args.regie)
        Path(args.output).write_bytes(to_pdf(journal, name))
        print(f"wrote {args.output}")
        return 0
    body = to_csv(journal) if args.format == "csv" else json.dumps(
        journal, default=str, ensure_ascii=False, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(body)
    else:
        sys.stdout.write(body)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from services.bootstrap import payment_app
    from services.payment.projections import catch_up

    app = payment_app()
    total = app.recorder.max_notification_id() or 0
    app.to_pay.reset()
    with tqdm(total=total, unit="event", desc="rebuilding",
              disable=args.quiet) as bar:
        done = catch_up(app, app.to_pay, progress=bar.update)
    print(f"read models (to-pay, history, journal): rebuilt from {done} events")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from services.run import run

    return run(load_demo=not args.no_demo)


def _value_and_source(name: str, default: str) -> tuple[str, str]:
    """A setting's value as the parts would see it, and where it comes from."""
    if name in os.environ:
        return os.environ[name], "from the environment"
    # Two secrets that the running system keeps in files under var/ when unset.
    if name == "REGIE_TOKENS":
        from services.bootstrap import dev_tokens_file
        from services.common.web.auth import parse_tokens

        path = dev_tokens_file(Settings())
        if path.exists():
            roles = ", ".join(parse_tokens(path.read_text().strip()).values())
            return f"(set, hidden: {roles})", f"from {path}, written by regie run"
    if name == "PORTAL_SECRET_KEY":
        path = Path(Settings().portal_accounts_db).parent / "portal-secret.key"
        if path.exists():
            return "(set, hidden)", f"from {path}"
    return default, "default"


def cmd_settings(args: argparse.Namespace) -> int:
    for name, (default, meaning) in SETTINGS.items():
        value, source = _value_and_source(name, default)
        if is_secret(name) and value and not value.startswith("(set, hidden"):
            value = "(set, hidden)"
        origin = source if source == "default" else f"{source} (default {default!r})"
        print(f"{name}={value!r}  # {meaning}; {origin}")
    print("# regie run also gives the parts it starts the URLs of one another: PAYFIP_*, "
          "PAYMENT_PUBLIC_URL and PORTAL_* follow the ports above unless set.")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
