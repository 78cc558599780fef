"""`liferaft drill` (prove we can move: measured RTO/RPO, torn down, reported) and `liferaft drills` (the history).

Thin: parse, call liferaft.drill, render. Exit codes: 0 the drill passed; 1 an objective was missed or the data or
service check failed (the report says which); 2 usage (unknown site, a missing standby that cannot be made).
"""

from __future__ import annotations

from pathlib import Path

import click

from liferaft.cli._common import (
    GlobalOptions,
    emit_json,
    json_option,
    pass_opts,
    stdout_console,
)
from liferaft.cli.display import run_display
from liferaft.errors import EXIT_CHECK_FAILED, EXIT_OK, UsageError


@click.command("drill")
@click.option("--to", "to", metavar="SITE", help="The site to drill a failover into.")
@click.option("--scenario", type=click.Choice(["notice", "no-notice"]), default="notice", show_default=True,
              help="notice: the source still answers (replicate, cut, no freeze); no-notice: the primary is cut off "
                   "first (for real in the local lab) and the standby is failed over cold (RTO from the cut).")
@click.option("--keep", is_flag=True, help="Leave the target running afterwards (default: tear it down).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write the report (Markdown, HTML, JSON) here. Default: <state dir>/reports.")
@click.option("--ledger", type=click.Path(dir_okay=False, exists=True), default=None, metavar="FILE",
              help="A write ledger (format: liferaft.movers.ledger) kept by a writer during the drill: the RPO is "
                   "measured from it.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, exists=True), default=None, metavar="PLAN",
              help="Drill exactly this saved live plan (`liferaft plan --to SITE --out PLAN`), refused (exit 2) when "
                   "what it was built from changed since.")
@click.option("--teardown", "teardown_run", metavar="RUN",
              help="Instead of drilling: tear down the target a drill left running with --keep (its run id).")
@json_option
@pass_opts
def drill_cmd(opts: GlobalOptions, to: str | None, scenario: str, keep: bool, report_dir: str | None,
              ledger: str | None, plan_path: str | None, teardown_run: str | None, as_json: bool) -> int:
    """Fail over into SITE as a drill: production DNS and the source untouched, RTO and RPO measured, data
    verified, the target torn down, a report written. Exits 1 when an objective of the stack file is missed."""
    from liferaft.drill import history
    from liferaft.drill.report import seconds, write_report
    from liferaft.drill.run import DrillOptions, require_scenario, run_drill, teardown_kept
    from liferaft.events import as_events

    if teardown_run is not None:
        if to is not None:
            raise UsageError("--teardown RUN and --to SITE do not go together")
        with run_display(as_json, opts.verbose) as display:
            run_id = teardown_kept(opts.stack(), opts.state_dir, teardown_run, as_events(display))
        if as_json:
            emit_json({"ok": True, "run": run_id, "torn_down": True})
        else:
            stdout_console().print(f"drill run {run_id}: target torn down")
        return EXIT_OK
    if plan_path is not None:
        from liferaft.engine.saved import load_plan

        site = load_plan(plan_path).plan.target
        if to is not None and to != site:
            raise UsageError(f"--to {to} but the saved plan {plan_path} moves to {site}", hint="leave --to out")
        if scenario != "notice":
            raise UsageError("--plan drills a saved live plan: the notice scenario", hint="leave --scenario out")
        to = site
    if to is None:
        raise UsageError("which site? pass --to SITE", hint="the stack's alternates are the usual targets")
    require_scenario(scenario)
    stack = opts.stack()
    _refuse_the_left_site(opts, to, scenario)
    state_dir = opts.state_dir
    with run_display(as_json, opts.verbose) as display:
        result = run_drill(stack, state_dir, DrillOptions(to, scenario, keep, ledger, plan_path), as_events(display))
    out_dir = Path(report_dir) if report_dir else state_dir / "reports"
    files = write_report(result, out_dir)
    history.record(state_dir, result, out_dir)
    if as_json:
        emit_json({"ok": result.passed, **result.to_dict(), "report": files.to_dict()})
    else:
        con = stdout_console()
        verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
        con.print(f"drill {result.id}: {verdict}  {result.source} -> {result.target} ({result.scenario})")
        con.print(f"  RTO {seconds(result.rto_s):>9}  objective {seconds(result.objective_rto_s)}: "
                  f"{'met' if result.rto_met else '[red]MISSED[/red]'}")
        con.print(f"  RPO {seconds(result.rpo_s):>9}  objective {seconds(result.objective_rpo_s)}: "
                  f"{'met' if result.rpo_met else '[red]MISSED[/red]'}")
        for p in result.phases:
            con.print(f"  {p.name:<10} {seconds(p.duration_s):>9}  {p.status}")
        if result.ledger:
            con.print(f"  ledger: {result.ledger.acknowledged_before_cut} writes before the cut, "
                      f"{result.ledger.missing} missing at the target")
        for problem in result.data.problems:
            con.print(f"  [red]data:[/red] {problem}")
        if result.error:
            con.print(f"  [red]stopped:[/red] {result.error}")
        con.print(f"  target {'kept running (--keep)' if result.kept else 'torn down' if result.torn_down else 'NOT torn down'}"
                  f"; journaled run {result.run_id}")
        con.print(f"report: {files.html}\n        {files.markdown}\n        {files.json}")
    return EXIT_OK if result.passed else EXIT_CHECK_FAILED


