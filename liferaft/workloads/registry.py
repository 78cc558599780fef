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
