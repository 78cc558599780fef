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


def source_address(ctx: RunContext) -> str | None:
    """The run's source host's address, None when the plan has none (a first deployment copies from nowhere)."""
    from liferaft.errors import RunFailed

    try:
        return str(source_host(ctx).address)
    except RunFailed:
        return None


def allow_from(ctx: RunContext, host: Any) -> list[str]:
    """CIDRs the step's `allow_from` names (a deploy: the hosts the stack's other sites declare), plus this
    controller as `host` sees it (`$SSH_CLIENT` there; behind NAT not the address it routes from). Empty when the
    step names none (a failover admits its source and this controller only)."""
    from liferaft.configure.remote import seen_from

    nets = list((ctx.step.params.get("allow_from") if ctx.step is not None else None) or [])
    if ctx.step is None or "allow_from" not in ctx.step.params:
        return nets
    key = f"datasets:seen_from:{host.address}"
    if key not in ctx.cache:
        ctx.cache[key] = seen_from(host)
    seen = ctx.cache[key]
    return sorted(set(nets + ([f"{seen}/32"] if seen else [])))


def run_target_playbooks(ctx: RunContext, kind: Any, datasets: list[Any], host: Any) -> dict[str, Any]:
    """The kind's target playbooks (`target_playbooks`, with its `playbook_vars`) on `host`, one after another, as
    the `data.server` step runs them: {"duration_s", "changed"} (Ansible's changed count)."""
    from liferaft.configure import run_playbook

    stack = ctx.require_stack()

    def on_event(ev: Any) -> None:
        if ev.kind in ("task.start", "task.failed", "unreachable", "task.changed"):
            data = {k: v for k, v in ev.to_dict().items() if k not in ("kind", "message")}
            ctx.emit(f"ansible.{ev.kind}", f"{ev.host}: {ev.task} {ev.message}".strip(), **data)

    duration, changed = 0.0, 0
    for playbook in kind.target_playbooks(stack, datasets):
        variables, secret_vars = kind.playbook_vars(ctx, datasets, host.address)
        res = run_playbook(playbook, [host], variables={"liferaft_listen_address": host.address, **variables},
                           secret_variables=secret_vars, on_event=on_event, base_dir=stack.base_dir,
                           state_dir=ctx.state_dir)
        duration, changed = duration + res.duration_s, changed + res.changed
    return {"duration_s": round(duration, 2), "changed": changed}
