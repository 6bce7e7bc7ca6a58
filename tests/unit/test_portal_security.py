"""The portal's accounts, sessions, cookies, log-in limits and one-time links, in-process."""

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from services.portal.accounts import (
    AccountError,
    AccountExists,
    Accounts,
    MemoryAccounts,
    SqliteAccounts,
)
from services.portal.demo import ensure_account
from services.portal.settings import PortalSettings
from services.portal.web import create_app
from tests.portal_fake import (
    EMAIL,
    PASSWORD,
    FakePayments,
    family_accounts,
    logged_in,
    portal,
    texts,
)


def test_a_set_password_link_works_once_even_used_twice_at_the_same_time(
        tmp_path: Path) -> None:
    """Two browsers (two connections to the database) send the same link's form at once:
    one password is set, the other is refused."""
    for store in (MemoryAccounts(), SqliteAccounts(tmp_path / "accounts.db")):
        accounts = Accounts(store)
        token = accounts.create("fam-1", "parent@example.org")
        start = threading.Barrier(2)
        results: dict[str, object] = {}

        def use(password: str, accounts: Accounts = accounts, token: str = token,
                start: threading.Barrier = start,
                results: dict[str, object] = results) -> None:
            start.wait()
            results[password] = accounts.set_password_with_link(token, password)

        threads = [threading.Thread(target=use, args=(p,))
                   for p in ("premier mot de passe", "second mot de passe")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [p for p, account in results.items() if account is not None]
        assert len(won) == 1, results
        [lost] = set(results) - set(won)
        assert accounts.authenticate("parent@example.org", won[0]) is not None
        assert accounts.authenticate("parent@example.org", lost) is None


def cookie(client: FlaskClient) -> str:
    found = client.get_cookie("portail")
    assert found is not None
    return found.value


def with_cookie(app: Flask, value: str) -> FlaskClient:
    """Another browser holding a copy of a session cookie."""
    client = app.test_client()
    client.set_cookie("portail", value)
    return client


def test_logging_out_ends_the_session_even_for_a_copied_cookie(tmp_path: Path) -> None:
    app = portal(FakePayments(), tmp_path)
    client = logged_in(app)
    copied = with_cookie(app, cookie(client))
    assert copied.get("/").status_code == 200  # the copy works while the session lives

    assert client.post("/deconnexion").status_code == 303
    for browser in (client, copied):
        answer = browser.get("/factures")
        assert answer.status_code == 302 and answer.location.startswith("/connexion")


def test_a_new_password_ends_every_session_of_the_account(tmp_path: Path) -> None:
    accounts = family_accounts()
    app = portal(FakePayments(), tmp_path, accounts)
    phone, computer = logged_in(app), logged_in(app)
    accounts.set_password(EMAIL, "un tout nouveau mot de passe")
    for browser in (phone, computer):
        assert browser.get("/").status_code == 302

    # Through a one-time link as well.
    laptop = logged_in(app, "un tout nouveau mot de passe")
    token = accounts.new_link(EMAIL)
    assert accounts.set_password_with_link(token, "encore un autre mot de passe")
    assert laptop.get("/").status_code == 302


def test_a_session_ends_after_its_idle_time(tmp_path: Path) -> None:
    now = [datetime(2025, 3, 1, 10, 0, tzinfo=UTC)]
    app = portal(FakePayments(), tmp_path, family_accounts(lambda: now[0]))
    idle = timedelta(minutes=app.extensions["portal"].settings.session_idle_minutes)
    client = logged_in(app)
    copied = with_cookie(app, cookie(client))

    now[0] += idle - timedelta(seconds=1)
    assert client.get("/").status_code == 200  # each request starts the idle time again
    now[0] += idle - timedelta(seconds=1)
    assert client.get("/").status_code == 200
    now[0] += idle + timedelta(seconds=1)
    for browser in (client, copied):
        answer = browser.get("/")
        assert answer.status_code == 302 and answer.location.startswith("/connexion")


def test_both_account_stores_keep_sessions_alike(tmp_path: Path) -> None:
    """What the portal's tests see on MemoryAccounts is what SQLite does."""
    idle = timedelta(minutes=30)
    for store in (MemoryAccounts(), SqliteAccounts(tmp_path / "accounts.db")):
        now = [datetime(2025, 3, 1, 10, 0, tzinfo=UTC)]

        def clock(now: list[datetime] = now) -> datetime:
            return now[0]

        accounts = Accounts(store, clock=clock)
        accounts.create("fam-1", EMAIL)
        account = accounts.set_password(EMAIL, "un mot de passe long")
        first, second = (accounts.open_session(account, idle) for _ in range(2))
        assert first != second
        assert accounts.session_account(first, idle) == account
        assert accounts.session_account("made-up", idle) is None

        now[0] += idle - timedelta(seconds=1)
        assert accounts.session_account(first, idle) == account
        now[0] += idle - timedelta(seconds=1)
        assert accounts.session_account(first, idle) == account  # used: still alive
        assert accounts.session_account(second, idle) is None  # idle too long

        accounts.close_session(first)
        assert accounts.session_account(first, idle) is None
        third = accounts.open_session(account, idle)
        accounts.set_password_with_link(accounts.new_link(EMAIL), "un nouveau mot de passe")
        assert accounts.session_account(third, idle) is None


def log_in_from(app: Flask, address: str, email: str, password: str) -> TestResponse:
    return app.test_client().post("/connexion", data={"email": email, "password": password},
                                  environ_base={"REMOTE_ADDR": address})


def refused_for_now(answer: TestResponse) -> None:
    """429, saying in French until when, with the form still there."""
    assert answer.status_code == 429, answer.status_code
    [message] = texts(answer, "message-erreur")
    assert message.startswith("Trop de tentatives de connexion"), message
    assert re.search(r"Réessayez après \d\d/\d\d/\d{4} à \d\d:\d\d", message), message
    # The limiter keeps its window's end in whole seconds: rounded up, one more at most.
    assert 0 < int(answer.headers["Retry-After"]) <= 15 * 60 + 1


def test_failed_log_ins_are_limited_per_account(tmp_path: Path) -> None:
    """Five wrong passwords for one address in 15 minutes, from anywhere, lock it for now."""
    app = portal(FakePayments(), tmp_path)
    for n in range(5):
        assert log_in_from(app, f"192.0.2.{n}", EMAIL, "pas le bon mot de passe").status_code \
            == 401
    refused_for_now(log_in_from(app, "192.0.2.99", EMAIL.upper(), PASSWORD))
    # Other accounts log in as before.
    other = log_in_from(app, "192.0.2.99", "personne@example.org", PASSWORD)
    assert other.status_code == 401


def test_failed_log_ins_are_limited_per_client_address(tmp_path: Path) -> None:
    app = portal(FakePayments(), tmp_path)
    for n in range(5):
        assert log_in_from(app, "198.51.100.7", f"essai{n}@example.org", "x" * 12).status_code \
            == 401
    refused_for_now(log_in_from(app, "198.51.100.7", EMAIL, PASSWORD))
    assert log_in_from(app, "198.51.100.8", EMAIL, PASSWORD).status_code == 303


def test_successful_log_ins_are_not_limited(tmp_path: Path) -> None:
    app = portal(FakePayments(), tmp_path)
    for _ in range(8):
        assert log_in_from(app, "203.0.113.5", EMAIL, PASSWORD).status_code == 303


def test_accounts_behind_their_port(tmp_path: Path) -> None:
    """The in-memory fake and SQLite behave alike: one link, once; argon2id; no leaks."""
    for store in (MemoryAccounts(), SqliteAccounts(tmp_path / "accounts.db")):
        accounts = Accounts(store)
        token = accounts.create("fam-1", " Parent@Example.org ")
        assert accounts.authenticate("parent@example.org", "x" * 12) is None  # no password yet
        with pytest.raises(AccountExists):
            accounts.create("fam-2", "parent@example.org")
        with pytest.raises(AccountError):
            accounts.set_password_with_link(token, "court")
        assert accounts.set_password_with_link(token, "un mot de passe long") is not None
        assert accounts.set_password_with_link(token, "un autre mot de passe") is None  # once
        account = accounts.authenticate("PARENT@example.org", "un mot de passe long")
        assert account is not None and account.family_id == "fam-1"
        assert account.password_hash and account.password_hash.startswith("$argon2id$")
        assert accounts.authenticate("parent@example.org", "un autre mot de passe") is None
        assert accounts.authenticate("personne@example.org", "un mot de passe long") is None
        with pytest.raises(AccountError):
            accounts.create("pas un identifiant", "autre@example.org")
    # make run's demo account: made once, its password given once.
    for _ in range(2):
        email, password = ensure_account(tmp_path / "demo.db")
    assert Accounts(SqliteAccounts(tmp_path / "demo.db")).authenticate(email, password)


def test_https_cookies_are_secure(tmp_path: Path) -> None:
    accounts = Accounts(MemoryAccounts())
    accounts.create("fam-1", "parent@example.org")
    accounts.set_password("parent@example.org", "un mot de passe long")
    settings = PortalSettings(secret_key="k" * 32, payment_url="http://127.0.0.1:9",
                              payment_token="t", accounts_db=str(tmp_path / "a.db"),
                              public_url="https://portail.example.org")
    app = create_app(settings, accounts)
    app.config["WTF_CSRF_ENABLED"] = False
    answer = app.test_client().post("/connexion", base_url="https://portail.example.org",
                                    data={"email": "parent@example.org",
                                          "password": "un mot de passe long"})
    assert answer.status_code == 303
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("__Host-portail=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie, cookie
    assert "Domain" not in cookie
