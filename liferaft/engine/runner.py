"""The runner: executes a plan's steps as a DAG, journaled, resumable, and undoable in reverse.

A step starts as soon as every step it `depends_on` is done; independent steps run at the same time, each on its
own thread, at most `max_parallel` at once (default 4); two steps whose kinds share a serial group
(`StepKind.serial`, e.g. "ansible") never overlap; among ready steps, plan order goes first. Each step is recorded as
started (committed and fsynced) before it acts and as done after it acted and verified. When a step fails no other
step starts; the running ones finish and are journaled; the run is failed and the first failure raised.
A crash at any point leaves the steps that were running 'running' (several, when they ran side by side); `resume`
skips done steps and re-applies those (step kinds are idempotent), then goes on through the DAG. `rollback` undoes
touched steps one at a time in reverse plan order, DNS-like kinds (`undo_first`) first.

Test switches (public, documented; for crash tests only):
- `LIFERAFT_TEST_KILL_AFTER_STEP=<step id>` makes the runner SIGKILL its own process right after that step's 'done'
  record is committed -- the harshest crash at a step boundary. The boundary is the plan order's: no step after it
  starts, and when steps before it still run (side by side with it), the kill comes when the last of them is done,
  so the journal holds exactly the steps up to it done, whatever the timing;
- `LIFERAFT_TEST_KILL_ON_EVENT=<event kind>` SIGKILLs it at the first such event emitted in the middle of work
  (an event whose `done`/`total` say it is neither the first nor the last), e.g. `objects.progress` for a crash in
  the middle of a data copy.
"""

from __future__ import annotations

import contextlib
import os
import secrets as _secrets
import select
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from liferaft.configure import clean_dead_runs
from liferaft.engine.journal import Journal, RunRecord, journal_file, journal_path, stack_dir
from liferaft.engine.kinds import StepKind, get_kind
from liferaft.engine.lock import SiteLock, StackLock
from liferaft.engine.plan import Plan, Step
from liferaft.errors import CheckFailed, LiferaftError, RunFailed, UsageError
from liferaft.events import Events, as_events

if TYPE_CHECKING:
    from liferaft.stack import Stack

DEFAULT_MAX_PARALLEL = 4  # steps running at the same time, at most
KILL_SWITCH = "LIFERAFT_TEST_KILL_AFTER_STEP"
KILL_ON_EVENT = "LIFERAFT_TEST_KILL_ON_EVENT"


def _kill_on_event(kind: str) -> Any:
    def observe(event: Any) -> None:
        done, total = event.data.get("done"), event.data.get("total")
        if event.kind == kind and (done is None or total is None or 0 < int(done) < int(total)):
            os.kill(os.getpid(), signal.SIGKILL)
    return observe


class StepEvents(Events):
    """The run's events as one step emits them: each tagged with the step's id (unless it names one), so what a
    mover reports (a copy's progress, a warning) is told apart from the steps running beside it."""

    def __init__(self, run_events: Events, step_id: str) -> None:
        super().__init__()
        self._run_events, self._step_id = run_events, step_id

    def subscribe(self, observer: Any) -> None:
        self._run_events.subscribe(observer)

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        data.setdefault("step", self._step_id)
        self._run_events.emit(kind, message, **data)


