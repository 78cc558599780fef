"""The runner runs a plan as a DAG: independent steps side by side (bounded), dependents after their dependencies,
serial groups one at a time, failures stopping new starts, crashes and Ctrl-C leaving a resumable journal.

Intervals are read from the journal (each step's `started`/`finished`, written before and after it acts), never
from how fast the machine is. `python -m tests.unit.test_engine_dag start STATE_DIR PLAN_FILE` runs a plan in a
real subprocess (for SIGKILL and Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from liferaft.engine import Journal, Plan, RunContext, Runner, Step, StepKind, journal_path, register
from liferaft.errors import CheckFailed, UsageError
from liferaft.events import Event, Events

REPO = Path(__file__).resolve().parents[2]


def _log(step: Step, what: str) -> None:
    with open(step.params["calls"], "a", encoding="utf-8") as f:
        f.write(f"{what} {step.id}\n")


class _Gauge:
    """How many steps are inside apply (or undo) at once in this process, and the most ever seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


GAUGE = _Gauge()
UNDO_GAUGE = _Gauge()


@register
class ToySleep(StepKind):
    """Sleep `seconds` (default 0.3); undo is logged. `marker`: a folder where it drops `<id>.started` first and,
    with `wait_for`, waits (at most `patience` seconds) until those steps' markers exist too, so that steps are
    known to run at once whatever the machine's speed; with TOY_KILL_WHEN_ALL set it then SIGKILLs its own
    process (once). `until`: a file whose existence ends the sleep early (a resumed long step need not last)."""

    name = "toy.sleep"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        with GAUGE:
            marker = step.params.get("marker")
            if marker:
                Path(marker, f"{step.id}.started").write_text("")
                others = [Path(marker, f"{o}.started") for o in step.params.get("wait_for", [])]
                deadline = time.monotonic() + float(step.params.get("patience", 30))
                while not all(p.exists() for p in others) and time.monotonic() < deadline:
                    time.sleep(0.02)
                crashed = Path(marker, ".crashed")
                if os.environ.get("TOY_KILL_WHEN_ALL") and others and not crashed.exists():
                    crashed.write_text("")
                    os.kill(os.getpid(), signal.SIGKILL)
            until = step.params.get("until")
            if until:
                deadline = time.monotonic() + float(step.params.get("seconds", 0.3))
                while not Path(until).exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            else:
                time.sleep(float(step.params.get("seconds", 0.3)))
        return {"slept": step.params.get("seconds", 0.3)}

    def undo(self, ctx: RunContext, step: Step) -> None:
        _log(step, "undo")
        with UNDO_GAUGE:
            time.sleep(0.05)


@register
class ToySerial(ToySleep):
    """The same, in a serial group (as every Ansible-playbook kind is in "ansible")."""

    name = "toy.serial"
    serial = "toy-group"


@register
class ToyFirst(ToySleep):
    """The same, undone before all others (like DNS)."""

    name = "toy.first"
    undo_first = True


@register
class ToyFail(StepKind):
    """Sleep `seconds`, then fail its verification with `error`."""

    name = "toy.fail"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        time.sleep(float(step.params.get("seconds", 0.1)))
        return {}

    def verify(self, ctx: RunContext, step: Step) -> None:
        if not Path(step.params["fixed"]).exists():
            raise CheckFailed(step.params.get("error", "boom"))


@register
class ToyNotes(StepKind):
    """Write its own id into its notes, emit an event (itself and as a mover would), sleep, and return what its notes say then."""

    name = "toy.notes"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        ctx.remember(me=step.id)
        for _ in range(5):
            ctx.emit("toy.note", f"{step.id} working", who=step.id)
            ctx.events.emit("toy.mover", f"{step.id} copying", who=step.id)  # as a mover given the events does
            time.sleep(0.02)
        return {"memo": ctx.memo.get("me")}


