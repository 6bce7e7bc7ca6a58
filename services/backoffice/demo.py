"""The demo cashier's staff account, for `make run` (loopback only: a known password)."""

from pathlib import Path

from services.backoffice.staff import StaffAccounts
from services.portal.accounts import SqliteAccounts

NAME = "Caisse de démonstration"
EMAIL = "guichet@example.org"
PASSWORD = "demo-guichet-regie"


def ensure_account(accounts_db: str | Path) -> tuple[str, str]:
    """Create the account if missing and give it the demo password if it has none;
    idempotent. A password changed since is left alone."""
    accounts = StaffAccounts(SqliteAccounts(accounts_db))
    if accounts.get(EMAIL) is None:
        accounts.create_staff(NAME, EMAIL)
    account = accounts.get(EMAIL)
    if account is not None and not account.active:
        accounts.set_password(EMAIL, PASSWORD)
    return EMAIL, PASSWORD
