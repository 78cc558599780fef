"""What every command shares: global options, stack loading, JSON and table output, and the one exit point."""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from liferaft.errors import EXIT_USAGE, InvalidInput, LiferaftError, UsageError
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
        return owner_only_dir(self.state_dir_path)

    @property
    def state_dir_path(self) -> Path:
        """Where the state directory is, creating nothing: for commands that only read it."""
        return Path(self.state_dir_opt) if self.state_dir_opt else default_state_dir()

    def stack(self) -> Stack:
        """Load the stack file once; warnings are shown on stderr."""
        if self._stack is None:
            from liferaft.stack import load_stack

            stack = load_stack(self.stack_path)
            for w in stack.warnings:
                click.echo(click.style("warning: ", fg="yellow") + terminal_safe(str(w)), err=True)
            self._stack = _at_active_site(stack, self.active(stack.model.name))
        return self._stack

    def active(self, stack_name: str | None = None) -> dict[str, Any] | None:
        """The stack's active-site record (liferaft.engine.active), read without creating anything."""
        from liferaft.engine.active import load_active

        return load_active(self.state_dir_path, stack_name or self.stack().model.name)


def _at_active_site(stack: Stack, rec: dict[str, Any] | None) -> Stack:
    """Every command judges the stack where it runs now: the recorded active site, else the stack file's primary."""
    if not rec:
        return stack
    site = str(rec["site"])
    if site not in stack.model.sites:
        click.echo(click.style("warning: ", fg="yellow") + terminal_safe(
            f"the state dir records the stack as running at site {site!r}, which the stack file no longer names: "
            f"judging against its primary {stack.model.primary!r}"), err=True)
        return stack
    hosts = [str(h["address"]) for h in rec.get("hosts") or [] if isinstance(h, dict) and h.get("address")]
    return stack.at_site(site, hosts)


pass_opts = click.make_pass_decorator(GlobalOptions)


def finite_seconds(minimum: float = 0.0) -> Callable[[click.Context, click.Parameter, float | None], float | None]:
    """An option callback for `type=float` seconds: finite and at least `minimum`. Click's float and FloatRange take
    `inf` and `nan` (nan passes every range check), which later overflow a timer or make every comparison false."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise click.BadParameter(f"{value!r} is not a finite number of seconds", ctx, param)
        if value < minimum:
            raise click.BadParameter(f"{value:g} is less than {minimum:g} seconds", ctx, param)
        return value

    return check


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
        if (event.kind.endswith(".debug") or event.kind == "ansible.task.start") and verbose < 1:
            return  # a task that starts may turn out skipped: its failure or change is an event of its own
        assert con is not None
        con.print(f"[dim]{event.kind:<22}[/dim] {event.message}", markup=True, highlight=False)

    return observe


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # controls, bidi/format marks, surrogates, separators


def terminal_safe(text: str) -> str:
    """`text` with control and bidi characters shown as escapes (`\\x1b`, `\\u202e`), newlines and tabs kept.

    Every message a stack file can put words into (keys, values, paths) reaches the terminal through here, so a key
    holding a terminal escape (`\\x1b]0;...\\x07` retitles the window, others rewrite the screen) or U+202E (shows
    text reversed) is displayed, never obeyed. `--json` output is escaped by the JSON encoder already."""
    import unicodedata

    if text.isascii() and all(c >= " " or c in "\n\t" for c in text) and "\x7f" not in text:
        return text
    out = []
    for c in text:
        if c not in "\n\t" and unicodedata.category(c) in _UNSAFE_CATEGORIES:
            n = ord(c)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")
        else:
            out.append(c)
    return "".join(out)


# sysexits.h codes for commands whose 0-3 are verdicts (`health`): a monitor (Nagios-style) reads 0-3 as states,
# so an error that is not a verdict must not look like one.
EX_USAGE = 64  # the command line was wrong
EX_UNAVAILABLE = 69  # no verdict could be reached (an error outside the probes: a provider, the state dir)
EX_CONFIG = 78  # the stack file is invalid, or a secret it references cannot be read


class VerdictCommand(click.Command):
    """A command whose exit codes 0-3 are verdicts; its errors exit with sysexits.h codes instead of 2 and 3."""

    @staticmethod
    def error_exit_code(err: BaseException, default: int) -> int:
        if isinstance(err, click.ClickException):
            return EX_USAGE
        if isinstance(err, UsageError):  # InvalidInput, SecretError, an unknown site, a missing tool
            return EX_CONFIG
        if isinstance(err, LiferaftError):
            return EX_UNAVAILABLE
        return default


_invoked: ContextVar[click.Command | None] = ContextVar("liferaft_invoked", default=None)


def note_invoked(command: click.Command | None) -> None:
    """The root group tells which command runs, so run() can apply that command's exit codes to its errors."""
    _invoked.set(command)


def _exit_code(err: BaseException, default: int) -> int:
    command = _invoked.get()
    return command.error_exit_code(err, default) if isinstance(command, VerdictCommand) else default


def _render_error(err: LiferaftError, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, **err.to_dict()}, default=_json_default) + "\n")
    click.echo(click.style("error: ", fg="red", bold=True) + terminal_safe(str(err)), err=True)


def _show_click_error(err: click.ClickException, root: click.Command) -> None:
    """Click's usage message, terminal-safe (it quotes what was typed), with a hint when a global option
    (`--stack`, `--state-dir`, `-v`) was put after the command."""
    import io

    buf = io.StringIO()
    err.show(file=buf)
    if isinstance(err, click.NoSuchOption) and err.ctx is not None and err.ctx.parent is not None:
        globals_ = {name for p in root.params for name in (*p.opts, *p.secondary_opts)}
        if err.option_name in globals_:
            buf.write(f"hint: {err.option_name} is a global option: put it before the command, e.g. "
                      f"`liferaft {err.option_name} ... {err.ctx.info_name} ...`\n")
    sys.stderr.write(terminal_safe(buf.getvalue()))


def run(command: click.Command, argv: list[str] | None) -> Any:
    """Run the CLI; translate every outcome into an exit code. The only place liferaft calls sys.exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    verbose = sum(a.count("v") for a in args if a.startswith("-v") and set(a[1:]) == {"v"}) + args.count("--verbose")
    logging.basicConfig(level=logging.DEBUG if verbose >= 2 else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    note_invoked(None)
    try:
        rv = command.main(args=args, prog_name="liferaft", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        _show_click_error(e, command)
        sys.exit(_exit_code(e, EXIT_USAGE))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except InvalidInput as e:
        _render_error(e, as_json)
        sys.exit(_exit_code(e, e.exit_code))
    except LiferaftError as e:
        _render_error(e, as_json)
        if verbose:
            traceback.print_exc()
        sys.exit(_exit_code(e, e.exit_code))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 (the last resort: a bug is said plainly; the traceback only with -v)
        click.echo(click.style("internal error: ", fg="red", bold=True) + terminal_safe(f"{type(e).__name__}: {e}"),
                   err=True)
        if verbose:
            traceback.print_exc()
        else:
            click.echo("  run again with -v for the traceback, and please report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
