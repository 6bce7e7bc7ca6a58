"""Unit tests run with no database and no broker: one that reaches for either fails.

A test under a ``unit`` folder fails at setup if it asks for a fixture that brings a service,
and fails at the call if it opens a network connection or a PostgreSQL connection, with a
message saying where it belongs. ``tests/conftest.py`` imports the hook and the fixture
below, so they apply to the whole suite; ``make test-unit`` also points the PostgreSQL and
Kafka settings at a closed port, for the child processes the tests start.
"""

import socket
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

# The fixtures of tests/conftest.py that need a running service.
SERVICE_FIXTURES = {
    "kafka": "a Kafka-protocol broker",
    "tansu": "a Tansu broker",
    "store_settings": "PostgreSQL",
    "any_store_settings": "PostgreSQL",
}

ELSEWHERE = "move it to tests/integration (or tests/e2e)"


def is_unit(item: pytest.Item) -> bool:
    return item.path.parent.name == "unit"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not is_unit(item):
        return
    needs = [f"{name} ({what})" for name, what in SERVICE_FIXTURES.items()
             if name in getattr(item, "fixturenames", ())]
    if needs:
        pytest.fail(f"a unit test uses {', '.join(needs)}: {ELSEWHERE}", pytrace=False)


@pytest.fixture(autouse=True)
def unit_tests_stay_off_the_network(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """In a unit test, any TCP/UDP connection and any psycopg connection fails at once.

    Sockets of the local machine's own (AF_UNIX, socketpair) stay allowed: subprocess
    pipes and the like are no service.
    """
    if not is_unit(request.node):
        yield
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            pytest.fail(f"a unit test connects to {address!r}: {ELSEWHERE}", pytrace=False)

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        refuse(sock, address)
        connect(sock, address)

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        refuse(sock, address)
        return connect_ex(sock, address)

    def no_postgres(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a unit test connects to PostgreSQL: {ELSEWHERE}", pytrace=False)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    # libpq opens its sockets in C, out of the socket module's reach.
    monkeypatch.setattr(psycopg.Connection, "connect", no_postgres)
    monkeypatch.setattr(psycopg, "connect", no_postgres)  # bound at psycopg's import
    yield
