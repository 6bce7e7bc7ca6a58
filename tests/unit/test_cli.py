"""The regie command: every subcommand explains itself; bad input gets a message and exit 1."""

import argparse
import logging
import os
import signal
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services import bootstrap, cli, run
from services.bootstrap import payment_app
from services.common.settings import SETTINGS
from services.payment.gateway import FakeGateway
from tests.conftest import make_settings


def subcommands() -> list[str]:
    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_the_operators_commands_are_there() -> None:
    assert set(subcommands()) >= {"run", "broker", "relay", "consume", "reconcile", "replay",
                                  "as-of", "export", "import", "verify", "journal", "settings",
                                  "dead-letters", "anomalies"}


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: regie {command}")


def test_a_failing_command_says_why_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", "nothing"]) == 1
    assert capsys.readouterr().err.startswith("regie verify: unknown service nothing")


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # `regie … | head`: the reader is gone before the command has written everything.
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert cli.main(["settings"]) == 128 + signal.SIGPIPE
    finally:
        monkeypatch.undo()
        closed.close()
    assert capsys.readouterr().err == ""


PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(("text", "expected"), [
    ("now", datetime(2025, 2, 26, 14, 30, tzinfo=PARIS)),
    ("today", datetime(2025, 2, 26, 0, 0, tzinfo=PARIS)),
    ("now-30m", datetime(2025, 2, 26, 14, 0, tzinfo=PARIS)),
    ("now-2h", datetime(2025, 2, 26, 12, 30, tzinfo=PARIS)),
    ("now-1d", datetime(2025, 2, 25, 14, 30, tzinfo=PARIS)),
    ("2025-03-01T12:00", datetime(2025, 3, 1, 12, 0, tzinfo=PARIS)),
    ("2025-03-01T12:00+00:00", datetime(2025, 3, 1, 13, 0, tzinfo=PARIS)),
])
def test_moments_as_an_operator_types_them(text: str, expected: datetime) -> None:
    assert cli.tools._when(text, now=datetime(2025, 2, 26, 14, 30, tzinfo=PARIS)) == expected


def test_days_as_an_operator_types_them() -> None:
    today = date(2025, 2, 26)
    assert cli.tools._day("today", today) == today
    assert cli.tools._day("yesterday", today) == date(2025, 2, 25)
    assert cli.tools._day("2025-03-01", today) == date(2025, 3, 1)
    with pytest.raises(ValueError):
        cli.tools._day("tomorrow", today)


def test_settings_say_where_each_value_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REGIE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("BILLING_PORT", "9001")
    monkeypatch.setenv("REGIE_CHAIN_KEY", "chain-k3y-s3cr3t")
    (tmp_path / "dev-tokens").write_text("tok-s3cr3t-1:issuer,tok-s3cr3t-2:reader\n")
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("=", 1)[0]: line for line in out.splitlines() if "=" in line}
    assert "9001" in lines["BILLING_PORT"] and "from the environment" in lines["BILLING_PORT"]
    assert "'8002'" in lines["PAYMENT_PORT"] and "default" in lines["PAYMENT_PORT"]
    # What `make run` uses when REGIE_TOKENS is not set: the file it wrote, never shown.
    assert f"from {tmp_path / 'dev-tokens'}" in lines["REGIE_TOKENS"]
    assert "issuer, reader" in lines["REGIE_TOKENS"] and "s3cr3t" not in out
    assert "hidden" in lines["REGIE_CHAIN_KEY"]


def test_settings_hide_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Secrets are known by their names, so one added later is hidden without a list to edit.
    more = {"SMTP_PASSWORD": ("", "x"), "REGIE_CHAIN_KEY": ("", "x"),
            "SOME_SECRET_FILE": ("", "x"), "A_TOKEN_FILE": ("", "x")}
    monkeypatch.setattr(cli.tools, "SETTINGS", {**SETTINGS, **more})
    monkeypatch.setenv("REGIE_VAR_DIR", str(tmp_path))
    secrets = ("REGIE_TOKENS", "BILLING_TOKENS", "PAYMENT_TOKENS", "PORTAL_PAYMENT_TOKEN",
               "POSTGRES_PASSWORD", "PORTAL_SECRET_KEY", *more)
    for name in secrets:
        monkeypatch.setenv(name, f"s3cr3t-{name}")
    monkeypatch.setenv("BILLING_PORT", "9001")
    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("=", 1)[0]: line for line in out.splitlines() if "=" in line}
    assert "s3cr3t" not in out
    for name in secrets:
        assert lines[name].startswith(f"{name}='(set, hidden)'"), lines[name]
    assert "9001" in lines["BILLING_PORT"]


def test_reconcile_once_says_what_its_single_pass_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    payment = payment_app(make_settings("memory", tmp_path), gateway=FakeGateway())
    monkeypatch.setattr(bootstrap, "payment_app", lambda settings, **_: payment)
    monkeypatch.setattr(bootstrap, "payfip_gateway", lambda settings: FakeGateway())
    caplog.set_level(logging.INFO)
    assert cli.main(["reconcile", "--once"]) == 0
    assert capsys.readouterr().out == (
        "one pass: asked PayFiP about 0 payment(s) under watch; 0 closed\n")
    assert not [r for r in caplog.records if "every" in r.getMessage()]


def test_make_run_shows_how_to_reach_the_regie_command() -> None:
    # `regie` is not on PATH: the banner names the virtual environment's own script.
    hint = run.how_to_run_commands()
    script = hint.split()[0]
    assert Path(script).name == "regie" and os.access(script, os.X_OK)
    done = subprocess.run([script, "as-of", "--help"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.startswith("usage: regie as-of")
