"""Step kinds of the warm standby tier (`sites.<alt>.standby: warm`): the services kept deployed, stopped, at the
standby host, and started there by a cold failover without a deploy.

- `standby.service`  (replicate's set-up, mode `standby`) the service deployed at the standby host against the
                     standby's own database copy and bucket, and left STOPPED (nobody may write into a copy that is
                     being replicated into); the host is marked with the digest of what was deployed
                     (`WarmKind.digest`). When the host already holds that digest, only the stop is made sure of.
- `service.start`    (cold failover) the service the set-up left there started, no playbook run; when the host does
                     not hold the planned digest (torn down, or the stack's service changed since) it is deployed
                     instead, as `service.deploy` would. Undone by stopping it there.

Both act through the workload contract's warm half (`liferaft.workloads.base.WarmKind`); none knows a kind by name.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.results import target_host
from liferaft.engine.runner import RunContext
from liferaft.errors import LiferaftError, RunFailed, UsageError
from liferaft.workloads import Workload, kind_of, workload
from liferaft.workloads.base import WarmKind, warm_kind
from liferaft.workloads.probe import http_check


def _warm(ctx: RunContext, step: Step) -> tuple[Workload, WarmKind]:
    service = step.params.get("service")
    if not isinstance(service, str) or not service:
        raise UsageError(f"{step.kind} needs a service name, got {service!r}")
    wl = workload(ctx.require_stack(), service)
    kind = warm_kind(wl)
    if kind is None:
        raise UsageError(f"service {service!r} is of workload kind {wl.kind!r}, which cannot be kept warm",
                         hint="set the site's `standby: pilot-light`")
    return wl, kind


@register
class KeepServiceWarm(StepKind):
    """Set-up: the service deployed and stopped at the standby host, at the planned digest."""

    name = "standby.service"
    serial: ClassVar[str | None] = "ansible"  # playbooks must not overlap on one host

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        wl, kind = _warm(ctx, step)
        digest = str(step.params["digest"])
        host = target_host(ctx)
        found = kind.deployed_digest(wl, host)
        if found == digest:
            kind_of(wl).stop(ctx, wl, host)  # already there: only made sure it is not running
            out: dict[str, Any] = {"host": host.name, "digest": digest, "state": "stopped", "deployed": False}
        else:
            out = {**kind.deploy_stopped(ctx, wl, host, digest), "deployed": True}
        ctx.emit("standby.service", f"service {wl.name}: deployed at the standby {host.name} and stopped "
                 f"({'deployed now' if out['deployed'] else 'already current'}; digest {digest[:12]})",
                 service=wl.name, digest=digest, deployed=out["deployed"])
        return {**out, "service": wl.name, "kind": wl.kind, "address": host.address}


@register
class StartService(StepKind):
    """Cold failover from a warm standby: start the service already deployed there (deploy it if it is not)."""

    name = "service.start"
    undoable = True
    serial: ClassVar[str | None] = "ansible"  # its fallback runs the playbook

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        wl, kind = _warm(ctx, step)
        if ctx.memo.get("kind") != wl.kind:
            ctx.remember(kind=wl.kind)  # a rollback stops it even if the stack file no longer has the service
        host = target_host(ctx)
        digest = str(step.params.get("digest") or "")
        t0 = time.monotonic()
        found = kind.deployed_digest(wl, host)
        checked_s = round(time.monotonic() - t0, 3)
        if found and found == digest:
            try:
                out = kind.start(ctx, wl, host)
            except LiferaftError as e:
                why = f"starting it failed ({e.message[:200]})"
            else:
                ctx.emit("service.started", f"service {wl.name} started at {host.name} ({host.address}): the warm "
                         "standby's deployment, no playbook run", service=wl.name, address=host.address)
                return {**out, "service": wl.name, "kind": wl.kind, "deployed": False, "checked_s": checked_s}
        else:
            why = (f"the standby host holds {'digest ' + found[:12] if found else 'no warm deployment'}, not the "
                   f"planned {digest[:12]}")
        ctx.emit("service.start_fallback", f"service {wl.name}: {why}; deploying it instead", service=wl.name,
                 found=found, planned=digest)
        detail = kind_of(wl).deploy(ctx, wl, host)
        return {**dict(detail or {}), "service": wl.name, "kind": wl.kind, "host": host.name, "deployed": True}

    def verify(self, ctx: RunContext, step: Step) -> None:
        wl, kind = _warm(ctx, step)
        health = kind.health(wl)
        if health is not None:
            http_check(target_host(ctx).address, health, timeout=30.0)

    def undo(self, ctx: RunContext, step: Step) -> None:
        try:
            host = target_host(ctx)
        except (RunFailed, KeyError):
            return
        service = str(step.params["service"])
        try:
            wl = workload(ctx.require_stack(), service)
        except UsageError:
            kind = ctx.memo.get("kind")
            if not kind:
                raise
            wl = Workload(kind, service, None)
        kind_of(wl).stop(ctx, wl, host)


__all__ = ["KeepServiceWarm", "StartService"]
