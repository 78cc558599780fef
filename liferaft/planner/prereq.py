"""The plan's checks at the source: each dataset kind with `prerequisites` says, read-only, what a move needs there
first (PostgreSQL: primary keys, wal_level, slots and senders, access rules, extensions the target lacks), before
anything is created. The live plan and the standby set-up (`replicate`) run them; a blocking one makes the plan's
problems, which `plan` reports (exit 2) and every run of the plan refuses (liferaft.engine.plan.PlanBlocked)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.datasets import kind_of
from liferaft.datasets.base import Where
from liferaft.datasets.registry import datasets

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.events import Events
    from liferaft.stack import Stack


def target_candidate(stack: Stack, target: str, state_dir: Any, free: tuple[str, ...]) -> TargetHost | None:
    """The host an allocation at `target` would most likely take (the pool's first free host), with its pinned
    keys; None where nobody knows it before the allocation (hosts created through an API, Terraform)."""
    from liferaft.engine.observe import compute_candidates

    if not free or stack.site(target).provision == "terraform":
        return None
    try:
        return next((h for h in compute_candidates(stack, stack.site(target).compute, state_dir)
                     if h.name == free[0]), None)
    except Exception:  # noqa: BLE001 (only a check's input: without it the check says it could not look)
        return None


def check(stack: Stack, source: str, target: str, state_dir: Any, source_host: TargetHost,
          target_host: TargetHost | None, events: Events) -> tuple[dict[str, Any], ...]:
    """Every kind's prerequisites for the stack's datasets, as dicts (blocking or not)."""
    where = Where(stack, source, target, state_dir, source_host, target_host)
    found: list[dict[str, Any]] = []
    for ds in datasets(stack):
        checker = getattr(kind_of(ds), "prerequisites", None)
        if checker is None:
            continue
        for p in checker(where, ds):
            found.append(p.to_dict())
            events.emit("plan.prerequisite", str(p), problem=p.to_dict())
    return tuple(found)
