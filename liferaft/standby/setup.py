"""The standby's set-up as a plan the engine runs, journaled (mode `standby` of the one plan builder,
liferaft.planner.builder), and the run context it leaves.

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

from liferaft.engine.journal import Journal, RunRecord, journal_path
from liferaft.engine.plan import Plan
from liferaft.engine.runner import RunContext
from liferaft.planner.builder import STANDBY_MODE, Setup, build, standby_spec_name
from liferaft.planner.tiers import standby_tier, warm_services

if TYPE_CHECKING:
    from liferaft.events import Events
    from liferaft.stack import Stack

__all__ = ["STANDBY_MODE", "open_context", "plan_setup", "setup_runs", "standby_spec_name", "standby_tier",
           "unfinished_setup", "warm_services"]
UNFINISHED = ("running", "stopped", "failed")


def plan_setup(stack: Stack, target: str, source_host: dict[str, Any], record: dict[str, Any], *,
               source_timeout: float, interval: float, problems: tuple[dict[str, Any], ...] = ()) -> Plan:
    """The set-up plan (the builder's mode `standby`). Pure: the source host was found, the record read, the
    kinds' checks made at the source (`problems`)."""
    return build(stack, stack.model.primary, target, Setup(source_host, record, source_timeout, interval, problems))


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
