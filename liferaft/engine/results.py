"""Typed access to what earlier steps of a run produced, found by the step's kind -- never by a literal step id,
so a planner may name its steps as it likes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.errors import RunFailed

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext

# The one kind the engine itself knows by name: the step that provides a run's target host(s). Its result is a
# host (TargetHost as a dict, see liferaft.configure.host_to_dict) plus `hosts`, every host it allocated.
ALLOCATE_KIND = "host.allocate"


def result_of(ctx: RunContext, kind: str) -> dict[str, Any]:
    """The result of the run's done step of `kind` (exactly one such step must be done)."""
    done = ctx.outputs_of_kind(kind)
    if len(done) != 1:
        what = "no" if not done else f"{len(done)}"
        raise RunFailed(f"{what} completed step of kind {kind!r} in run {ctx.run_id}; expected one")
    return next(iter(done.values()))


def target_host(ctx: RunContext) -> TargetHost:
    """The run's (first) target host, from its allocation step."""
    from liferaft.configure import host_from_dict

    return host_from_dict(result_of(ctx, ALLOCATE_KIND))


def target_hosts(ctx: RunContext) -> list[TargetHost]:
    """Every host the run's allocation step made ready (the first is `target_host`)."""
    from liferaft.configure import host_from_dict

    out = result_of(ctx, ALLOCATE_KIND)
    return [host_from_dict(h) for h in out.get("hosts") or [out]]
