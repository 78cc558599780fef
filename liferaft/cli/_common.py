"""What every command shares: global options, stack loading, JSON and table output, and the one exit point."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from liferaft.errors import EXIT_USAGE, InvalidInput, LiferaftError
from liferaft.statedir import default_state_dir, owner_only_dir

if TYPE_CHECKING:
    from liferaft.events import Event
    from liferaft.stack import Stack

F = TypeVar("F", bound=Callable[..., Any])
EXIT_INTERNAL = 70  # an unexpected error: a bug in liferaft (the traceback shows with -v)
EXIT_INTERRUPTED = 130


@dataclass
class GlobalOptions:
    stack_path: str
    state_dir_opt: str | None
    verbose: int
    _stack: Stack | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        """The state directory, created owner-only (journals and manifests are nobody else's business)."""
        return owner_only_dir(Path(self.state_dir_opt) if self.state_dir_opt else default_state_dir())

    def stack(self) -> Stack:
        """Load the stack file once; warnings are shown on stderr."""
        if self._stack is None:
            from liferaft.stack import load_stack

            self._stack = load_stack(self.stack_path)
            for w in self._stack.warnings:
                click.echo(click.style("warning: ", fg="yellow") + str(w), err=True)
        return self._stack


pass_opts = click.make_pass_decorator(GlobalOptions)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(f)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def console() -> Any:
    """A rich console on stderr for progress, so stdout stays clean for results and JSON."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def event_printer(as_json: bool, verbose: int = 0) -> Callable[[Event], None]:
    """An observer rendering events: JSON lines on stderr with --json, else short human lines on stderr."""
    con = None if as_json else console()

    def observe(event: Event) -> None:
        if as_json:
            sys.stderr.write(json.dumps(event.to_dict(), default=_json_default) + "\n")
            return
        if event.kind.endswith(".debug") and verbose < 1:
            return
        assert con is not None
        con.print(f"[dim]{event.kind:<22}[/dim] {event.message}", markup=True, highlight=False)

    return observe


def _render_error(err: LiferaftError, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, **err.to_dict()}, default=_json_default) + "\n")
    click.echo(click.style("error: ", fg="red", bold=True) + str(err), err=True)


def run(command: click.Command, argv: list[str] | None) -> Any:
    """Run the CLI; translate every outcome into an exit code. The only place liferaft calls sys.exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    verbose = sum(a.count("v") for a in args if a.startswith("-v") and set(a[1:]) == {"v"}) + args.count("--verbose")
    logging.basicConfig(level=logging.DEBUG if verbose >= 2 else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        rv = command.main(args=args, prog_name="liferaft", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except InvalidInput as e:
        _render_error(e, as_json)
        sys.exit(e.exit_code)
    except LiferaftError as e:
        _render_error(e, as_json)
        if verbose:
            traceback.print_exc()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 (the last resort: a bug is said plainly; the traceback only with -v)
        click.echo(click.style("internal error: ", fg="red", bold=True) + f"{type(e).__name__}: {e}", err=True)
        if verbose:
            traceback.print_exc()
        else:
            click.echo("  run again with -v for the traceback, and please report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
