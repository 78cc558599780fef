"""`liferaft deploy`: the first deployment of a stack at a site, as a journaled run of the engine.

Observe read-only (the DNS records as they are, the site's free hosts), build the plan in mode `deploy` of the one
plan builder (liferaft.planner.builder, which lists its steps), run it with the DAG runner under the stack's and the
site's locks, and record the site as the stack's active site (liferaft.engine.active) once the run is done. The run
is an ordinary one: `liferaft runs`, `show`, `resume` and `rollback` work on it (a rollback removes what it made).

Who the site's databases admit: this controller (as the host sees it) and every host address the stack's OTHER
sites declare (pool hosts), so that a later `replicate` or `failover` from there can reach them. Hosts that an API
creates at failover time are not known in advance: the failover opens the source to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liferaft.engine.observe import dns_current, target_free
from liferaft.engine.plan import Plan
from liferaft.events import Events, as_events
from liferaft.planner.builder import Deploy, build

if TYPE_CHECKING:
    from liferaft.engine.runner import RunOutcome
    from liferaft.stack import Stack


def declared_peers(stack: Stack, site: str) -> list[str]:
    """CIDRs (/32) of every host the stack's other sites declare in the stack file (pools of hosts you bring);
    sites whose hosts an API creates declare none."""
    out: list[str] = []
    for name, other in stack.model.sites.items():
        if name == site:
            continue
        for host in getattr(stack.provider(other.compute), "hosts", None) or []:
            address = getattr(host, "address", None)
            if address:
                out.append(f"{address}/32")
    return sorted(set(out))


def build_deploy_plan(stack: Stack, site: str, *, state_dir: Any = None, events: Events | None = None,
                      extra_networks: Sequence[str] = ()) -> Plan:
    """Observe (read-only) and plan the first deployment of `stack` at `site`. `extra_networks`: CIDRs the
    site's databases admit besides the other sites' declared hosts (the lab's bridge, for hosts its clouds
    create)."""
    ev = as_events(events)
    stack.site(site)  # an unknown site is a usage error
    current = dns_current(stack, state_dir)
    ev.emit("plan.observe", f"DNS: {len(current)} record(s) read", records=len(current))
    free, preview = target_free(stack, stack.site(site).compute, state_dir)
    allow = tuple(sorted(set(declared_peers(stack, site)) | set(extra_networks)))
    plan = build(stack, site, site, Deploy(allow_from=allow, dns_current=current, free=free, preview=preview))
    ev.emit("plan.ready", f"{len(plan.steps)} steps, ~{plan.estimate_s:.0f}s", plan_hash=plan.hash)
    return plan


@dataclass(frozen=True)
class Deployed:
    """A deploy run's plan and outcome, and what it changed (the `deploy.changes` step's count)."""

    plan: Plan
    outcome: RunOutcome

    @property
    def changed(self) -> list[str]:
        return list(self.outcome.summary.get("changed") or [])

    def to_dict(self) -> dict[str, Any]:
        return {**self.outcome.to_dict(), "site": self.plan.target, "mode": self.plan.mode,
                "changed_steps": len(self.changed), "changed": self.changed,
                "nothing_changed": self.outcome.status == "done" and not self.changed}


def run_deploy(stack: Stack, site: str, state_dir: Any, *, events: Events | None = None,
               extra_networks: Sequence[str] = (), confirm: Callable[[Plan], None] | None = None,
               take_site: bool = True, stop_before: str | None = None) -> Deployed:
    """Plan and run the deploy of `stack` at `site`, journaled in `state_dir`; once done, the site is the stack's
    active site. `confirm(plan)` is called before anything acts (raise to refuse)."""
    import liferaft.steps  # noqa: F401  (registers the step library)
    from liferaft.engine import Runner

    ev = as_events(events)
    runner = Runner(state_dir, stack=stack, events=ev)
    with runner.claim(site, take_site=take_site):
        plan = build_deploy_plan(stack, site, state_dir=state_dir, events=ev, extra_networks=extra_networks)
        if confirm is not None:
            confirm(plan)
        out = runner.start(plan, stop_before=stop_before)
    note_deployed(runner, out)
    return Deployed(plan, out)


def note_deployed(runner: Any, out: RunOutcome) -> None:
    """A done deploy run: the stack runs at its site now (the active site; nothing to fence, it left nowhere)."""
    from liferaft.engine.active import record_active, run_facts

    if out.status != "done":
        return
    with runner.journal() as journal:
        rec = journal.run(out.run_id)
        steps = journal.steps(out.run_id)
    hosts, _ = run_facts(rec.plan.steps, steps, None)
    record_active(runner.state_dir, rec.plan.stack, site=rec.target, source=rec.target, run=rec.id, mode=rec.mode,
                  hosts=hosts, source_host=None)
