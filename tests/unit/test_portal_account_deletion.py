"""A family deletes its portal account (its log-in) after confirming; its invoices stay."""

from pathlib import Path

from services.portal.accounts import Accounts, SqliteAccounts
from tests.portal_fake import (
    EMAIL,
    FAMILY,
    PASSWORD,
    FakePayments,
    links,
    logged_in,
    portal,
    texts,
)


def _sqlite_accounts(tmp_path: Path) -> Accounts:
    accounts = Accounts(SqliteAccounts(tmp_path / "accounts.db"))
    accounts.create(FAMILY, EMAIL)
    accounts.set_password(EMAIL, PASSWORD)
    accounts.create("famille-durand", "durand@example.org")
    return accounts


def _file_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("accounts.db*"))


def test_a_family_deletes_its_account_after_confirming_with_its_password(
        tmp_path: Path) -> None:
    api = FakePayments()
    api.invoice("SPORTS", "VAIC521041698401", 2500)
    lines = {regie: list(rows) for regie, rows in api.lines.items()}
    accounts = _sqlite_accounts(tmp_path)
    client = logged_in(portal(api, tmp_path, accounts))

    home = client.get("/")
    assert links(home)["Supprimer mon compte"] == "/compte/supprimer"
    page = client.get("/compte/supprimer")
    assert page.status_code == 200 and "Vos factures et vos paiements restent" in page.text

    wrong = client.post("/compte/supprimer", data={"password": "pas le bon mot de passe"})
    assert wrong.status_code == 422
    assert texts(wrong, "message-erreur") == [
        "Mot de passe incorrect : votre compte n'est pas supprimé."]
    assert accounts.get(EMAIL) is not None
    assert client.get("/").status_code == 200  # still logged in

    done = client.post("/compte/supprimer", data={"password": PASSWORD})
    assert (done.status_code, done.headers["Location"]) == (303, "/connexion")
    assert accounts.get(EMAIL) is None
    assert accounts.authenticate(EMAIL, PASSWORD) is None
    assert client.get("/").status_code in (302, 303)  # logged out
    assert accounts.get("durand@example.org") is not None
    assert api.lines == lines
    # Nothing of the address is left in the database's files (free pages, WAL).
    assert EMAIL.encode() not in _file_bytes(tmp_path)


def test_an_operator_erasure_deletes_every_account_of_the_family(tmp_path: Path) -> None:
    accounts = _sqlite_accounts(tmp_path)
    assert accounts.forget_family(FAMILY) == 1
    assert accounts.get(EMAIL) is None
    assert accounts.get("durand@example.org") is not None
    assert EMAIL.encode() not in _file_bytes(tmp_path)
