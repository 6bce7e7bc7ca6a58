"""What the two server-rendered sites (the families' portal, the staff's back office) share:
their session cookie, CSRF and request limits, the limit on failed log-ins, and the pages'
skeleton and log-in form (``templates/``: ``site_base.html``, ``site_login.html``)."""

import math
import os
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect

from services.common.french import moment
from services.common.settings import max_body_bytes

# Failed log-ins allowed per account and per client address, over a moving window.
FAILED_LOG_INS = "5 per 15 minutes"

# The shared templates, found after the site's own (a site's template of the same name wins).
_templates = Blueprint("site", __name__, template_folder="templates")


def kept_secret_key(configured: str, path: Path) -> str:
    """``configured`` if set, else a random key kept in ``path``, the same for every worker.

    gunicorn starts a site's workers together: the key is written whole beside ``path``
    and then linked to it, which fails if another worker linked its key first, so no
    worker ever reads a file that is made but not yet written (an empty key would leave
    it without sessions, a 500 on each page it serves).
    """
    if configured:
        return configured
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # mkstemp: a name of its own (mode 0600) for each worker, or thread, drafting.
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: remove it (a new key is made) or set the "
                           "site's secret key setting")
    return key


def configure_site(app: Flask, *, secret_key: str, cookie: str, secure_cookies: bool,
                   session_idle_minutes: float) -> None:
    """A signed session cookie that lives as long as an idle session (the database decides
    whether the session itself lives), CSRF on every form, bounded request bodies."""
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.config.update(
        SECRET_KEY=secret_key,
        # __Host-: the browser keeps it for this host only, over https only.
        SESSION_COOKIE_NAME=f"__Host-{cookie}" if secure_cookies else cookie,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        PREFERRED_URL_SCHEME="https" if secure_cookies else "http",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=session_idle_minutes),
        WTF_CSRF_TIME_LIMIT=2 * 3600,
        MAX_CONTENT_LENGTH=max_body_bytes(),
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    CSRFProtect(app)
    app.register_blueprint(_templates)


def limit_failed_log_ins(app: Flask, endpoint: str, scope: str,
                         account_of: Callable[[str], str],
                         refuse: Callable[[str, int], tuple[Any, int]]) -> Limiter:
    """Five failed log-ins (answered 401) on the view ``endpoint`` per account and per client
    address in 15 minutes, then 429: ``refuse(why, 429)`` renders the log-in form with why.

    The account is the form's ``email`` as ``account_of`` writes it; the counts are named
    ``scope``-adresse and ``scope``-compte. They live in this process's memory: each gunicorn
    worker counts on its own.
    """
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://",
                      strategy="moving-window")
    view: Callable[..., Any] = app.view_functions[endpoint]
    for name, key in ((f"{scope}-adresse", get_remote_address),
                      (f"{scope}-compte", lambda: account_of(request.form.get("email", "")))):
        view = limiter.limit(FAILED_LOG_INS, key_func=key, scope=name, methods=["POST"],
                             deduct_when=_failed)(view)
    app.view_functions[endpoint] = view

    @app.errorhandler(RateLimitExceeded)
    def too_many(e: RateLimitExceeded) -> Any:
        # The oldest failure counted leaves the window then: one more try is allowed.
        now = datetime.now(UTC).timestamp()
        limit = limiter.current_limit
        reset_at = limit.reset_at if limit else now + 15 * 60
        until = moment(datetime.fromtimestamp(reset_at, UTC))
        body, status = refuse(f"Trop de tentatives de connexion. Réessayez après {until}.", 429)
        return body, status, {"Retry-After": str(max(1, math.ceil(reset_at - now)))}

    return limiter


def _failed(response: Response) -> bool:
    return response.status_code == 401
