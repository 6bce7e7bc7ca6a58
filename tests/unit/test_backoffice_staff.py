"""Staff accounts of the back office: the operator's command, and what a form's amount means."""

from pathlib import Path

import pytest

from services.backoffice.__main__ import main
from services.backoffice.staff import StaffAccounts, staff_of
from services.backoffice.web import FormError, cents
from services.portal.accounts import MemoryAccounts, SqliteAccounts


def test_the_operator_creates_a_staff_account_and_gets_a_one_time_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "staff.db"
    monkeypatch.setenv("BACKOFFICE_ACCOUNTS_DB", str(db))
    monkeypatch.setenv("BACKOFFICE_PUBLIC_URL", "https://guichet.example")
    assert main(["accounts", "create", "--email", "C.Durand@Mairie.example",
                 "--name", "Claire Durand"]) == 0
    out = capsys.readouterr().out
    [link] = [w for w in out.split() if w.startswith("https://")]
    assert link.startswith("https://guichet.example/guichet/compte/activer/")
    accounts = StaffAccounts(SqliteAccounts(db))
    token = link.rsplit("/", 1)[1]
    account = accounts.set_password_with_link(token, "un mot de passe long")
    assert account is not None
    assert staff_of(account).id == "c.durand@mairie.example"
    assert staff_of(account).name == "Claire Durand"
    assert accounts.set_password_with_link(token, "un autre mot de passe") is None


@pytest.mark.parametrize(("email", "name"), [
    ("pas-une-adresse", "Claire Durand"),
    ("c'durand@mairie.example", "Claire Durand"),  # not a staff id the APIs take
    ("c.durand@mairie.example", ""),
    ("c.durand@mairie.example", "x" * 81),
])
def test_a_bad_address_or_name_is_refused_with_a_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        email: str, name: str) -> None:
    monkeypatch.setenv("BACKOFFICE_ACCOUNTS_DB", str(tmp_path / "staff.db"))
    assert main(["accounts", "create", "--email", email, "--name", name]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_the_same_address_twice_is_refused() -> None:
    accounts = StaffAccounts(MemoryAccounts())
    accounts.create_staff("Claire Durand", "c.durand@mairie.example")
    with pytest.raises(ValueError, match="existe déjà"):
        accounts.create_staff("Claire Durand", "c.durand@mairie.example")


@pytest.mark.parametrize(("typed", "expected"), [
    ("10,00", 1000), ("10", 1000), ("10.5", 1050), ("1\u202f250,00 €", 125000), (" 0,01 ", 1)])
def test_amounts_are_read_as_a_french_reader_types_them(typed: str, expected: int) -> None:
    assert cents("amount", typed) == expected


@pytest.mark.parametrize("typed", ["", "dix", "0", "-5", "10,001", "1e3", "nan", "inf"])
def test_other_amounts_are_refused(typed: str) -> None:
    with pytest.raises(FormError) as refused:
        cents("amount", typed)
    assert refused.value.field == "amount"
