"""The built-in workload kinds: one line each. Importing this module registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liferaft.workloads.base import _REGISTRY, Workload, register_kind
from liferaft.workloads.playbook import Playbook

if TYPE_CHECKING:
    from liferaft.stack import Stack

register_kind(Playbook)


def workloads(stack: Stack) -> list[Workload]:
    """Every service of the stack as a workload, in a stable order."""
    return [Workload(kind.name, name, spec) for kind in _REGISTRY.values()
            for name, spec in sorted(kind.entries(stack.model).items())]


def workload(stack: Stack, name: str) -> Workload:
    """The stack's service `name` as a workload; UsageError naming the known ones when there is none."""
    found = [w for w in workloads(stack) if w.name == name]
    if not found:
        from liferaft.errors import UsageError

        raise UsageError(f"the stack has no service {name!r}",
                         hint=f"services: {', '.join(w.name for w in workloads(stack)) or '(none)'}")
    return found[0]
