"""What the two server-rendered sites (the families' portal, the staff's back office) share:
their session cookie, CSRF and request limits."""

from datetime import timedelta

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from services.common.settings import max_body_bytes


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