@dataclass
class RunContext:
    """Everything a step kind needs, in one object: the run, the stack, the journal, events and shared caches."""

    run_id: str
    plan: Plan
    journal: Journal
    events: Events
    state_dir: Path
    stack: Stack | None = None
    step: Step | None = None  # set on a step's own view (`for_step`), never on the run's context
    cache: dict[str, Any] = field(default_factory=dict)  # live objects shared by steps within one process
    _secret_values: set[str] = field(default_factory=set, repr=False)
    _secret_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _opening: dict[str, threading.Lock] = field(default_factory=dict, repr=False)

    def for_step(self, step: Step) -> RunContext:
        """This step's own view of the run: `memo`, `remember` and `emit` are the step's, while the journal,
        events, the cache of live objects and the secrets are the run's (shared with the steps running beside
        it, each guarded by a lock)."""
        return replace(self, step=step, events=StepEvents(self.events, step.id))

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
        """The named provider of the stack, opened once per run, also when steps running side by side ask for it
        at the same time (the first opens it, the others wait for that one). Provider objects are shared by the
        steps' threads."""
        key = f"provider:{name}"
        with self._cache_lock:
            if key in self.cache:
                return self.cache[key]
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:  # one opener per provider; other providers open meanwhile
            with self._cache_lock:
                if key in self.cache:
                    return self.cache[key]
            from liferaft.engine.observe import open_provider

            # Credentials resolved for the provider are secrets too: the journal refuses to store them.
            value = open_provider(self.require_stack(), name, self.state_dir, resolve=self.secret)
            with self._cache_lock:
                return self.cache.setdefault(key, value)

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
        assert self.step is not None, "memo is a step's: use the context the step was given (for_step)"
        return self.journal.step(self.run_id, self.step.id).memo

    def remember(self, **memo: Any) -> None:
        """Write notes for the current step to the journal now, before acting on them."""
        assert self.step is not None, "notes are a step's: use the context the step was given (for_step)"
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
                 stack_name: str | None = None, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        """`max_parallel`: how many independent steps may run at the same time (1: one after another)."""
        if max_parallel < 1:
            raise UsageError(f"max_parallel must be at least 1, not {max_parallel}")
        self.max_parallel = max_parallel
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
    def _existing_run(self, run_ref: str, by: str
                      ) -> Iterator[tuple[RunRecord, Journal, contextlib.ExitStack, list[RunContext]]]:
        """For resume and rollback: the stack's lock (held `by`), an ExitStack for the site lock the caller takes
        once its checks passed, the journal, and the run `run_ref` found in it (the caller has checked that it
        exists: `_must_exist`, before the lock). The list is where the caller puts the run's context (the journal asks it for secrets)."""
        box: list[RunContext] = []
        with StackLock(self.state_dir, self.stack_name or "").acquire(run_ref, by=by) as lock, \
                contextlib.ExitStack() as site, self._open_journal(box) as journal:
            self._clean_dead_ansible_runs()
            rec = journal.find_run(run_ref)
            lock.set_run(rec.id)
            yield rec, journal, site, box

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
        plan.require_no_blocking()  # what the plan's checks found at the source is fixed first: nothing is created
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
                             f"{len(plan.steps)} steps", run=run_id, plan_hash=plan.hash,
                             steps=list(plan.step_ids))
            return self._execute(ctx, stop_before)

    # ------------------------------------------------------------------------------------------------ resume
    def resume(self, run_ref: str, *, stop_before: str | None = None) -> RunOutcome:
        self._must_exist(run_ref)
        with self._existing_run(run_ref, "failover run") as (rec, journal, site, box):
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
                             f" ({len(pending)} of {len(rec.plan.steps)} steps left)", run=rec.id,
                             steps=list(rec.plan.step_ids),
                             done=[sid for sid in rec.plan.step_ids if sid not in {p.step_id for p in pending}])
            return self._execute(ctx, stop_before)

    def _execute(self, ctx: RunContext, stop_before: str | None) -> RunOutcome:
        """Run the steps not yet done as a DAG (see `_Dag`); the run ends done, stopped (`stop_before`, Ctrl-C)
        or failed (the first failure is raised, translated)."""
        t0 = time.monotonic()
        dag = _Dag(self, ctx, stop_before)
        try:
            dag.run()
        except KeyboardInterrupt:
            dag.interrupt()
            raise
        journal, run_id = ctx.journal, ctx.run_id
        if dag.failure is not None:
            step, e, raw = dag.failure
            if raw or isinstance(e, KeyboardInterrupt):
                raise e
            raise self._translate(run_id, step, e) from (None if isinstance(e, LiferaftError) else e)
        if dag.stopped_at is not None:
            sid = dag.stopped_at
            journal.set_run_status(run_id, "stopped", f"stopped before {sid} as asked")
            self.events.emit("run.stopped", f"run {run_id} stopped before {sid}; "
                             f"continue with `liferaft resume {run_id}`", run=run_id, step=sid)
            return self._outcome(journal, run_id, "stopped", t0)
        journal.set_run_status(run_id, "done")
        out = self._outcome(journal, run_id, "done", t0)
        self.events.emit("run.done", f"run {run_id} completed in {out.duration_s:.1f}s", run=run_id,
                         summary=out.summary)
        return out

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
        with self._existing_run(run_ref, "rollback") as (rec, journal, site, box):
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
                journal.mark_step(rec.id, step.id, "undoing")
                self.events.emit("step.undoing", f"undo {kind.describe(step)}", run=rec.id, step=step.id)
                try:
                    kind.undo(ctx.for_step(step), step)
                except (LiferaftError, Exception) as e:  # noqa: BLE001 (journaled, then re-raised)
                    message = str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"
                    journal.set_run_status(rec.id, "rolling-back", f"undo of {step.id} failed: {message}")
                    self.events.emit("step.failed", f"undo of {step.id} failed: {message}", run=rec.id,
                                     step=step.id, error=message)
                    raise RunFailed(f"rollback of run {rec.id} failed at {step.id}: {message}",
                                    hint=f"fix the cause, then run `liferaft rollback {rec.id}` again") from None
                journal.mark_step(rec.id, step.id, "undone")
                self.events.emit("step.undone", f"{step.id} undone", run=rec.id, step=step.id)
            journal.set_run_status(rec.id, "rolled-back")
            self.events.emit("rollback.done", f"run {rec.id} rolled back", run=rec.id)
            return self._outcome(journal, rec.id, "rolled-back", t0)


