"""The cold failover plan: the source does not answer, so the move uses the standby copies `replicate` kept.

    allocate          the standby host again (the same name `replicate` allocated: same host, same copy)
    prepare           prepare.yml (idempotent; pilot-light only: a warm standby's set-up prepared the host)
    <prefix>-<key>    per dataset, its kind's promotion of the standby copy (`StandbyCopy.promote`, the step kind
                      and id prefix its `promote_step` says): PostgreSQL `promote-<db>` (standby.promote: the
                      subscription dropped WITHOUT the source, sequences past their columns' max), buckets
                      `standby-<bucket>` (standby.objects, a gate: every object the manifest says was copied read
                      back by sha256)
    data-loss         what the cut lost: the write ledger's acknowledged writes missing at the target, else the
                      last replicated position and time (standby.loss)
    deploy-<svc>      the engine's service.deploy, beside the gates once the promotions it needs are done
                      (pilot-light tier, or a warm standby whose copy of the service is not current)
    start-<svc>       warm tier (`sites.<target>.standby: warm`): service.start -- the service `replicate` keeps
                      deployed and stopped at the standby (at the digest the record holds, which is the stack's
                      current one) started, no playbook run; undone by stopping it again
    dns               the engine's dns.cutover, after every deploy, gate and the data-loss report
    verify-service    the engine's verify.service, through DNS
    db-release        liferaft's own access disabled at the promoted standby (standby.release), where a kind has any

Planning reads only the readiness state file, the DNS provider (independent of the source) and the target pool.
The source is touched once, by a TCP probe of its ports in parallel, the whole probe bounded by the source timeout,
only to say in the plan whether it still answers (a live failover would then lose nothing).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from liferaft.datasets import kind_of
from liferaft.datasets.base import record_group
from liferaft.datasets.registry import datasets
from liferaft.engine.plan import Plan
from liferaft.engine.standby_state import StandbyRecord, load_standby
from liferaft.errors import LiferaftError, UsageError
from liferaft.events import Events, as_events
from liferaft.movers.bounded import DEFAULT_SOURCE_TIMEOUT, bounded, probe_ports
from liferaft.planner.builder import Cold, build
from liferaft.planner.tiers import tier_note, warm_current

if TYPE_CHECKING:
    from liferaft.stack import Stack

SOURCE_TIMEOUT_ENV = "LIFERAFT_SOURCE_TIMEOUT"
__all__ = ["SOURCE_TIMEOUT_ENV", "build_cold_plan", "require_standby", "source_timeout", "tier_note", "warm_current"]


def source_timeout(stack: Stack) -> float:
    """LIFERAFT_SOURCE_TIMEOUT, else the stack's health.timeout, else 5 s."""
    env = os.environ.get(SOURCE_TIMEOUT_ENV)
    if env:
        try:
            seconds = float(env)
            if not math.isfinite(seconds):  # `inf` would wait forever on a dead source; max(0.5, nan) is 0.5
                raise ValueError(env)
            return max(0.5, seconds)
        except ValueError:
            raise UsageError(f"{SOURCE_TIMEOUT_ENV}={env!r} is not a number of seconds") from None
    return float(getattr(stack.model.health, "timeout", DEFAULT_SOURCE_TIMEOUT))


def require_standby(stack: Stack, target: str, state_dir: Any) -> StandbyRecord:
    rec = load_standby(state_dir, stack.model.name, target)
    if rec is None or not rec.standby_host:
        raise UsageError(f"cold mode: no standby is recorded for {stack.model.name} at {target!r}, so there is no "
                         "copy to restore", hint=f"keep one warm with `liferaft replicate --to {target} --watch` while the "
                         "source still answers")
    missing = [ds.key for ds in datasets(stack)
               if not kind_of(ds).holds_copy(dict((rec.data.get(record_group(ds)) or {}).get(ds.key) or {}))]
    if missing:
        raise UsageError(f"the standby at {target!r} holds no copy of: {', '.join(sorted(missing))}",
                         hint=f"run `liferaft replicate --to {target}` once while the source answers")
    return rec


def build_cold_plan(stack: Stack, target: str, *, source: str | None = None, state_dir: Any = None,
                    events: Events | None = None, probe_source: bool = True,
                    source_timeout_s: float | None = None, ledger: str | None = None) -> Plan:
    """Plan a cold failover of `stack` to `target` from its recorded standby. Never waits on the source; with
    `probe_source=False` (a drill that cut it off on purpose) does not even probe it. `source_timeout_s`
    overrides LIFERAFT_SOURCE_TIMEOUT and the stack's health.timeout."""
    from liferaft.engine.observe import dns_current, target_free

    ev = as_events(events)
    m = stack.model
    source = source or m.primary
    stack.site(target)
    if target == source:
        raise UsageError(f"site {target!r} is already the source", hint=f"alternates: {', '.join(m.alternates)}")
    rec = require_standby(stack, target, state_dir)
    host = rec.standby_host or {}
    timeout = max(0.5, float(source_timeout_s)) if source_timeout_s is not None else source_timeout(stack)
    notes = (_probe_source(rec, stack, timeout, ev) if probe_source
             else ["the source was not probed: it was cut off on purpose (drill)"])
    current: dict[str, dict[str, Any]] = {}
    try:
        current = bounded(lambda: dns_current(stack, state_dir), max(timeout, 10.0), provider="dns",
                          what="read the service's DNS records")
    except LiferaftError as e:
        notes.append(f"DNS could not be read while planning ({e}); the cutover step will try again")
    provider = str(host.get("provider") or stack.site(target).compute)
    free, _ = target_free(stack, provider, state_dir)
    plan = build(stack, source, target, Cold(rec, current, free, tuple(notes), ledger))
    ev.emit("plan.ready", f"{len(plan.steps)} steps (cold, from the standby), ~{plan.estimate_s:.0f}s",
            plan_hash=plan.hash)
    return plan


def _probe_source(rec: StandbyRecord, stack: Stack, timeout: float, ev: Events) -> list[str]:
    """One TCP probe of the source's database and SSH ports at once, the whole probe bounded by `timeout`: only to
    tell the operator, never to wait."""
    src = rec.data.get("source_host") or {}
    address = src.get("address")
    if not address:
        return ["source host unknown; not probed"]
    ports = sorted({p for ds in datasets(stack) for p in kind_of(ds).source_ports(ds)} | {int(src.get("port", 22))})
    results = probe_ports(str(address), ports, timeout)
    answering = [p for p, (ok, _) in results.items() if ok]
    detail = "; ".join(f"{address}:{p} {'answers' if ok else 'no answer'} ({d})" for p, (ok, d) in results.items())
    ev.emit("plan.observe", f"source probe (timeout {timeout:g} s): {detail}", source_answers=bool(answering))
    if answering:
        return [f"the source still answers on {', '.join(map(str, answering))}: `--mode live` would lose nothing"]
    return [f"the source did not answer within {timeout:g} s ({detail}); using the standby copy"]
