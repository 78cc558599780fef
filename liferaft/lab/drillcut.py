"""The lab's cut hook for no-notice drills (`drill.cut`/`drill.heal` in the lab's stack file; protocol:
liferaft.drill.cut): every lab provider the source site uses and the target site does not is made to drop
connections at its fault proxy, and the lab host at the source address has its network cut. Healing undoes exactly
that, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liferaft.errors import UsageError
from liferaft.lab.core import Lab


def _running(lab_dir: str | Path) -> Lab:
    lab = Lab(lab_dir)
    if not lab.running:
        raise UsageError(f"no lab runs in {lab_dir}", hint="liferaft lab up")
    return lab


def cut(lab_dir: str | Path, request: dict[str, Any]) -> dict[str, Any]:
    """Cut the source site off as `request` (the hook's stdin) describes it; returns what heal needs."""
    lab = _running(lab_dir)
    state = lab.read_state() or {}
    proxies = set(state.get("proxies", {}))
    src, tgt = request.get("source") or {}, request.get("target") or {}
    used_by_target = {tgt.get("compute"), tgt.get("objects")}
    providers = sorted({p for p in (src.get("compute"), src.get("objects"))
                        if p and p in proxies and p not in used_by_target})
    info = lab.info
    address = request.get("source_address") or info.primary_address
    hosts = sorted(n for n, h in info.hosts.items() if h.address == address)
    for p in providers:
        lab.cut(p, "down")
    for h in hosts:
        lab.cut_host(h)
    parts = [f"provider {p} down" for p in providers] + [f"host {h} cut off" for h in hosts]
    return {"description": "lab: " + ", ".join(parts or ["nothing to cut"]), "providers": providers, "hosts": hosts}


def heal(lab_dir: str | Path, request: dict[str, Any]) -> dict[str, Any]:
    """Undo the cut that `request["cut"]` describes (what `cut` returned)."""
    lab = _running(lab_dir)
    done = request.get("cut") or {}
    for p in done.get("providers", []):
        lab.heal_provider(p)
    for h in done.get("hosts", []):
        lab.heal_host(h)
    return {"healed": list(done.get("providers", [])) + list(done.get("hosts", []))}