def sleeps(tmp: Path, ids: str, kind: str = "toy.sleep", seconds: float = 0.3,
           deps: dict[str, tuple[str, ...]] | None = None, **params: Any) -> list[Step]:
    calls = str(tmp / "calls.log")
    return [Step(i, kind, i, {"seconds": seconds, "calls": calls, **params}, (deps or {}).get(i, ()))
            for i in ids.split()]


def plan_of(steps: list[Step], stack: str = "toy") -> Plan:
    return Plan(stack=stack, source="here", target="there", mode="live", steps=tuple(steps))


def intervals(state: Path, run_id: str, stack: str = "toy") -> dict[str, tuple[float, float]]:
    with Journal(journal_path(state, stack)) as j:
        return {s.step_id: (s.started, s.finished) for s in j.steps(run_id)
                if s.started is not None and s.finished is not None}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


def calls(tmp: Path) -> list[str]:
    p = tmp / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def journal_log(state: Path, run_id: str) -> list[tuple[str, str]]:
    with Journal(journal_path(state, "toy")) as j:
        return [(e["step"], e["action"]) for e in j.log(run_id) if e["step"]]


@pytest.fixture(autouse=True)
def _reset_gauges() -> None:
    GAUGE.most = UNDO_GAUGE.most = 0


# ---------------------------------------------------------------------------------------------- concurrency
def together(tmp: Path, ids: str, n: int) -> list[Step]:
    """Independent steps; the first n wait (up to 5 s) until all n have started, so n at once is not left to
    timing: when fewer may run at once they wait in vain, and go on."""
    marker = tmp / "markers"
    marker.mkdir(exist_ok=True)
    first = ids.split()[:n]
    return [Step(s.id, s.kind, s.title, {**s.params, "marker": str(marker), "patience": 5,
                                         "wait_for": [o for o in first if o != s.id]})
            if s.id in first else s for s in sleeps(tmp, ids, seconds=0.1)]


def test_independent_steps_overlap(tmp_path: Path) -> None:
    """Two steps with no dependency between them run at the same time (their journaled intervals overlap)."""
    state = tmp_path / "state"
    out = Runner(state, stack_name="toy").start(plan_of(together(tmp_path, "a b", 2)))
    assert out.status == "done" and out.steps_done == 2
    spans = intervals(state, out.run_id)
    assert overlap(spans["a"], spans["b"]), spans
    assert GAUGE.most == 2


def test_a_dependent_step_starts_only_after_its_dependencies_finished(tmp_path: Path) -> None:
    """c needs a and b; d needs c: each starts after what it needs was journaled done (timestamps and log order)."""
    state = tmp_path / "state"
    a, b = together(tmp_path, "a b", 2)
    b = Step("b", "toy.sleep", "b", {**b.params, "seconds": 0.5})  # the slower dependency
    steps = [a, b, *sleeps(tmp_path, "c d", deps={"c": ("a", "b"), "d": ("c",)})]
    out = Runner(state, stack_name="toy").start(plan_of(steps))
    spans = intervals(state, out.run_id)
    assert overlap(spans["a"], spans["b"])
    assert spans["c"][0] >= max(spans["a"][1], spans["b"][1]) and spans["d"][0] >= spans["c"][1], spans
    log = journal_log(state, out.run_id)
    for step, needs in (("c", "a"), ("c", "b"), ("d", "c")):
        assert log.index((needs, "step.done")) < log.index((step, "step.started")), log


@pytest.mark.parametrize("bound", [1, 2, 3])
def test_max_parallel_is_respected(tmp_path: Path, bound: int) -> None:
    """Six independent steps with max_parallel=N: never more than N at once, and N reached."""
    state = tmp_path / "state"
    steps = together(tmp_path, "s1 s2 s3 s4 s5 s6", bound if bound > 1 else 0)
    out = Runner(state, stack_name="toy", max_parallel=bound).start(plan_of(steps))
    assert out.status == "done"
    assert most_at_once(list(intervals(state, out.run_id).values())) == bound
    assert GAUGE.most == bound


