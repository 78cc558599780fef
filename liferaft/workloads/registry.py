"""The built-in workload kinds: one line each. Importing this module registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liferaft.workloads.base import _REGISTRY, Workload, register_kind
from liferaft.workloads.container import Container
from liferaft.workloads.playbook import Playbook

if TYPE_CHECKING:
    from liferaft.stack import Stack

register_kind(Playbook)
register_kind(Container)


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


def teardown_lines(stack: Stack, wls: list[Workload]) -> list[str]:
    """The shell lines that remove these workloads from a drill's target, each kind's for its own (in order)."""
    from liferaft.workloads.base import kind_of

    by_kind: dict[str, list[Workload]] = {}
    for wl in wls:
        by_kind.setdefault(wl.kind, []).append(wl)
    return [line for group in by_kind.values() for line in kind_of(group[0]).teardown_lines(stack, group)]


def wait_stopped(wls: list[Workload], address: str, timeout: float = 15.0) -> None:
    """Wait until none of these workloads answers its health check at `address` (CheckFailed naming the URL)."""
    from liferaft.workloads.base import kind_of
    from liferaft.workloads.probe import wait_silent

    for wl in wls:
        url = kind_of(wl).health_url(wl, address)
        if url is not None:
            wait_silent(url, timeout=timeout)
