"""The no-notice scenario's cut: the primary stops answering, as when a provider switches an account off.

In the local lab (the stack file is the one a running `liferaft lab up` wrote) the cut is real: every lab provider
the primary site uses and the target site does not is made to drop connections at its fault proxy, and the source
host's network is cut. Elsewhere liferaft cannot (and must not) switch a real provider off: the primary is simply not
used -- the cold failover that follows never contacts it (see liferaft.readiness.cold).

Healing undoes exactly what this cut did, nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.events import Events, as_events

if TYPE_CHECKING:
    from liferaft.stack import Stack


@dataclass
class Cut:
    """What was cut (for the report) and how to undo it."""

    how: str  # "lab" | "not used"
    providers: list[str] = field(default_factory=list)  # lab providers made to drop connections
    hosts: list[str] = field(default_factory=list)  # lab hosts whose network was cut
    lab_dir: str | None = None
    healed: bool = False

    def describe(self) -> str:
        if self.how != "lab":
            return "the primary is not used (outside the lab liferaft does not switch a provider off)"
        parts = [f"provider {p} down" for p in self.providers] + [f"host {h} cut off" for h in self.hosts]
        return "lab: " + ", ".join(parts or ["nothing to cut"])

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "providers": self.providers, "hosts": self.hosts, "healed": self.healed,
                "description": self.describe()}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def find_lab(stack: Stack) -> Any | None:
    """The running lab whose stack file this is (its directory, LIFERAFT_LAB_DIR, or the default), else None."""
    from liferaft.lab.core import Lab, default_lab_dir

    path = stack.path
    for directory in dict.fromkeys([Path(path).parent, default_lab_dir()]):
        lab = Lab(directory)
        state = lab.read_state()
        if state and lab.running and _same_file(Path(state.get("stack_file", "")), Path(path)):
            return lab
    return None


def cut_primary(stack: Stack, target: str, source_address: str | None, events: Events | None = None) -> Cut:
    """Cut the primary off (in the lab) or record that it is simply not used (elsewhere)."""
    ev = as_events(events)
    lab = find_lab(stack)
    if lab is None:
        cut = Cut("not used")
        ev.emit("drill.cut_off", f"no-notice cut: {cut.describe()}", **cut.to_dict())
        return cut
    m = stack.model
    src, tgt = stack.site(m.primary), stack.site(target)
    state = lab.read_state() or {}
    proxies = set(state.get("proxies", {}))
    used_by_target = {tgt.compute, tgt.objects}
    providers = sorted({p for p in (src.compute, src.objects) if p and p in proxies and p not in used_by_target})
    info = lab.info
    address = source_address or info.primary_address
    hosts = sorted(n for n, h in info.hosts.items() if h.address == address)
    cut = Cut("lab", providers, hosts, str(lab.directory))
    for p in providers:
        lab.cut(p, "down")
    for h in hosts:
        lab.cut_host(h)
    ev.emit("drill.cut_off", f"no-notice cut: {cut.describe()}", **cut.to_dict())
    return cut


def heal(cut: Cut, events: Events | None = None) -> None:
    """Undo this cut only (other faults set in the lab by hand stay as they are)."""
    if cut.how != "lab" or cut.healed or cut.lab_dir is None:
        cut.healed = True
        return
    from liferaft.lab.core import Lab

    lab = Lab(cut.lab_dir)
    for p in cut.providers:
        lab.heal_provider(p)
    for h in cut.hosts:
        lab.heal_host(h)
    cut.healed = True
    as_events(events).emit("drill.healed", f"healed: {', '.join(cut.providers + cut.hosts) or 'nothing'}")