def test_default_bound_is_four(tmp_path: Path) -> None:
    """Five steps want to run at once (each waits up to 5 s for the other four): four do, the fifth starts only
    when one of them ends."""
    state = tmp_path / "state"
    out = Runner(state, stack_name="toy").start(plan_of(together(tmp_path, "s1 s2 s3 s4 s5 s6", 5)))
    assert most_at_once(list(intervals(state, out.run_id).values())) == 4 == GAUGE.most


def test_max_parallel_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="max_parallel"):
        Runner(tmp_path, stack_name="toy", max_parallel=0)


def test_ready_steps_start_in_plan_order(tmp_path: Path) -> None:
    """With one at a time, independent steps run in plan order; the journal's [i/N] counts starts."""
    seen: list[Event] = []
    state = tmp_path / "state"
    Runner(state, stack_name="toy", max_parallel=1, events=Events(seen.append)).start(
        plan_of(sleeps(tmp_path, "z y x w", seconds=0.01)))
    assert calls(tmp_path) == ["apply z", "apply y", "apply x", "apply w"]
    started = [e for e in seen if e.kind == "step.started"]
    assert [e.message.split()[0] for e in started] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert [e.data["done"] for e in seen if e.kind == "run.progress"] == [1, 2, 3, 4]


def test_serial_group_steps_never_overlap(tmp_path: Path) -> None:
    """Steps whose kinds share a serial group run one at a time; other steps run beside them."""
    state = tmp_path / "state"
    steps = sleeps(tmp_path, "p1 p2 p3", kind="toy.serial", seconds=0.3) + sleeps(tmp_path, "free", seconds=0.8)
    out = Runner(state, stack_name="toy").start(plan_of(steps))
    spans = intervals(state, out.run_id)
    serial = [spans[i] for i in ("p1", "p2", "p3")]
    assert most_at_once(serial) == 1, spans
    assert any(overlap(spans["free"], s) for s in serial), spans
    assert calls(tmp_path).index("apply p1") < calls(tmp_path).index("apply p2") < calls(tmp_path).index("apply p3")


def test_each_step_has_its_own_context(tmp_path: Path) -> None:
    """Steps running at once: each one's notes, result and events are its own (no shared 'current step')."""
    seen: list[Event] = []
    state = tmp_path / "state"
    steps = [Step(f"n{i}", "toy.notes", f"n{i}") for i in range(4)]
    out = Runner(state, stack_name="toy", events=Events(seen.append)).start(plan_of(steps))
    with Journal(journal_path(state, "toy")) as j:
        for s in j.steps(out.run_id):
            assert s.memo == {"me": s.step_id} and s.result == {"memo": s.step_id}
    notes = [e for e in seen if e.kind == "toy.note"]
    assert len(notes) == 20 and all(e.data["step"] == e.data["who"] for e in notes)
    moved = [e for e in seen if e.kind == "toy.mover"]  # what a mover reports names the step it works for
    assert len(moved) == 20 and all(e.data["step"] == e.data["who"] for e in moved)
    spans = intervals(state, out.run_id)
    assert most_at_once(list(spans.values())) > 1  # they did run side by side


