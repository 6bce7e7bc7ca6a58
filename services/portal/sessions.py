"""Who is logged in, and where a log-in may send the browser next.

Flask's signed cookie carries only the session's random id (with the CSRF token and the
flash messages): whether that id still opens the account is decided by the accounts'
database on every request, so logging out, a new password or idle time end it for any copy
of the cookie.
"""

from datetime import timedelta
from urllib.parse import urlsplit

from flask import session

from services.portal.accounts import Account
from services.portal.context import portal

KEY = "session_id"


def idle() -> timedelta:
    return timedelta(minutes=portal().settings.session_idle_minutes)


def log_in(account: Account) -> None:
    session.clear()  # a new session at each login
    session.permanent = True
    session[KEY] = portal().accounts.open_session(account, idle())


def log_out() -> None:
    session_id = session.get(KEY)
    if session_id:
        portal().accounts.close_session(session_id)
    session.clear()


def logged_in() -> Account | None:
    """The session's account, if its session lives; its idle time starts again."""
    session_id = session.get(KEY)
    if not session_id:
        return None
    account = portal().accounts.session_account(session_id, idle())
    if account is None:
        session.clear()
    return account


def safe_next(target: str | None) -> str | None:
    """Only a path of this site: never another host (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None
