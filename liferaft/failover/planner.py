"""The live failover plan: observe the source and the target (read-only), then build the plan in mode `live` of
the one plan builder (liferaft.planner.builder, which documents the steps and the estimates)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from liferaft.configure import host_from_dict
from liferaft.datasets import kind_of
from liferaft.datasets.base import Where
from liferaft.datasets.registry import datasets
from liferaft.engine.observe import Observed, observe
from liferaft.engine.plan import Plan
from liferaft.errors import UsageError
from liferaft.events import Events, as_events
from liferaft.planner import prereq
from liferaft.planner.builder import Live, build

if TYPE_CHECKING:
    from liferaft.stack import Stack


def measure(stack: Stack, source: str, target: str, state_dir: Any, events: Events) -> Any:
    """The datasets' sizes at the source, each measured read-only by its kind (for `observe`)."""

    def run(src_host: Any) -> dict[str, dict[str, Any]]:
        from liferaft.engine.observe import target_free

        # the host the target will most likely be (an ssh pool's next free one): kinds say where their bytes flow
        free, _ = target_free(stack, stack.site(target).compute, state_dir)
        where = Where(stack, source, target, state_dir, src_host, prereq.target_candidate(stack, target, state_dir,
                                                                                          free))
        out: dict[str, dict[str, Any]] = {}
        for ds in datasets(stack):
            size = kind_of(ds).observe(where, ds)
            out[ds.id] = size.to_dict()
            events.emit("plan.observe", f"{kind_of(ds).noun} {ds.key} at the source: {size.bytes} bytes"
                        + (f", {size.items} items" if size.items else ""), dataset=ds.id, size=size.to_dict())
        return out

    return run


def make_plan(stack: Stack, source: str, target: str, mode: str, obs: Observed, *, ledger: str | None = None) -> Plan:
    """The live plan (the builder's mode `live`) from what was observed. Pure: everything it needs is in `obs` (and
    `ledger`, a write ledger the data gate checks)."""
    return build(stack, source, target, Live(obs, ledger, mode))


def build_plan(stack: Stack, target: str, mode: str = "live", *, source: str | None = None,
               state_dir: Any = None, events: Events | None = None, source_timeout: float | None = None,
               ledger: str | None = None) -> Plan:
    """Observe (read-only) and plan a failover of `stack` to site `target`. `ledger`: a write ledger (a path) whose
    acknowledged writes the data gate looks up at the target (liferaft.movers.ledger)."""
    ev = as_events(events)
    m = stack.model
    source = source or m.primary
    if mode == "cold":  # the source no longer answers: restore from the standby that `replicate` keeps
        from liferaft.failover.cold import build_cold_plan

        return build_cold_plan(stack, target, source=source, state_dir=state_dir, events=ev,
                               source_timeout_s=source_timeout, ledger=ledger)
    if mode != "live":
        raise UsageError(f"unknown mode {mode!r}", hint="live or cold")
    stack.site(target)
    if target == source:
        raise UsageError(f"site {target!r} is already the source", hint=f"alternates: {', '.join(m.alternates)}")
    obs = observe(stack, source, target, state_dir, ev, measure(stack, source, target, state_dir, ev))
    obs = replace(obs, problems=prereq.check(stack, source, target, state_dir, host_from_dict(obs.source_host),
                                             prereq.target_candidate(stack, target, state_dir, obs.target_free), ev))
    plan = make_plan(stack, source, target, mode, obs, ledger=ledger)
    ev.emit("plan.ready", f"{len(plan.steps)} steps, {plan.bytes_to_move} bytes, ~{plan.estimate_s:.0f}s",
            plan_hash=plan.hash)
    return plan
