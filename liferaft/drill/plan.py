"""Turn a failover plan into a drill plan: a pure function, so what a drill will (not) do can be shown and tested.

A drill must not touch production and must not harm the source:
- the write freeze (`cutover.freeze`) is replaced by a cut (`drill.cut`): replication is stopped at an instant while
  the source keeps taking writes; the target is caught up to the source's position at that instant;
- the data gate compares the target with the source *as of the cut* (`drill.verify_data`, the same check): the
  schema, the objects by content hash, and the write ledger's acknowledged writes made before the cut;
- which step kinds a drill keeps, and which it replaces by the cut or the check as of the cut, each kind says
  (`drill` in liferaft.steps); a kind that says nothing stops the drill before anything runs;
- DNS: the production records are never in the plan; the drill record (`drill.<zone>`) is pointed at the target;
- the service is checked through the drill record (`drill.verify_service`), which gives the RTO;
- a `drill.teardown` step right after the allocation: undone just before the host is released, it stops what the
  drill started on the target (services, PostgreSQL) and removes it, so rolling the run back tears the target down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from liferaft.datasets.base import kind_named
from liferaft.engine.kinds import get_kind
from liferaft.engine.plan import Plan, Step
from liferaft.errors import UsageError
from liferaft.steps.data import Cut, DataSeed, DrillVerifyData, Freeze, SeedParams
from liferaft.steps.drill import DrillTeardown
from liferaft.steps.hosts import Allocate, Configure, DeployService
from liferaft.steps.standby import CheckStandby as StandbyObjects
from liferaft.steps.standby import DataLoss, PromoteStandby, ReleaseStandby
from liferaft.steps.tls import TlsCertificate
from liferaft.steps.verify import DnsCutover, DrillVerifyService, VerifyService
from liferaft.steps.warm import StartService

DRILL_STEP_KINDS = (DrillTeardown.name, Cut.name, DrillVerifyData.name, DrillVerifyService.name)
# Kinds of the failover plan a drill keeps as they are (they act on the target only, or undo cleanly at the source)
# say so themselves (`drill = "keep"`, see liferaft.steps); these others too:
KEPT_KINDS = (DeployService.name,)


def drill_role(kind: str) -> str | None:
    """What a drill does with a live plan's step of `kind` (the kind's `drill` attribute): "keep" it, replace it by
    the "cut" or by the "verify" as of the cut; None: not known to be safe."""
    try:
        role = getattr(get_kind(kind), "drill", None)
    except UsageError:
        return None
    return "keep" if kind in KEPT_KINDS else role


def drill_fqdn(dns: Any) -> str | None:
    """The drill record's full name (None when the stack has no DNS or disables the drill record)."""
    if dns is None or not dns.drill_record:
        return None
    return str(dns.fqdn(dns.drill_record))


# Kinds of a cold failover plan a no-notice drill keeps as they are: they act on the standby host only (a warm
# standby's services are started, `service.start`, and stopped again by the teardown like deployed ones).
COLD_KEPT_KINDS = (Allocate.name, Configure.name, PromoteStandby.name, StandbyObjects.name, DataLoss.name,
                   DeployService.name, StartService.name, ReleaseStandby.name, TlsCertificate.name)
# Kinds whose step runs a service at the target: the teardown stops and removes it.
SERVICE_KINDS = (DeployService.name, StartService.name)


@dataclass(frozen=True)
class _Drilled:
    """How one kind of failover plan becomes a drill: what to expect, keep, and how to word it."""

    mode: str  # the failover plan's mode
    kept: tuple[str, ...]
    where: str  # "target" | "standby"
    note: str
    # A step of the plan's own kind turned into the drill's version (None: the kind is not this mode's).
    special: Callable[[Step, tuple[str, ...]], Step | None]
    teardown_datasets: Callable[[Plan], dict[str, list[str]]]  # grouped as the data steps' params


def to_drill(plan: Plan, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
             nameserver: str | None = None, ledger: str | None = None, ttl: int = 30) -> Plan:
    """The drill version of a live failover plan. Refuses any step it does not know to be safe for a drill."""

    def special(s: Step, deps: tuple[str, ...]) -> Step | None:
        role = drill_role(s.kind)
        if role == "cut":
            return Step("drill-cut", Cut.name, "cut: stop replication at this instant, without freezing the source;"
                        " catch the target up to the cut position", dict(s.params), deps)
        if role == "verify":
            return Step("drill-verify-data", DrillVerifyData.name, "verify data as of the cut: schema, objects by "
                        "sha256" + (", write ledger" if ledger else ""), {**s.params, "ledger": ledger}, deps)
        return None

    kept = tuple(dict.fromkeys(s.kind for s in plan.steps if drill_role(s.kind) == "keep"))
    how = _Drilled("live", kept, "target", "drill: the source keeps taking writes (no freeze); production DNS "
                   "records untouched", special, _dataset_groups)
    return _transform(plan, how, drill_record=drill_record, dns_provider=dns_provider, zone=zone,
                      nameserver=nameserver, ttl=ttl)


