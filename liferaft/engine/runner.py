"""The runner: executes a plan's steps in order, journaled, resumable, and undoable in reverse.

Each step is recorded as started (committed and fsynced) before it acts and as done after it acted and verified.
A crash at any point leaves at most one step 'running'; `resume` skips done steps and re-applies that one (step
kinds are idempotent). `rollback` undoes touched steps in reverse order, DNS-like kinds (`undo_first`) first.

Test switches (public, documented; for crash tests only):
- `LIFERAFT_TEST_KILL_AFTER_STEP=<step id>` makes the runner SIGKILL its own process right after that step's 'done'
  record is committed -- the harshest crash at a step boundary;
- `LIFERAFT_TEST_KILL_ON_EVENT=<event kind>` SIGKILLs it at the first such event emitted in the middle of work
  (an event whose `done`/`total` say it is neither the first nor the last), e.g. `objects.progress` for a crash in
  the middle of a data copy.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.configure import clean_dead_runs
from liferaft.engine.journal import Journal, RunRecord, journal_file, journal_path, stack_dir
from liferaft.engine.kinds import get_kind
from liferaft.engine.lock import SiteLock, StackLock
from liferaft.engine.plan import Plan, Step
from liferaft.errors import CheckFailed, LiferaftError, RunFailed, UsageError
from liferaft.events import Events, as_events

if TYPE_CHECKING:
    from liferaft.stack import Stack

KILL_SWITCH = "LIFERAFT_TEST_KILL_AFTER_STEP"
KILL_ON_EVENT = "LIFERAFT_TEST_KILL_ON_EVENT"


def _kill_on_event(kind: str) -> Any:
    def observe(event: Any) -> None:
        done, total = event.data.get("done"), event.data.get("total")
        if event.kind == kind and (done is None or total is None or 0 < int(done) < int(total)):
            os.kill(os.getpid(), signal.SIGKILL)
    return observe


@dataclass
class RunContext:
    """Everything a step kind needs, in one object: the run, the stack, the journal, events and shared caches."""

    run_id: str
    plan: Plan
    journal: Journal
    events: Events
    state_dir: Path
    stack: Stack | None = None
    step: Step | None = None
    cache: dict[str, Any] = field(default_factory=dict)  # live objects shared by steps within one process
    _secret_values: set[str] = field(default_factory=set, repr=False)
    _secret_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def work_dir(self) -> Path:
        """A private folder for this run's files (manifests, inventories); survives crashes for resume."""
        d = stack_dir(self.state_dir, self.plan.stack) / "runs" / self.run_id
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d.parent, 0o700)
        return d

    def require_stack(self) -> Stack:
        if self.stack is None:
            raise UsageError("this step needs the stack file, and none was loaded")
        return self.stack

    def secret(self, ref: str) -> str:
        """Resolve a secret reference; the value is remembered only so the journal can refuse to store it."""
        value = self.require_stack().secret(ref)
        with self._secret_lock:
            self._secret_values.add(value)
        return value

    def add_secret(self, value: str) -> None:
        """A secret liferaft generated itself (not from the stack file): never to be journaled either."""
        with self._secret_lock:
            self._secret_values.add(value)

    def secret_values(self) -> set[str]:
        with self._secret_lock:
            return set(self._secret_values)

    def provider(self, name: str) -> Any:
        """The named provider of the stack, opened once per run."""
        key = f"provider:{name}"
        if key not in self.cache:
            from liferaft.engine.observe import open_provider

            # Credentials resolved for the provider are secrets too: the journal refuses to store them.
            self.cache[key] = open_provider(self.require_stack(), name, self.state_dir, resolve=self.secret)
        return self.cache[key]

    def output(self, step_id: str) -> dict[str, Any]:
        """The recorded result of an earlier, done step."""
        rec = self.journal.step(self.run_id, step_id)
        if rec.status != "done":
            raise RunFailed(f"step {step_id!r} has not completed (status {rec.status})")
        return rec.result

    def outputs_of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {r.step_id: r.result for r in self.journal.steps(self.run_id) if r.kind == kind and r.status == "done"}

    @property
    def memo(self) -> dict[str, Any]:
        """The current step's durable notes (survive a crash; read them again on resume or undo)."""
        assert self.step is not None
        return self.journal.step(self.run_id, self.step.id).memo

    def remember(self, **memo: Any) -> None:
        """Write notes for the current step to the journal now, before acting on them."""
        assert self.step is not None
        self.journal.remember(self.run_id, self.step.id, memo)

    def summarise(self, **values: Any) -> None:
        """Record run-level measurements (e.g. the write-unavailability window) in the journal."""
        self.journal.update_summary(self.run_id, **values)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        if self.step is not None:
            data.setdefault("step", self.step.id)
        self.events.emit(kind, message, run=self.run_id, **data)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    steps_done: int
    steps_total: int
    summary: dict[str, Any]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.status in ("done", "rolled-back", "stopped"), "run": self.run_id, "status": self.status,
                "steps_done": self.steps_done, "steps_total": self.steps_total, "summary": self.summary,
                "duration_s": round(self.duration_s, 3)}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + _secrets.token_hex(2)


