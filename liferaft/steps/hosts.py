"""Step kinds that get and configure the target host: allocate, configure (a playbook), PostgreSQL, services."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from liferaft.configure import ansible_events, host_to_dict
from liferaft.configure.remote import controller_address
from liferaft.datasets import kind_of as dataset_kind
from liferaft.datasets.registry import datasets
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.results import target_hosts as run_target_hosts
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, QuotaExceeded, RunFailed, Unreachable, UsageError
from liferaft.workloads import Workload, kind_of, workload
from liferaft.workloads.base import refuse_source_host
from liferaft.workloads.playbook import stop_lines
from liferaft.workloads.probe import answers, health_url, wait_silent

HOST_READY_TIMEOUT_S = 120.0


def host_ready_timeout() -> float:
    """How long the allocate step waits for each new host to answer SSH: LIFERAFT_HOST_READY_TIMEOUT seconds."""
    value = os.environ.get("LIFERAFT_HOST_READY_TIMEOUT")
    try:
        return max(1.0, float(value)) if value else HOST_READY_TIMEOUT_S
    except ValueError:
        raise UsageError(f"LIFERAFT_HOST_READY_TIMEOUT={value!r} is not a number of seconds") from None


def allowed_networks(ctx: RunContext, step: Step, address: str) -> list[str]:
    """Who may reach the target's databases: this controller, and the source host (replication, rollback)."""
    nets = [f"{controller_address(address)}/32"]
    src = step.params.get("source_host")
    if src:
        nets.append(f"{src['address']}/32")
    return sorted(set(nets))


@register
class Allocate(StepKind):
    name = "host.allocate"
    phase: ClassVar[str | None] = "provision"
    drill: ClassVar[str | None] = "keep"
    undoable = True

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        compute = ctx.provider(step.params["provider"]).require("compute")
        free = getattr(compute, "free_hosts", None)
        return {"free": free() if free else None}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        """Create (or allocate) the site's `count` hosts -- `name`, `name-1`, ... -- each journaled before the
        wait, then wait until every one answers SSH with its pinned key. The first is the target host."""
        from liferaft.configure import TargetHost
        from liferaft.providers.base import HostSpec

        compute = ctx.provider(step.params["provider"]).require("compute")
        name = step.params["name"]
        names = [name] + [f"{name}-{i}" for i in range(1, int(step.params.get("count", 1)))]
        model = ctx.require_stack().model
        ports = tuple(p for svc in model.services.values() for p in svc.ports)
        db_ports = tuple(p for ds in datasets(ctx.require_stack()) for p in dataset_kind(ds).ports(ds))
        source = next((s.params["source_host"] for s in ctx.plan.steps if s.params.get("source_host")), None)
        peers = (source["address"],) if source else ()
        ids: list[str] = list(ctx.memo.get("host_ids") or [])
        quota = getattr(compute, "quota", None)
        if quota is not None:  # the account's limit, checked before anything is created (QuotaExceeded names it)
            quota().check_room(step.params["provider"], names)
        if step.params.get("report_new") and "new_hosts" not in ctx.memo:
            # a deploy says whether it allocated anything (read before the first create; kept for a resume)
            listed = getattr(compute, "list_hosts", None)
            known = {h.name for h in listed()} if listed is not None else set()
            ctx.remember(new_hosts=[n for n in names if n not in known])
        created = []
        tags = {"liferaft-stack": ctx.plan.stack, "liferaft-run": ctx.run_id}
        for n in names:
            try:
                host = compute.create_host(HostSpec(name=n, ports=ports, private_ports=db_ports, peers=peers,
                                                    tags=tags))
            except QuotaExceeded:
                # The vendor refused one (its limit, which its API may not publish): the ones made go too.
                for host_id in reversed(ids):
                    compute.destroy_host(host_id)
                ctx.remember(host_id=None, host_ids=[])
                raise
            ids += [] if host.id in ids else [host.id]
            ctx.remember(host_id=ids[0], host_ids=ids)  # before waiting: a rollback finds every host made
            created.append(host)
        try:
            ready = [compute.wait_reachable(h, timeout=host_ready_timeout()) for h in created]
        except Unreachable as exc:
            for host_id in reversed(ids):  # a host that never answers is not left running (and billed)
                compute.destroy_host(host_id)
            ctx.remember(host_id=None, host_ids=[])
            raise RunFailed(f"a new host did not answer SSH in time ({exc.detail}); the {len(ids)} host(s) this "
                            "step created were deleted", hint="`liferaft resume RUN` creates them again; "
                            "`liferaft rollback RUN` undoes the run") from None
        set_firewall = getattr(compute, "set_firewall", None)
        if len(ready) > 1 and db_ports and set_firewall is not None:
            # The site's other hosts run the service against the databases on the first: its firewall lets them in.
            others = tuple(h.address for h in ready[1:] if h.address)
            set_firewall(HostSpec(name=name, ports=ports, private_ports=db_ports, peers=peers + others,
                                  tags=tags))
        targets = []
        for host in ready:
            if host.ssh is None or host.address is None:
                raise CheckFailed(f"host {host.name} has no SSH access; liferaft cannot configure it")
            th = TargetHost.from_access(host.name, host.ssh)
            ctx.emit("host.allocated", f"{host.name}: {host.id} at {th.address}", host=host.id, address=th.address)
            targets.append({**host_to_dict(th), "host_id": host.id})
        new = {"changed": list(ctx.memo.get("new_hosts") or [])} if step.params.get("report_new") else {}
        return {**targets[0], "hosts": targets, **new}

    def undo(self, ctx: RunContext, step: Step) -> None:
        if step.params.get("report_new") and ctx.memo.get("new_hosts") == []:
            return  # a deploy that found its hosts allocated already releases nothing
        compute = ctx.provider(step.params["provider"]).require("compute")
        ids = ctx.memo.get("host_ids") or ([ctx.memo["host_id"]] if ctx.memo.get("host_id") else [])
        for host_id in reversed(ids):
            compute.destroy_host(host_id)