# ---------------------------------------------------------------------------------------------------- failure
def test_a_failure_stops_new_starts_and_running_siblings_finish(tmp_path: Path) -> None:
    """bad fails while slow runs: slow finishes and is journaled done, after (ready, waiting for a slot) and
    after-slow (its dependent) never start, the run is failed and bad's error is raised."""
    state = tmp_path / "state"
    c, fixed = str(tmp_path / "calls.log"), str(tmp_path / "fixed")
    steps = [Step("slow", "toy.sleep", "slow", {"seconds": 1.0, "calls": c}),
             Step("bad", "toy.fail", "bad", {"seconds": 0.1, "error": "first failure", "calls": c, "fixed": fixed}),
             Step("bad2", "toy.fail", "bad2", {"seconds": 0.4, "error": "second failure", "calls": c,
                                               "fixed": fixed}),
             Step("after", "toy.sleep", "after", {"calls": c}),
             Step("after-slow", "toy.sleep", "after slow", {"calls": c}, ("slow",))]
    runner = Runner(state, stack_name="toy", max_parallel=3)
    with pytest.raises(CheckFailed, match="first failure") as err:
        runner.start(plan_of(steps))
    assert "stopped at bad " in err.value.message
    with runner.journal() as j:
        (rec,) = j.runs()
        status = {s.step_id: s.status for s in j.steps(rec.id)}
        assert rec.status == "failed" and "bad: first failure" in (rec.error or "")
        assert j.step(rec.id, "bad2").error == "second failure"
        spans = {s.step_id: (s.started, s.finished) for s in j.steps(rec.id)}
    assert status == {"slow": "done", "bad": "failed", "bad2": "failed", "after": "pending",
                      "after-slow": "pending"}
    assert spans["slow"][1] > spans["bad"][1]  # slow was still running when bad failed, and was waited for
    assert "apply after" not in calls(tmp_path) and "apply after-slow" not in calls(tmp_path)
    (tmp_path / "fixed").write_text("")  # the cause fixed: resume re-applies the failed steps and goes on
    assert runner.resume(rec.id).status == "done"
    assert calls(tmp_path).count("apply slow") == 1 and calls(tmp_path).count("apply bad") == 2