class Runner:
    """Starts, resumes and rolls back runs of one stack. Holds the stack's lock while it acts."""

    def __init__(self, state_dir: Path, *, stack: Stack | None = None, events: Events | None = None,
                 stack_name: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.stack = stack
        self.stack_name = stack_name or (stack.model.name if stack is not None else None)
        if not self.stack_name:
            raise UsageError("a stack (or its name) is needed to find its journal")
        self.events = as_events(events)
        if os.environ.get(KILL_ON_EVENT):
            self.events.subscribe(_kill_on_event(os.environ[KILL_ON_EVENT]))

    def _clean_dead_ansible_runs(self) -> None:
        """A run killed in the middle of an Ansible step may have left its processes and its folder (secret
        variables) behind if even its guard was killed: end and delete them before acting again."""
        cleaned = clean_dead_runs(self.state_dir)
        if cleaned:
            self.events.emit("ansible.cleaned", cleaned.describe(), folders=list(cleaned.folders),
                             processes=cleaned.processes)

    def _open_journal(self, ctx_box: list[RunContext]) -> Journal:
        return Journal(journal_path(self.state_dir, self.stack_name or ""),
                       secrets=lambda: ctx_box[0].secret_values() if ctx_box else set())

    def journal(self) -> Journal:
        """Open the stack's journal for reading (runs, show); creates nothing when there is none."""
        return Journal(journal_file(self.state_dir, self.stack_name or ""), create=False)

    def _must_exist(self, run_ref: str) -> None:
        """An unknown run is refused before the lock is taken: a `resume last` of nothing creates no file."""
        with self.journal() as journal:
            journal.find_run(run_ref)

    @contextlib.contextmanager
    def claim(self, target: str, *, take_site: bool = True) -> Iterator[None]:
        """Hold the stack's lock and claim the target site before planning, so a refusal (another run, a drill)
        comes at once, not after the source was probed. A standby keeper holding the site is asked at once to end
        its round and let go (`take_site`), so it finishes while the plan is made; `start` then takes the site
        (waiting, bounded, for the keeper) -- or, when the run still waits for a confirmation, the site is only
        checked here. `start` re-enters what is held."""
        with StackLock(self.state_dir, self.stack_name or "").acquire(by="failover run"), \
                contextlib.ExitStack() as site:
            lock = SiteLock(self.state_dir, self.stack_name or "", target)
            if not take_site:
                lock.check()
            elif lock.ask(by="failover run", events=self.events):
                site.callback(lock.release)
            yield

    # ------------------------------------------------------------------------------------------------ start
    def start(self, plan: Plan, *, stop_before: str | None = None) -> RunOutcome:
        if plan.stack != self.stack_name:
            raise UsageError(f"the plan is for stack {plan.stack!r}, not {self.stack_name!r}")
        if stop_before is not None and stop_before not in plan.step_ids:
            raise UsageError(f"--stop-before {stop_before!r}: no such step", hint=", ".join(plan.step_ids))
        for s in plan.steps:
            get_kind(s.kind)  # an unknown kind is refused before anything acts
        run_id = new_run_id()
        box: list[RunContext] = []
        with StackLock(self.state_dir, plan.stack).acquire(run_id, by="failover run") as lock, \
                SiteLock(self.state_dir, plan.stack, plan.target).take(run_id, by="failover run",
                                                                       events=self.events) as site, \
                self._open_journal(box) as journal:
            lock.set_run(run_id)
            site.set_run(run_id)
            journal.create_run(run_id, plan)
            ctx = RunContext(run_id=run_id, plan=plan, journal=journal, events=self.events,
                             state_dir=self.state_dir, stack=self.stack)
            box.append(ctx)
            self.events.emit("run.started", f"run {run_id}: {plan.source} -> {plan.target} ({plan.mode}), "
                             f"{len(plan.steps)} steps", run=run_id, plan_hash=plan.hash)
            return self._execute(ctx, stop_before)

    # ------------------------------------------------------------------------------------------------ resume
    def resume(self, run_ref: str, *, stop_before: str | None = None) -> RunOutcome:
        self._must_exist(run_ref)
        box: list[RunContext] = []
        with StackLock(self.state_dir, self.stack_name or "").acquire(run_ref, by="failover run") as lock, \
                contextlib.ExitStack() as site, self._open_journal(box) as journal:
            self._clean_dead_ansible_runs()
            rec = journal.find_run(run_ref)
            lock.set_run(rec.id)
            if rec.status == "done":
                raise UsageError(f"run {rec.id} already completed; nothing to resume")
            if rec.status in ("rolling-back", "rolled-back"):
                raise UsageError(f"run {rec.id} is {rec.status}; it cannot be resumed",
                                 hint=f"finish the rollback with `liferaft rollback {rec.id}`"
                                 if rec.status == "rolling-back" else "start a new failover")
            if stop_before is not None and stop_before not in rec.plan.step_ids:
                raise UsageError(f"--stop-before {stop_before!r}: no such step", hint=", ".join(rec.plan.step_ids))
            site.enter_context(SiteLock(self.state_dir, rec.plan.stack, rec.plan.target).take(
                rec.id, by="failover run", events=self.events))
            journal.set_run_status(rec.id, "running")
            ctx = RunContext(run_id=rec.id, plan=rec.plan, journal=journal, events=self.events,
                             state_dir=self.state_dir, stack=self.stack)
            box.append(ctx)
            pending = journal.pending(rec.id)
            self.events.emit("run.resumed", f"run {rec.id}: resuming at {pending[0].step_id if pending else 'end'}"
                             f" ({len(pending)} of {len(rec.plan.steps)} steps left)", run=rec.id)
            return self._execute(ctx, stop_before)

    def _execute(self, ctx: RunContext, stop_before: str | None) -> RunOutcome:
        t0 = time.monotonic()
        journal, run_id, plan = ctx.journal, ctx.run_id, ctx.plan
        total = len(plan.steps)
        records = {r.step_id: r for r in journal.steps(run_id)}
        done = sum(1 for r in records.values() if r.status == "done")
        for step in plan.steps:
            rec = records[step.id]
            if rec.status == "done":
                self.events.emit("step.skipped", f"{step.id}: already done", run=run_id, step=step.id)
                continue
            if step.id == stop_before:
                journal.set_run_status(run_id, "stopped", f"stopped before {step.id} as asked")
                self.events.emit("run.stopped", f"run {run_id} stopped before {step.id}; "
                                 f"continue with `liferaft resume {run_id}`", run=run_id, step=step.id)
                return self._outcome(journal, run_id, "stopped", t0)
            kind = get_kind(step.kind)
            ctx.step = step
            journal.begin_step(run_id, step.id)
            again = " (again: it was interrupted)" if rec.status in ("running", "failed") else ""
            self.events.emit("step.started", f"[{done + 1}/{total}] {kind.describe(step)}{again}", run=run_id,
                             step=step.id, step_kind=step.kind, index=done + 1, total=total)
            t_step = time.monotonic()
            try:
                result = kind.apply(ctx, step) or {}
                kind.verify(ctx, step)
                journal.finish_step(run_id, step.id, result)
            except (LiferaftError, Exception, KeyboardInterrupt) as e:  # noqa: BLE001 (journaled, then re-raised)
                self._fail(ctx, step, e)
                raise self._translate(run_id, step, e) from (None if isinstance(e, LiferaftError) else e)
            finally:
                ctx.step = None
            done += 1
            self.events.emit("step.done", f"[{done}/{total}] {step.id} done in {time.monotonic() - t_step:.1f}s",
                             run=run_id, step=step.id, duration_s=round(time.monotonic() - t_step, 3))
            self.events.emit("run.progress", f"{done}/{total} steps", run=run_id, done=done, total=total)
            if os.environ.get(KILL_SWITCH) == step.id:
                os.kill(os.getpid(), signal.SIGKILL)
        journal.set_run_status(run_id, "done")
        out = self._outcome(journal, run_id, "done", t0)
        self.events.emit("run.done", f"run {run_id} completed in {out.duration_s:.1f}s", run=run_id,
                         summary=out.summary)
        return out

    def _fail(self, ctx: RunContext, step: Step, e: BaseException) -> None:
        message = str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"
        if isinstance(e, KeyboardInterrupt):
            message = "interrupted"
        try:
            ctx.journal.fail_step(ctx.run_id, step.id, message)
            ctx.journal.set_run_status(ctx.run_id, "stopped" if isinstance(e, KeyboardInterrupt) else "failed",
                                       f"{step.id}: {message}")
        finally:
            self.events.emit("step.failed", f"{step.id} failed: {message}", run=ctx.run_id, step=step.id,
                             error=message)

    @staticmethod
    def _translate(run_id: str, step: Step, e: BaseException) -> BaseException:
        if isinstance(e, KeyboardInterrupt):
            return e
        hint = f"fix the cause, then `liferaft resume {run_id}`; or undo with `liferaft rollback {run_id}`"
        if isinstance(e, CheckFailed):
            return CheckFailed(f"run {run_id} stopped at {step.id} ({step.title}): {e.message}", hint=hint)
        detail = e.message if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"
        return RunFailed(f"run {run_id} failed at {step.id} ({step.title}): {detail}", hint=hint)

    def _outcome(self, journal: Journal, run_id: str, status: str, t0: float) -> RunOutcome:
        steps = journal.steps(run_id)
        return RunOutcome(run_id=run_id, status=status, steps_done=sum(1 for s in steps if s.status == "done"),
                          steps_total=len(steps), summary=journal.run(run_id).summary,
                          duration_s=time.monotonic() - t0)

    # ---------------------------------------------------------------------------------------------- rollback
    def rollback(self, run_ref: str) -> RunOutcome:
        self._must_exist(run_ref)
        t0 = time.monotonic()
        box: list[RunContext] = []
        with StackLock(self.state_dir, self.stack_name or "").acquire(run_ref, by="rollback") as lock, \
                contextlib.ExitStack() as site, self._open_journal(box) as journal:
            self._clean_dead_ansible_runs()
            rec = journal.find_run(run_ref)
            lock.set_run(rec.id)
            if rec.status == "rolled-back":
                raise UsageError(f"run {rec.id} is already rolled back")
            site.enter_context(SiteLock(self.state_dir, rec.plan.stack, rec.plan.target).take(
                rec.id, by="rollback", events=self.events))
            ctx = RunContext(run_id=rec.id, plan=rec.plan, journal=journal, events=self.events,
                             state_dir=self.state_dir, stack=self.stack)
            box.append(ctx)
            order = rollback_order(rec, journal)
            journal.set_run_status(rec.id, "rolling-back")
            self.events.emit("rollback.started", f"run {rec.id}: undoing {len(order)} steps", run=rec.id,
                             steps=[s.id for s in order])
            for step in order:
                kind = get_kind(step.kind)
                if not kind.undoable:
                    self.events.emit("step.undo_skipped", f"{step.id}: nothing to undo ({step.kind})",
                                     run=rec.id, step=step.id)
                    continue
                ctx.step = step
                journal.mark_step(rec.id, step.id, "undoing")
                self.events.emit("step.undoing", f"undo {kind.describe(step)}", run=rec.id, step=step.id)
                try:
                    kind.undo(ctx, step)
                except (LiferaftError, Exception) as e:  # noqa: BLE001 (journaled, then re-raised)
                    message = str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"
                    journal.set_run_status(rec.id, "rolling-back", f"undo of {step.id} failed: {message}")
                    self.events.emit("step.failed", f"undo of {step.id} failed: {message}", run=rec.id,
                                     step=step.id, error=message)
                    raise RunFailed(f"rollback of run {rec.id} failed at {step.id}: {message}",
                                    hint=f"fix the cause, then run `liferaft rollback {rec.id}` again") from None
                finally:
                    ctx.step = None
                journal.mark_step(rec.id, step.id, "undone")
                self.events.emit("step.undone", f"{step.id} undone", run=rec.id, step=step.id)
            journal.set_run_status(rec.id, "rolled-back")
            self.events.emit("rollback.done", f"run {rec.id} rolled back", run=rec.id)
            return self._outcome(journal, rec.id, "rolled-back", t0)


def rollback_order(rec: RunRecord, journal: Journal) -> list[Step]:
    """Touched steps (done, interrupted, failed, half-undone) in reverse; `undo_first` kinds ahead of the rest."""
    touched = [s.step_id for s in journal.steps(rec.id) if s.status in ("done", "running", "failed", "undoing")]
    steps = [rec.plan.step(sid) for sid in reversed(touched)]
    first = [s for s in steps if get_kind(s.kind).undo_first]
    return first + [s for s in steps if s not in first]