@click.command("drills")
@json_option
@pass_opts
def drills_cmd(opts: GlobalOptions, as_json: bool) -> int:
    """List past drills of this stack with RTO, RPO, pass/fail and the trend."""
    from liferaft.drill import history
    from liferaft.drill.report import seconds

    items = history.entries(opts.state_dir_path, opts.stack().model.name)  # reads only: creates nothing
    if as_json:
        emit_json({"drills": [e.to_dict() for e in reversed(items)],
                   "rto_sparkline": history.sparkline([e.result.rto_s for e in items])})
        return EXIT_OK
    con = stdout_console()
    if not items:
        con.print("no drills yet: run `liferaft drill --to SITE`")
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("drill", "when (UTC)", "to", "scenario", "RTO", "RPO", "result", "trend"):
        table.add_column(col, no_wrap=True)
    import time

    for e in reversed(items):
        r = e.result
        arrow = {"better": "[green]better[/green]", "worse": "[red]worse[/red]"}.get(e.trend, e.trend)
        table.add_row(r.id, time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.started)), r.target, r.scenario,
                      seconds(r.rto_s), seconds(r.rpo_s), "pass" if r.passed else "[red]FAIL[/red]", arrow)
    con.print(table)
    con.print(f"RTO trend (oldest -> newest): {history.sparkline([e.result.rto_s for e in items])}")
    return EXIT_OK


def _refuse_the_left_site(opts: GlobalOptions, to: str, scenario: str) -> None:
    """A drill into the site a failover left (the old primary) is a rehearsal of the failback: it is drilled from the
    standby `liferaft replicate --to` keeps there (no-notice), once that command set the old copies aside. Before
    that (fenced, no standby yet, or only a standby record older than the move) the stack's databases on that host
    are still the old primary's own copies, which a drill's teardown would remove; a notice drill would deploy beside
    the standby kept there. Both are refused."""
    from liferaft.engine.standby_state import load_standby

    rec = opts.active()
    fence = (rec or {}).get("fence") or {}
    if fence.get("site") != to:
        return
    left = f"{to!r}, the site the stack left by run {rec.get('run') if rec else '?'}"
    standby = load_standby(opts.state_dir_path, opts.stack().model.name, to)
    # `set_aside` is recorded in this move's fence only by `replicate --to` the site (liferaft.standby.fence): a
    # standby record without it is older than the move (e.g. the one the move promoted) and holds no fresh copy.
    if standby is None or not standby.standby_host or "set_aside" not in fence:
        raise UsageError(f"a drill into {left}, needs a standby kept there first: its databases there are still the "
                         "old primary's own copies, which a drill's teardown would remove",
                         hint=f"`liferaft replicate --to {to}` (sets the old copies aside, keeps a standby of the "
                         f"active site there), then `liferaft drill --to {to} --scenario no-notice`")
    if scenario != "no-notice":
        raise UsageError(f"a drill into {left}, is drilled from the standby kept there: --scenario no-notice",
                         hint=f"`liferaft drill --to {to} --scenario no-notice` (the active site is cut off for "
                         "the drill; the standby is set up again afterwards; the set-aside copies stay)")
