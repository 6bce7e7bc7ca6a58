"""Staff accounts: the portal's accounts (argon2 hashes, one-time links, sessions kept in
SQLite), each naming a staff member instead of a family.

The portal's store keeps one label per account, a family id there: here it holds the staff
member's name, shown on the pages. The staff id the APIs record in ``by`` is the e-mail
address, so it must be one the APIs accept in X-Regie-Staff.
"""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from services.portal.accounts import (
    EMAIL,
    LINK_LIFETIME,
    Account,
    AccountError,
    Accounts,
    _token_hash,
    normalise_email,
    utc_now,
)

# As the APIs accept a staff id in X-Regie-Staff.
STAFF_ID = re.compile(r"^[A-Za-z0-9._@+-]{1,80}\Z")
NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,80}\Z")


@dataclass(frozen=True)
class Staff:
    """Who is at the desk: ``id`` goes to the APIs, ``name`` on the pages."""

    id: str
    name: str


def staff_of(account: Account) -> Staff:
    return Staff(id=account.email, name=account.family_id)


class StaffAccounts(Accounts):
    def create_staff(self, name: str, email: str, now: datetime | None = None) -> str:
        """A new staff account without a password; the one-time token of its link."""
        email, name = normalise_email(email), name.strip()
        if not NAME.match(name):
            raise AccountError("nom : de 1 à 80 caractères")
        if not (EMAIL.match(email) and STAFF_ID.match(email) and len(email) >= 6):
            raise AccountError("adresse électronique invalide (6 à 80 lettres, chiffres "
                               "ou . _ @ + -)")
        now = now or utc_now()
        token = secrets.token_urlsafe(32)
        self.store.add(Account(
            email=email, family_id=name, created_at=now.isoformat(),
            setup_token_hash=_token_hash(token),
            setup_expires_at=(now + LINK_LIFETIME).isoformat(),
        ))
        return token
