"""DNS cutover and the final check (the service through its DNS name); the data gate is in `steps.data`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.results import target_host as run_target_host
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, UsageError
from liferaft.steps.tls import check_health
from liferaft.workloads import kind_of, workload
from liferaft.workloads.probe import http_check

__all__ = ["DnsParams", "DnsRecord", "ServiceCheckParams", "http_check", "resolve"]


# ------------------------------------------------------------------------------------- typed params (journal edge)
@dataclass(frozen=True)
class DnsRecord:
    """One record a plan points at the target: `fqdn` (absolute), its type and TTL, the service behind it."""

    fqdn: str
    type: str = "A"
    ttl: int = 60
    service: str | None = None

    @classmethod
    def from_json(cls, d: Any) -> DnsRecord:
        if not isinstance(d, dict) or not isinstance(d.get("fqdn"), str):
            raise UsageError(f"a DNS record needs an fqdn, got {d!r}")
        return cls(fqdn=d["fqdn"], type=str(d.get("type") or "A"), ttl=int(d.get("ttl") or 60),
                   service=d.get("service") or None)

    def to_json(self) -> dict[str, Any]:
        return {"fqdn": self.fqdn, "type": self.type, "ttl": self.ttl, "service": self.service}


def _records(params: dict[str, Any]) -> tuple[DnsRecord, ...]:
    return tuple(DnsRecord.from_json(r) for r in params.get("records") or [])


@dataclass(frozen=True)
class DnsParams:
    """`dns.cutover`: which provider's zone, and the records to point at the target."""

    provider: str
    zone: str
    records: tuple[DnsRecord, ...]

    @classmethod
    def from_json(cls, params: dict[str, Any]) -> DnsParams:
        return cls(provider=str(params["provider"]), zone=str(params["zone"]), records=_records(params))

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "zone": self.zone, "records": [r.to_json() for r in self.records]}


@dataclass(frozen=True)
class ServiceCheckParams:
    """`verify.service` / `drill.verify_service`: the records to resolve (at `nameserver`, else the system's
    resolver) and the service whose health is checked where a record names none (a drill names it here)."""

    records: tuple[DnsRecord, ...]
    nameserver: str | None = None
    service: str | None = None

    @classmethod
    def from_json(cls, params: dict[str, Any]) -> ServiceCheckParams:
        return cls(records=_records(params), nameserver=params.get("nameserver") or None,
                   service=params.get("service") or None)

    def to_json(self) -> dict[str, Any]:
        return {"records": [r.to_json() for r in self.records], "nameserver": self.nameserver,
                "service": self.service}


def resolve(fqdn: str, rtype: str, nameserver: str | None) -> list[str]:
    import dns.exception
    import dns.resolver

    if nameserver:
        host, _, port = nameserver.rpartition(":")
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [host.strip("[]")]
        r.port = int(port)
    else:
        r = dns.resolver.Resolver()
    r.lifetime = 3.0
    r.cache = None
    try:
        return sorted(a.to_text() for a in r.resolve(fqdn, rtype))
    except dns.exception.DNSException as e:
        return [f"<{type(e).__name__}>"]


@register
class DnsCutover(StepKind):
    """Point the service's records at the target. The previous values are journaled first; undo restores them."""

    name = "dns.cutover"
    undoable = True
    undo_first = True

    def _dns(self, ctx: RunContext, p: DnsParams) -> Any:
        return ctx.provider(p.provider).require("dns")

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DnsParams.from_json(step.params)
        dns = self._dns(ctx, p)
        return {r.fqdn: [v for rs in dns.get_records(p.zone, r.fqdn, r.type) for v in rs.values] for r in p.records}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.providers.base import RecordSet

        p = DnsParams.from_json(step.params)
        dns = self._dns(ctx, p)
        if "previous" not in ctx.memo:
            previous = {}
            for r in p.records:
                found = [rs for rs in dns.get_records(p.zone, r.fqdn, r.type) if rs.type == r.type]
                previous[r.fqdn] = {"type": r.type, "ttl": found[0].ttl if found else r.ttl,
                                    "values": sorted(v for rs in found for v in rs.values)}
            ctx.remember(previous=previous)
        address = run_target_host(ctx).address
        previous = ctx.memo["previous"]
        for r in p.records:
            dns.upsert_record(p.zone, RecordSet(r.fqdn, r.type, r.ttl, (address,)))
            old_ttl = int(previous.get(r.fqdn, {}).get("ttl") or r.ttl)
            ctx.emit("dns.updated", f"{r.fqdn} {r.type} -> {address}; resolvers may answer the old address "
                     f"for up to {old_ttl} s (its TTL)", name=r.fqdn, value=address, stale_for_s=old_ttl)
        cut_at = time.time()
        stale = max((int(v.get("ttl") or 0) for v in previous.values()), default=0)
        ctx.summarise(dns_stale_for_s=stale, dns_stale_until=round(cut_at + stale, 3))
        # whether a record's values or TTL were not already these (a deploy counts what it changed)
        changed = [r.fqdn for r in p.records if previous.get(r.fqdn, {}).get("values") != [address]
                   or int(previous.get(r.fqdn, {}).get("ttl") or 0) != r.ttl]
        return {"address": address, "previous": previous, "cut_at": cut_at, "stale_for_s": stale,
                "changed": changed}

    def verify(self, ctx: RunContext, step: Step) -> None:
        p = DnsParams.from_json(step.params)
        dns = self._dns(ctx, p)
        address = run_target_host(ctx).address
        for r in p.records:
            values = [v for rs in dns.get_records(p.zone, r.fqdn, r.type) for v in rs.values]
            if values != [address]:
                raise CheckFailed(f"{r.fqdn} {r.type} holds {values}, expected [{address}]")

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.providers.base import RecordSet

        p = DnsParams.from_json(step.params)
        dns = self._dns(ctx, p)
        for fqdn, prev in (ctx.memo.get("previous") or {}).items():
            if prev["values"]:
                dns.upsert_record(p.zone, RecordSet(fqdn, prev["type"], int(prev["ttl"]), tuple(prev["values"])))
            else:
                dns.delete_record(p.zone, fqdn, prev["type"])
            ctx.emit("dns.restored", f"{fqdn} {prev['type']} -> {prev['values']}", name=fqdn)


