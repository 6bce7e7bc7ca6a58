"""Bearer tokens with roles: BILLING_TOKENS, PAYMENT_TOKENS, or REGIE_TOKENS for both."""

import re
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import request
from flask_smorest import abort

# payer: the family portal's (a family's to-pay, history and payments, and paying them);
# cashier: the counter's (counter payments, credit notes, refunds, the day's journal).
ROLES = ("issuer", "reader", "auditor", "operator", "payer", "cashier")
F = TypeVar("F", bound=Callable[..., Any])


class TokenError(ValueError):
    pass


def parse_tokens(spec: str, setting: str = "REGIE_TOKENS") -> dict[str, str]:
    """``"tok1:issuer,tok2:reader"`` -> ``{"tok1": "issuer", "tok2": "reader"}``."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        token, sep, role = item.rpartition(":")
        if not sep or not token:
            raise TokenError(f"{setting}: {item!r} is not token:role")
        if role not in ROLES:
            raise TokenError(f"{setting}: unknown role {role!r} (roles: {', '.join(ROLES)})")
        tokens[token] = role
    return tokens


def make_dev_tokens(roles: tuple[str, ...] = ROLES) -> dict[str, str]:
    return {f"dev-{role}-{secrets.token_urlsafe(12)}": role for role in roles}


def format_tokens(tokens: dict[str, str]) -> str:
    return ",".join(f"{t}:{r}" for t, r in tokens.items())


class Auth:
    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens

    def role(self) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        role = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            abort(401, errors={"headers": {"Authorization": ["a valid bearer token is required"]}})
        return str(role)

    def requires(self, *roles: str) -> Callable[[F], F]:
        allowed = set(roles) | {"operator"}

        def decorator(view: F) -> F:
            @wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                role = self.role()
                if role not in allowed:
                    abort(403, errors={"headers": {"Authorization": [
                        f"the {role} role may not do this"]}})
                return view(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorator


# The back office's staff id (an e-mail address): what a cashier's acts are recorded under.
STAFF_HEADER = "X-Regie-Staff"
STAFF_ID = re.compile(r"^[A-Za-z0-9._@+-]{1,80}\Z")


def acting(auth: Auth) -> str:
    """Who does it, for an event's ``by``: the token's role, or, for a cashier's or an
    operator's token, the staff member the back office names in X-Regie-Staff. Other roles
    serve no desk: their header is ignored."""
    role = auth.role()
    staff = request.headers.get(STAFF_HEADER)
    if staff is None or role not in ("cashier", "operator"):
        return role
    if not STAFF_ID.match(staff):
        abort(422, errors={"headers": {STAFF_HEADER: [
            "a staff id: 1 to 80 letters, digits or . _ @ + -"]}})
    return staff
