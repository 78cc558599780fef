"""The standby's set-up as a plan the engine runs, journaled (mode `standby`), and the run context it leaves.

    allocate             the standby host at the target's compute provider, under the name the failover planner
                         uses (`<stack>-<site>`), so a later failover -- live or cold -- lands on the host with the copy
    prepare              prepare.yml (left out when the record says a former set-up installed this host)
    install-<kind>       per dataset kind that needs something there, what the standby host needs and liferaft's
                         access at both ends (`StandbyCopy.install`: PostgreSQL's postgresql.yml and migration role)
    keep-<key>           per dataset, its standby copy set up and brought current once (`StandbyCopy.keep`)
    warm-<svc>           warm tier only (`sites.<target>.standby: warm`): per service, deployed at the standby host
                         against the standby's copies and left STOPPED, at the digest of what deploy uses
                         (`standby.service`); the record keeps the digest, the cold plan then starts it instead of
                         deploying it. A service already there at that digest is only made sure to be stopped.

A set-up killed halfway is resumed by the next `replicate` (same plan: done steps skipped); `liferaft runs` shows
it. Rounds are not journaled -- they write the standby record -- but they act in the context of the set-up run that
made the standby (`open_context`): its run id, plan, journal, secrets and providers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.datasets import kind_of
from liferaft.datasets.registry import datasets
from liferaft.engine.journal import Journal, RunRecord, journal_path
from liferaft.engine.plan import Plan, Step
from liferaft.engine.runner import RunContext
from liferaft.steps.standby import dataset_params

if TYPE_CHECKING:
    from liferaft.events import Events
    from liferaft.stack import Stack

STANDBY_MODE = "standby"
UNFINISHED = ("running", "stopped", "failed")


def standby_spec_name(stack: Stack, target: str) -> str:
    """The host name the failover planner allocates at `target` (so both land on the same host)."""
    return f"{stack.model.name}-{target}"


def plan_setup(stack: Stack, target: str, source_host: dict[str, Any], record: dict[str, Any], *,
               source_timeout: float, interval: float) -> Plan:
    """The set-up plan. Pure: the source host was found, the record read."""
    m = stack.model
    spec = standby_spec_name(stack, target)
    provider = stack.site(target).compute
    steps: list[Step] = []

    def add(sid: str, kind: str, title: str, params: dict[str, Any], *deps: str) -> str:
        steps.append(Step(sid, kind, title, params, tuple(deps)))
        return sid

    last = add("allocate", "host.allocate", f"allocate the standby host {spec} at {provider}",
               {"provider": provider, "name": spec, "site": target})
    recorded = (record.get("standby_host") or {}).get("address")
    installed_on = record.get("installed_on")
    if not (installed_on and installed_on == recorded):
        last = add("prepare", "host.configure", "prepare the host (prepare.yml)", {"playbook": "prepare.yml"}, last)
    dss = datasets(stack)
    by_kind: dict[str, list[Any]] = {}
    for ds in dss:
        by_kind.setdefault(ds.kind, []).append(ds)
    for name, group in by_kind.items():
        title = kind_of(group[0]).install_title(stack, group)
        if title:
            last = add(f"install-{name}", "standby.install", title,
                       {"kind": name, "datasets": [ds.key for ds in group], "source_host": source_host,
                        "installed_on": installed_on}, last)
    installed = last
    for ds in dss:
        add(f"keep-{ds.key}", "standby.keep", f"set up the standby copy of {kind_of(ds).noun} {ds.key} and bring it "
            "current", {**dataset_params(ds), "source_host": source_host, "source_timeout": source_timeout,
                        "interval": interval}, last)
    resources = [{"action": "reuse" if recorded else "allocate", "kind": "host", "name": spec, "provider": provider,
                  "detail": "the standby host"}]
    warm = warm_services(stack, target)
    for svc, digest in warm.items():
        # after the installs (playbooks never overlap on a host); beside the copies' set-up (the service is not
        # started, so it needs nothing of them yet)
        installed = add(f"warm-{svc}", "standby.service", f"deploy service {svc} at the standby and keep it stopped "
                        f"(warm tier; digest {digest[:12]})", {"service": svc, "digest": digest}, installed)
        resources.append({"action": "deploy", "kind": "service", "name": svc, "provider": provider,
                          "detail": "stopped (warm standby)"})
    return Plan(stack=m.name, source=m.primary, target=target, mode=STANDBY_MODE, steps=tuple(steps),
                resources=tuple(resources), notes=((f"standby set-up at {target} from {source_host.get('name')} "
                                                   f"({source_host.get('address')})"),))


def standby_tier(stack: Stack, target: str) -> str:
    """The tier the stack file declares for the standby at `target` (`sites.<target>.standby`)."""
    return str(getattr(stack.site(target), "standby", "pilot-light"))


def warm_services(stack: Stack, target: str) -> dict[str, str]:
    """Warm tier: each service that can be kept warm -> the digest of what its deploy at `target` uses. Empty for
    a pilot-light site (and for services whose workload kind cannot be kept warm: they are deployed at failover)."""
    from liferaft.workloads import workloads
    from liferaft.workloads.base import warm_kind

    if standby_tier(stack, target) != "warm":
        return {}
    out: dict[str, str] = {}
    for wl in workloads(stack):
        kind = warm_kind(wl)
        if kind is not None:
            out[wl.name] = kind.digest(stack, wl, target)
    return out


def setup_runs(state_dir: Path, stack: str, target: str) -> list[RunRecord]:
    """The standby set-up runs into `target`, newest first."""
    path = journal_path(state_dir, stack)
    if not path.exists():
        return []
    with Journal(path) as journal:
        return [r for r in journal.runs() if r.target == target and r.mode == STANDBY_MODE]


def unfinished_setup(state_dir: Path, stack: str, target: str, plan: Plan) -> str | None:
    """The newest set-up run into `target` left unfinished (killed, failed, stopped) with this very plan: resume it."""
    runs = setup_runs(state_dir, stack, target)
    if runs and runs[0].status in UNFINISHED and runs[0].plan.hash == plan.hash:
        return runs[0].id
    return None


@contextlib.contextmanager
def open_context(stack: Stack, state_dir: Path, run_id: str, events: Events) -> Iterator[RunContext]:
    """The run context of set-up run `run_id`, on the stack's journal (which refuses the secrets it resolves)."""
    box: list[RunContext] = []
    with Journal(journal_path(state_dir, stack.model.name),
                 secrets=lambda: box[0].secret_values() if box else set()) as journal:
        rec = journal.run(run_id)
        ctx = RunContext(run_id=rec.id, plan=rec.plan, journal=journal, events=events, state_dir=Path(state_dir),
                         stack=stack)
        box.append(ctx)
        yield ctx
