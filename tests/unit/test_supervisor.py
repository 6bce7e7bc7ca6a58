"""`regie run`'s supervisor: a part that dies comes back, later each time it dies at once,
and stopping leaves no process behind, not even one a part started itself."""

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.run import Backoff, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def with_grandchild(pid_file: Path) -> list[str]:
    """A part that starts a process of its own (as gunicorn and `regie broker` do)."""
    return [sys.executable, "-c",
            "import pathlib, subprocess, sys, time\n"
            "p = subprocess.Popen(['sleep', '300'])\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
            "time.sleep(300)\n"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def read_pid(path: Path) -> int:
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the part never started its own process"
        time.sleep(0.05)
    return int(path.read_text())


def gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sup(tmp_path: Path, clock: Clock) -> Iterator[Supervisor]:
    supervisor = Supervisor(dict(os.environ), tmp_path / "logs", clock=clock)
    yield supervisor
    supervisor.stop()


def test_a_part_killed_is_restarted_after_a_pause_and_logged(
        sup: Supervisor, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.run")
    first = sup.start("reconciler", SLEEPER)
    clock.now += 120
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    sup.supervise()
    assert sup.pid("reconciler") is None
    assert "reconciler exited (killed by SIGKILL) after 120s; restarting in 1s" in caplog.text
    clock.now += 0.9
    sup.supervise()
    assert sup.pid("reconciler") is None
    clock.now += 0.1
    sup.supervise()
    again = sup.pid("reconciler")
    assert again is not None and again != first.pid and alive(again)
    assert f"reconciler restarted (pid {again})" in caplog.text
    assert sup.dead() == []


def test_a_part_that_keeps_dying_at_once_backs_off_up_to_a_cap(
        sup: Supervisor, clock: Clock) -> None:
    sup.start("payment-relay", CRASHER)
    delays = []
    for _ in range(8):
        proc = sup.procs["payment-relay"]
        assert proc.wait(timeout=30) == 3
        sup.supervise()
        due = sup.restart_at["payment-relay"]
        delays.append(due - clock.now)
        clock.now = due - 0.01
        sup.supervise()
        assert sup.procs["payment-relay"] is proc, "restarted before its delay"
        clock.now = due
        sup.supervise()
        assert sup.procs["payment-relay"] is not proc
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_part_that_ran_a_while_before_dying_starts_over_from_the_first_delay(
        sup: Supervisor, clock: Clock) -> None:
    sup.start("payment-relay", CRASHER)
    for _ in range(4):
        sup.procs["payment-relay"].wait(timeout=30)
        sup.supervise()
        clock.now = sup.restart_at["payment-relay"]
        sup.supervise()
    proc = sup.procs["payment-relay"]
    proc.wait(timeout=30)
    clock.now += Backoff().stable
    sup.supervise()
    assert sup.restart_at["payment-relay"] - clock.now == 1


def test_a_restarted_part_leaves_nothing_of_its_last_life(
        sup: Supervisor, clock: Clock, tmp_path: Path) -> None:
    # A gunicorn worker or a broker binary left behind would keep the port of its part.
    pid_file = tmp_path / "grandchild"
    first = sup.start("broker", with_grandchild(pid_file))
    grandchild = read_pid(pid_file)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    sup.supervise()
    assert gone(grandchild)


def test_stopping_leaves_no_process_behind(tmp_path: Path, clock: Clock) -> None:
    sup = Supervisor(dict(os.environ), tmp_path / "logs", clock=clock)
    pid_file = tmp_path / "grandchild"
    part = sup.start("broker", with_grandchild(pid_file))
    grandchild = read_pid(pid_file)
    sup.stop()
    assert part.poll() is not None
    assert gone(grandchild)


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_part_killed_by_a_signal_without_a_name_is_still_restarted(
        sup: Supervisor, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.run")
    first = sup.start("reconciler", SLEEPER)
    realtime = signal.SIGRTMIN + 1
    os.kill(first.pid, realtime)
    first.wait()
    sup.supervise()
    assert f"reconciler exited (killed by signal {realtime})" in caplog.text
    clock.now += 1
    sup.supervise()
    assert sup.pid("reconciler") not in (None, first.pid)