def to_cold_drill(plan: Plan, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
                  nameserver: str | None = None, ledger: str | None = None, ttl: int = 30) -> Plan:
    """The drill version of a cold failover plan (the no-notice scenario): the standby is promoted and serves
    through the drill record; production DNS is never in the plan; a teardown guard follows the allocation."""

    def special(s: Step, deps: tuple[str, ...]) -> Step | None:
        if s.kind == DataLoss.name:  # the data-loss report measures the RPO from the drill's ledger
            return replace(s, params={**s.params, "ledger": ledger}, depends_on=deps)
        return None

    how = _Drilled("cold", tuple(k for k in COLD_KEPT_KINDS if k != DataLoss.name), "standby",
                   "no-notice drill: the primary is cut off first; the standby copy is promoted and the target torn "
                   "down afterwards; production DNS records untouched", special, _promoted_keys)
    return _transform(plan, how, drill_record=drill_record, dns_provider=dns_provider, zone=zone,
                      nameserver=nameserver, ttl=ttl)


def _transform(plan: Plan, how: _Drilled, *, drill_record: str | None, dns_provider: str | None, zone: str | None,
               nameserver: str | None, ttl: int) -> Plan:
    if plan.mode != how.mode:
        raise UsageError(f"this drill is built from a {how.mode} plan, not {plan.mode!r}")
    production = [r.get("fqdn") for s in plan.steps if s.kind == DnsCutover.name for r in s.params.get("records", [])]
    if drill_record is not None and drill_record in production:
        raise UsageError(f"the drill record {drill_record} is a production record",
                         hint="set dns.drill_record to a name no service uses (default: drill)")
    service = next((r.get("service") for s in plan.steps if s.kind in (DnsCutover.name, VerifyService.name)
                    for r in s.params.get("records", []) if r.get("service")), None)
    if service is None:
        service = next((s.params["service"] for s in plan.steps if s.kind in SERVICE_KINDS), None)
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
            if s.kind == Allocate.name:
                steps.append(Step("drill-teardown", DrillTeardown.name,
                                  f"tear-down guard: undone last, it stops and removes what the drill started on the "
                                  f"{how.where}", {"services": sorted(_services(plan)),
                                                   **how.teardown_datasets(plan)}, (s.id,)))
        elif s.kind == DnsCutover.name:
            if records:
                renamed[s.id] = "drill-dns"
                steps.append(Step("drill-dns", DnsCutover.name, f"point the drill record {drill_record} at the "
                                  f"{how.where} (production records untouched)",
                                  {"provider": dns_provider, "zone": zone, "records": records}, deps(s)))
            else:
                renamed[s.id] = deps(s)[0] if deps(s) else ""  # later steps wait for what DNS waited for
        elif s.kind == VerifyService.name:
            renamed[s.id] = "drill-verify-service"
            steps.append(Step("drill-verify-service", DrillVerifyService.name, f"verify the service at the {how.where}"
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
                  dns_diff=dns_diff, notes=notes, problems=plan.problems)
    assert_safe(result, production)
    return result


def _promoted_keys(plan: Plan) -> dict[str, list[str]]:
    """The datasets a cold plan brings up at the standby (its kinds' promotions that are more than a check of the
    copy), grouped by their kind's group as the teardown reads them: what the teardown stops and removes."""
    out: dict[str, list[str]] = {}
    for s in plan.steps:
        if "kind" in s.params and "dataset" in s.params:
            kind = kind_named(str(s.params["kind"]))
            if s.kind == kind.promote_step[0] and not get_kind(s.kind).gate:
                out.setdefault(kind.group, []).append(str(s.params["dataset"]))
    return {g: sorted(set(keys)) for g, keys in out.items()}


def assert_safe(plan: Plan, production: list[Any]) -> None:
    """A drill plan freezes nothing and never names a production record."""
    for s in plan.steps:
        if s.kind == Freeze.name:
            raise UsageError(f"drill plan step {s.id} would freeze writes at the source")
        for r in s.params.get("records", []) if s.kind in (DnsCutover.name, DrillVerifyService.name) else []:
            if r.get("fqdn") in production:
                raise UsageError(f"drill plan step {s.id} would change the production record {r.get('fqdn')}")


def _services(plan: Plan) -> set[str]:
    """The services the plan deploys or starts at the target: what the drill's teardown stops and removes."""
    return {str(s.params["service"]) for s in plan.steps if s.kind in SERVICE_KINDS}


def _dataset_groups(plan: Plan) -> dict[str, list[str]]:
    """Every dataset the live plan seeds, grouped by its kind's group (as the data steps' params): what the
    teardown asks each kind to remove from the target."""
    out: dict[str, list[str]] = {}
    for s in plan.steps:
        if s.kind == DataSeed.name:
            p = SeedParams.from_params(s.params)
            out.setdefault(kind_named(p.kind).group, []).append(p.dataset)
    return {g: sorted(keys) for g, keys in out.items()}
