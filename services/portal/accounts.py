"""Families' accounts: one e-mail address, one family id, an argon2 password hash.

An operator creates the account; the family sets its password once through a one-time link
(only a SHA-256 of the link's token is stored). Log-in sessions are kept beside the accounts
(again only a SHA-256 of each session's id), so that logging out, a new password or idle time
ends them whatever copy of the cookie is left. ``AccountStore`` is the port: ``MemoryAccounts``
for tests, ``SqliteAccounts`` (stdlib sqlite3) for real use.
"""

import hashlib
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

FAMILY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")  # as the payment API accepts it
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")
PASSWORD_MIN, PASSWORD_MAX = 12, 128
LINK_LIFETIME = timedelta(days=7)


class AccountError(ValueError):
    """Refused input, with a message fit for the person who typed it (in French)."""


class AccountExists(AccountError):
    pass


@dataclass(frozen=True)
class Account:
    email: str
    family_id: str
    created_at: str
    password_hash: str | None = None
    setup_token_hash: str | None = None
    setup_expires_at: str | None = None

    @property
    def active(self) -> bool:
        return self.password_hash is not None


class AccountStore(Protocol):
    def add(self, account: Account) -> None:
        """Store a new account; AccountExists if the e-mail address is taken."""

    def get(self, email: str) -> Account | None: ...

    def by_setup_token(self, token_hash: str) -> Account | None: ...

    def save(self, account: Account) -> None:
        """Replace the stored account of the same e-mail address."""

    def use_setup_token(self, token_hash: str, password_hash: str, now: str) -> Account | None:
        """Set the password of the account whose link is still valid at ``now`` and end
        the link, in one step: of two uses of one link at once, only one gets an account."""

    def open_session(self, session_hash: str, email: str, now: str, idle_since: str) -> None:
        """Keep a new session; forget those nobody used since ``idle_since``."""

    def touch_session(self, session_hash: str, now: str, idle_since: str) -> str | None:
        """The e-mail address of a session used since ``idle_since``, now used again at
        ``now``; None for a session ended, idle too long, or never opened."""

    def close_session(self, session_hash: str) -> None: ...

    def close_sessions(self, email: str) -> None:
        """End every session of the account."""

    def delete(self, email: str | None = None, family_id: str | None = None) -> int:
        """Delete the account of that address, or every account of the family, with their
        sessions, leaving nothing of them readable; how many accounts went."""


class MemoryAccounts:
    def __init__(self) -> None:
        self._rows: dict[str, Account] = {}
        self._sessions: dict[str, tuple[str, str]] = {}  # hash -> (email, last used)
        self._lock = threading.Lock()

    def add(self, account: Account) -> None:
        with self._lock:
            if account.email in self._rows:
                raise AccountExists("un compte existe déjà pour cette adresse électronique")
            self._rows[account.email] = account

    def get(self, email: str) -> Account | None:
        return self._rows.get(email)

    def by_setup_token(self, token_hash: str) -> Account | None:
        return next((a for a in self._rows.values() if a.setup_token_hash == token_hash), None)

    def save(self, account: Account) -> None:
        with self._lock:
            self._rows[account.email] = account

    def use_setup_token(self, token_hash: str, password_hash: str, now: str) -> Account | None:
        with self._lock:
            account = self.by_setup_token(token_hash)
            if account is None or not _valid_at(account.setup_expires_at, now):
                return None
            used = replace(account, password_hash=password_hash, setup_token_hash=None,
                           setup_expires_at=None)
            self._rows[used.email] = used
            self._sessions = {h: v for h, v in self._sessions.items() if v[0] != used.email}
            return used

    def open_session(self, session_hash: str, email: str, now: str, idle_since: str) -> None:
        with self._lock:
            self._sessions = {h: v for h, v in self._sessions.items() if v[1] > idle_since}
            self._sessions[session_hash] = (email, now)

    def touch_session(self, session_hash: str, now: str, idle_since: str) -> str | None:
        with self._lock:
            email, used = self._sessions.get(session_hash, ("", ""))
            if not email or used <= idle_since:
                self._sessions.pop(session_hash, None)
                return None
            self._sessions[session_hash] = (email, now)
            return email

    def close_session(self, session_hash: str) -> None:
        with self._lock:
            self._sessions.pop(session_hash, None)

    def close_sessions(self, email: str) -> None:
        with self._lock:
            self._sessions = {h: v for h, v in self._sessions.items() if v[0] != email}

    def delete(self, email: str | None = None, family_id: str | None = None) -> int:
        with self._lock:
            gone = {a.email for a in self._rows.values()
                    if a.email == email or a.family_id == family_id}
            self._rows = {e: a for e, a in self._rows.items() if e not in gone}
            self._sessions = {h: v for h, v in self._sessions.items() if v[0] not in gone}
            return len(gone)


SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    email TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    password_hash TEXT,
    setup_token_hash TEXT UNIQUE,
    setup_expires_at TEXT
)
"""
SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    session_hash TEXT PRIMARY KEY,
    email TEXT NOT NULL REFERENCES accounts (email),
    created_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL
)
"""
COLUMNS = ("email", "family_id", "created_at", "password_hash", "setup_token_hash",
           "setup_expires_at")


class SqliteAccounts:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            db.execute(SESSIONS)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # one transaction, committed unless it raised
                yield db
        finally:
            db.close()

    def _one(self, where: str, value: str) -> Account | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM accounts WHERE {where} = ?", (value,)
            ).fetchone()
        return None if row is None else Account(**dict(zip(COLUMNS, row, strict=True)))

    def add(self, account: Account) -> None:
        try:
            with self._connect() as db:
                db.execute(
                    f"INSERT INTO accounts ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
                    tuple(getattr(account, c) for c in COLUMNS),
                )
        except sqlite3.IntegrityError as e:
            raise AccountExists("un compte existe déjà pour cette adresse électronique") from e

    def get(self, email: str) -> Account | None:
        return self._one("email", email)

    def by_setup_token(self, token_hash: str) -> Account | None:
        return self._one("setup_token_hash", token_hash)

    def save(self, account: Account) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE accounts SET family_id = ?, created_at = ?, password_hash = ?, "
                "setup_token_hash = ?, setup_expires_at = ? WHERE email = ?",
                (account.family_id, account.created_at, account.password_hash,
                 account.setup_token_hash, account.setup_expires_at, account.email),
            )

    def use_setup_token(self, token_hash: str, password_hash: str, now: str) -> Account | None:
        # BEGIN IMMEDIATE takes the database's write lock before reading the link: a second
        # use waits for the first to commit, then finds the link gone.
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM accounts WHERE setup_token_hash = ?",
                (token_hash,),
            ).fetchone()
            account = None if row is None else Account(**dict(zip(COLUMNS, row, strict=True)))
            if account is None or not _valid_at(account.setup_expires_at, now):
                return None
            db.execute(
                "UPDATE accounts SET password_hash = ?, setup_token_hash = NULL, "
                "setup_expires_at = NULL WHERE email = ?", (password_hash, account.email))
            db.execute("DELETE FROM sessions WHERE email = ?", (account.email,))
        return replace(account, password_hash=password_hash, setup_token_hash=None,
                       setup_expires_at=None)

    def open_session(self, session_hash: str, email: str, now: str, idle_since: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE last_used_at <= ?", (idle_since,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                       (session_hash, email, now, now))

    def touch_session(self, session_hash: str, now: str, idle_since: str) -> str | None:
        with self._connect() as db:
            row = db.execute(
                "UPDATE sessions SET last_used_at = ? WHERE session_hash = ? "
                "AND last_used_at > ? RETURNING email", (now, session_hash, idle_since),
            ).fetchone()
        return None if row is None else str(row[0])

    def close_session(self, session_hash: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE session_hash = ?", (session_hash,))

    def close_sessions(self, email: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE email = ?", (email,))

    def delete(self, email: str | None = None, family_id: str | None = None) -> int:
        with self._connect() as db:
            # Deleted rows stay in the file's free pages unless zeroed.
            db.execute("PRAGMA secure_delete = ON")
            emails = [row[0] for row in db.execute(
                "SELECT email FROM accounts WHERE email = ? OR family_id = ?",
                (email, family_id))]
            for gone in emails:
                db.execute("DELETE FROM sessions WHERE email = ?", (gone,))
                db.execute("DELETE FROM accounts WHERE email = ?", (gone,))
        with self._connect() as db:
            # And the WAL keeps the pages as they were until checkpointed and truncated.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(emails)


def _valid_at(expires_at: str | None, now: str) -> bool:
    return expires_at is not None and datetime.fromisoformat(expires_at) > \
        datetime.fromisoformat(now)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _stamp(moment: datetime) -> str:
    """The stores compare session times as text: one zone and one format, always."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError(
            f"le mot de passe doit compter de {PASSWORD_MIN} à {PASSWORD_MAX} caractères")


class Accounts:
    """What the portal and the operators' command do with accounts."""

    def __init__(self, store: AccountStore, hasher: PasswordHasher | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        # Verified when the address is unknown, so that both answers take as long.
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    def create(self, family_id: str, email: str, now: datetime | None = None) -> str:
        """A new account without a password; returns the one-time token of its link."""
        email = normalise_email(email)
        if not FAMILY_ID.match(family_id):
            raise AccountError("identifiant de famille : lettres, chiffres, '.', '_' ou '-'")
        if not (EMAIL.match(email) and 6 <= len(email) <= 80):
            raise AccountError("adresse électronique invalide (6 à 80 caractères)")
        now = now or utc_now()
        token = secrets.token_urlsafe(32)
        self.store.add(Account(
            email=email, family_id=family_id, created_at=now.isoformat(),
            setup_token_hash=_token_hash(token),
            setup_expires_at=(now + LINK_LIFETIME).isoformat(),
        ))
        return token

    def new_link(self, email: str, now: datetime | None = None) -> str:
        """A fresh one-time link for an existing account (forgotten password)."""
        account = self.store.get(normalise_email(email))
        if account is None:
            raise AccountError("aucun compte pour cette adresse électronique")
        now = now or utc_now()
        token = secrets.token_urlsafe(32)
        self.store.save(replace(account, setup_token_hash=_token_hash(token),
                                setup_expires_at=(now + LINK_LIFETIME).isoformat()))
        return token

    def for_link(self, token: str, now: datetime | None = None) -> Account | None:
        """The account a one-time link opens, if it is still valid."""
        account = self.store.by_setup_token(_token_hash(token))
        if account is None or account.setup_expires_at is None:
            return None
        if datetime.fromisoformat(account.setup_expires_at) < (now or utc_now()):
            return None
        return account

    def set_password_with_link(self, token: str, password: str,
                               now: datetime | None = None) -> Account | None:
        """The password set, and the link ended; None if the link was not (or no longer)
        valid, for example used by another request meanwhile."""
        if self.for_link(token, now) is None:
            return None
        check_password(password)  # a refused password leaves the link as it was
        return self.store.use_setup_token(_token_hash(token), self.hasher.hash(password),
                                          (now or utc_now()).isoformat())

    def set_password(self, email: str, password: str) -> Account:
        """For operators and development: no link needed."""
        account = self.store.get(normalise_email(email))
        if account is None:
            raise AccountError("aucun compte pour cette adresse électronique")
        check_password(password)
        updated = replace(account, password_hash=self.hasher.hash(password),
                          setup_token_hash=None, setup_expires_at=None)
        self.store.save(updated)
        self.store.close_sessions(updated.email)
        return updated

    def authenticate(self, email: str, password: str) -> Account | None:
        account = self.store.get(normalise_email(email))
        stored = account.password_hash if account is not None else None
        try:
            self.hasher.verify(stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        if account is None or stored is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            account = replace(account, password_hash=self.hasher.hash(password))
            self.store.save(account)
        return account

    def get(self, email: str) -> Account | None:
        return self.store.get(normalise_email(email))

    def delete(self, account: Account, password: str) -> bool:
        """The family deletes its account (its log-in; its invoices stay), confirming with
        its password; False if the password is wrong."""
        if self.authenticate(account.email, password) is None:
            return False
        self.store.delete(email=account.email)
        return True

    def forget_family(self, family_id: str) -> int:
        """Every account of the family deleted (an erasure by an operator)."""
        return self.store.delete(family_id=family_id)

    # --- sessions: the cookie carries a random id, the store its SHA-256 ------------------

    def open_session(self, account: Account, idle: timedelta) -> str:
        """A new session of the account; its id, for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        self.store.open_session(_token_hash(session_id), account.email, _stamp(now),
                                _stamp(now - idle))
        return session_id

    def session_account(self, session_id: str, idle: timedelta) -> Account | None:
        """The account of a live session, whose idle time starts again; None otherwise."""
        now = self.clock()
        email = self.store.touch_session(_token_hash(session_id), _stamp(now),
                                         _stamp(now - idle))
        return None if email is None else self.store.get(email)

    def close_session(self, session_id: str) -> None:
        self.store.close_session(_token_hash(session_id))
