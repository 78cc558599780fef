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
    """Every service of the stack as a workload, in the order they start: each after the services it `depends_on`
    (`liferaft.stack.model.service_order`), ties by name. Stopping goes in the reverse order (`teardown_lines`)."""
    from liferaft.stack.model import service_order

    found = {name: Workload(kind.name, name, spec) for kind in _REGISTRY.values()
             for name, spec in sorted(kind.entries(stack.model).items())}
    order = service_order(stack.model.services)
    return [found[n] for n in order if n in found] + [w for n, w in found.items() if n not in order]


def stop_order(wls: list[Workload]) -> list[Workload]:
    """`wls` in the order they stop: the reverse of the order they start (dependents before what they depend on)."""
    start = {name: i for i, name in enumerate(w.name for w in _start_order(wls))}
    return sorted(wls, key=lambda w: -start[w.name])


def _start_order(wls: list[Workload]) -> list[Workload]:
    from liferaft.stack.model import service_order

    specs = {w.name: w.spec for w in wls if w.spec is not None}
    order = service_order(specs)
    return [w for n in order for w in wls if w.name == n] + [w for w in wls if w.name not in specs]


def workload(stack: Stack, name: str) -> Workload:
    """The stack's service `name` as a workload; UsageError naming the known ones when there is none."""
    found = [w for w in workloads(stack) if w.name == name]
    if not found:
        from liferaft.errors import UsageError

        raise UsageError(f"the stack has no service {name!r}",
                         hint=f"services: {', '.join(w.name for w in workloads(stack)) or '(none)'}")
    return found[0]


def teardown_lines(stack: Stack, wls: list[Workload]) -> list[str]:
    """The shell lines that remove these workloads from a drill's target, each kind's for its own, dependents first."""
    from liferaft.workloads.base import kind_of

    # Dependents first (the reverse of the start order); consecutive workloads of one kind in one call.
    groups: list[list[Workload]] = []
    for wl in stop_order(wls):
        if groups and groups[-1][0].kind == wl.kind:
            groups[-1].append(wl)
        else:
            groups.append([wl])
    return [line for group in groups for line in kind_of(group[0]).teardown_lines(stack, group)]


def wait_stopped(wls: list[Workload], address: str, timeout: float = 15.0) -> None:
    """Wait until none of these workloads answers its health check at `address` (CheckFailed naming the URL)."""
    from liferaft.workloads.base import kind_of
    from liferaft.workloads.probe import wait_silent

    for wl in wls:
        url = kind_of(wl).health_url(wl, address)
        if url is not None:
            wait_silent(url, timeout=timeout)
