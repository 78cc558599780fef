"""The drill's own step kinds, registered in the engine's step-kind registry (importing this module does it).

- `drill.teardown`: a guard placed right after the host allocation. Its apply records nothing but the target; its
  undo (run by the rollback just before the host is released) stops what the drill started on the target and removes
  it: the services (through their workload kind's teardown lines) and what each dataset kind created there (the
  PostgreSQL cluster), then checks that the service no longer answers.
- `drill.verify_service`: resolves the drill record until it names the target and GETs the health path there; the
  first healthy answer ends the RTO.

The drill's cut (`drill.cut`) and its data gate as of the cut (`drill.verify_data`) are generic data steps, in
`liferaft.steps.data`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from liferaft.datasets import kind_of
from liferaft.datasets.registry import by_kind, from_params
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, RunFailed
from liferaft.steps.data import Cut, DrillVerifyData


def _target(ctx: RunContext) -> Any:
    from liferaft.engine.results import target_host

    return target_host(ctx)


def is_drill(steps: Iterable[Any]) -> bool:
    """A drill's run (its plan's steps, or the journal's step records): it carries the drill's teardown guard."""
    return any(s.kind == DrillTeardown.name for s in steps)


# ------------------------------------------------------------------------------------------------------ teardown
def _service_lines(stack: Any, services: list[str]) -> list[str]:
    """The services' part of the teardown, from their workload kind (`teardown_lines`); until a kind implements it,
    the shipped playbooks' units, pidfiles and folders."""
    from liferaft.workloads import kind_of as workload_kind
    from liferaft.workloads.registry import workloads

    wls = [w for w in workloads(stack) if w.name in services] if stack is not None else []
    kinds = by_kind(wls)
    if wls and all(hasattr(workload_kind(ws[0]), "teardown_lines") for ws in kinds.values()):
        return ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true",
                *[line for ws in kinds.values() for line in workload_kind(ws[0]).teardown_lines(stack, ws)]]
    from liferaft.steps.hosts import stop_services_lines

    lines = stop_services_lines(services)
    for svc in services:
        lines += [f"rm -f /etc/systemd/system/liferaft-{svc}.service",
                  f"rm -rf /opt/liferaft/{svc} /etc/liferaft/{svc} /var/log/liferaft/{svc}"]
    return lines


def teardown_lines(stack: Any, services: list[str], datasets: list[Any]) -> list[str]:
    """The shell run on the target to remove what a drill started there. Names are validated by the stack model."""
    lines = _service_lines(stack, services)
    for dss in by_kind(datasets).values():
        lines += kind_of(dss[0]).teardown_lines(stack, dss)
    return [*lines, "echo torn-down"]


def teardown_script(services: list[str], pg_version: int | None) -> str:
    """Kept for its callers: the teardown of `services` and of the PostgreSQL cluster of `pg_version` (None: none),
    as `DrillTeardown` composes it for a stack of those."""
    from liferaft.datasets.postgres import cluster_removal_lines

    lines = _service_lines(None, services)
    if pg_version is not None:
        lines += cluster_removal_lines(pg_version)
    return "\n".join([*lines, "echo torn-down"]) + "\n"


@register
class DrillTeardown(StepKind):
    name = "drill.teardown"
    undoable = True
    phase: ClassVar[str | None] = "provision"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        host = _target(ctx)
        return {"host": host.name, "address": host.address}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.configure.remote import ssh
        from liferaft.steps.hosts import refuse_source_host, service_health_url, wait_silent

        try:
            host = _target(ctx)
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing to tear down
        stack = ctx.require_stack()
        refuse_source_host(ctx, host.address)
        dss = from_params(stack, step.params)
        services = [s for s in step.params.get("services", []) if s in stack.model.services]
        script = "\n".join(teardown_lines(stack, services, dss)) + "\n"
        ssh(host, "sh -s", stdin=script, timeout=120.0, what="tear the drill target down")
        for svc in services:
            url = service_health_url(ctx, svc, host.address)
            if url is not None:
                wait_silent(url, timeout=15.0)
        removed = sorted({kind_of(ds).noun for ds in dss if kind_of(ds).teardown_lines(stack, [ds])})
        ctx.emit("drill.torn_down", f"{host.name} ({host.address}): services {', '.join(services) or '-'} and "
                 f"{', '.join(removed) or 'nothing else'} stopped and removed", address=host.address)


# ----------------------------------------------------------------------------------------------- verify service
@register
class DrillVerifyService(StepKind):
    name = "drill.verify_service"
    gate = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.steps.verify import http_check, resolve

        stack = ctx.require_stack()
        address = _target(ctx).address
        service = step.params.get("service")
        health = stack.model.services[service].health if service else None
        answers: dict[str, list[str]] = {}
        for r in step.params["records"]:
            deadline = time.monotonic() + 30.0
            while True:
                got = resolve(r["fqdn"], r["type"], step.params.get("nameserver"))
                if got == [address] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            answers[r["fqdn"]] = got
            if got != [address]:
                raise CheckFailed(f"{r['fqdn']} resolves to {got}, expected [{address}]")
        reached = next(iter(answers.values()), [address])[0]
        first_healthy_at = http_check(reached, health, timeout=30.0) if health is not None else time.time()
        ctx.emit("drill.healthy", f"the service answers at {reached}"
                 + (f" through {', '.join(answers)}" if answers else ""), address=reached)
        return {"answers": answers, "address": reached, "first_healthy_at": first_healthy_at}


__all__ = ["Cut", "DrillVerifyData", "is_drill", "teardown_lines", "teardown_script"]