@register
class Configure(StepKind):
    name = "host.configure"
    serial: ClassVar[str | None] = "ansible"
    phase: ClassVar[str | None] = "configure"
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import run_playbook

        # Every host the allocation made ready (a site's `hosts: N`), one run each: the variable is the host's own.
        duration, changed = 0.0, 0
        for host in run_target_hosts(ctx):
            res = run_playbook(step.params["playbook"], [host], variables={"liferaft_listen_address": host.address},
                               on_event=ansible_events(ctx), base_dir=ctx.require_stack().base_dir,
                               state_dir=ctx.state_dir)
            duration, changed = duration + res.duration_s, changed + res.changed
        return {"duration_s": round(duration, 2), "changed": changed}


@dataclass(frozen=True)
class DeployParams:
    """`service.deploy`'s parameters (the plan's JSON, parsed here at the journal edge)."""

    service: str  # services.<name>; its workload kind is the stack's

    @classmethod
    def from_json(cls, params: dict[str, Any]) -> DeployParams:
        service = params.get("service")
        if not isinstance(service, str) or not service:
            raise UsageError(f"service.deploy needs a service name, got {service!r}")
        return cls(service=service)

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service}


@dataclass(frozen=True)
class DeployResult:
    """What `service.deploy` journals: which kind deployed which service on which host, and the kind's own
    (secret-free) figures."""

    service: str
    kind: str
    host: str
    detail: dict[str, Any] = field(default_factory=dict, hash=False)
    hosts: tuple[str, ...] = ()  # every host it runs on when there are several (the first is `host`)

    def to_json(self) -> dict[str, Any]:
        return {**self.detail, "service": self.service, "kind": self.kind, "host": self.host,
                **({"hosts": list(self.hosts)} if len(self.hosts) > 1 else {})}


@register
class DeployService(StepKind):
    """Deploy one service (any workload kind) on every host the run allocated (a site's `hosts: N`; its data stays on
    the first, the target host). Undone by stopping it there (its data and files stay): after a rollback the source
    serves again, and a client still holding the target's address must get errors, not acknowledgements for writes
    nobody will carry back."""

    name = "service.deploy"
    undoable = True
    serial: ClassVar[str | None] = "ansible"  # playbooks must not overlap on one host

    def _workload(self, ctx: RunContext, params: DeployParams) -> Workload:
        return workload(ctx.require_stack(), params.service)

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        params = DeployParams.from_json(step.params)
        wl = self._workload(ctx, params)
        if ctx.memo.get("kind") != wl.kind:
            ctx.remember(kind=wl.kind)  # a rollback stops it even if the stack file no longer has the service
        hosts = run_target_hosts(ctx)
        detail = kind_of(wl).deploy(ctx, wl, hosts[0])
        for extra in hosts[1:]:
            kind_of(wl).deploy(ctx, wl, extra)
        return DeployResult(wl.name, wl.kind, hosts[0].name, dict(detail or {}),
                            tuple(h.name for h in hosts)).to_json()

    def verify(self, ctx: RunContext, step: Step) -> None:
        wl = self._workload(ctx, DeployParams.from_json(step.params))
        health = kind_of(wl).health(wl)
        if health is not None:
            from liferaft.steps.tls import check_health

            for host in run_target_hosts(ctx):
                check_health(ctx.require_stack(), wl.name, health, host.address, timeout=30.0)

    def undo(self, ctx: RunContext, step: Step) -> None:
        params = DeployParams.from_json(step.params)
        try:
            hosts = run_target_hosts(ctx)
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing was deployed
        try:
            wl = self._workload(ctx, params)
        except UsageError:
            kind = ctx.memo.get("kind")
            if not kind:
                raise
            wl = Workload(kind, params.service, None)  # gone from the stack file: stopped all the same
        kind = kind_of(wl)
        for host in reversed(hosts):
            # Undoing a deploy: the service stopped and every file it wrote removed (its config holds secrets);
            # a kind that cannot remove is stopped.
            (getattr(kind, "remove", None) or kind.stop)(ctx, wl, host)


# Kept for the steps and tests that import them from here; they live with the workload kinds now.
def stop_services_lines(services: list[str]) -> list[str]:
    """Shell lines that stop playbook services (see `liferaft.workloads.playbook.stop_lines`)."""
    return stop_lines(services)


def service_health_url(ctx: RunContext, service: str, address: str) -> str | None:
    svc = ctx.require_stack().model.services.get(service)
    return None if svc is None or svc.health is None else health_url(svc.health, address)


__all__ = [  # the kinds above register themselves; these helpers are imported from here by other steps
    "DeployParams",
    "DeployResult",
    "DeployService",
    "ansible_events",
    "answers",
    "health_url",
    "refuse_source_host",
    "service_health_url",
    "stop_services_lines",
    "wait_silent",
]
