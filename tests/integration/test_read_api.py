"""The payment API's reads as gunicorn serves them: one query each, and several worker
processes on one store."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from services.common.messaging.broker import free_port
from services.common.settings import Settings
from services.common.storage.persistence import SqlStore
from services.payment.web import create_app
from services.run import SERVED
from tests.conftest import make_settings
from tests.helpers import setup

ROOT = Path(__file__).resolve().parents[2]


def test_a_familys_to_pay_and_history_page_are_each_one_statement_with_no_transaction_around(
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
    statements.clear()
    page = client.get("/families/fam-1/history?limit=2", headers={"Authorization": "Bearer r"})
    assert page.status_code == 200
    assert [(i["number"], i["regie_name"]) for i in page.json["invoices"]] == [  # type: ignore[index]
        ("C-1", "Restauration scolaire"), ("S-1", "Direction des sports")]
    assert len(statements) == 1, statements


@contextlib.contextmanager
def served_payment_api(settings: Settings) -> Iterator[tuple[int, Path]]:
    """The payment API under gunicorn as `regie run` serves it; yields its port and log once
    it answers a to-pay read."""
    served = SERVED["payment-api"]
    port = free_port()
    env = {**os.environ, "REGIE_VAR_DIR": str(settings.var_dir),
           "PERSISTENCE_MODULE": settings.persistence, "REGIE_TOKENS": "r:reader",
           "POSTGRES_DBNAME": settings.postgres_dbname, "POSTGRES_HOST": settings.postgres_host,
           "POSTGRES_PORT": settings.postgres_port, "POSTGRES_USER": settings.postgres_user,
           "REGIE_SCHEMA_PREFIX": settings.schema_prefix,
           "PROMETHEUS_MULTIPROC_DIR": str(settings.var_dir)}
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    log = settings.var_dir / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn",
             *served.argv(f"127.0.0.1:{port}", "services.bootstrap:payment_api()")],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        answers = 0
        # Each connection goes to whichever worker takes it: many reads reach both.
        while answers < 20:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                got = requests.get(f"http://127.0.0.1:{port}/families/fam-1/to-pay",
                                   headers={"Authorization": "Bearer r"}, timeout=60)
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.2)
                continue
            assert (got.status_code, got.json()) == (200, {"regies": []})
            answers += 1
        while log.read_text().count("Booting worker") < served.workers:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_payment_api_starts_as_regie_run_serves_it_on_a_fresh_store(
    store_settings: Settings,
) -> None:
    """Its workers start together, and each makes the tables if none exist: the schema
    lock must let one do it while the others wait, on SQLite and on PostgreSQL."""
    assert SERVED["payment-api"].workers > 1
    with served_payment_api(store_settings) as (_, log):
        time.sleep(1)  # a worker that failed to make the tables would exit about now
        text = log.read_text()
        assert "Traceback" not in text and "exited with code" not in text, text


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (the kernel's table, as ss reads it)."""
    local = f"0100007F:{port:04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[1] == local and row[3] == "0A")


def test_each_worker_of_the_payment_api_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """So the kernel spreads the connections over the workers: on one shared socket, the
    worker already awake took every kept-alive connection of a burst, and the others idled."""
    with served_payment_api(make_settings("sqlite", tmp_path)) as (port, _):
        assert listeners(port) == SERVED["payment-api"].workers
