"""Step kinds: what each kind of step does, looked up by name from one registry.

A step kind implements five operations on a `Step` and the run context:

- `describe(step)`  a one-line human description (pure);
- `preview(ctx, step)`  what it would do, observed READ-ONLY (used by `liferaft plan`);
- `apply(ctx, step)`  do it; must be idempotent (a resumed run re-applies the steps that were interrupted), and
  returns a JSON-safe, secret-free result that later steps can read through `ctx.output(step_id)`;
- `verify(ctx, step)`  check it took effect; raise `CheckFailed` saying what differs;
- `undo(ctx, step)`  revert it (only where `undoable`); idempotent too, and must cope with a partial apply.

`gate = True` marks a verification gate: a failed verify stops the run (no step starts after it; DNS must
depend on it).
`undo_first = True` makes rollback undo this kind before any other (DNS: point users back first).
Steps run as a DAG: `apply`/`verify` run on a thread of their own, beside any other step the plan does not order
before or after them (through `depends_on`), so a kind must not rely on plan order alone and must be safe to run
beside other kinds: objects from `ctx.provider(...)` and `ctx.cache` are shared by the steps' threads. The `ctx` a
step is given is its own view (`ctx.memo`, `ctx.remember`, `ctx.emit` are the step's).
`serial = "<group>"` puts the kind in a serial group: the runner, which runs independent steps side by side, never
runs two steps whose kinds share a group at the same time (every Ansible-playbook kind is in group "ansible": apt
and dpkg take one lock per host).

The engine knows no kind by name: the step library (`liferaft.steps`, one package above) registers the built-in
kinds when it is imported, and every command that runs, resumes or rolls back a plan imports it first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from liferaft.errors import UsageError

if TYPE_CHECKING:
    from liferaft.engine.plan import Step
    from liferaft.engine.runner import RunContext

K = TypeVar("K", bound="StepKind")


class StepKind:
    """Base class with harmless defaults; subclasses set `name` and override what they do."""

    name: ClassVar[str] = ""
    gate: ClassVar[bool] = False
    undoable: ClassVar[bool] = False
    undo_first: ClassVar[bool] = False
    serial: ClassVar[str | None] = None
    """A serial group name, or None. The runner starts steps as soon as their `depends_on` are done, several at
    once; two steps whose kinds name the same group never run at the same time (e.g. "ansible": playbooks on one
    host contend for apt/dpkg locks). None: no constraint beyond the step's dependencies."""

    def describe(self, step: Step) -> str:
        return step.title

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any] | None:
        raise NotImplementedError(f"step kind {self.name!r} does not implement apply")

    def verify(self, ctx: RunContext, step: Step) -> None:
        return None

    def undo(self, ctx: RunContext, step: Step) -> None:
        return None


_REGISTRY: dict[str, StepKind] = {}


def register(cls: type[K]) -> type[K]:
    """Class decorator: register one instance of a step kind under `cls.name` (re-registering replaces)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_kind(name: str) -> StepKind:
    kind = _REGISTRY.get(name)
    if kind is None:
        raise UsageError(f"unknown step kind {name!r}", hint=f"known kinds: {', '.join(sorted(_REGISTRY))}")
    return kind


def known_kinds() -> list[str]:
    return sorted(_REGISTRY)
