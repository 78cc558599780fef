"""`liferaft plan | failover | runs | show | resume | rollback`: the failover engine's commands.

Thin: parse, call liferaft.failover, render. Errors are liferaft errors, translated to exit codes in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liferaft.cli._common import (
    GlobalOptions,
    emit_json,
    finite_seconds,
    json_option,
    pass_opts,
    stdout_console,
)
from liferaft.errors import EXIT_OK, EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from liferaft.cli.display import RunDisplay
    from liferaft.engine import Plan, Runner, RunOutcome
    from liferaft.engine.saved import SavedPlan


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _display(opts: GlobalOptions, as_json: bool) -> RunDisplay:
    from liferaft.cli.display import run_display

    return run_display(as_json, opts.verbose)


def _runner(opts: GlobalOptions, as_json: bool, *, need_stack: bool = True,
            display: RunDisplay | None = None) -> Runner:
    import liferaft.steps  # noqa: F401  (registers the step library: a journal may name any of its kinds)
    from liferaft.engine import Runner
    from liferaft.events import Events

    stack = opts.stack()
    # Not opts.state_dir, which creates it: runs, show and a resume of nothing create nothing there; a run creates
    # the state dir owner-only with its lock, before anything else is written.
    return Runner(opts.state_dir_path, stack=stack if need_stack else None, stack_name=stack.model.name,
                  events=Events(display or _display(opts, as_json)))


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to act without confirmation on a non-interactive terminal", hint="pass --yes")
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort()


def _build_plan(opts: GlobalOptions, to: str, mode: str, as_json: bool, source_timeout: float | None = None,
                ledger: str | None = None, display: RunDisplay | None = None) -> Plan:
    from liferaft.events import Events
    from liferaft.failover.planner import build_plan

    if source_timeout is not None and mode != "cold":
        raise UsageError("--source-timeout is for --mode cold (a live move needs the source to answer)")
    display = display or _display(opts, as_json)
    try:
        return build_plan(opts.stack(), to, mode, state_dir=opts.state_dir, events=Events(display),
                          source_timeout=source_timeout, ledger=str(Path(ledger).resolve()) if ledger else None)
    finally:
        display.pause()


def source_timeout_option(f: Any) -> Any:
    return click.option("--source-timeout", type=float, callback=finite_seconds(0.5), default=None,
                        metavar="SECONDS",
                        help="Cold mode: how long to wait for the source's one probe. Default: "
                             "LIFERAFT_SOURCE_TIMEOUT, else the stack's health.timeout.")(f)


def ledger_option(f: Any) -> Any:
    return click.option("--ledger", type=click.Path(dir_okay=False, exists=True), default=None, metavar="FILE",
                        help="A write ledger (SQLite, format in liferaft.movers.ledger) kept by a writer while the "
                             "app served: every acknowledged write must be at the target (the database's "
                             "`ledger:` in the stack says where).")(f)


def render_plan(plan: Plan) -> None:
    from rich.table import Table

    con = stdout_console()
    con.print(f"[bold]Plan[/bold] {plan.stack}: {plan.source} -> {plan.target} ({plan.mode} mode), "
              f"plan hash {plan.hash}")
    table = Table(box=None, pad_edge=False)
    for col in ("#", "step", "kind", "what", "after"):
        table.add_column(col)
    for i, s in enumerate(plan.steps, 1):
        table.add_row(str(i), s.id, s.kind, s.title, ", ".join(s.depends_on))
    con.print(table)
    if plan.resources:
        con.print("[bold]Resources[/bold]")
        for r in plan.resources:
            con.print(f"  {r.get('action', '?')} {r.get('kind', '?')} {r.get('name', '')}"
                      f" at {r.get('provider', '?')} {r.get('detail', '')}".rstrip())
    con.print(f"[bold]Data to move[/bold] {_human_bytes(plan.bytes_to_move)}; "
              f"[bold]estimated duration[/bold] {plan.estimate_s:.0f}s")
    if plan.dns_diff:
        con.print("[bold]DNS changes[/bold]")
        for d in plan.dns_diff:
            old = ", ".join(d.get("old") or []) or "(none)"
            new = ", ".join(d.get("new") or []) or "(none)"
            con.print(f"  {d['name']} {d['type']}: {old} -> {new}")
    for note in plan.notes:
        con.print(f"[dim]note:[/dim] {note}")
    if plan.problems:
        from rich.markup import escape

        from liferaft.engine.plan import problem_text

        con.print(f"[bold red]Problems[/bold red] ({len(plan.problems)}): fix them before a move (nothing is "
                  "created until then)")
        for p in plan.problems:
            con.print(f"  [red]{escape(p.get('check', ''))}[/red] {escape(problem_text(p))}")


def _render_outcome(out: RunOutcome, as_json: bool) -> int:
    if as_json:
        emit_json(out.to_dict())
        return EXIT_OK
    con = stdout_console()
    con.print(f"run {out.run_id}: {out.status} ({out.steps_done}/{out.steps_total} steps, {out.duration_s:.1f}s)")
    window = out.summary.get("write_unavailable_s")
    if window is not None:
        con.print(f"write-unavailability window: {window:.3f}s")
    for key, value in out.summary.items():
        if key != "write_unavailable_s":
            con.print(f"  {key}: {value}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------- commands
@click.command("plan")
@click.option("--to", "to", required=True, metavar="SITE", help="The site to move to.")
@click.option("--mode", type=click.Choice(["live", "cold"]), default="live", show_default=True,
              help="live: the source still answers (replicate, freeze, cut over); cold: it does not.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, writable=True), default=None, metavar="PLAN",
              help="Save the plan to this file (owner-only; no secret in it), to review and then apply exactly "
                   "it with `liferaft failover --plan PLAN`.")
@source_timeout_option
@ledger_option
@json_option
@pass_opts
def plan_cmd(opts: GlobalOptions, to: str, mode: str, out_path: str | None, source_timeout: float | None,
             ledger: str | None, as_json: bool) -> int:
    """Show what a failover to SITE would do: steps, resources, bytes, time, DNS diff. Makes no changes.

    With --out PLAN the plan is also saved, with the facts it was built from (source and target hosts, DNS values,
    data sizes) and its hash: `liferaft show PLAN` prints it, `liferaft failover --plan PLAN` applies it if those
    facts still hold."""
    with _display(opts, as_json) as display:
        plan = _build_plan(opts, to, mode, as_json, source_timeout, ledger, display)
    saved = None
    if out_path is not None:
        from liferaft.engine.saved import save_plan

        saved = save_plan(plan, out_path, _plan_options(to, mode, source_timeout, ledger))
    if as_json:
        emit_json({**plan.to_dict(), "problems": list(plan.problems), "ok": not plan.blocking,
                   **({"saved_to": str(out_path)} if saved else {})})
    else:
        render_plan(plan)
        if saved is not None:
            stdout_console().print(f"saved to {out_path} (plan hash {plan.hash}); apply exactly this plan with "
                                   f"`liferaft failover --plan {out_path}`")
    return EXIT_USAGE if plan.blocking else EXIT_OK


def _plan_options(to: str, mode: str, source_timeout: float | None, ledger: str | None) -> dict[str, Any]:
    return {"to": to, "mode": mode, "source_timeout": source_timeout,
            "ledger": str(Path(ledger).resolve()) if ledger else None}


def _load_saved(opts: GlobalOptions, plan_path: str, to: str | None, mode: str | None,
                source_timeout: float | None, ledger: str | None) -> tuple[SavedPlan, str, str, float | None,
                                                                           str | None]:
    """The saved plan and the options to re-plan with (the saved ones; what the command line adds must agree)."""
    from liferaft.engine.saved import load_plan

    saved = load_plan(plan_path)
    o = saved.options
    if saved.plan.stack != opts.stack().model.name:
        raise UsageError(f"{plan_path} is a plan for stack {saved.plan.stack!r}, not {opts.stack().model.name!r}")
    site, how = str(o.get("to") or saved.plan.target), str(o.get("mode") or saved.plan.mode)
    if to is not None and to != site:
        raise UsageError(f"--to {to} but the saved plan {plan_path} moves to {site}", hint="leave --to out")
    if mode is not None and mode != how:
        raise UsageError(f"--mode {mode} but the saved plan {plan_path} is {how}", hint="leave --mode out")
    saved_ledger = o.get("ledger")
    if ledger is not None and str(Path(ledger).resolve()) != saved_ledger:
        raise UsageError(f"--ledger {ledger} but the saved plan {plan_path} was made with "
                         f"{saved_ledger or 'no ledger'}", hint="leave --ledger out")
    timeout = source_timeout if source_timeout is not None else o.get("source_timeout")
    return saved, site, how, (float(timeout) if timeout is not None else None), saved_ledger


@click.command("failover")
@click.option("--to", "to", metavar="SITE", help="The site to move to (with --plan: taken from the plan).")
@click.option("--mode", type=click.Choice(["live", "cold"]), default=None, help="live (the default) or cold.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, exists=True), default=None, metavar="PLAN",
              help="Apply this saved plan (`liferaft plan --out PLAN`), exactly, if what it was built from still "
                   "holds (same steps, source, target hosts, DNS values; data sizes within 10% or 64 MiB); else "
                   "refuse naming what changed (exit 2).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@click.option("--stop-before", metavar="STEP", help="Stop before this step (resume later).")
@source_timeout_option
@ledger_option
@json_option
@pass_opts
def failover_cmd(opts: GlobalOptions, to: str | None, mode: str | None, plan_path: str | None, yes: bool,
                 stop_before: str | None, source_timeout: float | None, ledger: str | None, as_json: bool) -> int:
    """Move the stack to SITE now: provision, configure, migrate, verify, then cut DNS over. Journaled.

    The stack's lock and the site's are taken first: another run or a drill there is refused at once; a
    `replicate` keeping the standby at SITE is asked to end its round and let the site go (with --yes at once,
    else after the confirmation)."""
    saved = None
    if plan_path is not None:
        saved, to, mode, source_timeout, ledger = _load_saved(opts, plan_path, to, mode, source_timeout, ledger)
    if to is None:
        raise UsageError("which site? pass --to SITE (or --plan PLAN)")
    mode = mode or "live"
    display = _display(opts, as_json)
    runner = _runner(opts, as_json, display=display)
    opts.stack().site(to)  # an unknown site is a usage error, before any lock file is made for it
    from liferaft.cli.status import fence_before_contact

    fence_before_contact(opts, opts.stack(), to, as_json)  # failback into an old primary: fenced before anything
    with display, runner.claim(to, take_site=yes):
        plan = _build_plan(opts, to, mode, as_json, source_timeout, ledger, display)
        if saved is not None:
            from liferaft.engine.saved import PlanChanged, changes

            diff = changes(saved, plan)
            if diff:
                raise PlanChanged(diff, str(plan_path))
            plan = saved.plan  # what was reviewed, exactly
        if not as_json:
            render_plan(plan)
            if saved is not None:
                stdout_console().print(f"the saved plan {plan_path} still holds (plan hash {plan.hash}): "
                                       "applying it")
        plan.require_no_blocking()  # exit 2 naming each problem and its fix; nothing allocated
        _confirm(f"Fail over {plan.stack} from {plan.source} to {plan.target} ({len(plan.steps)} steps)?", yes)
        out = runner.start(plan, stop_before=stop_before)
    _note_moved(runner, out)
    return _render_outcome(out, as_json)


def _note_moved(runner: Runner, out: RunOutcome) -> None:
    """A done failover or failback (not a drill) moved the stack: record where it runs now, its active site
    (liferaft.engine.active), which every later command judges against; the site it left is to be fenced."""
    from liferaft.engine.active import record_active, run_facts
    from liferaft.engine.standby_state import load_standby
    from liferaft.steps.drill import is_drill

    if out.status != "done":
        return
    with runner.journal() as journal:
        rec = journal.run(out.run_id)
        steps = journal.steps(out.run_id)
    if is_drill(rec.plan.steps) or rec.mode == "standby":  # a standby set-up (`replicate`) moves nothing
        return
    standby = load_standby(runner.state_dir, rec.plan.stack, rec.target)
    hosts, source_host = run_facts(rec.plan.steps, steps, standby.data.get("source_host") if standby else None)
    record_active(runner.state_dir, rec.plan.stack, site=rec.target, source=rec.source, run=rec.id, mode=rec.mode,
                  hosts=hosts, source_host=source_host)


@click.command("runs")
@json_option
@pass_opts
def runs_cmd(opts: GlobalOptions, as_json: bool) -> int:
    """List this stack's failover runs, newest first."""
    from liferaft.steps.drill import is_drill

    with _runner(opts, as_json, need_stack=False).journal() as journal:
        runs = journal.runs()
        rows = [(r, journal.steps(r.id)) for r in runs]
    if as_json:
        emit_json([{**r.to_dict(), "drill": is_drill(st), "steps_done": sum(1 for s in st if s.status == "done"),
                    "steps_total": len(st)} for r, st in rows])
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("run", "status", "from", "to", "mode", "steps", "error"):
        table.add_column(col)
    for r, st in rows:
        table.add_row(r.id, r.status, r.source, r.target, r.mode + (" (drill)" if is_drill(st) else ""),
                      f"{sum(1 for s in st if s.status == 'done')}/{len(st)}", (r.error or "")[:60])
    stdout_console().print(table if rows else "no runs yet")
    return EXIT_OK


