"""Build the failover plan: a pure function of (stack, what was observed, mode) giving ordered steps.

Estimates come from throughput measured in the lab on this project's reference machine (2 cores, shared); they
are deliberately simple and documented so an operator can tell where a number came from. Each dataset kind gives
its own (liferaft.datasets.postgres: logical initial sync 34 s/GB, pg_dump -Fd | pg_restore 22 s/GB, tables hashed
at 12.6 s/GB; liferaft.datasets.bucket: 100 objects/s for small objects, 150 MB/s for large ones, copied then read
back); here:

    Ansible        prepare ~6 s, each playbook a kind of data needs (PostgreSQL) ~15 s, each service ~10 s
    fixed          allocation, DNS and the service check ~5 s
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.datasets import Dataset, kind_of
from liferaft.datasets.base import Size, Where, kind_named
from liferaft.datasets.registry import datasets
from liferaft.engine.observe import Observed, observe
from liferaft.engine.plan import Plan, Step, ttl_notes
from liferaft.errors import UsageError
from liferaft.events import Events, as_events
from liferaft.steps.data import (
    DataPrepare,
    DataRelease,
    DataSeed,
    DataServer,
    DatasetsParams,
    Freeze,
    SeedParams,
    ServerParams,
    VerifyData,
    VerifyParams,
)
from liferaft.steps.hosts import Allocate, Configure
from liferaft.steps.tls import tls_steps

if TYPE_CHECKING:
    from liferaft.stack import Stack

ANSIBLE_PREPARE_S = 6.0
ANSIBLE_PLAYBOOK_S = 15.0  # each playbook a kind of data needs on the target (PostgreSQL)
ANSIBLE_SERVICE_S = 10.0
FIXED_S = 5.0


def size_of(obs: Observed, ds: Dataset) -> Size:
    """What the plan observed of `ds`: `obs.sizes`, else the per-group view an Observed made by hand gives."""
    found = obs.sizes.get(ds.id)
    if found is not None:
        return Size.from_dict(found)
    legacy: Any = (getattr(obs, kind_of(ds).group, None) or {}).get(ds.key)
    if isinstance(legacy, dict):
        return Size(bytes=int(legacy.get("bytes") or 0), items=int(legacy.get("objects") or 0))
    return Size(bytes=int(legacy) if legacy else 0)


def _playbooks(stack: Stack, dss: list[Dataset]) -> list[tuple[str, str, list[Dataset]]]:
    """(playbook, kind, its datasets) for every playbook the stack's kinds of data need on the target."""
    by_kind: dict[str, list[Dataset]] = {}
    for ds in dss:
        by_kind.setdefault(ds.kind, []).append(ds)
    return [(pb, name, group) for name, group in by_kind.items()
            for pb in kind_named(name).target_playbooks(stack, group)]


def estimate(stack: Stack, obs: Observed) -> float:
    dss = datasets(stack)
    t = FIXED_S + ANSIBLE_PREPARE_S + ANSIBLE_PLAYBOOK_S * len(_playbooks(stack, dss))
    t += ANSIBLE_SERVICE_S * len(stack.model.services)
    return t + sum(float(kind_of(ds).estimate_s(ds, size_of(obs, ds))) for ds in dss)


def measure(stack: Stack, source: str, target: str, state_dir: Any, events: Events) -> Any:
    """The datasets' sizes at the source, each measured read-only by its kind (for `observe`)."""

    def run(src_host: Any) -> dict[str, dict[str, Any]]:
        where = Where(stack, source, target, state_dir, src_host)
        out: dict[str, dict[str, Any]] = {}
        for ds in datasets(stack):
            size = kind_of(ds).observe(where, ds)
            out[ds.id] = size.to_dict()
            events.emit("plan.observe", f"{kind_of(ds).noun} {ds.key} at the source: {size.bytes} bytes"
                        + (f", {size.items} items" if size.items else ""), dataset=ds.id, size=size.to_dict())
        return out

    return run


