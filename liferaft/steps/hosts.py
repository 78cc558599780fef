"""Step kinds that get and configure the target host: allocate, configure (a playbook), PostgreSQL, services."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from liferaft.configure import host_from_dict, host_to_dict
from liferaft.configure.remote import controller_address
from liferaft.datasets import kind_of
from liferaft.datasets import postgres as _pg
from liferaft.datasets.registry import datasets
from liferaft.engine import results
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, RunFailed, Unreachable, UsageError

HOST_READY_TIMEOUT_S = 120.0


def host_ready_timeout() -> float:
    """How long the allocate step waits for each new host to answer SSH: LIFERAFT_HOST_READY_TIMEOUT seconds."""
    value = os.environ.get("LIFERAFT_HOST_READY_TIMEOUT")
    try:
        return max(1.0, float(value)) if value else HOST_READY_TIMEOUT_S
    except ValueError:
        raise UsageError(f"LIFERAFT_HOST_READY_TIMEOUT={value!r} is not a number of seconds") from None


def target_host(ctx: RunContext) -> Any:
    return host_from_dict(ctx.output("allocate"))


def database_vars(ctx: RunContext, keys: list[str], address: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """postgresql.yml's variables (kept here for the standby set-up; the PostgreSQL kind owns them)."""
    return _pg.database_vars(ctx, keys, address)


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
    phase: ClassVar[str | None] = "provision"
    drill: ClassVar[str | None] = "keep"

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
        db_ports = tuple(p for ds in datasets(ctx.require_stack()) for p in kind_of(ds).ports(ds))
        source = next((s.params["source_host"] for s in ctx.plan.steps if s.params.get("source_host")), None)
        peers = (source["address"],) if source else ()
        ids: list[str] = list(ctx.memo.get("host_ids") or [])
        created = []
        for n in names:
            host = compute.create_host(HostSpec(name=n, ports=ports, private_ports=db_ports, peers=peers,
                                                tags={"liferaft-stack": ctx.plan.stack, "liferaft-run": ctx.run_id}))
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
        targets = []
        for host in ready:
            if host.ssh is None or host.address is None:
                raise CheckFailed(f"host {host.name} has no SSH access; liferaft cannot configure it")
            th = TargetHost.from_access(host.name, host.ssh)
            ctx.emit("host.allocated", f"{host.name}: {host.id} at {th.address}", host=host.id, address=th.address)
            targets.append({**host_to_dict(th), "host_id": host.id})
        return {**targets[0], "hosts": targets}

    def undo(self, ctx: RunContext, step: Step) -> None:
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

        host = results.target_host(ctx)
        res = run_playbook(step.params["playbook"], [host], variables={"liferaft_listen_address": host.address},
                           on_event=ansible_events(ctx), base_dir=ctx.require_stack().base_dir,
                           state_dir=ctx.state_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed}


@register
class DeployService(StepKind):
    """Deploy one service on the target. Undone by stopping it there (its data and files stay): after a rollback
    the source serves again, and a client still holding the target's address must get errors, not acknowledgements
    for writes nobody will carry back."""

    name = "service.deploy"
    undoable = True

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
                           base_dir=stack.base_dir, state_dir=ctx.state_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed, "host": host.name}

    def verify(self, ctx: RunContext, step: Step) -> None:
        from liferaft.steps.verify import http_check

        svc = ctx.require_stack().model.services[step.params["service"]]
        if svc.health is not None:
            http_check(target_host(ctx).address, svc.health, timeout=30.0)

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.steps.access import ssh

        try:
            host = target_host(ctx)
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing was deployed
        refuse_source_host(ctx, host.address)
        svc = step.params["service"]
        url = service_health_url(ctx, svc, host.address)
        try:
            ssh(host, "sh -s", stdin="\n".join(stop_services_lines([svc])) + "\n", timeout=120.0,
                what=f"stop service {svc}")
        except Unreachable as exc:
            # Nobody reaches the host to stop it. Harmless only if its service does not answer either.
            if url is not None and answers(url):
                raise RunFailed(f"service {svc} still answers at {url} and {host.address} cannot be reached to "
                                f"stop it: {exc}", hint="stop it by hand (or cut the host off), then roll back "
                                "again") from None
            ctx.emit("service.stop_skipped", f"{svc} on {host.name} ({host.address}): host unreachable, service "
                     "not answering", service=svc, address=host.address, error=str(exc))
            return
        if url is not None:
            wait_silent(url, timeout=15.0)
        ctx.emit("service.stopped", f"{svc} stopped on {host.name} ({host.address})", service=svc,
                 address=host.address)


def refuse_source_host(ctx: RunContext, address: str | None) -> None:
    """Never stop or remove anything on the host the stack ran on before the move."""
    source = next((s.params.get("source_host") for s in ctx.plan.steps if s.params.get("source_host")), None)
    if source and source.get("address") == address:
        raise RunFailed(f"refusing to stop services on {address}: it is the source host")


def stop_services_lines(services: list[str]) -> list[str]:
    """Shell lines that stop services the way the shipped playbooks start them: the systemd unit
    `liferaft-<service>.service`, else the start-stop-daemon pidfile `/run/liferaft-<service>.pid`. Idempotent.
    Service names are validated by the stack model (no shell metacharacters)."""
    lines = ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true"]
    for svc in services:
        lines.append(f"if $sd; then systemctl disable --now liferaft-{svc}.service 2>/dev/null || true; "
                     f"else start-stop-daemon --stop --pidfile /run/liferaft-{svc}.pid --retry TERM/10/KILL/5 "
                     f"--remove-pidfile --oknodo >/dev/null; fi")
    return lines


def health_url(health: Any, address: str) -> str:
    """A service's health check (the stack's `services.<name>.health`) at `address`."""
    return f"{health.scheme}://{address}:{health.port}{health.path}"


def service_health_url(ctx: RunContext, service: str, address: str) -> str | None:
    svc = ctx.require_stack().model.services.get(service)
    return None if svc is None or svc.health is None else health_url(svc.health, address)


def answers(url: str) -> bool:
    """Does anything answer HTTP at `url` (any status counts)?"""
    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def wait_silent(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while answers(url):
        if time.monotonic() > deadline:
            raise CheckFailed(f"{url} still answers after its service was stopped")
        time.sleep(0.2)


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _leaves(v)]
    return [value] if isinstance(value, str) and len(value) >= 4 else []