@click.command("show")
@click.argument("run_ref", metavar="RUN|PLAN")
@json_option
@pass_opts
def show_cmd(opts: GlobalOptions, run_ref: str, as_json: bool) -> int:
    """Show one run (id, unique prefix or 'last'): its plan, each step's state and result. Or, given a file saved
    by `liferaft plan --out PLAN`: that plan and the facts it was built from."""
    from liferaft.engine.saved import is_saved_plan_file

    if is_saved_plan_file(run_ref):
        return _show_saved(run_ref, as_json)
    with _runner(opts, as_json, need_stack=False).journal() as journal:
        rec = journal.find_run(run_ref)
        steps = journal.steps(rec.id)
    if as_json:
        data: dict[str, Any] = {**rec.to_dict(), "plan": rec.plan.to_dict(), "steps": [s.to_dict() for s in steps]}
        emit_json(data)
        return EXIT_OK
    from rich.table import Table

    con = stdout_console()
    con.print(f"run {rec.id}: {rec.status}, {rec.source} -> {rec.target} ({rec.mode}), plan {rec.plan.hash}")
    if rec.error:
        con.print(f"error: {rec.error}")
    table = Table(box=None, pad_edge=False)
    for col in ("step", "kind", "status", "tries", "seconds", "error"):
        table.add_column(col)
    for s in steps:
        d = s.to_dict()
        table.add_row(s.step_id, s.kind, s.status, str(s.attempts),
                      "" if d["duration_s"] is None else f"{d['duration_s']:.1f}", (s.error or "")[:70])
    con.print(table)
    for key, value in rec.summary.items():
        con.print(f"  {key}: {value}")
    return EXIT_OK


