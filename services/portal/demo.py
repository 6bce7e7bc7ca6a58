"""The demo family's portal account, for `make run` (loopback only: a known password)."""

from pathlib import Path

from services.portal.accounts import Accounts, SqliteAccounts

FAMILY = "famille-martin"
EMAIL = "famille.martin@example.org"
PASSWORD = "demo-famille-martin"


def ensure_account(accounts_db: str | Path, family: str = FAMILY, email: str = EMAIL,
                   password: str = PASSWORD) -> tuple[str, str]:
    """Create the account if missing and give it ``password`` if it has none; idempotent.

    Returns the e-mail address and password to print. A password the family changed is
    left alone (then the one returned is no longer right).
    """
    accounts = Accounts(SqliteAccounts(accounts_db))
    account = accounts.get(email)
    if account is None:
        accounts.create(family, email)
        account = accounts.get(email)
    if account is not None and not account.active:
        accounts.set_password(email, password)
    return email, password