def _message(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"


class _Wakeup:
    """What the scheduler sleeps on: a self-pipe that a step thread writes to when its step ends, and so does
    Ctrl-C.

    While the DAG runs in the main thread with Python's own SIGINT handler in place, SIGINT gets a handler that
    only sets `pressed` and writes a byte: it never raises into what the scheduler was doing (a journal
    transaction between BEGIN and COMMIT, a Condition's release and re-acquire, a thread's start, each of which a
    KeyboardInterrupt could leave half done), so the scheduler meets the Ctrl-C at the top of its loop, holding
    nothing. An ignored SIGINT stays ignored (a background job's), and another handler is left alone: there, and
    in another thread, a Ctrl-C arrives as the KeyboardInterrupt it always was (handled by `Runner._execute`)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._poll = select.poll()  # not select(): a busy process may hand out fd numbers past FD_SETSIZE
        self._poll.register(self._r, select.POLLIN)
        self.pressed = False
        self.closed = False
        self._previous: Any = None

    def __enter__(self) -> Self:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.pressed = True
        self.wake()

    def wake(self) -> None:
        """Called with the DAG's lock held (or from the signal handler, in the thread that closes the pipe)."""
        if not self.closed:
            with contextlib.suppress(OSError):  # full: a wake-up is pending already
                os.write(self._w, b"\0")

    def wait(self, timeout: float) -> None:
        """Until a wake-up (or the timeout); drains what was written."""
        if self._poll.poll(timeout * 1000):
            with contextlib.suppress(OSError):
                os.read(self._r, 4096)

    def close(self) -> None:
        """Called with the DAG's lock held: a step thread left running (after Ctrl-C) never writes to an fd
        number that is another file's by then."""
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


class _Dag:
    """One execution of a run's remaining steps as a DAG, shared by the calling thread and the step threads.

    The calling thread schedules: a step starts when every step it `depends_on` is done, at most `max_parallel` at
    once, never beside a running step of the same serial group (`StepKind.serial`); among ready steps plan order
    goes first. Each step runs on its own daemon thread (a Ctrl-C or a crash must not wait for it). Its 'running'
    record is committed by the scheduler before the thread starts; the thread commits 'done' (or 'failed') when
    the step ends. After a failure no step starts; the running ones finish and are journaled. Everything below
    is guarded by `lock`; the scheduler sleeps on `wakeup` (see `_Wakeup`: Ctrl-C lands there, not in the middle
    of its work), outside the lock."""

    def __init__(self, runner: Runner, ctx: RunContext, stop_before: str | None) -> None:
        self.runner, self.ctx, self.events = runner, ctx, runner.events
        self.journal, self.run_id, plan = ctx.journal, ctx.run_id, ctx.plan
        self.total = len(plan.steps)
        self.records = {r.step_id: r for r in self.journal.steps(self.run_id)}
        self.done = {sid for sid, r in self.records.items() if r.status == "done"}
        limit = len(plan.steps)
        if stop_before is not None:
            limit = plan.step_ids.index(stop_before)
        # Steps before `stop_before` only (their dependencies are earlier still): all of them run, no later one --
        # also when `stop_before` itself is already done (it ran early, beside others): the run stops before the
        # first step from there on that is not done; only when every one of them is done is there nothing to stop.
        left = [s.id for s in plan.steps[limit:] if s.id not in self.done]
        self.stopped_at: str | None = left[0] if left else None
        # The crash tests' kill switch: nothing after that step starts; the process dies once it and all before it
        # are done (see the module's doc). A step already done, or not to run before `stop_before`, kills nothing.
        kill = os.environ.get(KILL_SWITCH)
        self.kill_after: str | None = None
        if kill in plan.step_ids and kill not in self.done and plan.step_ids.index(kill) < limit:
            self.kill_after, limit = kill, plan.step_ids.index(kill) + 1
        self.todo = [s for s in plan.steps[:limit] if s.id not in self.done]
        self.lock = threading.RLock()
        self.running: dict[str, Step] = {}
        self.busy: set[str] = set()  # serial groups of the running steps
        self.started = self.finished = len(self.done)
        self.failure: tuple[Step, BaseException, bool] | None = None  # (step, error, raise as is)
        self.interrupted = False
        self.wakeup = _Wakeup()

    def run(self) -> None:
        """Schedule until no step runs; Ctrl-C (see `_Wakeup`): the running steps are journaled interrupted, the
        run stopped, then KeyboardInterrupt is raised from here, where nothing is half done."""
        try:
            with self.wakeup:
                for step in self.ctx.plan.steps:
                    if step.id in self.done:
                        self.events.emit("step.skipped", f"{step.id}: already done", run=self.run_id, step=step.id)
                while True:
                    with self.lock:
                        if self.wakeup.pressed:
                            break
                        if self.failure is None:
                            self._start_ready()
                        if not self.running:
                            break
                    self.wakeup.wait(timeout=1.0)
                if self.wakeup.pressed:
                    self.interrupt()  # with the handler still ours: a second Ctrl-C does not cut this short
        finally:
            with self.lock:
                self.wakeup.close()
        if self.wakeup.pressed:
            raise KeyboardInterrupt
        if self.failure is None and self.todo:  # cannot happen: dependencies are earlier steps
            raise RunFailed(f"run {self.run_id}: no step can start ({', '.join(s.id for s in self.todo)})")

    def _start_ready(self) -> None:
        for step in list(self.todo):
            if len(self.running) >= self.runner.max_parallel or self.wakeup.pressed:
                return
            if any(dep not in self.done for dep in step.depends_on):
                continue
            kind = get_kind(step.kind)
            if kind.serial is not None and kind.serial in self.busy:
                continue
            self.todo.remove(step)
            self._launch(step, kind)
            if self.failure is not None:
                return

    def _launch(self, step: Step, kind: StepKind) -> None:
        self.running[step.id] = step
        try:
            self.journal.begin_step(self.run_id, step.id)  # committed and fsynced before the step acts
        except (LiferaftError, Exception) as e:  # noqa: BLE001 (the journal could not be written: raised as is)
            del self.running[step.id]
            self.failure = (step, e, True)
            return
        if kind.serial is not None:
            self.busy.add(kind.serial)
        self.started += 1
        again = " (again: it was interrupted)" if self.records[step.id].status in ("running", "failed") else ""
        self.events.emit("step.started", f"[{self.started}/{self.total}] {kind.describe(step)}{again}",
                         run=self.run_id, step=step.id, step_kind=step.kind, index=self.started, total=self.total)
        threading.Thread(target=self._work, args=(step, kind), name=f"liferaft-step-{step.id}", daemon=True).start()

    def _work(self, step: Step, kind: StepKind) -> None:
        """A step's thread: apply, verify, journal the outcome, wake the scheduler."""
        t_step = time.monotonic()
        sctx = self.ctx.for_step(step)
        try:
            result = _apply(kind, sctx, step)
            kind.verify(sctx, step)
            with self.lock:
                if self.interrupted:  # the scheduler journaled this step 'interrupted'; the run is over
                    return
                self.journal.finish_step(self.run_id, step.id, result)
                self._ended(step, kind)
                self.done.add(step.id)
                self.finished += 1
                took = time.monotonic() - t_step
                self.events.emit("step.done", f"[{self.finished}/{self.total}] {step.id} done in {took:.1f}s",
                                 run=self.run_id, step=step.id, duration_s=round(took, 3))
                self.events.emit("run.progress", f"{self.finished}/{self.total} steps", run=self.run_id,
                                 done=self.finished, total=self.total)
                if self.kill_after in self.done and not self.todo and not self.running and self.failure is None:
                    os.kill(os.getpid(), signal.SIGKILL)  # still holding the lock: nothing else is journaled
        except BaseException as e:  # noqa: BLE001 (journaled here, raised by the scheduler)
            with self.lock:
                self._ended(step, kind)
                if not self.interrupted:
                    self._fail(step, e)

    def _ended(self, step: Step, kind: StepKind) -> None:
        self.running.pop(step.id, None)
        if kind.serial is not None:
            self.busy.discard(kind.serial)
        self.wakeup.wake()

    def _fail(self, step: Step, e: BaseException) -> None:
        message = _message(e)
        first = self.failure is None
        if first:
            self.failure = (step, e, False)
        try:
            self.journal.fail_step(self.run_id, step.id, message)
            if first:
                self.journal.set_run_status(self.run_id, "stopped" if isinstance(e, KeyboardInterrupt) else "failed",
                                            f"{step.id}: {message}")
        except (LiferaftError, Exception) as je:  # noqa: BLE001 (the journal could not be written: raised as is)
            if first:
                self.failure = (step, je, True)
        finally:
            self.events.emit("step.failed", f"{step.id} failed: {message}", run=self.run_id, step=step.id,
                             error=message)

    def interrupt(self) -> None:
        """Ctrl-C in the scheduling thread: the running steps are journaled failed ("interrupted"), the run
        stopped. Their threads (daemons) are left to the process's exit; they journal nothing more. Once only."""
        with self.lock:
            if self.interrupted:
                return
            self.interrupted = True
            running = [s for s in self.ctx.plan.steps if s.id in self.running]
            self.running.clear()
            for step in running:
                self.journal.fail_step(self.run_id, step.id, "interrupted")
                self.events.emit("step.failed", f"{step.id} failed: interrupted", run=self.run_id, step=step.id,
                                 error="interrupted")
            self.journal.set_run_status(self.run_id, "stopped",
                                        f"{running[0].id}: interrupted" if running else "interrupted")


def rollback_order(rec: RunRecord, journal: Journal) -> list[Step]:
    """Touched steps (done, interrupted, failed, half-undone) in reverse; `undo_first` kinds ahead of the rest."""
    touched = [s.step_id for s in journal.steps(rec.id) if s.status in ("done", "running", "failed", "undoing")]
    steps = [rec.plan.step(sid) for sid in reversed(touched)]
    first = [s for s in steps if get_kind(s.kind).undo_first]
    return first + [s for s in steps if s not in first]


def _apply(kind: StepKind, ctx: RunContext, step: Step) -> dict[str, Any]:
    """A step's apply. A check that fails while a step acts (not a verification: a precondition refused midway,
    such as logical replication refusing tables without a primary key) stops the run like any other failure: exit 4,
    resume or roll back. Only a verification -- a gate, or a step's own `verify` -- fails as a check (exit 1)."""
    try:
        return kind.apply(ctx, step) or {}
    except CheckFailed as e:
        if kind.gate:
            raise
        raise RunFailed(e.message, hint=e.hint) from e