def make_plan(stack: Stack, source: str, target: str, mode: str, obs: Observed, *, ledger: str | None = None) -> Plan:
    """The steps, in order, with their real dependencies (the runner may run independent ones side by side).
    Pure: everything it needs is in `obs` (and `ledger`, a write ledger the data gate checks).

    Every dataset of the stack goes through the same steps, whatever its kind: the playbooks its kind needs on the
    target, `prepare` (the empty copy and the access the move needs), `seed` (the bulk copy, beside the service's
    deploy: a deploy needs the prepared datasets only), the freeze, the gate, the release."""
    m = stack.model
    name = m.name
    src_host = obs.source_host
    tgt_site = stack.site(target)
    dss = datasets(stack)
    steps: list[Step] = []

    def add(sid: str, kind: str, title: str, params: dict[str, Any], *deps: str) -> str:
        steps.append(Step(sid, kind, title, params, tuple(dict.fromkeys(deps))))
        return sid

    host_name = f"{name}-{target}"
    alloc_deps: tuple[str, ...] = ()
    if tgt_site.provision == "terraform":
        alloc_deps = (add("provision", "site.provision", f"provision site {target} with Terraform "
                          f"({tgt_site.hosts} host(s) at {tgt_site.compute})", {"site": target}),)
        host_name = f"{name}-{target}-0"  # the shipped modules name hosts <stack>-<site>-<n>: allocation finds it
    count = tgt_site.hosts if tgt_site.provision == "api" else 1  # Terraform makes all N; allocation finds -0
    alloc_params = {"provider": tgt_site.compute, "name": host_name, "site": target}
    what = f"host {host_name}" if count == 1 else f"{count} hosts {host_name}, {host_name}-1 ..."
    alloc = add("allocate", Allocate.name, f"allocate {what} at {tgt_site.compute}",
                {**alloc_params, "count": count} if count > 1 else alloc_params, *alloc_deps)
    host_ready = add("prepare", Configure.name, "prepare the host (prepare.yml)", {"playbook": "prepare.yml"}, alloc)
    # The playbooks the kinds of data need on the target (Ansible runs one at a time: `serial`).
    last = host_ready
    for playbook, kind, group in _playbooks(stack, dss):
        last = add(playbook.removesuffix(".yml"), DataServer.name,
                   f"deploy {kind_named(kind).noun}s {', '.join(d.key for d in group)} ({playbook})",
                   ServerParams(playbook, kind, tuple(group), src_host).to_params(), last)
    servers = last
    prepared = servers
    if dss:
        # One step prepares every dataset (the migration role is per server; an empty bucket is made in a moment).
        # Its id is the one it had when only databases needed preparing: journals and tests name it.
        prepared = add("db-access", DataPrepare.name, "prepare the target's data: " + "; ".join(
            kind_of(ds).titles(ds, _where(stack, ds, source, target))["prepare"] for ds in dss),
            DatasetsParams(tuple(dss), src_host).to_params(), servers)
    seeds: list[str] = []
    for ds in dss:
        kind = kind_of(ds)
        # A kind whose seed needs what `prepare` made (a database's schema and access) waits for it; the others
        # (buckets: the copy makes its bucket) need only the allocation and start at once.
        deps = prepared if kind.seed_needs_prepare else alloc
        # The copies run one after another in the plan's order (each after the previous one), all of them beside
        # the service's deploy: a crash or a fault in one copy finds the later ones not started, as the journal and
        # `--stop-before` read the plan's order.
        seeds.append(add(f"{kind.seed_verb}-{ds.key}", DataSeed.name,
                         kind.titles(ds, _where(stack, ds, source, target))["seed"],
                         SeedParams(ds.key, ds.kind, src_host,
                                    _shown(kind.summary(ds), kind)).to_params(), deps, *seeds[-1:]))
    # A service with `tls:` gets its certificate on the hosts first (the app reads it when it starts).
    certs = {str(s.params["service"]): add(s.id, s.kind, s.title, s.params, *s.depends_on)
             for s in tls_steps(stack, target, after=host_ready, hosts_from=alloc)}
    deploys = [add(f"deploy-{svc}", "service.deploy", f"deploy service {svc} ({m.services[svc].runs})",
                   {"service": svc}, prepared, *([certs[svc]] if svc in certs else [])) for svc in sorted(m.services)]
    freeze = add("freeze", Freeze.name, "freeze writes at the source, final catch-up ("
                 + ", ".join(dict.fromkeys(f"{kind_of(ds).noun}s" for ds in dss)) + ")",
                 DatasetsParams(tuple(dss), src_host).to_params(), *((deploys + seeds) or [prepared]))
    gate = add("verify-data", VerifyData.name, ("verify data: tables by count+hash, sequences, schema; objects by "
                                                "listing and sha256 of the final delta (all were read back before "
                                                "the freeze)" + (", write ledger" if ledger else "")),
               VerifyParams(tuple(dss), src_host, ledger).to_params(), freeze)
    dns_cfg = m.dns
    records: list[dict[str, Any]] = [] if dns_cfg is None else [
        {"fqdn": dns_cfg.fqdn(r.name), "type": r.type, "ttl": r.ttl, "service": r.service}
        for r in dns_cfg.records if r.service]
    last = gate
    if records and m.dns is not None:
        last = add("dns", "dns.cutover", f"cut DNS over: {', '.join(r['fqdn'] for r in records)} -> target",
                   {"provider": m.dns.provider, "zone": m.dns.zone, "records": records}, gate)
    last = add("verify-service", "verify.service", "verify the service through its DNS name",
               {"records": records, "nameserver": m.dns.nameserver if m.dns else None}, last)
    released: dict[str, list[Dataset]] = {}
    for ds in dss:
        if kind_of(ds).release_id:
            released.setdefault(kind_of(ds).release_id, []).append(ds)
    for rid, group in released.items():
        add(rid, DataRelease.name, f"disable liferaft's access to {', '.join(d.key for d in group)} at the source "
            "and the target", DatasetsParams(tuple(group), src_host).to_params(), last)

    preview = obs.target_host_preview
    detail = f"(free: {', '.join(obs.target_free)})" if obs.target_free else ""
    offer = obs.target_offer
    if offer:
        detail = (f"{count} x {offer['server_type']} ({offer['image']}) at {offer['location']}, {offer['hourly_gross']} "
                  f"{offer['currency']}/h each "
                  f"{'before taxes' if offer.get('taxes') == 'excluded' else 'incl. VAT'}, as the provider's API "
                  "quotes it" + _total(offer, count)
                  + _quota_text(offer.get("quota")))
    resources = [{"action": "allocate" if not offer else "create", "kind": "host", "name": host_name,
                  "provider": tgt_site.compute, "detail": detail}]
    if obs.terraform:
        resources += [{"action": r["action"], "kind": "terraform", "name": r["address"], "provider": tgt_site.compute}
                      for r in obs.terraform.get("resources", [])]
    resources += [{"action": "create", "kind": kind_of(ds).noun, "name": ds.spec.name,
                   "provider": kind_of(ds).provider(stack, target)} for ds in dss]
    resources += [{"action": "deploy", "kind": "service", "name": s, "provider": tgt_site.compute}
                  for s in m.services]
    dns_diff = [{"name": r["fqdn"], "type": r["type"], "ttl": r["ttl"],
                 "old": obs.dns_current.get(r["fqdn"], {}).get("values", []),
                 "new": [preview] if preview else [f"<address of {host_name}>"]} for r in records]
    sizes = {ds.id: size_of(obs, ds) for ds in dss}
    moved = sum(sz.bytes for sz in sizes.values())
    per_noun: dict[str, list[int]] = {}
    for ds in dss:
        got = per_noun.setdefault(kind_of(ds).noun, [0, 0])
        got[0] += sizes[ds.id].bytes
        got[1] += sizes[ds.id].items
    notes = [f"source host {src_host['name']} ({src_host['address']})" + "".join(
        f"; {noun}s: {b} bytes" + (f", {n} items" if n else "") for noun, (b, n) in per_noun.items())]
    # what a kind observed beside the size (versions, warnings such as tables without a primary key)
    notes += [f"{kind_of(ds).noun} {ds.key}: {sizes[ds.id].detail}" for ds in dss if sizes[ds.id].detail]
    notes += ttl_notes({r["fqdn"]: int(obs.dns_current.get(r["fqdn"], {}).get("ttl") or r["ttl"]) for r in records},
                       m.objectives.rto)
    return Plan(stack=name, source=source, target=target, mode=mode, steps=tuple(steps), resources=tuple(resources),
                bytes_to_move=moved, estimate_s=round(estimate(stack, obs), 1), dns_diff=tuple(dns_diff), notes=tuple(notes))


