"""The steps only a first deployment (`liferaft deploy`, the plan builder's mode `deploy`) has.

- `data.create`      one kind's datasets made, empty, at the run's site through the kind's optional `create`
                     (PostgreSQL: its target playbook -- the server, the databases, who may connect; buckets: made
                     where missing); what was there before is journaled first (`existing`), so the undo removes
                     only what this run made;
- `service.install`  `service.deploy` whose undo also removes what the service's kind put on the hosts (its
                     teardown lines: unit, code, config, logs): a rolled-back deploy leaves the site as it found it;
- `deploy.changes`   counts the run's steps that changed something (Ansible's changed counts, databases and
                     buckets made, DNS values replaced, hosts allocated): "nothing to change" is a fact, journaled
                     in the run's summary.
"""

from __future__ import annotations

from typing import Any, ClassVar

from liferaft.datasets.base import kind_named
from liferaft.datasets.registry import from_params
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.results import target_hosts as run_target_hosts
from liferaft.engine.runner import RunContext
from liferaft.errors import RunFailed, UsageError
from liferaft.steps.hosts import DeployParams, DeployService
from liferaft.workloads import kind_of, workload
from liferaft.workloads.base import refuse_source_host
from liferaft.workloads.probe import answers

__all__ = ["DataCreate", "DeployChanges", "InstallService", "changed"]


@register
class DataCreate(StepKind):
    """One kind's datasets made at the run's site, empty (undo: what this run made is removed)."""

    name = "data.create"
    undoable = True
    serial: ClassVar[str | None] = "ansible"  # a kind may install a server with a playbook
    phase: ClassVar[str | None] = "data"

    def _group(self, ctx: RunContext, step: Step) -> tuple[Any, list[Any]]:
        return kind_named(str(step.params["kind"])), from_params(ctx.require_stack(), step.params)

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        kind, group = self._group(ctx, step)
        if "existing" not in ctx.memo:  # journaled before anything is made: the undo keeps what was there
            ctx.remember(existing=kind.existing(ctx, group))
        out: dict[str, Any] = kind.create(ctx, group, ctx.memo["existing"])
        made = out.get("created") or []
        ctx.emit("data.created", f"{kind.noun}s: " + (f"made {', '.join(made)}" if made else "all there already"),
                 created=list(made))
        return out

    def undo(self, ctx: RunContext, step: Step) -> None:
        if "existing" not in ctx.memo:
            return  # it never looked, so it made nothing
        kind, group = self._group(ctx, step)
        kind.uncreate(ctx, group, ctx.memo["existing"])


@register
class InstallService(DeployService):
    """`service.deploy` for a first deployment: undone by stopping the service and removing what its kind put on
    every host (the kind's teardown lines)."""

    name = "service.install"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        if "answered" not in ctx.memo:
            # Journaled before deploying: a service that already answered on every host was not made by this run,
            # and its rollback leaves it running (a second deploy's rollback must not remove the first's work).
            wl = self._workload(ctx, DeployParams.from_json(step.params))
            urls = [kind_of(wl).health_url(wl, h.address) for h in run_target_hosts(ctx)]
            ctx.remember(answered=bool(urls) and all(u is not None and answers(u) for u in urls))
        return super().apply(ctx, step)

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.configure import remote

        if ctx.memo.get("answered"):
            ctx.emit("service.kept", f"{step.params.get('service')} answered before this deploy: left as it is")
            return
        super().undo(ctx, step)
        params = DeployParams.from_json(step.params)
        try:
            hosts = run_target_hosts(ctx)
            wl = workload(ctx.require_stack(), params.service)
        except (RunFailed, KeyError, UsageError):
            return  # no host, or the service is gone from the stack file: nothing liferaft can name to remove
        lines = kind_of(wl).teardown_lines(ctx.require_stack(), [wl])
        for host in reversed(hosts):
            refuse_source_host(ctx, host.address)
            remote.ssh(host, "sh -s", stdin="\n".join(lines) + "\n", timeout=120.0,
                       what=f"remove service {wl.name}")
            ctx.emit("service.removed", f"{wl.name} removed from {host.name} ({host.address})", service=wl.name,
                     address=host.address)


def changed(result: dict[str, Any]) -> bool:
    """Did a step with this result change anything? Its `changed` (Ansible's count, or a flag) or what it
    `created`."""
    value = result.get("changed")
    return bool(value) or bool(result.get("created"))


@register
class DeployChanges(StepKind):
    """What the deploy changed, from its steps' journaled results: the count goes to the run's summary."""

    name = "deploy.changes"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        steps = [r for r in ctx.journal.steps(ctx.run_id)
                 if r.status == "done" and r.step_id != step.id and isinstance(r.result, dict)]
        ids = [r.step_id for r in steps if changed(r.result)]
        ctx.summarise(changed_steps=len(ids), changed=ids)
        message = (f"nothing to change: 0 steps changed ({len(steps)} checked)" if not ids
                   else f"{len(ids)} step(s) changed: {', '.join(ids)}")
        ctx.emit("deploy.changes", message, changed=ids, checked=len(steps))
        return {"changed_steps": len(ids), "changed_ids": ids, "checked": len(steps)}
