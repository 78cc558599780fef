"""Turn a failover plan into a drill plan: a pure function, so what a drill will (not) do can be shown and tested.

A drill must not touch production and must not harm the source:
- the write freeze (`cutover.freeze`) is replaced by a cut (`drill.cut`): replication is stopped at an instant while
  the source keeps taking writes; the target is caught up to the source's position at that instant;
- the data gate compares the target with the source *as of the cut* (`drill.verify_data`): the schema, the objects
  by content hash, and the write ledger's acknowledged writes made before the cut;
- DNS: the production records are never in the plan; the drill record (`drill.<zone>`) is pointed at the target;
- the service is checked through the drill record (`drill.verify_service`), which gives the RTO;
- a `drill.teardown` step right after the allocation: undone just before the host is released, it stops what the
  drill started on the target (services, PostgreSQL) and removes it, so rolling the run back tears the target down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from liferaft.engine.plan import Plan, Step
from liferaft.errors import UsageError

DRILL_STEP_KINDS = ("drill.teardown", "drill.cut", "drill.verify_data", "drill.verify_service")
# Kinds of the failover plan a drill keeps as they are (they act on the target only, or undo cleanly at the source).
KEPT_KINDS = ("host.allocate", "host.configure", "db.server", "db.access", "db.migrate", "objects.sync",
              "service.deploy", "db.release")


def drill_fqdn(dns: Any) -> str | None:
    """The drill record's full name (None when the stack has no DNS or disables the drill record)."""
    if dns is None or not dns.drill_record:
        return None
    return str(dns.fqdn(dns.drill_record))


# Kinds of a cold failover plan a no-notice drill keeps as they are: they act on the standby host only.
COLD_KEPT_KINDS = ("host.allocate", "host.configure", "standby.promote", "standby.objects", "standby.loss",
                   "service.deploy", "standby.release")


@dataclass(frozen=True)
class _Drilled:
    """How one kind of failover plan becomes a drill: what to expect, keep, and how to word it."""

    mode: str  # the failover plan's mode
    kept: tuple[str, ...]
    where: str  # "target" | "standby"
    note: str
    # A step of the plan's own kind turned into the drill's version (None: the kind is not this mode's).
    special: Callable[[Step, tuple[str, ...]], Step | None]
    teardown_databases: Callable[[Plan], list[str]]


def to_drill(plan: Plan, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
             nameserver: str | None = None, ledger: str | None = None, ttl: int = 30) -> Plan:
    """The drill version of a live failover plan. Refuses any step it does not know to be safe for a drill."""

    def special(s: Step, deps: tuple[str, ...]) -> Step | None:
        if s.kind == "cutover.freeze":
            return Step("drill-cut", "drill.cut", "cut: stop replication at this instant, without freezing the source;"
                        " catch the target up to the cut position", dict(s.params), deps)
        if s.kind == "verify.data":
            return Step("drill-verify-data", "drill.verify_data", "verify data as of the cut: schema, objects by "
                        "sha256" + (", write ledger" if ledger else ""), {**s.params, "ledger": ledger}, deps)
        return None

    how = _Drilled("live", KEPT_KINDS, "target", "drill: the source keeps taking writes (no freeze); production DNS "
                   "records untouched", special, _database_keys)
    return _transform(plan, how, drill_record=drill_record, dns_provider=dns_provider, zone=zone,
                      nameserver=nameserver, ttl=ttl)


def to_cold_drill(plan: Plan, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
                  nameserver: str | None = None, ledger: str | None = None, ttl: int = 30) -> Plan:
    """The drill version of a cold failover plan (the no-notice scenario): the standby is promoted and serves
    through the drill record; production DNS is never in the plan; a teardown guard follows the allocation."""

    def special(s: Step, deps: tuple[str, ...]) -> Step | None:
        if s.kind == "standby.loss":  # the data-loss report measures the RPO from the drill's ledger
            return replace(s, params={**s.params, "ledger": ledger}, depends_on=deps)
        return None

    how = _Drilled("cold", tuple(k for k in COLD_KEPT_KINDS if k != "standby.loss"), "standby",
                   "no-notice drill: the primary is cut off first; the standby copy is promoted and the target torn "
                   "down afterwards; production DNS records untouched", special, _promoted_keys)
    return _transform(plan, how, drill_record=drill_record, dns_provider=dns_provider, zone=zone,
                      nameserver=nameserver, ttl=ttl)


