"""Fixtures: stores on SQLite, PostgreSQL or memory, and a real broker started here.

A missing PostgreSQL or a broker that will not start fails the run loudly: nothing is
skipped for want of a service.
"""

import gc
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from services.common.messaging import broker
from services.common.settings import Settings
from tests.isolation import (  # noqa: F401  (a hook and an autouse fixture for every test)
    pytest_runtest_setup,
    unit_tests_stay_off_the_network,
)

# The PayFiP simulator starts only when told to: the tests serve it, here and in the parts
# they start.
os.environ.setdefault("PAYFIP_SIM_ENABLED", "1")

PG = {"dbname": "test", "host": "127.0.0.1", "port": "5432", "user": "postgres"}


def pg_connect() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(**PG, autocommit=True, connect_timeout=5)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is required at {PG['host']}:{PG['port']} (db {PG['dbname']}): {e}")


def drop_schemas(prefix: str) -> None:
    # A test's applications hold pooled connections until they are collected; without
    # this, a run keeps a hundred of them open at once and PostgreSQL refuses the next.
    gc.collect()
    with pg_connect() as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def make_settings(backend: str, tmp_path: Path, **overrides: Any) -> Settings:
    common: dict[str, Any] = {"var_dir": tmp_path / "var", "tokens": "", "poll_interval": 0.05}
    if backend == "postgres":
        common.update(
            persistence="eventsourcing.postgres",
            postgres_dbname=PG["dbname"], postgres_host=PG["host"], postgres_port=PG["port"],
            postgres_user=PG["user"], postgres_password="",
            schema_prefix=f"t{uuid.uuid4().hex[:10]}_",
        )
    elif backend == "sqlite":
        common.update(persistence="eventsourcing.sqlite")
    else:
        common.update(persistence="eventsourcing.popo")
    common.update(overrides)
    return Settings(**common)


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a fresh pair of stores, once on SQLite and once on PostgreSQL."""
    settings = make_settings(request.param, tmp_path)
    if request.param == "postgres":
        pg_connect().close()
    yield settings
    if request.param == "postgres":
        drop_schemas(settings.schema_prefix)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """The contract suites run on the in-memory fake as well as on both real stores."""
    settings = make_settings(request.param, tmp_path)
    yield settings
    if request.param == "postgres":
        drop_schemas(settings.schema_prefix)


class Broker:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.port = broker.free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = broker.start(self.kind, self.port, self.tmp / "data", self.tmp / "broker.log")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, keep_data: bool = True) -> None:
        self.kill()
        if not keep_data:
            shutil.rmtree(self.tmp / "data", ignore_errors=True)
        self.start()

    def save_data(self) -> Path:
        """A copy of the broker's data as it is now, taken after a clean stop (noida-db
        writes everything it acknowledged on SIGTERM); the broker is started again."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=120)
        copy = self.tmp / f"data-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self.tmp / "data", copy)
        self.start()
        return copy

    def restart_from(self, copy: Path) -> None:
        """kill -9, and start again on ``copy``: a broker that really lacks whatever it
        acknowledged since, as noida-db killed before its data reached the disk."""
        self.kill()
        shutil.rmtree(self.tmp / "data", ignore_errors=True)
        shutil.copytree(copy, self.tmp / "data")
        self.start()


def _broker(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(kind, tmp_path_factory.mktemp(f"kafka-{kind}"))
    b.start()
    try:
        yield b
    finally:
        b.kill()
        shutil.rmtree(b.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The noida-db broker of this run, or the one named by KAFKA_BOOTSTRAP_SERVERS."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        broker.wait_ready(given, timeout=30)

        class External:
            kind = os.environ.get("KAFKA_BROKER", "noida")
            bootstrap = given

        yield External()
        return
    yield from _broker("noida", tmp_path_factory)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    yield from _broker("tansu", tmp_path_factory)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."
