"""The workload contract: how one kind of service runs at a site, behind one small Protocol.

A **workload** is one entry of the stack file's `services:` section. Its kind (today: `playbook`, an Ansible
playbook plus an artifact directory; issue 14 adds `container`) owns deploy, stop, health and what a teardown must
remove. The planner, the step library and the drill iterate over `workloads(stack)` and call the kind; they never
branch on its name. Adding a kind is one module implementing `WorkloadKind` plus one line in
`liferaft.workloads.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack


@dataclass(frozen=True)
class Workload:
    kind: str  # "playbook" | ...
    name: str  # services.<name>
    spec: Any  # the stack model's entry (liferaft.stack.model.Service)


class WorkloadKind(Protocol):
    name: ClassVar[str]

    def entries(self, model: Any) -> dict[str, Any]:
        """This kind's entries in a stack model."""
        ...

    def deploy(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        """Deploy (idempotent) on the target host, on the target's datasets; secret-free result."""
        ...

    def stop(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        """Stop it there (rollback): it must no longer answer; its data and files stay."""
        ...

    def health_url(self, wl: Workload, address: str) -> str | None: ...

    def teardown_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        """Shell lines run on a drill's target to remove everything the kind put there."""
        ...


_REGISTRY: dict[str, Any] = {}


def register_kind(kind: Any) -> Any:
    inst = kind() if isinstance(kind, type) else kind
    _REGISTRY[inst.name] = inst
    return kind


def kind_of(wl: Workload) -> Any:
    from liferaft.workloads import registry  # noqa: F401  (registers the built-in kinds)

    try:
        return _REGISTRY[wl.kind]
    except KeyError:
        from liferaft.errors import UsageError

        raise UsageError(f"unknown workload kind {wl.kind!r}", hint=f"known: {', '.join(sorted(_REGISTRY))}") from None
