"""The generic failover engine with toy step kinds: plan model, journal, lock, runner, resume, rollback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.engine import Journal, JournalCorrupt, Plan, Runner, Step, journal_path
from liferaft.errors import CheckFailed, InvalidInput, LockHeld, RunFailed, UsageError
from liferaft.events import Event, Events
from tests.unit.test_failover_toys import toy_plan

REPO = Path(__file__).resolve().parents[2]


def calls(tmp: Path) -> list[str]:
    p = tmp / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def run_subprocess(tmp: Path, plan: Plan, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    plan_file = tmp / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    return subprocess.run([sys.executable, "-m", "tests.unit.test_failover_toys", "start", str(state),
                           str(plan_file)], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


# ---------------------------------------------------------------------------------------------------- plan
def test_plan_round_trips_and_hash_is_stable(tmp_path: Path) -> None:
    """A plan survives JSON; its hash covers the steps, not the measurements."""
    plan = toy_plan(tmp_path)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.hash == plan.hash
    remeasured = Plan(**{**plan.__dict__, "bytes_to_move": 999, "estimate_s": 42.0})
    assert remeasured.hash == plan.hash
    fewer = Plan(**{**plan.__dict__, "steps": plan.steps[:-1]})
    assert fewer.hash != plan.hash


def test_plan_rejects_bad_dags_and_unsafe_params() -> None:
    """Duplicate ids, forward dependencies (hence cycles) and non-JSON params are refused."""
    a = Step("a", "toy.file", "a")
    with pytest.raises(ValueError, match="twice"):
        Plan("s", "x", "y", "live", (a, a))
    with pytest.raises(ValueError, match="earlier step"):
        Plan("s", "x", "y", "live", (Step("b", "toy.file", "b", depends_on=("a",)), a))
    with pytest.raises(ValueError, match="JSON-safe"):
        Step("c", "toy.file", "c", {"x": object()})
    with pytest.raises(ValueError, match="mode"):
        Plan("s", "x", "y", "warm", (a,))


@pytest.mark.parametrize("garbage", [[], {"steps": []}, {"stack": "s", "source": "a", "target": "b", "mode": "live",
                                                          "steps": [{"id": "x"}]}, "nonsense", None])
def test_plan_from_garbage_is_invalid_input(garbage: object) -> None:
    """Malformed plan JSON is an InvalidInput, not a traceback."""
    with pytest.raises(InvalidInput):
        Plan.from_dict(garbage)


def test_plan_with_tampered_hash_is_refused(tmp_path: Path) -> None:
    d = toy_plan(tmp_path).to_dict()
    d["steps"][0]["params"]["path"] = "/etc/passwd"
    with pytest.raises(InvalidInput, match="hash"):
        Plan.from_dict(d)


# ---------------------------------------------------------------------------------------------------- runs
def test_run_executes_in_order_and_journals_every_step(tmp_path: Path) -> None:
    """Every step runs once, in order; the journal holds started-before-done for each; events are emitted."""
    seen: list[Event] = []
    (tmp_path / "record").write_text("old")
    out = Runner(tmp_path / "state", stack_name="toy", events=Events(seen.append)).start(toy_plan(tmp_path))
    assert out.status == "done" and out.steps_done == out.steps_total == 6
    assert calls(tmp_path) == [f"apply {s}" for s in ("make-a", "copy", "make-b", "gate", "dns", "make-c")]
    assert (tmp_path / "record").read_text() == "new"
    with Journal(journal_path(tmp_path / "state", "toy")) as j:
        log = [(e["step"], e["action"]) for e in j.log(out.run_id) if e["step"]]
        for sid in ("make-a", "copy", "dns"):
            assert log.index((sid, "step.started")) < log.index((sid, "step.done"))
        assert [s.status for s in j.steps(out.run_id)] == ["done"] * 6
        assert j.pending(out.run_id) == [] and len(j.applied(out.run_id)) == 6
        assert j.step(out.run_id, "dns").memo == {"previous": "old"}
    kinds = [e.kind for e in seen]
    assert kinds.count("step.started") == 6 and kinds.count("step.done") == 6 and kinds[-1] == "run.done"


def test_journal_record_is_committed_before_the_step_acts(tmp_path: Path) -> None:
    """While a step runs, another connection already sees it as 'running' (written before acting)."""
    from liferaft.engine import StepKind, register, unregister

    observed: list[str] = []
    state = tmp_path / "state"

    @register
    class Peek(StepKind):
        name = "toy.peek"

        def apply(self, ctx, step):  # type: ignore[no-untyped-def]
            db = sqlite3.connect(journal_path(state, "toy"))
            observed.append(db.execute("SELECT status FROM steps WHERE step_id='peek'").fetchone()[0])
            db.close()
            return {}

    try:
        Runner(state, stack_name="toy").start(Plan("toy", "a", "b", "live", (Step("peek", "toy.peek", "peek"),)))
    finally:
        unregister("toy.peek")
    assert observed == ["running"]


def test_stop_before_then_resume(tmp_path: Path) -> None:
    """--stop-before leaves a resumable run; resume continues from there."""
    runner = Runner(tmp_path / "state", stack_name="toy")
    out = runner.start(toy_plan(tmp_path), stop_before="dns")
    assert out.status == "stopped" and not (tmp_path / "record").exists()
    assert runner.resume(out.run_id).status == "done"
    assert (tmp_path / "record").read_text() == "new"
    assert calls(tmp_path).count("apply make-b") == 1


def test_gate_failure_stops_before_dns_and_resume_completes(tmp_path: Path) -> None:
    """A failed verification gate says what differs and touches nothing after it (DNS stays as it was)."""
    (tmp_path / "record").write_text("old")
    missing = tmp_path / "expected"
    runner = Runner(tmp_path / "state", stack_name="toy")
    with pytest.raises(CheckFailed, match="expected is missing") as err:
        runner.start(toy_plan(tmp_path, gate_expect=missing))
    assert (tmp_path / "record").read_text() == "old" and not (tmp_path / "c").exists()
    run_id = err.value.message.split()[1]
    with runner.journal() as j:
        assert j.run(run_id).status == "failed"
        assert j.step(run_id, "gate").status == "failed"
    missing.write_text("")
    assert runner.resume(run_id).status == "done"
    assert (tmp_path / "record").read_text() == "new"


def test_unexpected_exception_becomes_run_failed(tmp_path: Path) -> None:
    plan = Plan("toy", "a", "b", "live", (Step("x", "toy.file", "x", {"calls": str(tmp_path / "c.log")}),))
    with pytest.raises(RunFailed, match="KeyError"):
        Runner(tmp_path / "state", stack_name="toy").start(plan)


def test_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    plan = Plan("toy", "a", "b", "live", (Step("x", "no.such.kind", "x"),))
    with pytest.raises(UsageError, match="unknown step kind"):
        Runner(tmp_path / "state", stack_name="toy").start(plan)
    assert not journal_path(tmp_path / "state", "toy").exists() or not Runner(
        tmp_path / "state", stack_name="toy").journal().runs()


# --------------------------------------------------------------------------------------------- crashes
@pytest.mark.parametrize("boundary", ["make-a", "copy", "gate", "dns"])
def test_sigkill_at_step_boundary_then_resume(tmp_path: Path, boundary: str) -> None:
    """A real process SIGKILLed right after a step; resume skips done steps and applies each other step once."""
    state = tmp_path / "state"
    (tmp_path / "record").write_text("old")
    proc = run_subprocess(tmp_path, toy_plan(tmp_path), state, LIFERAFT_TEST_KILL_AFTER_STEP=boundary)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        assert rec.status == "running"  # the process died; the journal says where
        assert j.applied(rec.id)[-1].step_id == boundary
    runner.resume(rec.id)
    order = ["make-a", "copy", "make-b", "gate", "dns", "make-c"]
    assert calls(tmp_path) == [f"apply {s}" for s in order]
    assert (tmp_path / "record").read_text() == "new"
    with runner.journal() as j:
        assert j.step(rec.id, "dns").memo == {"previous": "old"}  # the original value, not the new one


def test_sigkill_in_the_middle_of_a_copy_then_resume(tmp_path: Path) -> None:
    """Killed halfway through a step: it stays 'running'; resume re-applies it idempotently and completes."""
    state = tmp_path / "state"
    proc = run_subprocess(tmp_path, toy_plan(tmp_path), state, TOY_CRASH_IN="copy")
    assert proc.returncode == -signal.SIGKILL
    runner = Runner(state, stack_name="toy")
    with runner.journal() as j:
        (rec,) = j.runs()
        assert j.step(rec.id, "copy").status == "running"
        assert next(s.step_id for s in j.pending(rec.id)) == "copy"
    assert 0 < len(list((tmp_path / "copy").glob("chunk-*"))) < 10
    out = runner.resume(rec.id)
    assert out.status == "done"
    assert len(list((tmp_path / "copy").glob("chunk-*"))) == 10
    assert calls(tmp_path).count("apply copy") == 2 and calls(tmp_path).count("apply make-a") == 1
    with runner.journal() as j:
        assert j.step(rec.id, "copy").attempts == 2


# ---------------------------------------------------------------------------------------------------- lock
def test_second_run_is_refused_while_the_lock_is_held_and_free_after_holder_dies(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-m", "tests.unit.test_failover_toys", "hold-lock", str(state), "toy"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match=f"process {holder.pid}"):
            Runner(state, stack_name="toy").start(toy_plan(tmp_path))
        assert calls(tmp_path) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert Runner(state, stack_name="toy").start(toy_plan(tmp_path)).status == "done"


@contextlib.contextmanager
def _site_held(state: Path, site: str, by: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the toy stack's lock on `site`, as `by` would (replicate --watch, a drill)."""
    holder = subprocess.Popen([sys.executable, "-m", "tests.unit.test_failover_toys", "hold-site", str(state), "toy",
                               site, by], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_run_into_a_site_another_process_uses_is_refused(tmp_path: Path) -> None:
    """A site kept by `replicate --watch` (or drilled) in another process: a failover run into it is refused before
    any step, and so are resuming and rolling back a run into it; a run into another site goes ahead; once the
    holder is gone (SIGKILL: the kernel drops the flock) the run into the site goes ahead too."""
    state = tmp_path / "state"
    runner = Runner(state, stack_name="toy")
    stopped = runner.start(toy_plan(tmp_path), stop_before="dns")  # a run into "there", left to resume
    assert stopped.status == "stopped"
    before = calls(tmp_path)
    with _site_held(state, "there", "replicate --watch") as holder:
        for attempt in (lambda: runner.start(toy_plan(tmp_path)), lambda: runner.resume(stopped.run_id),
                        lambda: runner.rollback(stopped.run_id)):
            with pytest.raises(LockHeld, match=f"site 'there' of stack 'toy' is in use by process {holder.pid} "
                                               r"\(replicate --watch\)") as e:
                attempt()
            assert "liferaft replicate --to there" in (e.value.hint or "")
        assert calls(tmp_path) == before  # nothing ran, nothing was undone
        with runner.journal() as j:
            assert j.run(stopped.run_id).status == "stopped"
        elsewhere = Plan(**{**toy_plan(tmp_path / "other").__dict__, "target": "elsewhere"})
        (tmp_path / "other").mkdir()
        assert runner.start(elsewhere).status == "done"
    assert runner.resume(stopped.run_id).status == "done"


def test_the_site_lock_is_reentrant_in_its_thread_only(tmp_path: Path) -> None:
    """A drill holds its site and starts the failover run into it (which takes the site again): that goes ahead.
    Meanwhile another thread of the same process, and another process, are refused; after the outer release
    the site is free."""
    from liferaft.engine import SiteLock

    state = tmp_path / "state"
    refused: list[BaseException] = []
    with SiteLock(state, "toy", "there").acquire(by="drill, no-notice"):
        assert Runner(state, stack_name="toy").start(toy_plan(tmp_path)).status == "done"
        with SiteLock(state, "toy", "there").acquire(by="nested"):
            pass
        t = threading.Thread(target=lambda: _try(lambda: SiteLock(state, "toy", "there").acquire(), refused))
        t.start()
        t.join()
        assert len(refused) == 1 and isinstance(refused[0], LockHeld), refused
        assert f"process {os.getpid()} (drill, no-notice)" in str(refused[0])  # the outer holder, not "nested"
        code = ("import sys; from pathlib import Path; from liferaft.engine import SiteLock; "
                "SiteLock(Path(sys.argv[1]), 'toy', 'there').acquire()")
        other = subprocess.run([sys.executable, "-c", code, str(state)],
                               cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert other.returncode != 0 and "LockHeld" in other.stderr and "is in use by" in other.stderr
    with SiteLock(state, "toy", "there").acquire(by="after"):  # free again
        pass


def _try(fn: Any, errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - collected for the test thread to look at
        errors.append(e)


# ------------------------------------------------------------------------------------------------ rollback
def test_rollback_undoes_in_reverse_dns_first(tmp_path: Path) -> None:
    (tmp_path / "record").write_text("old")
    runner = Runner(tmp_path / "state", stack_name="toy")
    out = runner.start(toy_plan(tmp_path))
    runner.rollback(out.run_id)
    undos = [c for c in calls(tmp_path) if c.startswith("undo")]
    assert undos == ["undo dns", "undo make-c", "undo make-b", "undo make-a"]
    assert (tmp_path / "record").read_text() == "old"
    assert not any((tmp_path / n).exists() for n in "abc")
    with runner.journal() as j:
        assert j.run(out.run_id).status == "rolled-back"
    with pytest.raises(UsageError, match="already rolled back"):
        runner.rollback(out.run_id)
    with pytest.raises(UsageError, match="cannot be resumed"):
        runner.resume(out.run_id)


def test_rollback_of_a_failed_run_undoes_only_touched_steps(tmp_path: Path) -> None:
    runner = Runner(tmp_path / "state", stack_name="toy")
    with pytest.raises(CheckFailed):
        runner.start(toy_plan(tmp_path, gate_expect=tmp_path / "nope"))
    (rec,) = runner.journal().runs()
    runner.rollback(rec.id)
    assert [c for c in calls(tmp_path) if c.startswith("undo")] == ["undo make-b", "undo make-a"]


# ------------------------------------------------------------------------------------------ journal safety
def test_journal_files_are_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Runner(state, stack_name="toy").start(toy_plan(tmp_path))
    path = journal_path(state, "toy")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for side in path.parent.glob("journal.db-*"):
        assert stat.S_IMODE(side.stat().st_mode) == 0o600


def _make_journal(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    Runner(state, stack_name="toy").start(toy_plan(tmp_path))
    path = journal_path(state, "toy")
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed-middle", "bad-plan-json", "bad-result-json"])
def test_corrupted_journal_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    """A damaged journal raises JournalCorrupt naming the file (exit 2), never a raw sqlite traceback."""
    path = _make_journal(tmp_path)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "zeroed-middle":
        path.write_bytes(data[:4096] + b"\x00" * (len(data) - 8192) + data[-4096:])
    else:
        db = sqlite3.connect(path)
        col, table = ("plan_json", "runs") if damage == "bad-plan-json" else ("result_json", "steps")
        db.execute(f"UPDATE {table} SET {col}='{{not json'")
        db.commit()
        db.close()
    with pytest.raises(JournalCorrupt) as err, Journal(path) as j:
        for r in j.runs():
            j.steps(r.id)
    assert str(path) in str(err.value) and err.value.exit_code == 2


def test_journal_refuses_to_store_a_secret(tmp_path: Path) -> None:
    """A step result holding a resolved secret value is refused, and nothing of it is written."""
    path = journal_path(tmp_path, "toy")
    with Journal(path, secrets=lambda: {"s3cr3t-value"}) as j:
        plan = toy_plan(tmp_path)
        j.create_run("r1", plan)
        with pytest.raises(RunFailed, match="secret"):
            j.finish_step("r1", "make-a", {"dsn": "postgres://u:s3cr3t-value@h/db"})
    assert b"s3cr3t-value" not in path.read_bytes()
    assert all(b"s3cr3t-value" not in p.read_bytes() for p in path.parent.glob("journal.db*"))


def test_killed_run_leaves_no_lock(tmp_path: Path) -> None:
    """flock dies with its holder: after a SIGKILL a new run can start at once."""
    state = tmp_path / "state"
    proc = run_subprocess(tmp_path, toy_plan(tmp_path), state, LIFERAFT_TEST_KILL_AFTER_STEP="make-a")
    assert proc.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    (other := tmp_path / "other").mkdir()
    assert Runner(state, stack_name="toy").start(toy_plan(other)).status == "done"
    assert time.monotonic() - t0 < 10


def test_kill_on_event_switch_kills_in_the_middle_of_work(tmp_path: Path) -> None:
    """LIFERAFT_TEST_KILL_ON_EVENT kills at the first event reporting partial progress, mid-step."""
    state = tmp_path / "state"
    proc = run_subprocess(tmp_path, toy_plan(tmp_path), state, LIFERAFT_TEST_KILL_ON_EVENT="toy.progress")
    assert proc.returncode == -signal.SIGKILL
    with Runner(state, stack_name="toy").journal() as j:
        (rec,) = j.runs()
        assert j.step(rec.id, "copy").status == "running"
    assert len(list((tmp_path / "copy").glob("chunk-*"))) == 1
    assert Runner(state, stack_name="toy").resume(rec.id).status == "done"
