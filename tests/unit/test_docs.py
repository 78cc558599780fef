"""Docs that cannot drift: every command and exit code is in the README."""

from __future__ import annotations

import re
from pathlib import Path

import click

from liferaft.cli import COMMANDS, LazyGroup, cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _all_commands() -> list[str]:
    ctx = click.Context(cli)
    names = []
    for name in LazyGroup.list_commands(cli, ctx):  # type: ignore[arg-type]
        cmd = cli.get_command(ctx, name)
        names.append(name)
        if isinstance(cmd, click.Group):
            names += [f"{name} {sub}" for sub in cmd.list_commands(ctx)]
    return names


def test_every_command_is_documented() -> None:
    missing = [n for n in _all_commands() if f"liferaft {n}" not in README]
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_exit_code_is_documented() -> None:
    from liferaft import errors
    from liferaft.cli import _common

    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    codes |= {v for k, v in vars(_common).items() if k.startswith(("EXIT_", "EX_")) and isinstance(v, int)}
    table = re.findall(r"^\|\s*`?(\d+)`?\s*\|", README, flags=re.MULTILINE)
    assert codes <= {int(c) for c in table}


def test_commands_table_is_importable() -> None:
    for target in COMMANDS.values():
        module, _, attr = target.partition(":")
        assert getattr(__import__(module, fromlist=[attr]), attr)
