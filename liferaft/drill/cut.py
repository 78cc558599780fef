"""The no-notice scenario's cut: the primary stops answering, as when a provider switches an account off.

liferaft cannot (and must not) switch a real provider off. A stack may name a **cut hook** that does it for drills
(a firewall rule, a security group emptied, a VM paused -- or, in the local lab, the lab's fault proxies and host
cuts; `liferaft lab up` writes that hook into the lab's stack file):

    drill:
      cut:  [my-cut-tool, --for-drill]     # argv; no shell
      heal: [my-heal-tool]

The hook protocol: `cut` is run with one JSON object on stdin -- `stack`, `stack_file`, `source_site`,
`target_site`, `source_address`, and each site's `compute`/`objects` provider names -- and must cut the source off,
then print one JSON object on stdout: `description` (for the report) and anything else it needs to undo exactly
that cut. A non-zero exit stops the drill before anything else happens. `heal` gets the same object on stdin with
`cut` set to what `cut` printed, and must undo that cut only. Both are bounded by HOOK_TIMEOUT_S.

Without a hook the primary is simply not used: the cold failover that follows never contacts it
(see liferaft.failover.cold).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from liferaft.errors import RunFailed
from liferaft.events import Events, as_events

if TYPE_CHECKING:
    from liferaft.stack import Stack

HOOK_TIMEOUT_S = 120.0


@dataclass
class Cut:
    """What was cut (for the report) and what the heal hook needs to undo it."""

    how: str  # "hook" | "not used"
    description: str = "the primary is not used (no cut hook in the stack's drill settings)"
    request: dict[str, Any] = field(default_factory=dict)  # what the hook was given
    result: dict[str, Any] = field(default_factory=dict)  # what the cut hook printed
    healed: bool = False

    def describe(self) -> str:
        return self.description

    def to_dict(self) -> dict[str, Any]:
        return {"how": self.how, "healed": self.healed, "description": self.describe()}


def _request(stack: Stack, target: str, source_address: str | None) -> dict[str, Any]:
    m = stack.model
    src, tgt = stack.site(m.primary), stack.site(target)
    return {"stack": m.name, "stack_file": str(stack.path), "source_site": m.primary, "target_site": target,
            "source_address": source_address,
            "source": {"compute": src.compute, "objects": src.objects},
            "target": {"compute": tgt.compute, "objects": tgt.objects}}


def _run_hook(argv: list[str], doc: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        proc = subprocess.run(argv, input=json.dumps(doc), capture_output=True, text=True,
                              timeout=HOOK_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RunFailed(f"the drill's {what} hook {argv[0]!r} failed: {type(e).__name__}: {e}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RunFailed(f"the drill's {what} hook {argv[0]!r} exited {proc.returncode}: " + " | ".join(tail))
    try:
        out = json.loads(proc.stdout or "{}")
    except ValueError:
        raise RunFailed(f"the drill's {what} hook {argv[0]!r} did not print one JSON object") from None
    if not isinstance(out, dict):
        raise RunFailed(f"the drill's {what} hook {argv[0]!r} did not print one JSON object")
    return out


def cut_primary(stack: Stack, target: str, source_address: str | None, events: Events | None = None) -> Cut:
    """Cut the primary off through the stack's cut hook, or record that it is simply not used."""
    ev = as_events(events)
    settings = stack.model.drill
    if not settings.cut:
        cut = Cut("not used")
    else:
        req = _request(stack, target, source_address)
        res = _run_hook(list(settings.cut), req, "cut")
        cut = Cut("hook", str(res.get("description") or "cut by the stack's hook"), req, res)
    ev.emit("drill.cut_off", f"no-notice cut: {cut.describe()}", **cut.to_dict())
    return cut


def heal(stack: Stack, cut: Cut, events: Events | None = None) -> None:
    """Undo this cut only (other faults set by hand stay as they are)."""
    if cut.how != "hook" or cut.healed:
        cut.healed = True
        return
    argv = list(stack.model.drill.heal)
    if argv:
        _run_hook(argv, {**cut.request, "cut": cut.result}, "heal")
    cut.healed = True
    as_events(events).emit("drill.healed", f"healed: {cut.describe()}" if argv else
                           "no heal hook in the stack's drill settings: undo the cut by hand")
