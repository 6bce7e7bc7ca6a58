"""The payment API's reads as gunicorn serves them: one query each, and several worker
processes on one store."""

from typing import Any

import pytest

from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment.web import create_app
from tests.helpers import setup


def test_a_familys_to_pay_is_answered_with_one_statement_and_no_transaction_around_it(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, payment = setup(store_settings)
    client = create_app(payment, {"r": "reader"}, settings=store_settings).test_client()
    statements: list[str] = []
    fetchall = SqlStore.fetchall

    def noted(store: SqlStore, statement: str, params: tuple[Any, ...] = ()) -> Any:
        statements.append(statement)
        return fetchall(store, statement, params)

    def transaction(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a read needs no BEGIN ... ROLLBACK around its one statement")

    monkeypatch.setattr(SqlStore, "fetchall", noted)
    datastore: Any = payment.recorder.datastore  # type: ignore[attr-defined]
    monkeypatch.setattr(type(datastore), "transaction", transaction)
    answer = client.get("/families/fam-1/to-pay", headers={"Authorization": "Bearer r"})
    assert answer.status_code == 200
    assert answer.json == {"regies": [
        {"code": "CANTINE", "name": "Restauration scolaire", "count": 1, "total_cents": 1000},
        {"code": "SPORTS", "name": "Direction des sports", "count": 3, "total_cents": 3800},
    ]}
    assert len(statements) == 1, statements
    statements.clear()
    assert client.get("/families/nobody/to-pay",
                      headers={"Authorization": "Bearer r"}).json == {"regies": []}
    assert len(statements) == 1, statements
