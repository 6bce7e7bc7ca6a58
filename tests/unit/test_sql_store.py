"""Plain SQL beside an event store, on SQLite."""

from pathlib import Path

import pytest

from services.bootstrap import billing_app
from services.common.storage.persistence import SqlStore
from tests.conftest import make_settings
from tests.helpers import check_rows_by_keys


def test_rows_by_keys_reads_a_long_key_list_in_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = billing_app(make_settings("sqlite", tmp_path))
    check_rows_by_keys(SqlStore(app), monkeypatch)
