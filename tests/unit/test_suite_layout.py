"""The suite's own rules: unit tests reach no service, test modules import no other."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"

CONFTEST = '''
import pytest
from tests.isolation import pytest_runtest_setup, unit_tests_stay_off_the_network

@pytest.fixture
def kafka():
    return "a broker"
'''

SAMPLE = '''
import socket
import psycopg

def test_asks_for_the_broker(kafka):
    pass

def test_opens_a_socket():
    with socket.socket() as s:
        s.settimeout(1)
        s.connect_ex(("127.0.0.1", 9))

def test_opens_postgres():
    # port 9: nothing listens there, so no run of this sample needs a database
    psycopg.connect(host="127.0.0.1", port=9, dbname="test", connect_timeout=1)

def test_stays_inside():
    a, b = socket.socketpair()
    a.close(); b.close()
'''


def run_sample(tmp_path: Path, folder: str) -> str:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "test_sample.py").write_text(SAMPLE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / folder)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done.stdout + done.stderr


def test_a_unit_test_that_reaches_for_a_service_fails_saying_where_it_belongs(
    tmp_path: Path,
) -> None:
    out = run_sample(tmp_path, "unit")
    assert "ERROR unit/test_sample.py::test_asks_for_the_broker" in out, out
    assert "a unit test uses kafka (a Kafka-protocol broker)" in out, out
    assert "FAILED unit/test_sample.py::test_opens_a_socket" in out, out
    assert "a unit test connects to ('127.0.0.1', 9)" in out, out
    assert "FAILED unit/test_sample.py::test_opens_postgres" in out, out
    assert "a unit test connects to PostgreSQL" in out, out
    assert out.count("move it to tests/integration") >= 3, out
    assert "PASSED unit/test_sample.py::test_stays_inside" in out, out


def test_the_same_tests_elsewhere_are_left_alone(tmp_path: Path) -> None:
    out = run_sample(tmp_path, "integration")
    assert "PASSED integration/test_sample.py::test_asks_for_the_broker" in out, out
    assert "PASSED integration/test_sample.py::test_opens_a_socket" in out, out
    # Nothing listens on port 9: the real connection error, not the guard's message.
    assert "FAILED integration/test_sample.py::test_opens_postgres" in out, out
    assert "a unit test" not in out, out


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/helpers.py (or a fixture), not in a test module."""
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                          for name in names
                          if name.startswith("tests.") and
                          name.rsplit(".", 1)[-1].startswith("test_")]
    assert offenders == []
