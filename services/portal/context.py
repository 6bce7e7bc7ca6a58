"""What the portal's blueprints share: its settings, its two ports, and who is logged in."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, redirect, request, url_for

from services.portal.accounts import Account, Accounts
from services.portal.payments import Payments
from services.portal.settings import PortalSettings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Portal:
    settings: PortalSettings
    accounts: Accounts
    payments: Payments


def portal() -> Portal:
    """The portal of the application handling the request (set by create_app)."""
    found: Portal = current_app.extensions["portal"]
    return found


def login_required(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.account is None:
            return redirect(url_for("account.login", suivant=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def family() -> str:
    """The logged-in family: from the session, never from a URL or a form."""
    account: Account = g.account
    return account.family_id


def crumbs(*trail: tuple[str, str | None]) -> list[tuple[str, str | None]]:
    return [("Accueil", url_for("invoices.home")), *trail]
