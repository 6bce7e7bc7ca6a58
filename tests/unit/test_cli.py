"""The regie command: every subcommand explains itself; bad input gets a message and exit 1."""

import argparse

import pytest

from services import cli


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
