"""Who is logged in: the session's mark, and where a log-in may send the browser next."""

import hashlib
from urllib.parse import urlsplit

from services.portal.accounts import Account


def session_mark(account: Account) -> str:
    """Changes with the password: a new password ends every session opened with the old."""
    return hashlib.sha256((account.password_hash or "").encode()).hexdigest()[:16]


def safe_next(target: str | None) -> str | None:
    """Only a path of this site: never another host (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None
