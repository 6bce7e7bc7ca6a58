"""Exporting a large history takes constant memory, and the export loads back exactly."""

import os
import subprocess
import sys
from pathlib import Path

from services.bootstrap import billing_app
from services.common.storage.history import import_into, read
from tests.conftest import make_settings
from tests.factories import open_regies, terms

EVENTS = 200_000


def peak_rss_kib(argv: list[str], env: dict[str, str]) -> int:
    """Run a command and return its own peak resident set size (KiB, from wait4)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return int(usage.ru_maxrss)


def test_export_of_200000_events_in_bounded_memory(tmp_path: Path) -> None:
    settings = make_settings("sqlite", tmp_path / "big")
    billing = billing_app(settings)
    open_regies(billing)
    for start in range(0, EVENTS - 2, 20_000):
        count = min(20_000, EVENTS - 2 - start)
        billing.issue_batch([terms(f"M-{i}", family=f"fam-{i % 997}")
                             for i in range(start, start + count)])
    assert billing.recorder.max_notification_id() == EVENTS

    env = dict(os.environ, REGIE_VAR_DIR=str(settings.var_dir),
               PERSISTENCE_MODULE="eventsourcing.sqlite")
    cli = [sys.executable, "-m", "services.cli"]
    # The same process, reading a small history: what the interpreter and imports cost.
    small = make_settings("sqlite", tmp_path / "small")
    open_regies(billing_app(small))
    small_env = dict(env, REGIE_VAR_DIR=str(small.var_dir))
    out = tmp_path / "export.jsonl"
    baseline = peak_rss_kib([*cli, "export", "--service", "billing", "--output",
                             str(tmp_path / "small.jsonl")], small_env)
    big = peak_rss_kib([*cli, "export", "--service", "billing", "--output", str(out)], env)
    # 200,000 events of ~600 bytes are ~120 MB as Python objects: a fixed bound of 64 MiB
    # above the small run only holds if the export streams.
    assert big - baseline < 64 * 1024, (baseline, big)

    fresh = billing_app(make_settings("sqlite", tmp_path / "fresh"))
    with open(out) as lines:
        assert import_into(fresh, read(lines)) == EVENTS
    for position in (1, 2, 77_777, EVENTS):
        original = billing.recorder.select_notifications(position, 1)[0]
        copy = fresh.recorder.select_notifications(position, 1)[0]
        assert (copy.originator_id, copy.originator_version, copy.topic, copy.state) == (
            original.originator_id, original.originator_version, original.topic,
            original.state)
