"""The workload contract: how one kind of service runs at a site, behind one small Protocol.

A **workload** is one entry of the stack file's `services:` section. Its kind (today: `playbook`, an Ansible
playbook plus an artifact directory; issue 14 adds `container`) owns deploy, stop, health and what a teardown must
remove. The planner, the step library and the drill iterate over `workloads(stack)` and call the kind; they never
branch on its name. Adding a kind is one module implementing `WorkloadKind` plus one line in
`liferaft.workloads.registry` (a test or a plug-in may call `register_kind` itself).

Every kind gets the same inputs for a service (see `liferaft.configure.deploy.service_vars`): its databases and
buckets at the target, its plain settings (`services.<name>.env`) and its app secrets (`services.<name>.secrets`,
resolved from references). Secrets reach the workload only through a channel that is neither a command line nor
the journal; a kind registers every secret value it handles with `ctx.add_secret`, so the journal refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack
    from liferaft.stack.model import HealthCheck


@dataclass(frozen=True)
class Workload:
    kind: str  # "playbook" | ...
    name: str  # services.<name>
    spec: Any  # the stack model's entry (liferaft.stack.model.Service), None when the stack no longer has it


class WorkloadKind(Protocol):
    name: ClassVar[str]

    def entries(self, model: Any) -> dict[str, Any]:
        """This kind's entries in a stack model."""
        ...

    def deploy(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        """Deploy (idempotent: a resumed run calls it again) on the target host, on the target's datasets, and
        return once the service is up. The result is JSON-safe and secret-free (it is journaled)."""
        ...

    def stop(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        """Stop it there (a fence, a warm standby kept stopped): it must no longer answer; its data and files stay.
        Never on the source host (`refuse_source_host`); an unreachable host whose service does not answer either
        is skipped (an event). `stop_on_host` does all of this for a kind's shell lines."""
        ...

    def remove(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        """Stop it there and remove every file its deploy wrote (the rollback of a deploy): what `teardown_lines`
        removes, for this one host, with `stop`'s guarantees. Optional: a kind without it is only stopped."""
        ...

    def health(self, wl: Workload) -> HealthCheck | None:
        """The health check that says the service is up (path, port, expected status), if it has one."""
        ...

    def health_url(self, wl: Workload, address: str) -> str | None: ...

    def teardown_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        """Shell lines (sh, run as root on a drill's target) that stop and remove everything the kind put there for
        these workloads: processes, units, artifacts, config files (they hold secrets), logs, pidfiles.
        Idempotent; they define `sd` (true when systemd runs) themselves."""
        ...

    def fence_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        """Shell lines (sh, as root) run on a site the stack left, at the first contact after a cold failover: stop
        these workloads there and keep them from starting again (a unit disabled); files and data stay. Each
        prints `liferaft-fence: done: ...` or `liferaft-fence: failed: ...`. Optional (nothing to stop)."""
        ...

    def unfence_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        """The undo of `fence_lines`, for the rollback of the move that fenced the site (it is the active site
        again). Same output convention. Optional, with `fence_lines`."""
        ...


class WarmKind(WorkloadKind, Protocol):
    """What a kind adds to keep its services deployed but stopped at a warm standby (`sites.<alt>.standby: warm`).
    A kind without these methods keeps its services pilot-light: deployed at failover."""

    def digest(self, stack: Stack, wl: Workload, site: str) -> str:
        """A digest of everything deploy uses for `wl` at `site` except secret values (those are never stored, not
        even hashed): a different digest means the standby's copy of the service is out of date."""
        ...

    def deploy_stopped(self, ctx: RunContext, wl: Workload, host: TargetHost, digest: str) -> dict[str, Any]:
        """Deploy as `deploy` does, but leave it stopped (it must not answer), and mark the host with `digest`."""
        ...

    def deployed_digest(self, wl: Workload, host: TargetHost) -> str | None:
        """The digest the host was marked with by `deploy_stopped` (None: not deployed there, or torn down)."""
        ...

    def start(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        """Start what `deploy_stopped` left there, without deploying, and return once it is up."""
        ...


def warm_kind(wl: Workload) -> WarmKind | None:
    """The workload's kind if it can keep a warm standby, else None."""
    kind = kind_of(wl)
    return kind if all(hasattr(kind, m) for m in ("digest", "deploy_stopped", "deployed_digest", "start")) else None


_REGISTRY: dict[str, Any] = {}


def register_kind(kind: Any) -> Any:
    inst = kind() if isinstance(kind, type) else kind
    _REGISTRY[inst.name] = inst
    return kind


def unregister_kind(name: str) -> None:
    _REGISTRY.pop(name, None)


def kind_of(wl: Workload) -> Any:
    from liferaft.workloads import registry  # noqa: F401  (registers the built-in kinds)

    try:
        return _REGISTRY[wl.kind]
    except KeyError:
        from liferaft.errors import UsageError

        raise UsageError(f"unknown workload kind {wl.kind!r}", hint=f"known: {', '.join(sorted(_REGISTRY))}") from None


def source_address(ctx: RunContext) -> str | None:
    """The address of the host the stack ran on before the move (the plan's `source_host`), if the plan knows it."""
    source = next((s.params.get("source_host") for s in ctx.plan.steps if s.params.get("source_host")), None)
    return source.get("address") if source else None


def refuse_source_host(ctx: RunContext, address: str | None) -> None:
    """Never stop or remove anything on the host the stack ran on before the move."""
    if address is not None and source_address(ctx) == address:
        from liferaft.errors import RunFailed

        raise RunFailed(f"refusing to stop services on {address}: it is the source host")


def start_on_host(kind: Any, wl: Workload, host: TargetHost, lines: list[str], *, timeout: float,
                  what: str) -> dict[str, Any]:
    """Run a kind's shell `lines` that start a warm standby's `wl` on `host`, then wait until it is healthy: the
    `start` result every kind returns (host, healthy_at, start_s, healthy_s)."""
    import time

    from liferaft.configure import remote
    from liferaft.workloads.probe import http_check

    t0 = time.monotonic()
    remote.ssh(host, "sh -s", stdin="\n".join(lines) + "\n", timeout=timeout, what=what)
    t1 = time.monotonic()
    health = kind.health(wl)
    healthy_at = http_check(host.address, health, timeout=timeout) if health is not None else None
    return {"host": host.name, "state": "started", "healthy_at": healthy_at, "start_s": round(t1 - t0, 3),
            "healthy_s": round(time.monotonic() - t1, 3)}


def stop_on_host(ctx: RunContext, kind: Any, wl: Workload, host: TargetHost, lines: list[str], *,
                 timeout: float, what: str, silent_timeout: float = 15.0) -> bool:
    """Run a kind's shell `lines` that stop `wl` on `host` (and maybe remove its files), then wait until its health
    URL no longer answers. Never on the source host. An unreachable host is skipped (`service.stop_skipped`) when
    the service does not answer either, else the run fails: nobody can stop it. False when skipped."""
    from liferaft.configure import remote
    from liferaft.errors import RunFailed, Unreachable
    from liferaft.workloads.probe import answers, wait_silent

    refuse_source_host(ctx, host.address)
    svc = wl.name
    url = kind.health_url(wl, host.address)
    try:
        remote.ssh(host, "sh -s", stdin="\n".join(lines) + "\n", timeout=timeout, what=what)
    except Unreachable as exc:
        # Nobody reaches the host to stop it. Harmless only if its service does not answer either.
        if url is not None and answers(url):
            raise RunFailed(f"service {svc} still answers at {url} and {host.address} cannot be reached to "
                            f"stop it: {exc}", hint="stop it by hand (or cut the host off), then roll back "
                            "again") from None
        ctx.emit("service.stop_skipped", f"{svc} on {host.name} ({host.address}): host unreachable, service "
                 "not answering", service=svc, address=host.address, error=str(exc))
        return False
    if url is not None:
        wait_silent(url, timeout=silent_timeout)
    ctx.emit("service.stopped", f"{svc} stopped on {host.name} ({host.address})", service=svc,
             address=host.address)
    return True


def entry_json(kind: str, stack: Stack, wl: Workload, site: str) -> bytes:
    """What a warm standby's digest covers of the stack, for every workload kind: the service's entry (secret
    references, not values), the site's config without its standby and the entries of the service's databases and
    buckets, as canonical JSON."""
    import json

    spec = stack.model.services[wl.name]
    return json.dumps({"kind": kind, "service": wl.name, "spec": spec.model_dump(mode="json"),
                       "site": stack.site(site).model_dump(mode="json", exclude={"standby"}),
                       "databases": {k: stack.model.data.databases[k].model_dump(mode="json")
                                     for k in spec.databases if k in stack.model.data.databases},
                       "buckets": {k: stack.model.data.buckets[k].model_dump(mode="json")
                                   for k in spec.buckets if k in stack.model.data.buckets}},
                      sort_keys=True).encode()
