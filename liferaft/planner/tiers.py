"""Standby tiers (`sites.<site>.standby: pilot-light | warm`): what the stack declares, which services a warm standby
keeps deployed and stopped (at a digest of what their deploy uses), and which of them the recorded standby holds
current. The plan builder reads them for the standby set-up and the cold plan; `replicate` and the drill too."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liferaft.engine.standby_state import StandbyRecord
    from liferaft.stack import Stack


def standby_tier(stack: Stack, target: str) -> str:
    """The tier the stack file declares for the standby at `target` (`sites.<target>.standby`)."""
    return str(getattr(stack.site(target), "standby", "pilot-light"))


def warm_services(stack: Stack, target: str) -> dict[str, str]:
    """Warm tier: each service that can be kept warm -> the digest of what its deploy at `target` uses. Empty for
    a pilot-light site (and for services whose workload kind cannot be kept warm: they are deployed at failover)."""
    from liferaft.workloads import workloads
    from liferaft.workloads.base import warm_kind

    if standby_tier(stack, target) != "warm":
        return {}
    out: dict[str, str] = {}
    for wl in workloads(stack):
        kind = warm_kind(wl)
        if kind is not None:
            out[wl.name] = kind.digest(stack, wl, target)
    return out


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
