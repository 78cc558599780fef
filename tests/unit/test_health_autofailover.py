"""The automatic failover of `health --watch`: the mode from the evidence, one run supervised (exit noticed at once,
reported through events, the hook and --json), a failed attempt retried by `resume RUN` within a budget, never a
second run, the watch ended once the stack has moved. Real processes: a stand-in for the liferaft CLI (a script
that records its arguments and exits as the test scripts it) in place of a failover that needs a lab; the whole
chain with the real CLI is tests/integration/test_no_notice_lab.py."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liferaft.events import Event, Events
from liferaft.health import Verdict, watch
from liferaft.health.autofailover import AutoFailover, choose_mode
from tests.unit.test_health_watch import Env, env, hook_script  # noqa: F401 (a fixture)

T, U, D, H = Verdict.TERMINATED, Verdict.UNREACHABLE, Verdict.DEGRADED, Verdict.HEALTHY

FAKE = """
import json, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
args = sys.argv[2:]
calls = d / "calls.jsonl"
n = sum(1 for _ in calls.open()) if calls.exists() else 0
with calls.open("a") as f:
    f.write(json.dumps(args) + "\\n")
plan = json.loads((d / "plan.json").read_text())
code, makes_run = plan[n] if n < len(plan) else (99, False)
sub = args[args.index("--stack") + 2:]
sub = sub[2:] if sub[:1] == ["--state-dir"] else sub
if makes_run and sub[0] == "failover":
    print(json.dumps({"kind": "run.started", "run": "R1", "message": "run R1"}), file=sys.stderr, flush=True)
if sub[0] == "resume":
    print(json.dumps({"kind": "run.resumed", "run": sub[1]}), file=sys.stderr, flush=True)
