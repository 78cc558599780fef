"""Small helpers the dataset kinds share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack

SETUP_TIMEOUT_S = 600.0  # a server playbook at a standby host


def progress(ctx: RunContext) -> Any:
    """A movers' progress callback that emits each event through the run (short details in its message)."""
    return lambda event, details: ctx.emit(event, f"{event} {_short(details)}", **details)


def _short(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, (int, float, str)))[:160]


def data_path(stack: Stack, site: str) -> str:
    """The site's `data_path` setting (where the bytes of a move into it flow): auto, target or controller."""
    return str(getattr(stack.site(site), "data_path", "auto"))


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


def both_ends(ctx: RunContext) -> list[Any]:
    """The run's source host, and its target host when the run has one yet (an undo before the allocation)."""
    from liferaft.errors import RunFailed

    hosts = [source_host(ctx)]
    try:
        hosts.append(target_host(ctx))
    except RunFailed:
        pass
    return hosts


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
    from liferaft.configure import ansible_events, run_playbook

    stack = ctx.require_stack()
    on_event = ansible_events(ctx)
    duration, changed = 0.0, 0
    for playbook in kind.target_playbooks(stack, datasets):
        variables, secret_vars = kind.playbook_vars(ctx, datasets, host.address)
        res = run_playbook(playbook, [host], variables={"liferaft_listen_address": host.address, **variables},
                           secret_variables=secret_vars, on_event=on_event, base_dir=stack.base_dir,
                           state_dir=ctx.state_dir)
        duration, changed = duration + res.duration_s, changed + res.changed
    return {"duration_s": round(duration, 2), "changed": changed}


def state_secret(ctx: RunContext, filename: str) -> str:
    """A secret liferaft makes itself once per stack (its migration accounts' passwords): generated at the first
    use, kept owner-only (0600) in the stack's state folder, registered with the run (never journaled)."""
    import os
    import secrets

    from liferaft.engine.journal import stack_dir

    path = stack_dir(ctx.state_dir, ctx.plan.stack) / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    value = path.read_text().strip()
    ctx.add_secret(value)
    return value


def deploy_standby_server(ctx: RunContext, host: TargetHost, playbook: str, variables: dict[str, Any],
                          secret_vars: dict[str, Any], what: str) -> dict[str, Any]:
    """A kind's server playbook at the standby host (prepare.yml before it when the set-up left it out: the record
    said the host was installed, but the server is gone -- a drill's teardown removed it -- or it is another host)."""
    from liferaft.configure import ansible_events, run_playbook

    prepared = any(s.params.get("playbook") == "prepare.yml" for s in ctx.plan.steps)
    playbooks = ([] if prepared else ["prepare.yml"]) + [playbook]
    ctx.emit("standby.deploy", f"deploying {what} on the standby {host.name} ({', '.join(playbooks)})", host=host.name)
    res = run_playbook(playbooks, [host], variables={"liferaft_listen_address": host.address, **variables},
                       secret_variables=secret_vars, on_event=ansible_events(ctx, changes=False),
                       base_dir=ctx.require_stack().base_dir, timeout=SETUP_TIMEOUT_S, state_dir=ctx.state_dir)
    return {"deployed": True, "duration_s": round(res.duration_s, 2)}


class NoServer:
    """What a kind whose data needs no server at the target answers (objects, files): no port, no playbook."""

    def ports(self, ds: Dataset) -> tuple[int, ...]:
        return ()

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return []

    def playbook_vars(self, ctx: RunContext, datasets: list[Dataset], address: str
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}


class HostedKind:
    """Defaults of the kinds whose data lives on the site's compute hosts (every kind but objects): the source
    refuses writes in the freeze, which needs `prepare` first; no release step, no write ledger."""

    freezes_source: ClassVar[bool] = True
    release_id: ClassVar[str | None] = None
    ledger: ClassVar[bool] = False
    summary_name: ClassVar[str] = "method"
    seed_needs_prepare: ClassVar[bool] = True

    def provider(self, stack: Stack, site: str) -> str:
        return str(stack.site(site).compute)

    def ports(self, ds: Dataset) -> tuple[int, ...]:
        """A server's port (the target opens it to the source host and the controller only)."""
        return (int(ds.spec.port),)


class HostedStandby:
    """The standby of a server kind lives on the standby site's compute host, reached at the source on its port."""

    def source_ports(self, ds: Dataset) -> list[int]:
        return [int(ds.spec.port)]

    def standby_place(self, stack: Stack, ds: Dataset, target: str) -> str:
        return str(stack.site(target).compute)


# ---------------------------------------------------------------------------------------------- set-aside copies
# Where the kinds that keep their old copy as a file (a MariaDB dump, a Redis RDB) keep it on an old primary before a
# failback's standby is made over it (`set_aside_lines`): outside every path a teardown removes (liferaft's servers'
# data dirs, the services' `/var/lib/liferaft/<svc>` roots: a service name takes no '_').
SET_ASIDE_ROOT = "/var/lib/liferaft/set_aside"


def set_aside_name(tag: str) -> str:
    """`tag` ("before_<run>") as one safe path or name component."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag).strip(".") or "before_move"


def set_aside_dir(stack: str, tag: str) -> str:
    """The folder (on the old primary's host) holding a stack's set-aside files of one failback."""
    return f"{SET_ASIDE_ROOT}/{set_aside_name(stack)}/{set_aside_name(tag)}"
