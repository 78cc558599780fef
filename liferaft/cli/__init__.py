"""The `liferaft` command: a thin Click layer. Commands load lazily so `liferaft --help` imports no SDK."""

from __future__ import annotations

import importlib
from typing import Any

import click

from liferaft import __version__
from liferaft.cli._common import GlobalOptions, note_invoked, run

# name -> "module:attribute". Each command group lives in its own module under liferaft/cli/.
COMMANDS: dict[str, str] = {
    "validate": "liferaft.cli.stack_cmds:validate",
    "health": "liferaft.cli.health:health",
    "init": "liferaft.cli.stack_cmds:init",
    "export": "liferaft.cli.export:export",
    "audit": "liferaft.cli.audit:audit",
    "plan": "liferaft.cli.failover:plan_cmd",
    "failover": "liferaft.cli.failover:failover_cmd",
    "deploy": "liferaft.cli.deploy:deploy_cmd",
    "runs": "liferaft.cli.failover:runs_cmd",
    "show": "liferaft.cli.failover:show_cmd",
    "resume": "liferaft.cli.failover:resume_cmd",
    "rollback": "liferaft.cli.failover:rollback_cmd",
    "lab": "liferaft.cli.lab:lab",
    "providers": "liferaft.cli.providers:providers",
    "sync": "liferaft.cli.sync:sync",
    "replicate": "liferaft.cli.replicate:replicate",
    "drill": "liferaft.cli.drill:drill_cmd",
    "drills": "liferaft.cli.drill:drills_cmd",
    "hosts": "liferaft.cli.hosts:hosts",
    "status": "liferaft.cli.status:status",
}

HELP_ORDER = ["health", "plan", "failover", "drill", "replicate", "audit"]


class LazyGroup(click.Group):
    """Resolve subcommands from COMMANDS only when they are invoked (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = sorted(set(COMMANDS) | set(self.commands))
        return sorted(names, key=lambda n: (HELP_ORDER.index(n) if n in HELP_ORDER else len(HELP_ORDER), n))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                          list[str]]:
        """As Click's, but an unknown command gets a 'did you mean' from the command table (no module imported),
        and run() is told which command runs (its exit codes may differ: `health`)."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS and name not in self.commands:
            import difflib  # only for a mistyped command: ~1 ms kept off every start-up

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {' or '.join(repr(c) for c in close)}?")
        cmd_name, cmd, rest = super().resolve_command(ctx, args)
        note_invoked(cmd)
        return cmd_name, cmd, rest

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="liferaft")
@click.option("--stack", "stack", type=click.Path(dir_okay=False), envvar="LIFERAFT_STACK",
              default="liferaft.yaml", show_default=True, help="The stack file. Env: LIFERAFT_STACK.")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="LIFERAFT_STATE_DIR", default=None,
              help="Where journals, manifests and reports live. Default: $XDG_STATE_HOME/liferaft.")
@click.option("-v", "--verbose", count=True, help="More detail; -v also shows tracebacks of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, stack: str, state_dir: str | None, verbose: int) -> None:
    """liferaft keeps an application one tested command away from running at another provider, with its data.

    \b
    Jobs:  health     is each provider still serving me?
           plan       what would a move do? (no side effects)
           failover   move now: provision, configure, migrate, verify, cut DNS over
           drill      prove we can move: measured RTO/RPO, torn down, reported
           replicate  keep the way out warm
           audit      which single vendor can take us down?
    """
    ctx.obj = GlobalOptions(stack_path=stack, state_dir_opt=state_dir, verbose=verbose)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the console script: the only place liferaft exits."""
    return run(cli, argv)
