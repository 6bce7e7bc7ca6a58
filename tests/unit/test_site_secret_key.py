"""The portal's and the back office's session key when none is configured: a random key kept
in a file beside the accounts' database, the same for every worker of the site, whichever
starts first."""

import secrets
from pathlib import Path
from typing import Any

import pytest

from services.backoffice import web as backoffice_web
from services.backoffice.settings import BackofficeSettings
from services.portal import web as portal_web
from services.portal.settings import PortalSettings

SITES: list[tuple[Any, Any, str]] = [
    (portal_web.secret_key, PortalSettings, "portal-secret.key"),
    (backoffice_web.secret_key, BackofficeSettings, "backoffice-secret.key"),
]


@pytest.mark.parametrize(("secret_key", "settings", "name"), SITES)
def test_a_worker_starting_while_another_makes_the_key_gets_that_same_key(
        secret_key: Any, settings: Any, name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn starts the site's workers together: the second may look for the file
    # while the first is between making it and writing the key into it. An empty key
    # leaves that worker with no session: a 500 on every page it serves.
    cfg = settings(secret_key="", accounts_db=str(tmp_path / "var" / "accounts.db"))
    draw = secrets.token_urlsafe
    other: list[str] = []

    def token_urlsafe(n: int) -> str:
        if not other:
            other.append("")
            other[0] = secret_key(cfg)
        return draw(n)

    monkeypatch.setattr(secrets, "token_urlsafe", token_urlsafe)
    first = secret_key(cfg)
    assert other[0] and first == other[0]
    assert (tmp_path / "var" / name).read_text() == first
    assert secret_key(cfg) == first
    assert (tmp_path / "var" / name).stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "var").iterdir()] == [name]


@pytest.mark.parametrize(("secret_key", "settings", "name"), SITES)
def test_a_configured_key_is_used_and_no_file_is_made(
        secret_key: Any, settings: Any, name: str, tmp_path: Path) -> None:
    cfg = settings(secret_key="from-the-settings", accounts_db=str(tmp_path / "accounts.db"))
    assert secret_key(cfg) == "from-the-settings"
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(("secret_key", "settings", "name"), SITES)
def test_an_empty_key_file_stops_the_site_with_its_name(
        secret_key: Any, settings: Any, name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text("")
    cfg = settings(secret_key="", accounts_db=str(tmp_path / "accounts.db"))
    with pytest.raises(RuntimeError, match=name):
        secret_key(cfg)
