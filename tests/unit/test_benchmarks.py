"""The benchmark command: which benchmarks it runs, and the table that closes a run."""

import pytest

from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.harness import Figure, table


def test_every_benchmark_has_its_own_module() -> None:
    modules = {run.__module__ for run in BENCHMARKS.values()}
    assert modules == {"benchmarks.batch_issue", "benchmarks.delay", "benchmarks.drain",
                       "benchmarks.reads", "benchmarks.rebuild"}


def test_an_unknown_benchmark_is_refused_with_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["delay", "nope"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "no benchmark nope" in err and "batch-issue, delay, drain, reads" in err


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