# ---------------------------------------------------------------------------------------------------- crashes
def run_subprocess(tmp: Path, plan: Plan, state: Path, *, ignore_sigint: bool = False,
                   **env: str) -> subprocess.Popen[str]:
    """`main` below in a child. `ignore_sigint`: started with SIGINT ignored, as a job a script starts in the
    background is (and everything such a suite starts)."""
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    argv = [sys.executable, "-m", "tests.unit.test_engine_dag", "start", str(state), str(plan_file)]
    if ignore_sigint:
        argv = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *argv]
    return subprocess.Popen(argv, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def two_at_once(tmp: Path, seconds: float = 0.2) -> Plan:
    """first -> (left, right: each waits until the other runs too) -> last."""
    marker = tmp / "markers"
    marker.mkdir(exist_ok=True)
    c = str(tmp / "calls.log")
    return plan_of([
        Step("first", "toy.sleep", "first", {"seconds": 0.01, "calls": c}),
        Step("left", "toy.sleep", "left", {"seconds": seconds, "calls": c, "marker": str(marker),
                                           "wait_for": ["right"]}, ("first",)),
        Step("right", "toy.sleep", "right", {"seconds": seconds, "calls": c, "marker": str(marker),
                                             "wait_for": ["left"]}, ("first",)),
        Step("last", "toy.sleep", "last", {"seconds": 0.01, "calls": c}, ("left", "right")),
    ])


def test_sigkill_while_two_steps_run_then_resume(tmp_path: Path) -> None:
    """A real process SIGKILLed while two steps run side by side: both stay 'running' in the journal; resume
    re-applies both, then the rest of the DAG, and completes."""
    state = tmp_path / "state"
    proc = run_subprocess(tmp_path, two_at_once(tmp_path), state, TOY_KILL_WHEN_ALL="1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        status = {s.step_id: s.status for s in j.steps(rec.id)}
        assert rec.status == "running" and status == {"first": "done", "left": "running", "right": "running",
                                                      "last": "pending"}
    seen: list[Event] = []
    out = Runner(state, stack_name="toy", events=Events(seen.append)).resume(rec.id)
    assert out.status == "done" and out.steps_done == 4
    assert sorted(calls(tmp_path)) == sorted(["apply first", "apply left", "apply right", "apply left",
                                              "apply right", "apply last"])
    again = [e.message for e in seen if e.kind == "step.started"]
    assert len(again) == 3 and sum("(again: it was interrupted)" in m for m in again) == 2
    with runner.journal() as j:
        assert {s.step_id: s.attempts for s in j.steps(rec.id)} == {"first": 1, "left": 2, "right": 2, "last": 1}
    spans = intervals(state, rec.id)
    assert overlap(spans["left"], spans["right"]) and spans["last"][0] >= max(spans["left"][1], spans["right"][1])


def test_kill_after_step_switch_kills_at_the_plan_order_boundary(tmp_path: Path) -> None:
    """LIFERAFT_TEST_KILL_AFTER_STEP=quick while `long` (before it in plan order) runs beside it: nothing after
    quick starts (not even `free`, which needs nothing), the process dies once long is done too, so the journal
    holds exactly the steps up to quick done -- whatever the timing; resume completes."""
    state = tmp_path / "state"
    c = str(tmp_path / "calls.log")
    plan = plan_of([Step("long", "toy.sleep", "long", {"seconds": 1.0, "calls": c}),
                    Step("quick", "toy.sleep", "quick", {"seconds": 0.1, "calls": c}),
                    Step("free", "toy.sleep", "free", {"seconds": 0.01, "calls": c}),
                    Step("then", "toy.sleep", "then", {"seconds": 0.01, "calls": c}, ("quick",))])
    proc = run_subprocess(tmp_path, plan, state, LIFERAFT_TEST_KILL_AFTER_STEP="quick")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        assert rec.status == "running"
        assert {s.step_id: s.status for s in j.steps(rec.id)} == {"long": "done", "quick": "done", "free": "pending",
                                                                  "then": "pending"}
    spans = intervals(state, rec.id)
    assert overlap(spans["long"], spans["quick"]) and spans["quick"][1] < spans["long"][1]
    assert runner.resume(rec.id).status == "done"
    assert sorted(calls(tmp_path)) == ["apply free", "apply long", "apply quick", "apply then"]


def test_ctrl_c_marks_running_steps_interrupted_and_exits_at_once(tmp_path: Path) -> None:
    """SIGINT while two long steps run on worker threads: the process ends promptly (its threads do not keep it
    alive), both steps are journaled failed ('interrupted'), the run stopped (resumed: the test below)."""
    state = tmp_path / "state"
    plan = two_at_once(tmp_path, seconds=30.0)
    proc = run_subprocess(tmp_path, plan, state)
    markers = tmp_path / "markers"
    deadline = time.monotonic() + 30
    while not ((markers / "left.started").exists() and (markers / "right.started").exists()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 10  # not the steps' 30 s
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        steps = {s.step_id: s for s in j.steps(rec.id)}
        assert rec.status == "stopped" and "interrupted" in (rec.error or "")
        assert steps["left"].status == steps["right"].status == "failed"
        assert steps["left"].error == steps["right"].error == "interrupted"
        assert steps["last"].status == "pending"


def test_ctrl_c_when_the_suite_was_started_in_the_background(tmp_path: Path) -> None:
    """The same while the child inherits SIGINT ignored (a suite a script starts with `&` in a shell without job
    control: the hang seen once, 30 s instead of an exit): the test's child answers SIGINT whatever it inherited."""
    state = tmp_path / "state"
    proc = run_subprocess(tmp_path, two_at_once(tmp_path, seconds=30.0), state, ignore_sigint=True)
    markers = tmp_path / "markers"
    deadline = time.monotonic() + 30
    while not ((markers / "left.started").exists() and (markers / "right.started").exists()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err


def busy_then_long(tmp: Path, layers: int = 10) -> Plan:
    """first, then `layers` layers of 4 short steps (each layer after the one before: the scheduler starts threads
    and journals all the time), then `long` (30 s, or until the file `release` exists)."""
    marker = tmp / "markers"
    marker.mkdir(exist_ok=True)
    c = str(tmp / "calls.log")
    steps = [Step("first", "toy.sleep", "first", {"seconds": 0.01, "calls": c, "marker": str(marker)})]
    before: tuple[str, ...] = ("first",)
    for n in range(layers):
        ids = tuple(f"s{n}-{k}" for k in range(4))
        steps += [Step(i, "toy.sleep", i, {"seconds": 0.02, "calls": c}, before) for i in ids]
        before = ids
    steps.append(Step("long", "toy.sleep", "long", {"seconds": 30.0, "calls": c, "until": str(tmp / "release")},
                      before))
    return plan_of(steps)


def ctrl_c_at(tmp: Path, delay: float, *, ignore_sigint: bool = False) -> list[str]:
    """Run `busy_then_long` in a child, SIGINT it `delay` s after its first step started (wherever the scheduler
    is then: launching, journaling, waiting). What went wrong, if anything: it must exit 130 within 10 s, leave no
    step 'running' (those that ran are failed 'interrupted'), the run stopped; a resume then completes every
    step, each applied once more at most."""
    state = tmp / "state"
    plan = busy_then_long(tmp)
    proc = run_subprocess(tmp, plan, state, ignore_sigint=ignore_sigint)
    try:
        deadline = time.monotonic() + 30
        while not (tmp / "markers" / "first.started").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                return [f"the run did not start (exit {proc.poll()})"]
            time.sleep(0.005)
        time.sleep(delay)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            return [f"no exit within 20 s of SIGINT (sent {delay:.3f} s in)"]
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    problems = []
    if proc.returncode != 130:
        problems.append(f"exit {proc.returncode} (SIGINT {delay:.3f} s in): {err.strip()[-800:]}")
    if took > 10:
        problems.append(f"exit took {took:.1f} s")
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        steps = j.steps(rec.id)
    if rec.status != "stopped":
        problems.append(f"run {rec.status} ({rec.error})")
    for s in steps:
        if s.status == "running" or (s.status == "failed" and s.error != "interrupted"):
            problems.append(f"step {s.step_id} {s.status} ({s.error})")
    if problems:
        return problems
    (tmp / "release").write_text("")
    out = runner.resume(rec.id)
    applied = calls(tmp)
    if out.status != "done" or out.steps_done != len(plan.steps):
        problems.append(f"resume: {out.status}, {out.steps_done}/{len(plan.steps)} done")
    for sid in plan.step_ids:
        if not 1 <= applied.count(f"apply {sid}") <= 2:
            problems.append(f"{sid} applied {applied.count(f'apply {sid}')} times")
    return problems


def test_ctrl_c_at_any_point_leaves_a_resumable_journal(tmp_path: Path) -> None:
    """Ctrl-C wherever the scheduler is (several points of a busy run; bench/stress_ctrl_c.py tries hundreds):
    the process exits 130 at once, no step is left 'running', the run is stopped and resumes to the end."""
    for n, delay in enumerate((0.0, 0.03, 0.11, 0.27)):
        tmp = tmp_path / str(n)
        tmp.mkdir()
        assert ctrl_c_at(tmp, delay) == []


def test_the_runner_takes_sigint_only_while_the_dag_runs_and_leaves_an_ignored_one_alone(tmp_path: Path) -> None:
    """During a run the scheduler's own SIGINT handler is in place (it only flags and wakes), Python's is back
    after; a SIGINT ignored on entry (a background job's) stays ignored throughout."""
    seen: list[Any] = []
    plan = plan_of(sleeps(tmp_path, "a", seconds=0.01))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever pytest was started with
    try:
        Runner(tmp_path / "s1", stack_name="toy", events=Events(lambda e: seen.append(
            signal.getsignal(signal.SIGINT)) if e.kind == "step.done" else None)).start(plan)
        assert seen and seen[0] is not signal.default_int_handler and callable(seen[0])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        seen.clear()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        Runner(tmp_path / "s2", stack_name="toy", events=Events(lambda e: seen.append(
            signal.getsignal(signal.SIGINT)) if e.kind == "step.done" else None)).start(plan)
        assert seen == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_resume_after_ctrl_c_completes(tmp_path: Path) -> None:
    """The same journal state in-process: a run stopped by Ctrl-C (KeyboardInterrupt in the scheduling thread)
    is resumed, re-running the interrupted steps."""
    state = tmp_path / "state"
    fired = threading.Event()

    def interrupt_once(event: Event) -> None:
        # Raised in the thread that emits: the scheduler emits step.started for 'right' after 'left' started.
        if event.kind == "step.started" and event.data.get("step") == "right" and not fired.is_set():
            fired.set()
            raise KeyboardInterrupt

    class Raising(Events):
        def emit(self, kind: str, message: str = "", **data: Any) -> None:
            event = Event(kind, message, data)
            interrupt_once(event)
            super().emit(kind, message, **data)

    plan = plan_of(sleeps(tmp_path, "first left right last", deps={"left": ("first",), "right": ("first",),
                                                                     "last": ("left", "right")}))
    with pytest.raises(KeyboardInterrupt):
        Runner(state, stack_name="toy", events=Raising()).start(plan)
    time.sleep(0.6)  # the abandoned 'left' thread ends meanwhile: it journals nothing, the run was stopped
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        steps = {s.step_id: s for s in j.steps(rec.id)}
        assert rec.status == "stopped" and steps["first"].status == "done" and steps["last"].status == "pending"
        assert steps["left"].status == steps["right"].status == "failed"
        assert steps["left"].error == steps["right"].error == "interrupted"
    assert runner.resume(rec.id).status == "done"
    assert calls(tmp_path).count("apply last") == 1


# -------------------------------------------------------------------------------------------- stop, rollback
def test_stop_before_runs_every_earlier_step_and_nothing_from_there(tmp_path: Path) -> None:
    """--stop-before X: all steps before X in plan order run (side by side where they can); X and every later step
    -- also one that does not depend on anything -- do not start; the run is stopped; resume finishes it."""
    state = tmp_path / "state"
    steps = sleeps(tmp_path, "a b x free y", seconds=0.1, deps={"x": ("a",), "y": ("x",)})
    runner = Runner(state, stack_name="toy")
    out = runner.start(plan_of(steps), stop_before="x")
    assert out.status == "stopped" and out.steps_done == 2
    assert sorted(calls(tmp_path)) == ["apply a", "apply b"]
    with runner.journal() as j:
        assert [s.status for s in j.steps(out.run_id)] == ["done", "done", "pending", "pending", "pending"]
        assert "stopped before x" in (j.run(out.run_id).error or "")
    assert runner.resume(out.run_id).status == "done"
    assert sorted(calls(tmp_path)) == sorted(f"apply {s}" for s in ["a", "b", "x", "free", "y"])


def test_rollback_undoes_in_reverse_plan_order_one_at_a_time(tmp_path: Path) -> None:
    """After a run whose steps ran side by side, rollback undoes the touched steps in reverse plan order (an
    `undo_first` kind ahead), never two at once."""
    state = tmp_path / "state"
    c = str(tmp_path / "calls.log")
    steps = [Step("a", "toy.sleep", "a", {"seconds": 0.2, "calls": c}),
             Step("b", "toy.sleep", "b", {"seconds": 0.1, "calls": c}),
             Step("dns", "toy.first", "dns", {"seconds": 0.1, "calls": c}, ("a",)),
             Step("c", "toy.sleep", "c", {"seconds": 0.05, "calls": c}, ("b",)),
             Step("d", "toy.fail", "d", {"seconds": 0.3, "calls": c, "fixed": str(tmp_path / "no")}, ("b",)),
             Step("e", "toy.sleep", "e", {"calls": c}, ("d",))]
    runner = Runner(state, stack_name="toy")
    with pytest.raises(CheckFailed):
        runner.start(plan_of(steps))
    (rec,) = runner.journal().runs()
    assert GAUGE.most >= 2
    runner.rollback(rec.id)
    assert [x for x in calls(tmp_path) if x.startswith("undo")] == ["undo dns", "undo c", "undo b", "undo a"]
    assert UNDO_GAUGE.most == 1
    with runner.journal() as j:
        assert j.run(rec.id).status == "rolled-back"


# ---------------------------------------------------------------------------------------- shared pieces, threads
def test_a_provider_is_opened_once_when_steps_ask_at_the_same_time(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads ask the run context for one provider at once: it is opened once; all get that object."""
    from liferaft.engine import observe

    opened: list[str] = []

    def slow_open(stack: Any, name: str, state_dir: Any, resolve: Any = None) -> object:
        opened.append(name)
        time.sleep(0.2)
        return object()

    monkeypatch.setattr(observe, "open_provider", slow_open)
    with Journal(journal_path(tmp_path, "toy")) as j:
        ctx = RunContext(run_id="r", plan=plan_of([]), journal=j, events=Events(), state_dir=tmp_path,
                         stack=object())  # type: ignore[arg-type]
        got: list[object] = []
        threads = [threading.Thread(target=lambda n=n: got.append(ctx.for_step(Step(f"s{n}", "k", "t"))
                                                                   .provider("p"))) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert opened == ["p"] and len(got) == 8 and len({id(g) for g in got}) == 1


def test_one_journal_is_written_from_many_threads(tmp_path: Path) -> None:
    """Steps' notes written by many threads through one Journal: every write lands, no thread error."""
    errors: list[BaseException] = []
    with Journal(journal_path(tmp_path, "toy")) as j:
        j.create_run("r", plan_of(sleeps(tmp_path, "a b c d")))

        def write(sid: str) -> None:
            try:
                for n in range(20):
                    j.remember("r", sid, {f"k{n}": n})
                    j.step("r", sid)
            except BaseException as e:  # noqa: BLE001 - collected for the test thread
                errors.append(e)

        threads = [threading.Thread(target=write, args=(s,)) for s in "abcd"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(len(j.step("r", s).memo) == 20 for s in "abcd")


def test_events_are_delivered_whole_one_at_a_time(tmp_path: Path) -> None:
    """Several threads emitting: an observer is never entered by two threads at once."""
    inside = threading.Lock()
    clashes: list[str] = []
    got: list[str] = []

    def observer(event: Event) -> None:
        if not inside.acquire(blocking=False):
            clashes.append(event.kind)
            return
        try:
            time.sleep(0.001)
            got.append(event.kind)
        finally:
            inside.release()

    ev = Events(observer)
    threads = [threading.Thread(target=lambda: [ev.emit("x.y", "m") for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clashes == [] and len(got) == 200


def test_plan_json_lists_each_steps_dependencies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`plan --json` prints Plan.to_dict(): each step says what it depends on; the table has an 'after' column."""
    from liferaft.cli.failover import render_plan

    plan = plan_of(sleeps(tmp_path, "a b c", deps={"c": ("a", "b")}))
    d = json.loads(json.dumps(plan.to_dict()))
    assert [s["depends_on"] for s in d["steps"]] == [[], [], ["a", "b"]]
    render_plan(plan)
    assert "a, b" in capsys.readouterr().out


def main(argv: list[str]) -> int:
    if argv[0] == "start":
        # Ctrl-C'd by the tests: SIGINT raises KeyboardInterrupt as in a terminal's foreground job, also when this
        # child inherited it ignored (a suite started in the background by a script; the runner, rightly, leaves
        # an ignored SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        plan = Plan.from_dict(json.loads(Path(argv[2]).read_text()))
        try:
            out = Runner(Path(argv[1]), stack_name=plan.stack).start(plan)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        print(json.dumps(out.to_dict()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
