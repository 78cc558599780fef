"""Step kinds that get and configure the target host: allocate, configure (a playbook), PostgreSQL, services."""

from __future__ import annotations

from typing import Any

from liferaft.errors import CheckFailed
from liferaft.failover.access import controller_address, host_from_dict, host_to_dict
from liferaft.failover.kinds import StepKind, register
from liferaft.failover.plan import Step
from liferaft.failover.runner import RunContext


def target_host(ctx: RunContext) -> Any:
    return host_from_dict(ctx.output("allocate"))


def allowed_networks(ctx: RunContext, step: Step, address: str) -> list[str]:
    """Who may reach the target's databases: this controller, and the source host (replication, rollback)."""
    nets = [f"{controller_address(address)}/32"]
    src = step.params.get("source_host")
    if src:
        nets.append(f"{src['address']}/32")
    return sorted(set(nets))


def ansible_events(ctx: RunContext) -> Any:
    def on_event(ev: Any) -> None:
        if ev.kind in ("task.start", "task.failed", "unreachable", "task.changed"):
            # The event's own kind and message are the emitted event's: passing them twice raised a TypeError that
            # the observer guard swallowed, and no Ansible progress reached the user.
            data = {k: v for k, v in ev.to_dict().items() if k not in ("kind", "message")}
            ctx.emit(f"ansible.{ev.kind}", f"{ev.host}: {ev.task} {ev.message}".strip(), **data)
    return on_event


@register
class Allocate(StepKind):
    name = "host.allocate"
    undoable = True

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        compute = ctx.provider(step.params["provider"]).require("compute")
        free = getattr(compute, "free_hosts", None)
        return {"free": free() if free else None}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import TargetHost
        from liferaft.providers.base import HostSpec

        compute = ctx.provider(step.params["provider"]).require("compute")
        host = compute.create_host(HostSpec(name=step.params["name"], tags={"liferaft-stack": ctx.plan.stack}))
        ctx.remember(host_id=host.id)
        host = compute.wait_reachable(host, timeout=120.0)
        if host.ssh is None or host.address is None:
            raise CheckFailed(f"host {host.name} has no SSH access; liferaft cannot configure it")
        th = TargetHost.from_access(host.name, host.ssh)
        ctx.emit("host.allocated", f"{host.name}: {host.id} at {th.address}", host=host.id, address=th.address)
        return {**host_to_dict(th), "host_id": host.id}

    def undo(self, ctx: RunContext, step: Step) -> None:
        host_id = ctx.memo.get("host_id")
        if host_id:
            ctx.provider(step.params["provider"]).require("compute").destroy_host(host_id)


@register
class Configure(StepKind):
    name = "host.configure"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import run_playbook

        host = target_host(ctx)
        res = run_playbook(step.params["playbook"], [host], variables={"liferaft_listen_address": host.address},
                           on_event=ansible_events(ctx), base_dir=ctx.require_stack().base_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed}


def database_vars(ctx: RunContext, keys: list[str], address: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    stack = ctx.require_stack()
    dbs, secrets = [], {}
    for key in keys:
        d = stack.model.data.databases[key]
        dbs.append({"key": key, "engine": d.engine, "version": d.version, "name": d.name, "owner": d.owner,
                    "port": d.port, "host": address, "replication": True})
        secrets[key] = {"password": ctx.secret(d.password)}
    return dbs, {"liferaft_secrets": {"databases": secrets, "buckets": {}}}


@register
class DbServer(StepKind):
    name = "db.server"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import run_playbook

        host = target_host(ctx)
        dbs, secret_vars = database_vars(ctx, step.params["databases"], host.address)
        res = run_playbook("postgresql.yml", [host], variables={
            "liferaft_listen_address": host.address, "liferaft_databases": dbs,
            "liferaft_allowed_networks": allowed_networks(ctx, step, host.address)},
            secret_variables=secret_vars, on_event=ansible_events(ctx), base_dir=ctx.require_stack().base_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed}


@register
class DeployService(StepKind):
    name = "service.deploy"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import run_playbook
        from liferaft.configure.deploy import service_vars

        stack = ctx.require_stack()
        svc = step.params["service"]
        host = target_host(ctx)
        sv = service_vars(stack, svc, ctx.plan.target, host, create_schema=False,
                          allowed_networks=allowed_networks(ctx, step, host.address))
        for value in _leaves(sv.secret_variables):
            ctx.add_secret(value)
        res = run_playbook([stack.playbook_path(svc)], [host], variables=sv.variables,
                           secret_variables=sv.secret_variables, on_event=ansible_events(ctx),
                           base_dir=stack.base_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed, "host": host.name}

    def verify(self, ctx: RunContext, step: Step) -> None:
        from liferaft.failover.steps.verify import http_check

        svc = ctx.require_stack().model.services[step.params["service"]]
        if svc.health is not None:
            http_check(target_host(ctx).address, svc.health, timeout=30.0)


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _leaves(v)]
    return [value] if isinstance(value, str) and len(value) >= 4 else []
