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
from liferaft.datasets.base import StandbySides, record_group
from liferaft.datasets.registry import datasets
from liferaft.engine.kinds import get_kind
from liferaft.engine.plan import Plan, Step, ttl_notes
from liferaft.engine.standby_state import StandbyRecord, load_standby
from liferaft.errors import LiferaftError, UsageError
from liferaft.events import Events, as_events
from liferaft.movers.bounded import DEFAULT_SOURCE_TIMEOUT, bounded, probe_ports
from liferaft.standby.setup import standby_tier, warm_services
from liferaft.steps.standby import dataset_params
from liferaft.steps.tls import tls_steps

if TYPE_CHECKING:
    from liferaft.stack import Stack

SOURCE_TIMEOUT_ENV = "LIFERAFT_SOURCE_TIMEOUT"
ESTIMATE_S = {"allocate": 2.0, "prepare": 6.0, "promote": 1.0, "deploy": 10.0, "start": 2.0, "dns": 1.0,
              "verify": 2.0}


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
    steps: list[Step] = []

    def add(sid: str, kind: str, title: str, params: dict[str, Any], *deps: str) -> str:
        steps.append(Step(sid, kind, title, params, tuple(deps)))
        return sid

    spec = str(host.get("spec_name") or f"{m.name}-{target}")
    last = add("allocate", "host.allocate", f"allocate the standby host {spec} at {provider} (holds the copy)",
               {"provider": provider, "name": spec, "site": target})
    tier = standby_tier(stack, target)
    warm, stale = warm_current(stack, target, rec)
    if tier != "warm":
        last = add("prepare", "host.configure", "prepare the host (prepare.yml)", {"playbook": "prepare.yml"}, last)
    # A service with `tls:` gets its certificate on the standby first; its deploy or start waits for it.
    certs = {str(c.params["service"]): add(c.id, c.kind, c.title, c.params, *c.depends_on)
             for c in tls_steps(stack, target, after=last, hosts_from="allocate")}
    sides = StandbySides(source=source, target=target)
    dss = datasets(stack)
    data_steps: list[str] = []  # every promotion; the data-loss report and DNS wait for them all
    needed: list[str] = []  # promotions that are not only gates: the service is deployed on them
    for ds in dss:
        kind = kind_of(ds)
        entry = dict((rec.data.get(record_group(ds)) or {}).get(ds.key) or {})
        step_kind, prefix = kind.promote_step
        snapshot = {k: entry[k] for k in ("method", "subscription") if k in entry}
        sid = add(f"{prefix}-{ds.key}", step_kind, kind.promote_title(stack, ds, sides, entry),
                  {**dataset_params(ds), "entry": snapshot, "source_address": rec.source_address}, last)
        data_steps.append(sid)
        if not get_kind(step_kind).gate:
            needed.append(sid)
    loss = add("data-loss", "standby.loss", "report the data lost by the cut"
               + (" (write ledger)" if ledger else " (last replicated positions)"),
               {"datasets": [dataset_params(ds) for ds in dss], "ledger": ledger, "target": target},
               *(data_steps or [last]))
    svc_steps = [add(f"start-{svc}", "service.start", f"start service {svc}, kept deployed and stopped at the warm "
                     "standby (no playbook run)", {"service": svc, "digest": warm[svc]}, *(needed or [last]),
                     *([certs[svc]] if svc in certs else []))
                 if svc in warm else
                 add(f"deploy-{svc}", "service.deploy", f"deploy service {svc} ({m.services[svc].runs}) on the "
                     "standby's data", {"service": svc}, *(needed or [last]), *([certs[svc]] if svc in certs else []))
                 for svc in sorted(m.services)]
    dns_cfg = m.dns
    records: list[dict[str, Any]] = [{"fqdn": dns_cfg.fqdn(r.name), "type": r.type, "ttl": r.ttl,
                                      "service": r.service} for r in dns_cfg.records if r.service] if dns_cfg else []
    ready = tuple(dict.fromkeys([*svc_steps, loss, *data_steps]))  # deployed, gates passed, loss reported
    if records and m.dns is not None:
        ready = (add("dns", "dns.cutover", f"cut DNS over: {', '.join(str(r['fqdn']) for r in records)} -> standby",
                     {"provider": m.dns.provider, "zone": m.dns.zone, "records": records}, *ready),)
    last = add("verify-service", "verify.service", "verify the service through its DNS name",
               {"records": records, "nameserver": m.dns.nameserver if m.dns else None}, *ready)
    released = [(ds, kind_of(ds).release_standby_title(stack, [ds])) for ds in dss]
    if any(title for _, title in released):
        titles = list(dict.fromkeys(t for _, t in released if t))
        add("db-release", "standby.release", "; ".join(titles),
            {"datasets": [dataset_params(ds) for ds, title in released if title]}, last)

    address = str(host.get("address") or "")
    resources = [{"action": "reuse", "kind": "host", "name": spec, "provider": provider,
                  "detail": f"({host.get('name')}, {address}: the standby)"}]
    resources += [{"action": "use" if get_kind(kind_of(ds).promote_step[0]).gate else "promote",
                   "kind": kind_of(ds).noun, "name": str(ds.spec.name),
                   "provider": kind_of(ds).standby_place(stack, ds, target)} for ds in dss]
    resources += [{"action": "start" if s in warm else "deploy", "kind": "service", "name": s, "provider": provider}
                  for s in m.services]
    dns_diff = [{"name": r["fqdn"], "type": r["type"], "ttl": r["ttl"],
                 "old": current.get(str(r["fqdn"]), {}).get("values", []), "new": [address] if address else []}
                for r in records]
    notes += ttl_notes({str(r["fqdn"]): int(current.get(str(r["fqdn"]), {}).get("ttl") or r["ttl"]) for r in records},
                       m.objectives.rto)
    exposure = rec.rpo_exposure_s
    notes.append(f"standby on {host.get('name')} ({address}); last recorded RPO exposure "
                 f"{exposure if exposure is not None else '?'} s" + (f"; free hosts: {', '.join(free)}" if free else ""))
    notes.append(tier_note(tier, warm, stale))
    estimate = (ESTIMATE_S["allocate"] + (0.0 if tier == "warm" else ESTIMATE_S["prepare"])
                + ESTIMATE_S["promote"] * len(needed) + ESTIMATE_S["start"] * len(warm)
                + ESTIMATE_S["deploy"] * (len(m.services) - len(warm)) + ESTIMATE_S["dns"] + ESTIMATE_S["verify"])
    plan = Plan(stack=m.name, source=source, target=target, mode="cold", steps=tuple(steps),
                resources=tuple(resources), bytes_to_move=0, estimate_s=estimate, dns_diff=tuple(dns_diff),
                notes=tuple(notes))
    ev.emit("plan.ready", f"{len(plan.steps)} steps (cold, from the standby), ~{plan.estimate_s:.0f}s",
            plan_hash=plan.hash)
    return plan


