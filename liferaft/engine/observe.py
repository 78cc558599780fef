"""Observe the source and the target READ-ONLY, for the plan: hosts, bytes, DNS.

Nothing here changes anything anywhere: object listings (GET), DNS record reads (GET), a PostgreSQL session
that is read-only from its first statement (`default_transaction_read_only=on`), and the ssh pool's allocation
file read locally. `tests/integration/test_failover_plan_lab.py` proves it by counting what the lab servers saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from liferaft.configure import host_to_dict
from liferaft.errors import UsageError
from liferaft.events import Events

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.stack import Stack


@dataclass(frozen=True)
class Observed:
    source_host: dict[str, Any]
    target_host_preview: str | None  # the address the target will most likely get (ssh pools), else None
    target_free: tuple[str, ...]
    dns_current: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)  # fqdn -> {"type", "ttl", ...}
    terraform: dict[str, Any] | None = field(default=None, hash=False)  # `terraform plan` of a terraform target
    # what one new host at the target would be and cost, where its compute provider can say (cloud APIs)
    target_offer: dict[str, Any] | None = field(default=None, hash=False)
    # every dataset's size at the source, by dataset id: {"bytes", "items", "detail"} (liferaft.datasets.Size)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    # what the datasets' kinds found the move needs first (liferaft.datasets.base.Prerequisite, as dicts)
    problems: tuple[dict[str, Any], ...] = field(default=(), hash=False)


def open_provider(stack: Stack, name: str, state_dir: Any, resolve: Any = None) -> Any:
    """Open a provider of the stack; `resolve` (default stack.secret) turns secret references into values."""
    from liferaft.providers.registry import open_provider as _open

    return _open(name, stack.provider(name), resolve or stack.secret, state_dir=state_dir, base_dir=stack.base_dir)


def dns_current(stack: Stack, state_dir: Any) -> dict[str, dict[str, Any]]:
    if stack.model.dns is None:
        return {}
    dns_cfg = stack.model.dns
    dns = open_provider(stack, dns_cfg.provider, state_dir).require("dns")
    out: dict[str, dict[str, Any]] = {}
    for rec in dns_cfg.records:
        fqdn = dns_cfg.fqdn(rec.name)
        found = [r for r in dns.get_records(dns_cfg.zone, fqdn, rec.type) if r.type == rec.type]
        out[fqdn] = {"type": rec.type, "ttl": found[0].ttl if found else rec.ttl,
                     "values": sorted(v for r in found for v in r.values)}
    return out


def compute_candidates(stack: Stack, provider_name: str, state_dir: Any) -> list[TargetHost]:
    """Hosts of a compute provider that liferaft can reach over SSH (pinned keys) and that may run the stack."""
    from liferaft.configure import TargetHost

    compute = open_provider(stack, provider_name, state_dir).require("compute")
    return [TargetHost.from_access(h.name, h.ssh) for h in compute.reachable_hosts() if h.ssh is not None]


def find_source_host(stack: Stack, site: str, current: dict[str, dict[str, Any]], state_dir: Any) -> TargetHost:
    """The host running the services at the source: the one the service's DNS records point at, else the only one."""
    provider = stack.site(site).compute
    candidates = compute_candidates(stack, provider, state_dir)
    pointed = {v for r in current.values() for v in r["values"]}
    hits = [h for h in candidates if h.address in pointed]
    if len(hits) == 1:
        return hits[0]
    if not hits and len(candidates) == 1:
        return candidates[0]
    raise UsageError(f"cannot tell which host of {provider!r} runs the stack at site {site!r}: "
                     f"{len(candidates)} hosts, {len(hits)} named by the DNS records",
                     hint="point the service's DNS record at it, or keep one host in the source pool")


def target_free(stack: Stack, provider_name: str, state_dir: Any) -> tuple[tuple[str, ...], str | None]:
    """Free hosts at the target compute provider and the address the next allocation would get (ssh pools)."""
    compute = open_provider(stack, provider_name, state_dir).require("compute")
    free_hosts = getattr(compute, "free_hosts", None)
    if free_hosts is None:
        return (), None
    free = tuple(free_hosts())
    cfg = stack.provider(provider_name)
    addresses = {h.name: h.address for h in getattr(cfg, "hosts", [])}
    return free, (addresses.get(free[0]) if free else None)


def observe(stack: Stack, source: str, target: str, state_dir: Any, events: Events,
            measure: Callable[[TargetHost], dict[str, dict[str, Any]]] | None = None) -> Observed:
    """Hosts, DNS, Terraform and the target's offer; `measure(source_host)` gives the datasets' sizes (the planner
    passes one that asks each dataset's kind: the engine knows no kind of data)."""
    current = dns_current(stack, state_dir)
    events.emit("plan.observe", f"DNS: {len(current)} record(s) read", records=len(current))
    src_host = find_source_host(stack, source, current, state_dir)
    events.emit("plan.observe", f"source host {src_host.name} ({src_host.address})", host=src_host.name)
    free, preview = target_free(stack, stack.site(target).compute, state_dir)
    sizes = measure(src_host) if measure is not None else {}
    tf = None
    if stack.site(target).provision == "terraform":
        from liferaft.terraform.provision import plan_site

        # terraform plan only reads from the provider; its files stay in liferaft's state dir.
        tf = plan_site(stack, target, state_dir, events).to_dict()
        events.emit("plan.observe", f"terraform plan: +{tf['add']} ~{tf['change']} -{tf['remove']}", terraform=tf)
    offer = target_offer(stack, target, state_dir)
    if offer:
        events.emit("plan.observe", f"a new host at {target}: {offer['server_type']} at {offer['location']}, "
                    f"{offer['hourly_gross']} {offer['currency']}/h", offer=offer)
    return Observed(source_host=host_to_dict(src_host), target_host_preview=preview, target_free=free,
                    dns_current=current, terraform=tf, target_offer=offer, sizes=sizes)


def target_offer(stack: Stack, target: str, state_dir: Any) -> dict[str, Any] | None:
    """The target compute provider's offer for one new host (type, location, hourly price), read-only; None where
    the provider has no such notion (a pool of hosts you bring, Terraform sites)."""
    site = stack.site(target)
    if site.provision != "api":
        return None
    compute = open_provider(stack, site.compute, state_dir).require("compute")
    offer = getattr(compute, "offer", None)
    if offer is None:
        return None
    from liferaft.providers.base import HostSpec, Quota

    base = f"{stack.model.name}-{target}"
    result: dict[str, Any] = offer(HostSpec(name=base))
    quota = getattr(compute, "quota", None)
    if quota is not None:  # the site's hosts must fit the account's limit: stop now, before anything is created
        q: Quota = quota()
        q.check_room(site.compute, [base] + [f"{base}-{i}" for i in range(1, site.hosts)])
        result = {**result, "quota": q.to_dict()}
    return result