RESOLVE_TIMEOUT_S = 30.0
HEALTHY_TIMEOUT_S = 30.0


def wait_resolves(record: DnsRecord, expected: str, nameserver: str | None) -> list[str]:
    """Resolve `record` until it answers exactly [expected] (bounded); CheckFailed naming what it answered."""
    deadline = time.monotonic() + RESOLVE_TIMEOUT_S
    while True:
        got = resolve(record.fqdn, record.type, nameserver)
        if got == [expected]:
            return got
        if time.monotonic() > deadline:
            raise CheckFailed(f"{record.fqdn} resolves to {got}, expected [{expected}]")
        time.sleep(0.05)


@register
class VerifyService(StepKind):
    """The service through its DNS name: resolve each record at the DNS server until it names the target, then GET
    the service's health check on the address it answers (with no record, on the target itself). The first healthy
    answer is `first_healthy_at`: a failover's write-unavailability window ends there, a drill's RTO too."""

    name = "verify.service"
    gate = True
    healthy_event: ClassVar[str] = "service.healthy"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = ServiceCheckParams.from_json(step.params)
        stack = ctx.require_stack()
        expected = run_target_host(ctx).address
        answers: dict[str, list[str]] = {}
        checks: list[tuple[str | None, str]] = []  # (service, address)
        for r in p.records:
            answers[r.fqdn] = wait_resolves(r, expected, p.nameserver)
            checks.append((r.service or p.service, answers[r.fqdn][0]))
        if not p.records:
            checks.append((p.service, expected))
        reached = checks[0][1] if checks else expected
        healthy_at: float | None = None
        for service, address in checks:
            if service is None:
                continue
            wl = workload(stack, service)
            health = kind_of(wl).health(wl)
            if health is not None:
                healthy_at = max(healthy_at or 0.0, check_health(stack, service, health, address,
                                                                 timeout=HEALTHY_TIMEOUT_S))
        first_healthy_at = healthy_at if healthy_at is not None else time.time()
        ctx.emit(self.healthy_event, f"the service answers at {reached}"
                 + (f" through {', '.join(answers)}" if answers else ""), address=reached)
        result: dict[str, Any] = {"answers": answers, "address": reached, "first_healthy_at": first_healthy_at}
        freeze = ctx.outputs_of_kind("cutover.freeze")
        if freeze:
            # From the moment the source database turned read-only (the step's own set-up before it is excluded
            # but reported) to the service answering through its DNS name at the target.
            started = min(float(f.get("writes_frozen_at") or f["freeze_started"]) for f in freeze.values())
            step_start = min(float(f["freeze_started"]) for f in freeze.values())
            window = first_healthy_at - started
            result["write_unavailable_s"] = round(window, 3)
            ctx.summarise(write_unavailable_s=round(window, 3),
                          freeze_step_to_service_s=round(first_healthy_at - step_start, 3))
            ctx.emit("failover.window", f"write-unavailability window: {window:.3f}s (freeze start to the service "
                     "answering through DNS at the target)", write_unavailable_s=round(window, 3))
        return result


@register
class DrillVerifyService(VerifyService):
    """`verify.service` in a drill: the same check, through the drill record (the drill planner names it and the
    service); its first healthy answer ends the drill's RTO."""

    name = "drill.verify_service"
    healthy_event: ClassVar[str] = "drill.healthy"