time.sleep(0.3)
sys.exit(code)
"""


class Fake:
    """The stand-in CLI: `plan` is [(exit code, makes a run?), ...], one per invocation."""

    def __init__(self, tmp_path: Path, plan: list[tuple[int, bool]]) -> None:
        self.dir = tmp_path / "fake"
        self.dir.mkdir()
        (self.dir / "fake.py").write_text(FAKE)
        (self.dir / "plan.json").write_text(json.dumps(plan))
        self.program = [sys.executable, str(self.dir / "fake.py"), str(self.dir)]

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            args = json.loads(line)
            sub = args[args.index("--stack") + 2:]
            out.append(sub[2:] if sub[:1] == ["--state-dir"] else sub)
        return out


def test_mode_from_the_evidence() -> None:
    assert choose_mode({"site:p": T}, "p", True)[0] == "cold"
    assert choose_mode({"site:p": U}, "p", True)[0] == "cold"
    assert choose_mode({"site:p": D}, "p", True)[0] == "live"
    assert choose_mode({"site:p": H}, "p", True)[0] == "live"
    mode, why = choose_mode({"site:p": T}, "p", False)
    assert mode == "live" and "no standby is recorded" in why


def _auto(make_env: Callable[..., Env], tmp_path: Path, plan: list[tuple[int, bool]], **kw: Any
          ) -> tuple[AutoFailover, Fake, list[Event], list[dict[str, Any]]]:
    e = make_env(failover_on="terminated")
    fake = Fake(tmp_path, plan)
    events: list[Event] = []
    notified: list[dict[str, Any]] = []
    state = tmp_path / "state"
    state.mkdir()
    auto = AutoFailover(e.stack(), "standby", "cold", state_dir=state, events=Events(events.append),
                        notify=notified.append, retry_delay=0.1, program=fake.program, **kw)
    return auto, fake, events, notified


def test_a_failed_run_is_resumed_until_it_completes(env: Callable[..., Env], tmp_path: Path) -> None:  # noqa: F811
    """failover (run R1 made, exit 4) -> resume R1 (exit 4) -> resume R1 (exit 0): moved; each exit noticed at once."""
    auto, fake, events, notified = _auto(env, tmp_path, [(4, True), (4, False), (0, False)])
    t0 = time.monotonic()
    auto.start("primary terminated")
    assert auto.done.wait(20)
    took = time.monotonic() - t0
    assert auto.outcome == "moved" and auto.run == "R1"
    assert [c[:2] for c in fake.calls()] == [["failover", "--mode"], ["resume", "R1"], ["resume", "R1"]]
    assert fake.calls()[0] == ["failover", "--mode", "cold", "--to", "standby", "--yes", "--json"]
    assert took < 3 * 0.3 + 2 * 0.1 + 2.0, took  # three 0.3 s children, two 0.1 s delays: no polling lag
    kinds = [e.kind for e in events]
    assert kinds == ["health.failover.started", "health.failover.exited", "health.failover.retrying",
                     "health.failover.exited", "health.failover.retrying", "health.failover.exited",
                     "health.failover.moved"], kinds
    assert [n["event"] for n in notified] == [k.rsplit(".", 1)[1] for k in kinds]
    assert all(n["kind"] == "failover" and n["subject"] == "failover:standby" for n in notified)
    assert [a["returncode"] for a in auto.to_dict()["attempts"]] == [4, 4, 0]
    assert not auto.running


def test_refused_before_a_run_existed_starts_the_failover_again(env: Callable[..., Env],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """Exit 5 before any run (the site still held): the retry is the failover again, not a resume of some run."""
    auto, fake, _, _ = _auto(env, tmp_path, [(5, False), (0, True)])
    auto.start("x")
    assert auto.done.wait(20) and auto.outcome == "moved"
    assert [c[0] for c in fake.calls()] == ["failover", "failover"]


@pytest.mark.parametrize(("plan", "attempts"), [([(2, False)], 1), ([(4, True)] * 5, 3)])
def test_usage_errors_are_not_retried_and_the_budget_is_bounded(env: Callable[..., Env], tmp_path: Path,  # noqa: F811
                                                                plan: list[tuple[int, bool]], attempts: int) -> None:
    auto, fake, events, _ = _auto(env, tmp_path, plan)
    auto.start("x")
    assert auto.done.wait(20) and auto.outcome == "gave-up"
    time.sleep(0.5)
    assert len(fake.calls()) == attempts
    assert events[-1].kind == "health.failover.gave-up"


def test_watch_fails_over_once_cold_and_ends_when_the_stack_moved(env: Callable[..., Env],  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """The primary's objects provider refuses us (terminated), a standby is recorded: after --confirm 2 rounds one
    cold failover starts; its first attempt fails and is resumed; once it completes the watch ends (long before
    --count), with the attempts in its result and through the hook."""
    e = env(failover_on="terminated", hook=hook_script(tmp_path))
    stack = e.stack()
    e.cloud.status = 403
    fake = Fake(tmp_path, [(4, True), (0, False)])
    state = tmp_path / "state"
    state.mkdir()
    result = watch(stack, e.checker(stack), interval=0.2, confirm=2, count=200, state_dir=state,
                   standby_at=lambda site: site == "standby", moved=lambda: None, program=fake.program,
                   retry_delay=0.1)
    assert result.rounds < 60, result.rounds
    assert [c[0] for c in fake.calls()] == ["failover", "resume"]
    assert fake.calls()[0][:3] == ["failover", "--mode", "cold"]
    assert result.failover is not None and result.failover["outcome"] == "moved"
    assert result.moved is not None and result.moved["site"] == "standby" and result.moved["run"] == "R1"
    hooked = [json.loads(line) for line in (tmp_path / "changes.jsonl").read_text().splitlines()]
    assert "site:primary" in [h["subject"] for h in hooked if h["kind"] == "site"]  # the confirmed change itself
    assert [h["event"] for h in hooked if h["kind"] == "failover"] == ["started", "exited", "retrying", "exited",
                                                                       "moved"]
    assert json.dumps(result.to_dict())  # JSON-safe


def test_watch_never_fails_over_a_stack_that_has_moved(env: Callable[..., Env], tmp_path: Path) -> None:  # noqa: F811
    """A move record (a failover run by hand, or an earlier watch's): terminated is still reported, nothing starts."""
    e = env(failover_on="terminated")
    stack = e.stack()
    e.cloud.status = 403
    fake = Fake(tmp_path, [(0, True)])
    events: list[Event] = []
    record = {"site": "standby", "run": "R0", "mode": "cold"}
    result = watch(stack, e.checker(stack), interval=0.0, confirm=1, count=3, moved=lambda: record,
                   standby_at=lambda _: True, program=fake.program, events=events.append)
    assert fake.calls() == [] and result.failover is None and result.verdict is T
    assert result.moved == record and "health.moved" in [ev.kind for ev in events]
    # moved while the watch waited for confirmation (by hand): checked again right before it would start
    box: dict[str, Any] = {}
    result = watch(stack, e.checker(stack), interval=0.0, confirm=2, count=3, standby_at=lambda _: True,
                   moved=lambda: box.get("rec"), program=fake.program,
                   events=lambda ev: box.setdefault("rec", record) if ev.kind == "health.round" else None)
    assert fake.calls() == [] and result.moved == record


def test_a_stopped_watch_waits_for_the_attempt_running_and_starts_no_other(env: Callable[..., Env],  # noqa: F811
                                                                           tmp_path: Path) -> None:
    e = env(failover_on="terminated")
    stack = e.stack()
    e.cloud.status = 403
    fake = Fake(tmp_path, [(4, True), (0, False)])
    stop = threading.Event()
    events: list[Event] = []

    def observe(ev: Event) -> None:
        events.append(ev)
        if ev.kind == "health.failover.started":
            stop.set()

    result = watch(stack, e.checker(stack), interval=0.1, confirm=1, count=100, standby_at=lambda _: True,
                   program=fake.program, retry_delay=5.0, events=observe, stop=stop)
    assert [c[0] for c in fake.calls()] == ["failover"]
    assert result.failover is not None and result.failover["attempts"][0]["returncode"] == 4
    assert result.failover["outcome"] == "gave-up"


def test_a_run_left_standing_is_resumed_not_doubled(env: Callable[..., Env], tmp_path: Path) -> None:  # noqa: F811
    """An earlier watch's (or a person's) run into the target failed: the first attempt resumes it."""
    auto, fake, _, _ = _auto(env, tmp_path, [(0, False)], standing_run=lambda site: "R0" if site == "standby" else None)
    auto.start("x")
    assert auto.done.wait(20) and auto.outcome == "moved"
    assert fake.calls() == [["resume", "R0", "--json"]]


def test_a_move_completed_meanwhile_by_another_process_ends_it(env: Callable[..., Env],  # noqa: F811
                                                                tmp_path: Path) -> None:
    """Refused (exit 5: another process's run holds the stack), and that run completes the move: no retry."""
    box: dict[str, Any] = {}
    auto, fake, events, _ = _auto(env, tmp_path, [(5, False), (0, True)], moved=lambda: box.get("rec"))
    box["rec"] = {"site": "standby", "run": "R9", "mode": "cold"}
    auto.start("x")
    assert auto.done.wait(20) and auto.outcome == "moved" and auto.run == "R9"
    assert [c[0] for c in fake.calls()] == ["failover"]
    assert "moved to standby by run R9 meanwhile" in events[-1].message
