"""Run a drill: plan a live failover, turn it into a drill plan, run it through the engine's runner (journaled),
measure, then tear the target down by rolling the run back (unless kept), and return what was measured.

RTO: from the drill's start (before planning) to the first healthy answer of the service at the target through the
drill record. RPO: with a write ledger, the time span of the acknowledged writes made before the cut that are missing
at the target (0 when none is); without one, 0 when the target confirmed the source's WAL position at the cut, else
the replication lag that was left.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.datasets.base import kind_named
from liferaft.drill.model import DataSummary, DrillResult, LedgerSummary, Phase
from liferaft.drill.plan import drill_fqdn, to_drill
from liferaft.engine.kinds import get_kind
from liferaft.errors import LiferaftError, UsageError
from liferaft.events import Event, Events
from liferaft.steps.data import CutResult, VerifySummary
from liferaft.steps.drill import is_drill
from liferaft.steps.hosts import Allocate, DeployService
from liferaft.steps.standby import CheckStandby as StandbyObjects
from liferaft.steps.standby import DataLoss, PromoteStandby
from liferaft.steps.verify import DnsCutover, DrillVerifyService
from liferaft.steps.warm import StartService

if TYPE_CHECKING:
    from liferaft.engine import Plan
    from liferaft.engine.journal import StepRecord
    from liferaft.stack import Stack

# The phase of a step kind is its `phase` attribute (liferaft.steps); these kinds do not say it yet, and journals of
# older drills name kinds the data steps had before they became one family each (db.migrate ...).
PHASE_OF_KIND = {
    DeployService.name: "configure", DrillVerifyService.name: "verify", DnsCutover.name: "dns",
    # the no-notice scenario's cold plan
    PromoteStandby.name: "data", StandbyObjects.name: "verify", DataLoss.name: "verify",
    # older journals
    "db.server": "configure", "db.access": "data", "db.migrate": "data", "objects.sync": "data",
    StartService.name: "configure",  # a warm standby's services started
}


def phase_of(kind: str) -> str | None:
    """The drill phase a step of `kind` counts in (None: housekeeping after the move, e.g. the access release)."""
    if kind in PHASE_OF_KIND:
        return PHASE_OF_KIND[kind]
    try:
        return getattr(get_kind(kind), "phase", None)
    except UsageError:
        return None


@dataclass(frozen=True)
class DrillOptions:
    target: str
    scenario: str = "notice"
    keep: bool = False
    ledger: str | None = None  # the example app's write ledger (SQLite), if a writer runs during the drill
    plan_path: str | None = None  # a saved live plan (`plan --out`) to drill exactly, if what it saw still holds


def new_drill_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def require_scenario(scenario: str) -> None:
    if scenario not in ("notice", "no-notice"):
        raise UsageError(f"unknown scenario {scenario!r}", hint="notice or no-notice")


def build_drill_plan(stack: Stack, opts: DrillOptions, state_dir: Path, events: Events) -> Plan:
    """Observe read-only, plan a live failover, and make it a drill plan (pure transform)."""
    from liferaft.failover.planner import build_plan

    plan = build_plan(stack, opts.target, "live", state_dir=state_dir, events=events)
    if opts.plan_path is not None:  # the reviewed plan, exactly, while what it was built from still holds
        from liferaft.engine.saved import PlanChanged, changes, load_plan

        saved = load_plan(opts.plan_path)
        if saved.plan.mode != "live":
            raise UsageError(f"{opts.plan_path} is a {saved.plan.mode} plan; a drill with --plan drills a live one",
                             hint="save one with `liferaft plan --to SITE --out PLAN`")
        diff = changes(saved, plan)
        if diff:
            raise PlanChanged(diff, opts.plan_path)
        plan = saved.plan
    drill = to_drill(plan, ledger=opts.ledger, **_drill_dns(stack))
    drill.require_no_blocking()  # what the checks found at the source stops the drill before anything is created
    return drill


def _drill_dns(stack: Stack) -> dict[str, Any]:
    """The drill record and where it lives, for the plan transforms."""
    dns = stack.model.dns
    if dns is None:
        return {"drill_record": None, "dns_provider": None, "zone": None, "nameserver": None}
    return {"drill_record": drill_fqdn(dns), "dns_provider": dns.provider, "zone": dns.zone,
            "nameserver": dns.nameserver, "ttl": min((r.ttl for r in dns.records), default=30)}


def require_free_target(stack: Stack, plan: Plan, state_dir: Path) -> None:
    """A host already allocated under the drill's host name (a standby kept warm by `liferaft replicate`, or the
    result of a real failover) must not be used by a drill: its teardown would stop and remove what runs there."""
    from liferaft.engine.observe import open_provider

    alloc = next((s for s in plan.steps if s.kind == Allocate.name), None)
    if alloc is None:
        return
    compute = open_provider(stack, alloc.params["provider"], state_dir).require("compute")
    if any(h.name == alloc.params["name"] for h in compute.list_hosts()):
        raise UsageError(f"host {alloc.params['name']} is already allocated at {alloc.params['provider']} (a standby "
                         "or an earlier failover); a drill would tear down what runs there",
                         hint="drill into another site; or, if no run of yours uses it any more (e.g. it is left "
                         f"from a lab taken down), `liferaft hosts release {alloc.params['provider']} "
                         f"{alloc.params['name']}`")


def run_drill(stack: Stack, state_dir: Path, opts: DrillOptions, events: Events | None = None) -> DrillResult:
    """The whole drill. Raises only when nothing ran (bad input, planning failed); otherwise returns the result,
    with `error` set when the run stopped early (the target is still torn down unless kept)."""
    import liferaft.steps  # noqa: F401  (registers the step library: a drill's journal names its kinds)
    from liferaft.engine.lock import SiteLock

    require_scenario(opts.scenario)
    opts = DrillOptions(opts.target, opts.scenario, opts.keep, str(Path(opts.ledger).resolve()) if opts.ledger else None)
    ev = events or Events()
    stack.site(opts.target)  # an unknown site is a usage error, before any lock file is made for it
    # The site is the drill's from its standby set-up to the standby set up again: a `replicate` of that site would
    # sync into the standby the drill promotes, a failover run into it would fight over the same host.
    with SiteLock(state_dir, stack.model.name, opts.target).acquire(by=f"drill, {opts.scenario}"):
        return _run_drill(stack, state_dir, opts, ev)


def _run_drill(stack: Stack, state_dir: Path, opts: DrillOptions, ev: Events) -> DrillResult:
    drill_id = new_drill_id()
    started = time.time()
    ev.emit("drill.started", f"drill {drill_id}: {stack.model.primary} -> {opts.target} ({opts.scenario})",
            drill=drill_id, target=opts.target)
    if opts.scenario == "no-notice":
        return _run_no_notice(stack, state_dir, opts, ev, drill_id, started)
    plan = build_drill_plan(stack, opts, state_dir, ev)
    require_free_target(stack, plan, state_dir)
    ex = _execute(stack, state_dir, plan, opts, ev, drill_id)
    result = measure(drill_id, stack, plan, opts, started, ex.ended, ex.phases, ex.records, ex.run_id, ex.error,
                     ex.torn_down)
    return _done(ev, result)


@dataclass
class _Execution:
    run_id: str | None
    records: list[StepRecord]
    phases: list[Phase]
    error: str | None
    torn_down: bool
    ended: float


def _execute(stack: Stack, state_dir: Path, plan: Plan, opts: DrillOptions, ev: Events, drill_id: str,
             after_run: Callable[[list[StepRecord]], str | None] | None = None) -> _Execution:
    """Run the drill plan through the engine, then (after `after_run`, e.g. healing a cut) tear the target down by
    rolling the run back unless kept."""
    from liferaft.engine import Runner

    seen: dict[str, Any] = {}

    def capture(event: Event) -> None:
        if event.kind == "run.started":
            seen.setdefault("run", event.data.get("run"))

    ev.subscribe(capture)
    runner = Runner(state_dir, stack=stack, events=ev)
    error: str | None = None
    try:
        runner.start(plan)
    except LiferaftError as e:
        error = e.message
        ev.emit("drill.failed", f"the drill stopped: {e.message}", drill=drill_id)
    run_id = seen.get("run")
    if after_run is not None:
        error = _also(error, after_run(_steps(runner, run_id)))
    records = _steps(runner, run_id)
    t_teardown = time.time()
    torn_down = False
    teardown_status = "ok"
    if run_id and not opts.keep:
        ev.emit("drill.teardown", f"tearing the target down: rollback of run {run_id}", run=run_id)
        try:
            runner.rollback(run_id)
            torn_down = True
        except LiferaftError as e:
            teardown_status = "failed"
            error = _also(error, f"teardown failed: {e.message}")
    ended = time.time()
    phases = phases_from(records)
    if run_id and not opts.keep:
        # Housekeeping after the service answered (e.g. the migration role disabled) counts as teardown.
        after = [r.started for r in records if r.started is not None and phase_of(r.kind) is None]
        phases.append(Phase("teardown", min([t_teardown, *after]), ended, teardown_status))
    return _Execution(run_id, records, phases, error, torn_down, ended)


def _also(error: str | None, more: str | None) -> str | None:
    if not more:
        return error
    return (error + "; " if error else "") + more


def _done(ev: Events, result: DrillResult) -> DrillResult:
    ev.emit("drill.done", f"drill {result.id}: {'passed' if result.passed else 'FAILED'}; RTO "
            f"{result.rto_s if result.rto_s is None else round(result.rto_s, 1)} s"
            + (" (from the cut)" if result.rto_from == "cut" else "") + ", RPO "
            f"{result.rpo_s if result.rpo_s is None else round(result.rpo_s, 3)} s", drill=result.id,
            rto_s=result.rto_s, rpo_s=result.rpo_s, passed=result.passed)
    return result


# ------------------------------------------------------------------------------------------------- no-notice
def _run_no_notice(stack: Stack, state_dir: Path, opts: DrillOptions, ev: Events, drill_id: str,
                   started: float) -> DrillResult:
    """Standby (kept warm by `replicate`, or made now while the source answers) -> cut the primary off -> cold
    failover into the standby through the drill record -> heal -> the source's abandoned slot dropped -> target torn
    down -> the standby re-established if there was one before (else forgotten)."""
    from liferaft.drill import cut as cutting
    from liferaft.drill import standby as sb
    from liferaft.standby.setup import standby_tier

    seeded = sb.ensure_standby(stack, state_dir, opts.target, ev)
    source_address = seeded.source_address
    the_cut = cutting.cut_primary(stack, opts.target, source_address, ev)
    cut_at = time.time()  # the outage starts when the cut has taken effect

    def heal_and_clean(records: list[StepRecord]) -> str | None:
        problems: list[str] = []
        try:
            cutting.heal(stack, the_cut, ev)
        except LiferaftError as e:
            problems.append(f"healing the cut failed: {e.message}")
        promoted = {key for _, key, r in promotions(plans[0] if plans else None, records) if r.status == "done"}
        try:
            sb.drop_abandoned_slots(stack, state_dir, seeded, promoted, ev)
        except LiferaftError as e:
            problems.append(f"the source's abandoned replication slot could not be dropped: {e.message}")
        return "; ".join(problems) or None

    plans: list[Plan] = []
    try:
        plan = build_no_notice_plan(stack, opts, state_dir, ev)
        plans.append(plan)
    except BaseException:
        heal_and_clean([])
        raise
    ex = _execute(stack, state_dir, plan, opts, ev, drill_id, after_run=heal_and_clean)
    error = ex.error
    phases = list(ex.phases)
    if seeded.seconds is not None:
        phases.insert(0, Phase("standby", seeded.started, seeded.ended, "ok"))
    t_reseed = time.time()
    try:
        note = sb.after_drill(stack, state_dir, opts.target, seeded, kept=opts.keep, torn_down=ex.torn_down,
                              events=ev)
        if note:
            ev.emit("drill.standby", note)
    except LiferaftError as e:
        error = _also(error, f"re-establishing the standby failed: {e.message}")
    if seeded.pre_existing and not opts.keep and ex.torn_down:
        phases.append(Phase("standby", t_reseed, time.time(), "ok" if error is None else "failed"))
    ended = time.time()
    result = measure(drill_id, stack, plan, opts, started, ended, phases, ex.records, ex.run_id, error,
                     ex.torn_down, cut_at=cut_at)
    return _done(ev, replace(result, tier=standby_tier(stack, opts.target)))


def build_no_notice_plan(stack: Stack, opts: DrillOptions, state_dir: Path, events: Events) -> Plan:
    """The cold failover plan from the standby (the source is not probed: it was cut on purpose), as a drill."""
    from liferaft.drill.plan import to_cold_drill
    from liferaft.failover.cold import build_cold_plan

    plan = build_cold_plan(stack, opts.target, state_dir=state_dir, events=events, probe_source=False,
                           ledger=opts.ledger)
    return to_cold_drill(plan, ledger=opts.ledger, **_drill_dns(stack))


def _steps(runner: Any, run_id: str | None) -> list[StepRecord]:
    if not run_id:
        return []
    with runner.journal() as journal:
        records: list[StepRecord] = journal.steps(run_id)
    return records


def phases_from(records: list[StepRecord]) -> list[Phase]:
    """Each phase from the first of its steps starting to the last one ending, in order of their start. Steps of
    kinds with no phase (the engine's housekeeping after the move, such as the access release) are left out."""
    spans: dict[str, list[float]] = {}
    failed: set[str] = set()
    for r in records:
        name = phase_of(r.kind)
        if r.started is None or name is None:
            continue
        end = r.finished if r.finished is not None else r.started
        span = spans.setdefault(name, [r.started, end])
        span[0], span[1] = min(span[0], r.started), max(span[1], end)
        if r.status == "failed":
            failed.add(name)
    out = [Phase(n, s, e, "failed" if n in failed else "ok") for n, (s, e) in spans.items()]
    return sorted(out, key=lambda p: p.start)


def measure(drill_id: str, stack: Stack, plan: Plan, opts: DrillOptions, started: float, ended: float,
            phases: list[Phase], records: list[StepRecord], run_id: str | None, error: str | None,
            torn_down: bool, cut_at: float | None = None) -> DrillResult:
    """The drill's figures from its journaled steps. Notice (live plan): RTO from the start, data as of the cut
    the drill.cut step made. No-notice (cold plan): RTO from `cut_at`, the primary's cut."""
    if plan.mode == "cold":
        rpo, data, ledger = _data_cold(plan, records, opts, ended, cut_at)
        rto_from = "start" if cut_at is None else "cut"
    else:
        cut_at = CutResult.of_records(records)
        rpo, data, ledger = _data_live(records, cut_at)
        rto_from = "start"
    svc = _done_of_kind(records, DrillVerifyService.name)
    first_healthy = float(svc.result["first_healthy_at"]) if svc else None
    origin = cut_at if rto_from == "cut" and cut_at is not None else started
    allocate = _done_of_kind(records, Allocate.name)
    address = allocate.result.get("address") if allocate else None
    record = next((r["fqdn"] for s in plan.steps if s.kind == DnsCutover.name for r in s.params["records"]), None)
    objectives = stack.model.objectives
    return DrillResult(id=drill_id, stack=plan.stack, source=plan.source, target=plan.target,
                       scenario=opts.scenario, started=started, ended=ended, phases=tuple(phases),
                       rto_s=None if first_healthy is None else first_healthy - origin, rpo_s=rpo,
                       objective_rto_s=float(objectives.rto), objective_rpo_s=float(objectives.rpo), data=data,
                       ledger=ledger, run_id=run_id, drill_record=record, target_address=address, cut_at=cut_at,
                       first_healthy_at=first_healthy, kept=opts.keep, torn_down=torn_down, error=error,
                       rto_from=rto_from, dns_stale_for_s=_production_ttl(stack))


def _done_of_kind(records: list[StepRecord], kind: str) -> StepRecord | None:
    return next((r for r in records if r.kind == kind and r.status == "done"), None)


def promotions(plan: Plan | None, records: list[StepRecord]) -> list[tuple[Any, str, StepRecord]]:
    """A cold plan's promotions as journaled: (the dataset's kind, its key, the step's record), for each step that is
    its dataset kind's promotion (`promote_step`)."""
    steps = {s.id: s for s in plan.steps} if plan is not None else {}
    out = []
    for r in records:
        params = steps[r.step_id].params if r.step_id in steps else {}
        if "kind" in params and "dataset" in params:
            kind = kind_named(str(params["kind"]))
            if r.kind == kind.promote_step[0]:
                out.append((kind, str(params["dataset"]), r))
    return out


def _data_live(records: list[StepRecord], cut_at: float | None
               ) -> tuple[float | None, DataSummary, LedgerSummary | None]:
    """Notice: what the data gate found as of the cut; RPO from the ledger, else the lag left at the cut."""
    summary = VerifySummary.of_records(records)
    if summary is None:
        stopped = "the data was not verified: the drill stopped before the check"
        return None, DataSummary(ok=False, problems=(stopped,)), None
    ledger = None
    if summary.ledger:
        ledger = LedgerSummary.from_dict(summary.ledger)
        rpo = 0.0 if not ledger.missing else max(0.0, (cut_at or 0.0) - float(ledger.first_missing_at or 0.0))
    else:
        rpo = 0.0 if summary.caught_up else summary.lag_s_left
    data = DataSummary(ok=summary.ok, checked=summary.checked, problems=summary.problems, notes=summary.notes,
                       replication_lag_s=summary.replication_lag_s,
                       replication_lag_bytes=summary.replication_lag_bytes)
    return rpo, data, ledger


def _data_cold(plan: Plan, records: list[StepRecord], opts: DrillOptions, ended: float,
               cut_at: float | None) -> tuple[float | None, DataSummary, LedgerSummary | None]:
    """No-notice: the standby objects read back by sha256, the databases promoted, no ledger write differing; RPO
    from the ledger's missing writes (their span), else an upper bound from the oldest last replicated point."""
    loss = next((r for r in records if r.kind == DataLoss.name), None)
    out = loss.result if loss and loss.status == "done" else {}
    problems: list[str] = []
    notes: list[str] = []
    checked: dict[str, int] = {}
    for kind, key, r in promotions(plan, records):  # each kind says what its promotion checked
        if r.status == "done":
            more, said = kind.promoted_summary(key, r.result)
            checked.update(more)
            notes += said
        elif r.status == "failed":
            problems.append(f"{r.step_id}: {r.error or 'failed'}")
    if not out:
        stopped = "the data was not verified: the drill stopped before the data-loss check"
        return None, DataSummary(ok=False, problems=(*problems, stopped)), None
    ledger = None
    rpo: float | None = None
    led = out.get("ledger")
    if led:
        after = _writes_after(opts.ledger, cut_at, loss.started if loss else None)
        ledger = LedgerSummary(acknowledged_before_cut=int(led["acknowledged"]) - after,
                               present=int(led["present"]), missing=int(led["missing_count"]),
                               mismatched=int(led["mismatched_count"]), writes_after_cut=after,
                               first_missing_at=led.get("first_missing_ack_at"))
        checked["ledger writes before the cut"] = ledger.acknowledged_before_cut
        if ledger.mismatched:
            problems.append(f"ledger: {ledger.mismatched} acknowledged write(s) differ at the target")
        rpo = 0.0 if not ledger.missing else float(led.get("window_s") or 0.0)
    else:
        oldest = out.get("oldest_replicated_at")
        rpo = max(0.0, (cut_at or ended) - float(oldest)) if oldest else None
        if oldest is None:
            notes.append("no replicated position was recorded: the RPO is unknown")
        else:
            notes.append("RPO without a write ledger: an upper bound, the time from the oldest dataset's last "
                         "replicated point to the cut (what was written in it may or may not have been lost); "
                         "pass --ledger to measure the writes actually missing")
    data = DataSummary(ok=not problems, checked=checked, problems=tuple(problems), notes=tuple(notes),
                       replication_lag_s=out.get("recorded_rpo_exposure_s"))
    return rpo, data, ledger


def _writes_after(ledger: str | None, cut_at: float | None, checked_at: float | None) -> int:
    """Writes acknowledged after the cut and before the data-loss check counted them (a real cut leaves none)."""
    if not ledger or cut_at is None or checked_at is None:
        return 0
    from liferaft.movers.ledger import acknowledged_between

    return acknowledged_between(ledger, cut_at, checked_at)


def teardown_kept(stack: Stack, state_dir: Path, run_ref: str, events: Events | None = None) -> str:
    """Tear down the target of a drill run with --keep: roll its run back (drill record first, the target's
    services and PostgreSQL stopped and removed, the host released). Returns the run id."""
    import liferaft.steps  # noqa: F401  (registers the step library: a drill's journal names its kinds)
    from liferaft.drill import history
    from liferaft.engine import Runner

    runner = Runner(state_dir, stack=stack, events=events)
    with runner.journal() as journal:
        rec = journal.find_run(run_ref)
    if not is_drill(rec.plan.steps):
        raise UsageError(f"run {rec.id} is not a drill", hint="roll failovers back with `liferaft rollback RUN`")
    runner.rollback(rec.id)
    for entry in history.entries(state_dir, stack.model.name):
        if entry.result.run_id == rec.id:
            history.record(state_dir, replace(entry.result, torn_down=True), entry.report_dir)
    return rec.id



def _production_ttl(stack: Stack) -> int | None:
    """The longest TTL among the records a failover cuts over (those naming a service): how long, on the day,
    resolvers may still send clients to the old address after the cut, unless it is lowered ahead of time."""
    dns = stack.model.dns
    ttls = [int(r.ttl) for r in dns.records if r.service] if dns is not None else []
    return max(ttls) if ttls else None
