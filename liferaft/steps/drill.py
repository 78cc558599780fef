"""The drill's own step kinds, registered in the engine's step-kind registry (importing this module does it).

- `drill.teardown`: a guard placed right after the host allocation. Its apply records nothing but the target; its
  undo (run by the rollback just before the host is released) stops what the drill started on the target and removes
  it: the services (through their workload kind's teardown lines) and what each dataset kind created there (the
  PostgreSQL cluster; or, where that cluster also holds databases not the stack's -- an old primary's set-aside
  copies -- only the stack's databases), then checks that the service no longer answers. What a kind kept is said
  in the `drill.torn_down` event (`kept`).
- `drill.verify_service` (in `liferaft.steps.verify`, one implementation with `verify.service`): resolves the drill
  record until it names the target and GETs the health path there; the first healthy answer ends the RTO.

The drill's cut (`drill.cut`) and its data gate as of the cut (`drill.verify_data`) are generic data steps, in
`liferaft.steps.data`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from liferaft.datasets import kind_of
from liferaft.datasets.base import TEARDOWN_KEPT as KEPT
from liferaft.datasets.registry import by_kind, from_params
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import RunFailed
from liferaft.steps.data import Cut, DrillVerifyData


def _target(ctx: RunContext) -> Any:
    from liferaft.engine.results import target_host

    return target_host(ctx)


def is_drill(steps: Iterable[Any]) -> bool:
    """A drill's run (its plan's steps, or the journal's step records): it carries the drill's teardown guard."""
    return any(s.kind == DrillTeardown.name for s in steps)


# ------------------------------------------------------------------------------------------------------ teardown
def _service_lines(stack: Any, services: list[str]) -> list[str]:
    """The services' part of the teardown: each workload kind's own lines."""
    from liferaft.workloads import registry

    head = ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true"]  # dataset kinds' lines use $sd too
    return [*head, *registry.teardown_lines(stack, [w for w in registry.workloads(stack) if w.name in services])]


def teardown_lines(stack: Any, services: list[str], datasets: list[Any]) -> list[str]:
    """The shell run on the target to remove what a drill started there. Names are validated by the stack model."""
    lines = _service_lines(stack, services)
    for dss in by_kind(datasets).values():
        lines += kind_of(dss[0]).teardown_lines(stack, dss)
    return [*lines, "echo torn-down"]


@register
class DrillTeardown(StepKind):
    name = "drill.teardown"
    undoable = True
    phase: ClassVar[str | None] = "provision"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        host = _target(ctx)
        return {"host": host.name, "address": host.address}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.configure.remote import ssh
        from liferaft.workloads import registry
        from liferaft.workloads.base import refuse_source_host

        try:
            host = _target(ctx)
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing to tear down
        stack = ctx.require_stack()
        refuse_source_host(ctx, host.address)
        dss = from_params(stack, step.params)
        services = [s for s in step.params.get("services", []) if s in stack.model.services]
        script = "\n".join(teardown_lines(stack, services, dss)) + "\n"
        out = ssh(host, "sh -s", stdin=script, timeout=120.0, what="tear the drill target down")
        registry.wait_stopped([w for w in registry.workloads(stack) if w.name in services], host.address)
        removed = sorted({kind_of(ds).noun for ds in dss if kind_of(ds).teardown_lines(stack, [ds])})
        kept = [line[len(KEPT):] for line in (out or "").splitlines() if line.startswith(KEPT)]
        ctx.emit("drill.torn_down", f"{host.name} ({host.address}): services {', '.join(services) or '-'} and "
                 f"{', '.join(removed) or 'nothing else'} stopped and removed"
                 + "".join(f"; kept: {k}" for k in kept), address=host.address, kept=kept)


__all__ = ["Cut", "DrillVerifyData", "is_drill", "teardown_lines"]
