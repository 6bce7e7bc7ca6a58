"""The benchmark command: which benchmarks it runs, and the table that closes a run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import read_api
from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.harness import Figure, postgres_cpu, table


def test_every_benchmark_has_its_own_module() -> None:
    modules = {run.__module__ for run in BENCHMARKS.values()}
    assert modules == {"benchmarks.batch_issue", "benchmarks.delay", "benchmarks.drain",
                       "benchmarks.reads", "benchmarks.read_api", "benchmarks.rebuild"}


def test_an_unknown_benchmark_is_refused_with_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["delay", "nope"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "no benchmark nope" in err
    assert "batch-issue, delay, drain, reads, read-api, rebuild" in err


def test_the_closing_table_gives_each_figure_its_baseline_ratio_and_goal() -> None:
    lines = table([
        Figure("SQLite issue_batch", "14,335 inv/s", "raw sqlite3 169,042 rows/s", "11.8x",
               "<= 3x"),
        Figure("backlog of 20,000 drained", "1,115 inv/s", "plain 6,415 msg/s", "5.7x"),
    ]).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "figure", "value", "baseline", "ratio", "goal"]
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == [
        "SQLite issue_batch", "14,335 inv/s", "raw sqlite3 169,042 rows/s", "11.8x", "<= 3x"]
    assert lines[3].strip("|").split("|")[-1].strip() == "-"
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # columns aligned


WRK_REPORT = """Running 3s test @ http://127.0.0.1:40001
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.10ms    2.02ms  31.20ms   90.12%
    Req/Sec     1.97k   150.00     2.20k    70.00%
  Latency Distribution
     50%    3.70ms
     75%    4.50ms
     90%    5.90ms
     99%   12.34ms
  5901 requests in 3.00s, 1.40MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   1966.84
Transfer/sec:    478.00KB
"""


def test_wrks_report_gives_the_rate_the_p99_and_every_error() -> None:
    load = read_api.parse_wrk(WRK_REPORT)
    assert load == read_api.Load(1966.84, pytest.approx(0.01234), 7)  # type: ignore[arg-type]
    assert read_api.parse_wrk(WRK_REPORT.replace("     99%   12.34ms", "     99%    1.02s")
                              ).p99 == pytest.approx(1.02)
    with pytest.raises(RuntimeError, match="not what was expected"):
        read_api.parse_wrk("wrk: command failed")


def test_without_wrk_the_read_api_figures_fail_and_say_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    figures = read_api.run(None)  # type: ignore[arg-type]  # nothing of the run is reached
    assert figures and all(f.failed and f.value == "NOT MEASURED" for f in figures)
    assert "wrk is not installed" in capsys.readouterr().out


def test_a_run_with_a_figure_not_measured_exits_with_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setitem(BENCHMARKS, "read-api", read_api.run)
    assert main(["read-api"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: GET to-pay" in out and "| NOT MEASURED" in out


def test_the_postgresql_servers_cpu_is_that_of_the_processes_named_postgres(
        tmp_path: Path) -> None:
    named = tmp_path / "postgres"  # a process's name is that of the file it runs
    named.symlink_to(sys.executable)
    busy = subprocess.Popen(
        [str(named), "-c", "import sys, time\nend = time.process_time() + 0.3\n"
         "while time.process_time() < end: pass\nsys.stdin.read()"],
        stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while postgres_cpu().get(busy.pid, 0.0) < 0.25:
            assert busy.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert os.getpid() not in postgres_cpu()
    finally:
        busy.kill()
        busy.wait()
