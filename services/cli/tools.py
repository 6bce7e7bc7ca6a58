"""The operators' and auditors' `regie` commands: each does its work once and exits (dead
letters, anomalies, verify, export, import, as-of, journal, replay, settings)."""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common.settings import SETTINGS, Settings, is_secret

if TYPE_CHECKING:
    from datetime import date, datetime

    from services.common.messaging.deadletters import DeadLetter
    from services.common.storage.chain import Head


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
    # What the régies owed families then: their credit, and the refunds not yet paid.
    credits = {f: past.credits(f) for f in sorted(
        {row["family_id"] for row in past.snapshot()["credits"].values()})
        if not args.family or f == args.family}
    refunds = [r for r in past.refunds("due") if not args.family or r["family_id"] == args.family]
    print(json.dumps({"as_of": args.moment.isoformat(), "regies": totals, "families": lists,
                      "credits": {f: c for f, c in credits.items() if c},
                      "refunds_due": refunds}, ensure_ascii=False, indent=2))
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
    from services.payment import documents as payment_documents
    from services.payment.journal import to_csv, to_pdf

    app = payment_app()
    app.refresh()
    if not app.regie_exists(args.regie):
        raise ValueError(f"unknown régie {args.regie!r}")
    journal = payment_documents.journal(app, args.regie, args.date)
    if args.format == "pdf":
        if not args.output:
            raise ValueError("a PDF needs --output FILE")
        name = app.to_pay.regie_names().get(args.regie, args.regie)
        Path(args.output).write_bytes(to_pdf(journal, name, app.collectivite))
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
    from services.payment.projections import rebuild

    app = payment_app()
    total = app.recorder.max_notification_id() or 0
    with tqdm(total=total, unit="event", desc="rebuilding",
              disable=args.quiet) as bar:
        done = rebuild(app, progress=bar.update)
    print(f"read models (to-pay, history, journal): rebuilt from {done} events")
    return 0


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


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase families' personal data in both services (their keys destroyed) and record it,
    so that the relays tell subscribers to erase their copies."""
    from services.bootstrap import billing_app, payment_app

    if (args.family is None) == (args.inactive_before is None):
        raise ValueError("give either --family ID or --inactive-before DATE")
    if args.dry_run and args.family is not None:
        raise ValueError("--dry-run goes with --inactive-before: it lists whom that erases")
    billing, payment = billing_app(), payment_app()
    if args.family is not None:
        if not _known_family(billing, payment, args.family):
            raise ValueError(f"no family {args.family!r} in either service: nothing to "
                             "forget (check the id)")
        families = [args.family]
    else:
        families = _inactive_families(billing, payment, args.inactive_before)
        if args.dry_run:
            for family in families:
                print(family)
            print(f"{len(families)} famil{'y' if len(families) == 1 else 'ies'} inactive "
                  f"since before {args.inactive_before.isoformat()} (dry run: none forgotten)")
            return 0
    accounts = _portal_accounts()
    for family in families:
        erased = [service for service, app in (("billing", billing), ("payment", payment))
                  if app.forget(family, args.reason)]
        if accounts is not None and accounts.forget_family(family):
            erased.append("portal account")
        held = ", ".join(erased) if erased else "no sealed data held"
        print(f"{family}: forgotten ({held})")
    return 0


def _known_family(billing: Any, payment: Any, family: str) -> bool:
    """Whether either service has heard of the family (a key, an erasure, an invoice)."""
    if any(app.keys.key(family) is not None or app.keys.forgotten(family)
           for app in (billing, payment)):
        return True
    payment.refresh()
    return bool(payment.to_pay.history(family))


def _portal_accounts() -> Any:
    """The portal's accounts, where this machine keeps them (PORTAL_ACCOUNTS_DB)."""
    from services.portal.accounts import Accounts, SqliteAccounts

    path = Path(Settings().portal_accounts_db)
    return Accounts(SqliteAccounts(path)) if path.exists() else None


def _inactive_families(billing: Any, payment: Any, before: "date") -> list[str]:
    """The families with no open invoice and nothing recorded on or after ``before`` (Paris
    time) in either service, leaving out those forgotten already."""
    from datetime import datetime, time

    from events.formats import PARIS
    from services.common.storage.history import records

    cutoff = datetime.combine(before, time(), PARIS)
    active: set[str] = set()
    seen: set[str] = set()
    for app, service in ((billing, "billing"), (payment, "payment")):
        for row in records(app, service):
            family = row["family_id"]
            if not family:
                continue
            seen.add(family)
            if datetime.fromisoformat(row["recorded_at"]) >= cutoff:
                active.add(family)
    payment.refresh()
    return sorted(
        family for family in seen - active
        if not payment.to_pay.open_lines(family)
        and not all(app.keys.forgotten(family) and app.keys.key(family) is None
                    for app in (billing, payment))
    )
