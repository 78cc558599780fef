"""Small helpers the dataset kinds share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext


def progress(ctx: RunContext) -> Any:
    """A movers' progress callback that emits each event through the run (short details in its message)."""
    return lambda event, details: ctx.emit(event, f"{event} {_short(details)}", **details)


def _short(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, (int, float, str)))[:160]


def source_host(ctx: RunContext) -> Any:
    """The run's source host (the plan's data steps carry it: observed when planning)."""
    from liferaft.configure import host_from_dict
    from liferaft.errors import RunFailed

    found = (ctx.step.params.get("source_host") if ctx.step is not None else None) or next(
        (s.params["source_host"] for s in ctx.plan.steps if s.params.get("source_host")), None)
    if found is None:
        raise RunFailed("the plan names no source host")
    return host_from_dict(found)


def target_host(ctx: RunContext) -> Any:
    """The run's target host, read from the journal once per run context and kept in its cache: the kinds' verify
    runs on worker threads, which must not touch the journal (call this once on the runner's thread first)."""
    from liferaft.engine.results import target_host as from_journal

    key = "datasets:target_host"
    if key not in ctx.cache:
        ctx.cache[key] = from_journal(ctx)
    return ctx.cache[key]


def target_hosts(ctx: RunContext) -> list[Any]:
    """Every host the run's allocation made ready (the first is `target_host`); none when it allocated none."""
    from liferaft.engine.results import target_hosts as from_journal
    from liferaft.errors import RunFailed

    try:
        return from_journal(ctx)
    except RunFailed:
        return []