def _show_saved(path: str, as_json: bool) -> int:
    from liferaft.engine.saved import SIZE_TOLERANCE, SIZE_TOLERANCE_BYTES, load_plan

    saved = load_plan(path)
    if as_json:
        emit_json(saved.to_dict())
        return EXIT_OK
    con = stdout_console()
    doc = saved.to_dict()
    con.print(f"saved plan {path}, made {doc['saved_at']} with `liferaft plan --to {saved.options.get('to')} "
              f"--mode {saved.options.get('mode')}`" + (f" --ledger {saved.options['ledger']}"
                                                        if saved.options.get("ledger") else ""))
    render_plan(saved.plan)
    con.print(f"[bold]Applied by[/bold] `liferaft failover --plan {path}` only while the source, the target's "
              f"hosts and these DNS values are unchanged, the steps hash to {saved.plan.hash}, and the data to move "
              f"stays within {SIZE_TOLERANCE:.0%} or {SIZE_TOLERANCE_BYTES // (1024 * 1024)} MiB of "
              f"{_human_bytes(saved.plan.bytes_to_move)}.")
    return EXIT_OK


@click.command("resume")
@click.argument("run_ref", metavar="RUN")
@click.option("--stop-before", metavar="STEP", help="Stop before this step (resume later).")
@json_option
@pass_opts
def resume_cmd(opts: GlobalOptions, run_ref: str, stop_before: str | None, as_json: bool) -> int:
    """Continue a stopped, failed or crashed run: done steps are skipped, the interrupted one re-applied."""
    display = _display(opts, as_json)
    runner = _runner(opts, as_json, display=display)
    with display:
        out = runner.resume(run_ref, stop_before=stop_before)
    _note_moved(runner, out)
    return _render_outcome(out, as_json)


@click.command("rollback")
@click.argument("run_ref", metavar="RUN")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@json_option
@pass_opts
def rollback_cmd(opts: GlobalOptions, run_ref: str, yes: bool, as_json: bool) -> int:
    """Undo a run's completed steps in reverse order, DNS first."""
    _confirm(f"Roll back run {run_ref}?", yes)
    from liferaft.engine.standby_state import forget_move

    before = opts.active()  # the active site this run may have made (and the site it fenced)
    display = _display(opts, as_json)
    with display:
        out = _runner(opts, as_json, display=display).rollback(run_ref)
    fence = (before or {}).get("fence") if (before or {}).get("run") == out.run_id else None
    if fence and fence.get("state") == "fenced":
        from liferaft.cli._common import event_printer
        from liferaft.events import Events
        from liferaft.standby.fence import unfence_site

        # the site the move left is the active one again: what fenced it is undone (else it would serve nothing)
        unfence_site(opts.stack(), opts.state_dir, fence, Events(event_printer(as_json, opts.verbose)))
    forget_move(opts.state_dir, opts.stack().model.name, run=out.run_id)
    return _render_outcome(out, as_json)
