"""`regie remind` (one pass of reminders by e-mail) and `regie scheduler` (the daily jobs:
a pass of reminders a day, until stopped)."""

import argparse
import logging
from datetime import datetime
from typing import Any

from events.formats import PARIS
from services.common.settings import Settings

log = logging.getLogger(__name__)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days (0 or more)")
    return days


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("remind", help="e-mail the payers whose online-payment deadline is "
                       "within REMIND_DAYS_BEFORE days (once per invoice and deadline)")
    p.add_argument("--days-before", type=_days, help="default: REMIND_DAYS_BEFORE")
    p.set_defaults(func=cmd_remind)

    p = sub.add_parser("scheduler", help="the daily jobs (reminders by e-mail), a pass every "
                       "REGIE_SCHEDULER_INTERVAL seconds until stopped")
    p.add_argument("--every", type=float, help="seconds between passes "
                   "(default: REGIE_SCHEDULER_INTERVAL, a day)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.set_defaults(func=cmd_scheduler)


def _one_pass(settings: Settings, app: Any, days_before: int) -> Any:
    from services.bootstrap import mailer
    from services.common.storage.persistence import exclusive

    # One pass at a time (`regie remind` during the scheduler's, say): a letter is sent
    # before it is recorded, so two passes at once would both send it.
    with exclusive(settings, "payment", "reminders"):
        today = datetime.now(PARIS).date()
        return app.remind(mailer(settings), today, days_before, settings.portal_public_url)


def cmd_remind(args: argparse.Namespace) -> int:
    from services.bootstrap import payment_app

    settings = Settings()
    days_before = args.days_before if args.days_before is not None else (
        settings.remind_days_before)
    app = payment_app(settings)
    done = _one_pass(settings, app, days_before)
    print(f"reminders: {done.sent} sent, {done.failed} not sent (tried again next pass), "
          f"{done.without_email} without a known e-mail")
    # A cron job's failure shows: the mail server refused or could not be reached.
    return 1 if done.failed else 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from services.bootstrap import payment_app
    from services.cli.processes import _stop_on_signals

    settings = Settings()
    app = payment_app(settings)
    every = args.every if args.every is not None else settings.scheduler_interval
    stop = None if args.once else _stop_on_signals()
    log.info("scheduler: reminders %d days before the deadline, a pass every %.0fs",
             settings.remind_days_before, every)
    while True:
        try:
            done = _one_pass(settings, app, settings.remind_days_before)
            log.info("reminders: %d sent, %d not sent (tried again next pass), "
                     "%d without a known e-mail", done.sent, done.failed, done.without_email)
        except Exception:
            # The database failed for the whole pass: the next one tries again; a
            # scheduler that stops would remind no one.
            log.exception("scheduler pass failed; next one in %.0fs", every)
        if stop is None or stop.wait(every):
            return 0