def warm_current(stack: Stack, target: str, rec: StandbyRecord) -> tuple[dict[str, str], dict[str, str]]:
    """Warm tier: the services the standby holds deployed (stopped) at the stack's current digest, on the recorded
    standby host -> that digest; and the others -> why not (they are deployed at failover instead)."""
    wanted = warm_services(stack, target)
    recorded = rec.data.get("services") or {}
    address = (rec.standby_host or {}).get("address")
    warm: dict[str, str] = {}
    stale: dict[str, str] = {}
    for svc, digest in wanted.items():
        entry = recorded.get(svc) or {}
        if not entry.get("digest"):
            stale[svc] = "not deployed at the standby yet (run `liferaft replicate` once)"
        elif not entry.get("ok", True):
            stale[svc] = f"its last deploy at the standby failed ({str(entry.get('error'))[:120]})"
        elif entry.get("digest") != digest:
            stale[svc] = "the stack's service changed since it was deployed at the standby"
        elif entry.get("address") != address:
            stale[svc] = "deployed on another host than the recorded standby"
        else:
            warm[svc] = digest
    for svc in stack.model.services:
        if svc not in wanted and standby_tier(stack, target) == "warm":
            stale.setdefault(svc, "its workload kind cannot be kept warm")
    return warm, stale


def tier_note(tier: str, warm: dict[str, str], stale: dict[str, str]) -> str:
    """The plan's line about the standby tier: what it changes in this plan."""
    if tier != "warm":
        return ("standby tier: pilot-light (data kept; the services are deployed at failover: `sites.<site>.standby: "
                "warm` keeps them deployed and stopped there, so a cold failover only starts them)")
    parts = [f"services {', '.join(sorted(warm))} started, not deployed"] if warm else []
    parts += [f"service {svc} deployed: {why}" for svc, why in sorted(stale.items())]
    return "standby tier: warm (" + "; ".join(parts or ["no services"]) + ")"


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
