"""DNS cutover and the final check (the service through its DNS name); the data gate is in `steps.data`."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed
from liferaft.steps.hosts import health_url, target_host


def http_check(address: str, health: Any, *, timeout: float = 10.0) -> float:
    """GET the health path on `address` until it answers the expected status; returns when it first did."""
    url = health_url(health, address)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, float(health.timeout))) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            status, last = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if status == health.expect_status:
            return time.time()
        if status is not None:
            last = f"HTTP {status}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"{url} did not answer {health.expect_status} within {timeout:.0f}s (last: {last})")
        time.sleep(0.05)


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

    def _dns(self, ctx: RunContext, step: Step) -> Any:
        return ctx.provider(step.params["provider"]).require("dns")

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        dns, zone = self._dns(ctx, step), step.params["zone"]
        return {r["fqdn"]: [v for rs in dns.get_records(zone, r["fqdn"], r["type"]) for v in rs.values]
                for r in step.params["records"]}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.providers.base import RecordSet

        dns, zone = self._dns(ctx, step), step.params["zone"]
        if "previous" not in ctx.memo:
            previous = {}
            for r in step.params["records"]:
                found = [rs for rs in dns.get_records(zone, r["fqdn"], r["type"]) if rs.type == r["type"]]
                previous[r["fqdn"]] = {"type": r["type"], "ttl": found[0].ttl if found else r["ttl"],
                                       "values": sorted(v for rs in found for v in rs.values)}
            ctx.remember(previous=previous)
        address = target_host(ctx).address
        previous = ctx.memo["previous"]
        for r in step.params["records"]:
            dns.upsert_record(zone, RecordSet(r["fqdn"], r["type"], int(r["ttl"]), (address,)))
            old_ttl = int(previous.get(r["fqdn"], {}).get("ttl") or r["ttl"])
            ctx.emit("dns.updated", f"{r['fqdn']} {r['type']} -> {address}; resolvers may answer the old address "
                     f"for up to {old_ttl} s (its TTL)", name=r["fqdn"], value=address, stale_for_s=old_ttl)
        cut_at = time.time()
        stale = max((int(p.get("ttl") or 0) for p in previous.values()), default=0)
        ctx.summarise(dns_stale_for_s=stale, dns_stale_until=round(cut_at + stale, 3))
        return {"address": address, "previous": previous, "cut_at": cut_at, "stale_for_s": stale}

    def verify(self, ctx: RunContext, step: Step) -> None:
        dns, zone = self._dns(ctx, step), step.params["zone"]
        address = target_host(ctx).address
        for r in step.params["records"]:
            values = [v for rs in dns.get_records(zone, r["fqdn"], r["type"]) for v in rs.values]
            if values != [address]:
                raise CheckFailed(f"{r['fqdn']} {r['type']} holds {values}, expected [{address}]")

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.providers.base import RecordSet

        dns, zone = self._dns(ctx, step), step.params["zone"]
        for fqdn, prev in (ctx.memo.get("previous") or {}).items():
            if prev["values"]:
                dns.upsert_record(zone, RecordSet(fqdn, prev["type"], int(prev["ttl"]), tuple(prev["values"])))
            else:
                dns.delete_record(zone, fqdn, prev["type"])
            ctx.emit("dns.restored", f"{fqdn} {prev['type']} -> {prev['values']}", name=fqdn)


@register
class VerifyService(StepKind):
    """Resolve each record at the DNS server and GET the health path on the address it answers."""

    name = "verify.service"
    gate = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        stack = ctx.require_stack()
        expected = target_host(ctx).address
        answers: dict[str, list[str]] = {}
        answered_at = time.time()
        for r in step.params["records"]:
            deadline = time.monotonic() + 30.0
            while True:
                got = resolve(r["fqdn"], r["type"], step.params.get("nameserver"))
                if got == [expected] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            answers[r["fqdn"]] = got
            if got != [expected]:
                raise CheckFailed(f"{r['fqdn']} resolves to {got}, expected [{expected}]")
            health = stack.model.services[r["service"]].health if r.get("service") else None
            if health is not None:
                answered_at = max(answered_at, http_check(got[0], health, timeout=30.0))
        result: dict[str, Any] = {"answers": answers}
        freeze = ctx.outputs_of_kind("cutover.freeze")
        if freeze:
            # From the moment the source database turned read-only (the step's own set-up before it is excluded
            # but reported) to the service answering through its DNS name at the target.
            started = min(float(f.get("writes_frozen_at") or f["freeze_started"]) for f in freeze.values())
            step_start = min(float(f["freeze_started"]) for f in freeze.values())
            window = answered_at - started
            result["write_unavailable_s"] = round(window, 3)
            ctx.summarise(write_unavailable_s=round(window, 3),
                          freeze_step_to_service_s=round(answered_at - step_start, 3))
            ctx.emit("failover.window", f"write-unavailability window: {window:.3f}s (freeze start to the service "
                     "answering through DNS at the target)", write_unavailable_s=round(window, 3))
        return result
