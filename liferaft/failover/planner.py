"""Build the failover plan: a pure function of (stack, what was observed, mode) giving ordered steps.

Estimates come from throughput measured in the lab on this project's reference machine (2 cores, shared); they
are deliberately simple and documented here so an operator can tell where a number came from:

    objects        100 objects/s for small objects, 150 MB/s for large ones (boto3/libcloud, 16 threads)
    PostgreSQL     logical initial sync 34 s/GB; pg_dump -Fd | pg_restore 22 s/GB
    Ansible        prepare ~6 s, PostgreSQL ~15 s, each service ~10 s (first run on a fresh host)
    verification   objects read back at ~100 objects/s (before the freeze); tables hashed at ~12.6 s/GB
    fixed          allocation, DNS and the service check ~5 s
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.engine.observe import Observed, observe
from liferaft.engine.plan import Plan, Step, ttl_notes
from liferaft.errors import UsageError
from liferaft.events import Events, as_events

if TYPE_CHECKING:
    from liferaft.stack import Stack

OBJECTS_PER_S = 100.0
OBJECT_BYTES_PER_S = 150e6
PG_LOGICAL_S_PER_GB = 34.0
PG_DUMP_S_PER_GB = 22.0
PG_VERIFY_S_PER_GB = 12.6
ANSIBLE_PREPARE_S = 6.0
ANSIBLE_PG_S = 15.0
ANSIBLE_SERVICE_S = 10.0
FIXED_S = 5.0


def estimate(stack: Stack, obs: Observed) -> float:
    gb = {k: v / 1e9 for k, v in obs.databases.items()}
    t = FIXED_S + ANSIBLE_PREPARE_S + (ANSIBLE_PG_S if stack.model.data.databases else 0.0)
    t += ANSIBLE_SERVICE_S * len(stack.model.services)
    for key, db in stack.model.data.databases.items():
        t += gb.get(key, 0.0) * (PG_LOGICAL_S_PER_GB if db.migrate == "logical" else PG_DUMP_S_PER_GB)
        t += gb.get(key, 0.0) * PG_VERIFY_S_PER_GB
    for b in obs.buckets.values():
        t += 2 * max(b["objects"] / OBJECTS_PER_S, b["bytes"] / OBJECT_BYTES_PER_S)  # copy, then verify
    return t


def make_plan(stack: Stack, source: str, target: str, mode: str, obs: Observed, *, ledger: str | None = None) -> Plan:
    """The steps, in order. Pure: everything it needs is in `obs` (and `ledger`, a write ledger the data gate checks)."""
    m = stack.model
    name = m.name
    src_host = obs.source_host
    tgt_site = stack.site(target)
    src_site = stack.site(source)
    dbs = m.data.databases
    buckets = m.data.buckets
    steps: list[Step] = []

    def add(sid: str, kind: str, title: str, params: dict[str, Any], *deps: str) -> str:
        steps.append(Step(sid, kind, title, params, tuple(deps)))
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
    last = add("allocate", "host.allocate", f"allocate {what} at {tgt_site.compute}",
               {**alloc_params, "count": count} if count > 1 else alloc_params, *alloc_deps)
    last = add("prepare", "host.configure", "prepare the host (prepare.yml)", {"playbook": "prepare.yml"}, last)
    data_deps: list[str] = []
    if dbs:
        last = add("postgresql", "db.server", f"deploy PostgreSQL for {', '.join(dbs)} (postgresql.yml)",
                   {"databases": sorted(dbs), "source_host": src_host}, last)
        last = add("db-access", "db.access", "create liferaft's migration role at the source and the target",
                   {"databases": sorted(dbs), "source_host": src_host}, last)
        for key, db in sorted(dbs.items()):
            how = "logical replication" if db.migrate == "logical" else "dump/restore inside the freeze"
            data_deps.append(add(f"migrate-{key}", "db.migrate", f"migrate database {db.name} ({how})",
                                 {"database": key, "method": db.migrate, "source_host": src_host}, last))
    for key, b in sorted(buckets.items()):
        data_deps.append(add(f"sync-{key}", "objects.sync",
                             f"copy bucket {b.name}: {src_site.objects} -> {tgt_site.objects}",
                             {"bucket": key, "source": src_site.objects, "target": tgt_site.objects},
                             "allocate"))
    deploy_deps = data_deps or [last]
    svc_steps = [add(f"deploy-{svc}", "service.deploy", f"deploy service {svc} ({m.services[svc].playbook})",
                     {"service": svc}, *deploy_deps) for svc in sorted(m.services)]
    freeze = add("freeze", "cutover.freeze", "freeze writes at the source, final catch-up (databases, objects)",
                 {"databases": {k: d.migrate for k, d in sorted(dbs.items())}, "buckets": sorted(buckets),
                  "source": src_site.objects, "target": tgt_site.objects, "source_host": src_host},
                 *(svc_steps or deploy_deps))
    gate = add("verify-data", "verify.data", ("verify data: tables by count+hash, sequences, schema; objects by "
                                              "listing and sha256 of the final delta (all were read back before "
                                              "the freeze)" + (", write ledger" if ledger else "")),
               {"databases": sorted(dbs), "buckets": sorted(buckets), "source": src_site.objects,
                "target": tgt_site.objects, "source_host": src_host, "ledger": ledger}, freeze)
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
    if dbs:
        add("db-release", "db.release", "disable liferaft's migration role at the source and the target",
            {"databases": sorted(dbs), "source_host": src_host}, last)

    preview = obs.target_host_preview
    detail = f"(free: {', '.join(obs.target_free)})" if obs.target_free else ""
    offer = obs.target_offer
    if offer:
        detail = (f"{count} x {offer['server_type']} ({offer['image']}) at {offer['location']}, {offer['hourly_gross']} "
                  f"{offer['currency']}/h each incl. VAT, as the provider's API quotes it")
    resources = [{"action": "allocate" if not offer else "create", "kind": "host", "name": host_name,
                  "provider": tgt_site.compute, "detail": detail}]
    if obs.terraform:
        resources += [{"action": r["action"], "kind": "terraform", "name": r["address"], "provider": tgt_site.compute}
                      for r in obs.terraform.get("resources", [])]
    resources += [{"action": "create", "kind": "database", "name": d.name, "provider": tgt_site.compute}
                  for d in dbs.values()]
    resources += [{"action": "create", "kind": "bucket", "name": b.name, "provider": tgt_site.objects}
                  for b in buckets.values()]
    resources += [{"action": "deploy", "kind": "service", "name": s, "provider": tgt_site.compute}
                  for s in m.services]
    dns_diff = [{"name": r["fqdn"], "type": r["type"], "ttl": r["ttl"],
                 "old": obs.dns_current.get(r["fqdn"], {}).get("values", []),
                 "new": [preview] if preview else [f"<address of {host_name}>"]} for r in records]
    moved = sum(obs.databases.values()) + sum(b["bytes"] for b in obs.buckets.values())
    notes = [(f"source host {src_host['name']} ({src_host['address']}); "
              f"{sum(b['objects'] for b in obs.buckets.values())} objects, "
              f"{sum(obs.databases.values())} database bytes")]
    notes += ttl_notes({r["fqdn"]: int(obs.dns_current.get(r["fqdn"], {}).get("ttl") or r["ttl"]) for r in records},
                       m.objectives.rto)
    return Plan(stack=name, source=source, target=target, mode=mode, steps=tuple(steps), resources=tuple(resources),
                bytes_to_move=moved, estimate_s=round(estimate(stack, obs), 1), dns_diff=tuple(dns_diff), notes=tuple(notes))


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
    obs = observe(stack, source, target, state_dir, ev)
    plan = make_plan(stack, source, target, mode, obs, ledger=ledger)
    ev.emit("plan.ready", f"{len(plan.steps)} steps, {plan.bytes_to_move} bytes, ~{plan.estimate_s:.0f}s",
            plan_hash=plan.hash)
    return plan
