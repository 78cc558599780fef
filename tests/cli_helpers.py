"""Run the real CLI entry point (with its error translation and exit codes) under Click's CliRunner."""

from __future__ import annotations

import click
from click.testing import CliRunner, Result

from liferaft.cli import cli
from liferaft.cli._common import run


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _entry(args: tuple[str, ...]) -> None:
    run(cli, list(args))


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke `liferaft ARGS...` exactly as the console script would; stdout and stderr kept apart."""
    runner = CliRunner()
    return runner.invoke(_entry, list(args), input=input, env=env, catch_exceptions=False)
