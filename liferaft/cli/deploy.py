"""`liferaft deploy [--site SITE]`: the first deployment of the stack at a site, journaled like a failover.

Thin: parse, call liferaft.failover.deploy, render. Errors are liferaft errors, translated to exit codes in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, stdout_console
from liferaft.errors import EXIT_OK

if TYPE_CHECKING:
    from liferaft.engine import Plan


@click.command("deploy")
@click.option("--site", metavar="SITE", default=None,
              help="Where to deploy. Default: the stack's active site (its primary until a failover moved it).")
@click.option("--dry-run", is_flag=True, help="Show the plan (steps, resources, DNS changes) and change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@click.option("--stop-before", metavar="STEP", help="Stop before this step (resume later).")
@json_option
@pass_opts
def deploy_cmd(opts: GlobalOptions, site: str | None, dry_run: bool, yes: bool, stop_before: str | None,
               as_json: bool) -> int:
    """Deploy the stack at SITE: hosts allocated or created, prepared, its databases and buckets made (the
    databases admitting this controller and the hosts the stack's other sites declare), its services deployed, its
    DNS records created or updated (with the stack's TTLs), then the service checked through its DNS name.

    Idempotent: a second deploy changes nothing and says so ("nothing to change"). Journaled like a failover
    (`liferaft runs`, `show`, `resume`, `rollback`: a rollback removes what the deploy made); once done, SITE is
    the stack's active site (`liferaft status`)."""
    from liferaft.cli.failover import _confirm, _display, render_plan
    from liferaft.events import Events
    from liferaft.failover.deploy import build_deploy_plan, run_deploy

    stack = opts.stack()
    site = site or stack.model.primary
    stack.site(site)  # an unknown site is a usage error, before anything is read or locked
    display = _display(opts, as_json)
    if dry_run:
        with display:
            plan = build_deploy_plan(stack, site, state_dir=opts.state_dir_path, events=Events(display))
        if as_json:
            emit_json({**plan.to_dict(), "dry_run": True})
        else:
            render_plan(plan)
            stdout_console().print("dry run: nothing was changed")
        return EXIT_OK

    def confirm(plan: Plan) -> None:
        display.pause()
        if not as_json:
            render_plan(plan)
        _confirm(f"Deploy {plan.stack} at {plan.target} ({len(plan.steps)} steps)?", yes)

    with display:
        done = run_deploy(stack, site, opts.state_dir, events=Events(display), confirm=confirm, take_site=yes,
                          stop_before=stop_before)
    out = done.outcome
    if as_json:
        emit_json(done.to_dict())
    else:
        con = stdout_console()
        con.print(f"run {out.run_id}: {out.status} ({out.steps_done}/{out.steps_total} steps, "
                  f"{out.duration_s:.1f}s)")
        if out.status == "done":
            con.print("nothing to change: 0 steps changed" if not done.changed else
                      f"{len(done.changed)} step(s) changed: {', '.join(done.changed)}")
            con.print(f"the stack runs at {site} (its active site)")
    if out.status == "stopped":  # where --stop-before asked (exit 0, as for failover); a failure raised exit 4
        click.echo(f"run {out.run_id} stopped as asked; continue with `liferaft resume {out.run_id}`, or undo it "
                   f"with `liferaft rollback {out.run_id}`", err=True)
    return EXIT_OK
