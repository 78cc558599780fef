"""The run display (liferaft.cli.display): the short log off a terminal, the live view in one (through a real
pseudo-terminal), the full stream with -v and JSON lines with --json.

`python -m tests.unit.test_display live STATE_DIR` runs a small plan of toy kinds (two steps side by side, a slow
copy reporting bytes, a write freeze, a failing step when asked) through the real Runner and the display, then prints
the run's summary the way `liferaft failover` does: the pseudo-terminal test runs it.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from liferaft.cli.display import RunDisplay, progress_of
from liferaft.engine import Plan, RunContext, Runner, Step, StepKind, register
from liferaft.events import Event, Events
from tests.unit.test_failover_toys import toy_plan


@register
class ToySlowCopy(StepKind):
    """Copy `chunks` chunks of `chunk_bytes` bytes, `pause` seconds each, reporting as the object mover does: through
    the run's events, so without the step's id (the display finds the step)."""

    name = "objects.toy"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        n, size = int(step.params["chunks"]), int(step.params["chunk_bytes"])
        for i in range(n + 1):
            ctx.events.emit("objects.progress", f"{i}/{n} objects", done=i, total=n, bytes=i * size,
                            total_bytes=n * size)
            if i < n:
                time.sleep(float(step.params["pause"]))
        return {"chunks": n}


@register
class ToyPause(StepKind):
    name = "toy.pause"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        ctx.emit("ansible.task.start", "b: Restart postgresql (systemd)", host="b", task="Restart postgresql")
        ctx.emit("ansible.task.changed", "b: Install packages changed", host="b", task="Install packages")
        time.sleep(float(step.params["pause"]))
        if step.params.get("fail"):
            raise RuntimeError("the toy failed as asked")
        if step.params.get("window"):
            ctx.emit("failover.window", "write-unavailability window: 0.500s (toy)", write_unavailable_s=0.5)
        return {}


def display_plan(pause: float, *, fail: bool = False) -> Plan:
    steps = [
        Step("provision", "toy.pause", "provision a toy host", {"pause": pause}),
        Step("sync-images", "objects.toy", "sync bucket images", {"chunks": 20, "chunk_bytes": 1 << 20,
                                                                     "pause": pause / 4}, ("provision",)),
        Step("deploy-web", "toy.pause", "deploy service web", {"pause": pause * 2}, ("provision",)),
        Step("freeze", "cutover.freeze", "freeze writes at the source", {"pause": pause}, ("sync-images", "deploy-web")),
        Step("dns", "toy.pause", "cut DNS over", {"pause": pause, "fail": fail, "window": True}, ("freeze",)),
    ]
    return Plan(stack="toy", source="here", target="there", mode="live", steps=tuple(steps))


class ToyFreeze(ToyPause):
    name = "cutover.freeze"  # registered in the subprocess only: the display knows the write freeze by this kind


def run_with(display: RunDisplay, state: Path, plan: Plan) -> Any:
    with display:
        return Runner(state, stack_name=plan.stack, events=Events(display)).start(plan)


def lines_of(plan: Plan, tmp_path: Path, **kw: Any) -> list[str]:
    buf = io.StringIO()
    run_with(RunDisplay(False, stream=buf, live=False, **kw), tmp_path / "state", plan)
    return buf.getvalue().splitlines()


def test_off_a_terminal_one_line_per_step_event_and_per_tenth_of_a_copy(tmp_path: Path) -> None:
    plan = toy_plan(tmp_path)  # six steps; `copy` reports 10 chunks
    lines = lines_of(plan, tmp_path)
    starts = [x for x in lines if re.match(r"\[\d/6\] ", x) and " done in " not in x]
    ends = [x for x in lines if " done in " in x]
    progress = [x for x in lines if x.startswith("  copy: ")]
    assert len(starts) == 6 and len(ends) == 6, lines
    assert [x.split(":")[1].split("%")[0].strip() for x in progress] == [str(10 * i) for i in range(1, 11)], lines
    assert "(10/10 items" in progress[-1]
    other = [x for x in lines if x not in starts + ends + progress]
    assert len(other) == 2 and other[0].startswith("run ") and "completed in" in other[1], other
    assert not any("toy.progress" in x or "run.progress" in x for x in lines)  # no kinds, no step counters


def test_skipped_ansible_tasks_and_chatter_only_with_v(tmp_path: Path) -> None:
    from liferaft.engine import kinds

    real = kinds._REGISTRY.get("cutover.freeze")  # the step library's, if a test imported it: put back after
    register(ToyFreeze)
    try:
        plan = display_plan(0.01)
        quiet = lines_of(plan, tmp_path / "q")
        full = lines_of(plan, tmp_path / "v", verbose=1)
    finally:
        kinds.unregister("cutover.freeze")
        if real is not None:
            kinds._REGISTRY["cutover.freeze"] = real
    assert not any("Restart postgresql" in x or "Install packages" in x for x in quiet), quiet
    assert sum("Restart postgresql" in x for x in full) == 4  # -v: the full stream, kind first, as before
    assert any(x.startswith("ansible.task.start ") for x in full)
    assert any("writes frozen at the source from now" in x for x in quiet)
    assert "write-unavailability window: 0.500s (toy)" in quiet
    # 20 chunks (21 reports) of one copy: at most one line per 10 %
    assert len([x for x in quiet if x.startswith("  sync-images: ")]) == 10
    assert len(quiet) <= 2 * len(plan.steps) + 10 + 3, quiet


def test_json_lines_unchanged(tmp_path: Path) -> None:
    from liferaft.cli._common import event_printer

    ev = Event("objects.progress", "3/4 objects", {"done": 3, "total": 4, "step": "s"}, ts=1.5)
    buf = io.StringIO()
    RunDisplay(True, stream=buf)(ev)
    old = io.StringIO()
    real, sys.stderr = sys.stderr, old
    try:
        event_printer(True)(ev)
    finally:
        sys.stderr = real
    assert buf.getvalue() == old.getvalue() and json.loads(buf.getvalue())["kind"] == "objects.progress"


def test_progress_events_read() -> None:
    assert progress_of(Event("run.progress", "", {"done": 1, "total": 2})) is None
    assert progress_of(Event("objects.progress", "", {"done": 1, "total": 2, "bytes": 5, "total_bytes": 10})) == \
        ("objects", 1.0, 2.0, 5.0, 10.0)
    assert progress_of(Event("pg.logical.syncing", "", {"tables": 4, "tables_pending": 1})) == \
        ("tables", 3.0, 4.0, None, None)
    assert progress_of(Event("objects.plan", "", {"objects": 3})) is None


def test_live_view_in_a_pseudo_terminal(tmp_path: Path) -> None:
    """Steps with their states, two running at once, a progress bar with rate and ETA, the write freeze, then the
    summary; redrawn in place (cursor movements), never a line per event."""
    import pexpect

    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    child = pexpect.spawn(sys.executable, ["-m", "tests.unit.test_display", "live", str(tmp_path / "state")],
                          env=env, dimensions=(40, 120), encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before
    assert child.exitstatus == 0, out[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "\x1b[" in out and "\x1b[2K" in out  # redrawn in place
    assert re.search(r"▶ provision\s+provision a toy host", plain)
    assert re.search(r"· dns\s+waiting", plain), plain[-3000:]
    frames = re.split(r"run \S+: here -> there \(live\), 5 steps", plain)
    assert any("▶ sync-images" in f and "▶ deploy-web" in f for f in frames), plain[-3000:]  # side by side
    assert "━" in plain and re.search(r"\d+/20 objects, [\d.]+ MiB/20\.0 MiB, [\d.]+ MiB/s, ETA", plain), \
        plain[-3000:]
    assert "b: Install packages" in plain  # what the running step does, in place of a line per task
    assert re.search(r"write freeze: [\d.]+s so far", plain)
    assert "write-unavailability window: 0.500s" in plain
    assert re.search(r"✓ sync-images\s+sync bucket images\s+[\d.]+s", plain)
    tail = plain[plain.rindex("run "):]
    assert re.match(r"run \S+: done \(5/5 steps, [\d.]+s\)", tail), tail
    assert "[1/5] provision a toy host" not in plain  # the step lines are the live view's, not a log
    assert "0.500s (toy)" not in plain  # the window is in the view, not a line above it too


def main(argv: list[str]) -> int:
    if argv[0] == "live":
        from liferaft.cli.failover import _render_outcome

        register(ToyFreeze)
        display = RunDisplay(False, 0)
        assert display.mode == "live", display.mode
        out = run_with(display, Path(argv[1]), display_plan(0.4, fail=len(argv) > 2))
        return _render_outcome(out, False)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def test_a_long_plan_fits_a_short_screen() -> None:
    """20 steps on a 12-line screen: the finished ones fold into one line, the last waiting ones into a count."""
    from rich.console import Console

    from liferaft.cli.display import RunModel

    m = RunModel()
    m.update(Event("run.started", "run x: a -> b (live), 20 steps", {"steps": [f"s{i}" for i in range(20)]}))
    for i in range(12):
        m.update(Event("step.started", f"[{i + 1}/20] step {i}", {"step": f"s{i}", "step_kind": "k"}))
        if i < 10:
            m.update(Event("step.done", f"[{i + 1}/20] s{i} done", {"step": f"s{i}", "duration_s": 1.0}))
    m.update(Event("objects.progress", "", {"step": "s11", "done": 5, "total": 10, "bytes": 50, "total_bytes": 100}))
    con = Console(width=100, record=True, file=io.StringIO())
    con.print(m.render(12))
    text = con.export_text()
    assert len(text.splitlines()) <= 12, text
    assert "10 steps done" in text and "▶ s10" in text and "50%" in text and "more waiting" in text
    con = Console(width=100, record=True, file=io.StringIO())
    con.print(m.render(40))
    assert "✓ s0 " in con.export_text() and "more waiting" not in con.export_text()


def test_a_resumed_run_lists_its_done_steps_done(tmp_path: Path) -> None:
    """`resume` after a crash mid-copy: the view starts with the steps done before the crash shown done."""
    import subprocess

    plan = toy_plan(tmp_path)
    state = tmp_path / "state"
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    crashed = subprocess.run([sys.executable, "-m", "tests.unit.test_failover_toys", "start", str(state),
                              str(tmp_path / "plan.json")], env={**os.environ, "TOY_CRASH_IN": "copy"},
                             capture_output=True, text=True, timeout=60, check=False)
    assert crashed.returncode == -9, crashed.stderr
    display = RunDisplay(False, stream=io.StringIO(), live=False)
    at_start: dict[str, str] = {}

    def snapshot(ev: Event) -> None:
        if ev.kind == "run.resumed":
            at_start.update({sid: s.state for sid, s in display.model.steps.items()})

    with display:
        Runner(state, stack_name="toy", events=Events(display, snapshot)).resume("last")
    lines = display.out.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].endswith("resuming at copy (5 of 6 steps left)"), lines
    assert at_start == {"make-a": "done", **{sid: "waiting" for sid in plan.step_ids[1:]}}, at_start
    assert {s.state for s in display.model.steps.values()} == {"done"}
    assert sum(" done in " in x for x in lines) == 5