def _transform(plan: Plan, how: _Drilled, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
               nameserver: str | None, ttl: int) -> Plan:
    if plan.mode != how.mode:
        raise UsageError(f"this drill is built from a {how.mode} plan, not {plan.mode!r}")
    production = [r.get("fqdn") for s in plan.steps if s.kind == "dns.cutover" for r in s.params.get("records", [])]
    if drill_record is not None and drill_record in production:
        raise UsageError(f"the drill record {drill_record} is a production record",
                         hint="set dns.drill_record to a name no service uses (default: drill)")
    service = next((r.get("service") for s in plan.steps if s.kind in ("dns.cutover", "verify.service")
                    for r in s.params.get("records", []) if r.get("service")), None)
    if service is None:
        service = next((s.params["service"] for s in plan.steps if s.kind == "service.deploy"), None)
    records = ([{"fqdn": drill_record, "type": "A", "ttl": int(ttl), "service": service}]
               if drill_record and dns_provider and zone else [])
    renamed: dict[str, str] = {}
    steps: list[Step] = []

    def deps(step: Step) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x for x in (renamed.get(d, d) for d in step.depends_on) if x))

    for s in plan.steps:
        drilled = how.special(s, deps(s))
        if drilled is not None:
            renamed[s.id] = drilled.id
            steps.append(drilled)
        elif s.kind in how.kept:
            steps.append(replace(s, depends_on=deps(s)))
            if s.kind == "host.allocate":
                steps.append(Step("drill-teardown", "drill.teardown",
                                  f"tear-down guard: undone last, it stops and removes what the drill started on the "
                                  f"{how.where}", {"services": sorted(_services(plan)),
                                                   "databases": how.teardown_databases(plan)}, (s.id,)))
        elif s.kind == "dns.cutover":
            if records:
                renamed[s.id] = "drill-dns"
                steps.append(Step("drill-dns", "dns.cutover", f"point the drill record {drill_record} at the "
                                  f"{how.where} (production records untouched)",
                                  {"provider": dns_provider, "zone": zone, "records": records}, deps(s)))
            else:
                renamed[s.id] = deps(s)[0] if deps(s) else ""  # later steps wait for what DNS waited for
        elif s.kind == "verify.service":
            renamed[s.id] = "drill-verify-service"
            steps.append(Step("drill-verify-service", "drill.verify_service", f"verify the service at the {how.where}"
                              + (f" through {drill_record}" if records else ""),
                              {"records": records, "nameserver": nameserver, "service": service}, deps(s)))
        else:
            raise UsageError(f"a drill does not know whether step {s.id!r} ({s.kind}) is safe to run",
                             hint="the failover plan has a step kind the drill does not handle yet")
    dns_diff = tuple({"name": r["fqdn"], "type": "A", "ttl": r["ttl"], "old": [], "new": [f"<{how.where} address>"]}
                     for r in records)
    notes = (*plan.notes, how.note + (f"; {drill_record} points at the {how.where} during the drill" if records else ""))
    result = Plan(stack=plan.stack, source=plan.source, target=plan.target, mode=plan.mode, steps=tuple(steps),
                  resources=plan.resources, bytes_to_move=plan.bytes_to_move, estimate_s=plan.estimate_s,
                  dns_diff=dns_diff, notes=notes)
    assert_safe(result, production)
    return result


def _promoted_keys(plan: Plan) -> list[str]:
    return sorted({str(s.params["database"]) for s in plan.steps if s.kind == "standby.promote"})


def assert_safe(plan: Plan, production: list[Any]) -> None:
    """A drill plan freezes nothing and never names a production record."""
    for s in plan.steps:
        if s.kind == "cutover.freeze":
            raise UsageError(f"drill plan step {s.id} would freeze writes at the source")
        for r in s.params.get("records", []) if s.kind in ("dns.cutover", "drill.verify_service") else []:
            if r.get("fqdn") in production:
                raise UsageError(f"drill plan step {s.id} would change the production record {r.get('fqdn')}")


def _services(plan: Plan) -> set[str]:
    return {str(s.params["service"]) for s in plan.steps if s.kind == "service.deploy"}


def _database_keys(plan: Plan) -> list[str]:
    return sorted({str(k) for s in plan.steps if s.kind == "db.server" for k in s.params.get("databases", [])})