def _total(offer: dict[str, Any], count: int) -> str:
    """`; X CUR/h for all N` (nothing for one host, or a price that is not a number)."""
    try:
        each = float(offer["hourly_gross"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"; {each * count:.4f} {offer['currency']}/h for all {count}" if count > 1 else ""


def _quota_text(quota: dict[str, Any] | None) -> str:
    """The account's host limit as the plan read it: `; server_limit: 2 of 10 used`."""
    if not quota:
        return ""
    if quota.get("limit") is None:
        return f"; {quota['name']}: not published by the provider ({quota['used']} in use)"
    return f"; {quota['name']}: {quota['used']} of {quota['limit']} used"


def _where(stack: Stack, ds: Dataset, source: str, target: str) -> tuple[str, str]:
    kind = kind_of(ds)
    return kind.provider(stack, source), kind.provider(stack, target)


def _shown(summary: Any, kind: Any) -> dict[str, Any]:
    """What a seed step's params show of its dataset: the kind's summary, named by what it is."""
    return {kind.summary_name: summary}


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
    plan = make_plan(stack, source, target, mode, obs, ledger=ledger)
    ev.emit("plan.ready", f"{len(plan.steps)} steps, {plan.bytes_to_move} bytes, ~{plan.estimate_s:.0f}s",
            plan_hash=plan.hash)
    return plan
