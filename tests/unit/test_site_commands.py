"""The operators' account commands of both sites, ``python -m services.portal accounts …``
and ``python -m services.backoffice accounts …``: one-time links, passwords, refusals."""

from collections.abc import Callable
from pathlib import Path

import pytest

from services.backoffice.__main__ import main as backoffice_main
from services.portal.__main__ import main as portal_main
from services.portal.accounts import Accounts, SqliteAccounts

# Each site: its command, its settings' prefix, what `create` takes besides the e-mail, and
# where its one-time links lead.
SITES = {
    "portal": (portal_main, "PORTAL", ["--family", "famille-martin"], "/compte/activer/"),
    "backoffice": (backoffice_main, "BACKOFFICE", ["--name", "Claire Durand"],
                   "/guichet/compte/activer/"),
}


@pytest.fixture(params=sorted(SITES))
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> tuple[Callable[[list[str]], int], list[str], str, Path]:
    main, prefix, create, path = SITES[request.param]
    db = tmp_path / "accounts.db"
    monkeypatch.setenv(f"{prefix}_ACCOUNTS_DB", str(db))
    monkeypatch.setenv(f"{prefix}_PUBLIC_URL", "https://site.example/")
    return main, create, f"https://site.example{path}", db


def printed_link(out: str) -> str:
    [link] = [word for word in out.split() if word.startswith("https://")]
    return link


def test_an_account_is_created_linked_again_and_given_a_password(
        site: tuple[Callable[[list[str]], int], list[str], str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    main, create, links, db = site
    email = "c.durand@mairie.example"
    assert main(["accounts", "create", "--email", email, *create]) == 0
    first = printed_link(capsys.readouterr().out)
    assert first.startswith(links)
    assert main(["accounts", "link", "--email", email]) == 0
    second = printed_link(capsys.readouterr().out)
    assert second.startswith(links) and second != first
    accounts = Accounts(SqliteAccounts(str(db)))
    assert accounts.for_link(first.rsplit("/", 1)[1]) is None  # the new link replaced it
    assert main(["accounts", "set-password", "--email", email, "--password", "x" * 12]) == 0
    assert f"Password set for {email}." in capsys.readouterr().out
    assert accounts.authenticate(email, "x" * 12) is not None


def test_a_refused_command_says_why_and_changes_nothing(
        site: tuple[Callable[[list[str]], int], list[str], str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    main, create, _, db = site
    assert main(["accounts", "create", "--email", "a@example.org", *create]) == 0
    capsys.readouterr()
    for args in (["create", "--email", "a@example.org", *create],  # taken
                 ["link", "--email", "personne@example.org"],
                 ["set-password", "--email", "personne@example.org", "--password", "x" * 12],
                 ["set-password", "--email", "a@example.org", "--password", "court"]):
        assert main(["accounts", *args]) == 1, args
        assert capsys.readouterr().err.startswith("error: "), args
    assert Accounts(SqliteAccounts(str(db))).authenticate("a@example.org", "court") is None
