"""`replicate`'s set-up is a journaled run of the engine (mode `standby`): `liferaft runs` shows it, a SIGKILL in the
middle leaves it for the next `replicate` to resume (done steps skipped, not done again), and the rounds that follow
act in that run's context. A later `replicate` plans from the record: nothing installed again.

The module ends by stopping the standby (`replicate --stop`): no subscription at b, no slot at a.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _env(lab: Any, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    env.update(LIFERAFT_STACK=str(lab.info.stack_file), LIFERAFT_STATE_DIR=str(state_dir), **extra)
    return env


def _cli(lab: Any, state_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liferaft", *args], env=_env(lab, state_dir, **env),
                          capture_output=True, text=True, timeout=600, check=False)


def _runs(lab: Any, state_dir: Path) -> list[dict[str, Any]]:
    r = _cli(lab, state_dir, "runs", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    runs: list[dict[str, Any]] = json.loads(r.stdout)
    return runs


def _steps(lab: Any, state_dir: Path, run: str) -> dict[str, dict[str, Any]]:
    r = _cli(lab, state_dir, "show", run, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return {s["step"]: s for s in json.loads(r.stdout)["steps"]}


def test_replicate_setup_is_a_journaled_run_resumed_after_a_sigkill(lab: Any, tmp_path: Path) -> None:
    """Killed right after the step that installs PostgreSQL at the standby, the set-up run stays in the journal
    (mode standby, running); the next `replicate` resumes that run -- allocation, preparation and installation not
    done again -- and its rounds report the lag as usual."""
    from liferaft.standby import keeper

    assert not hasattr(keeper, "EngineContext")  # side check: no fake context left in replicate's code
    state = tmp_path / "state"
    killed = _cli(lab, state, "replicate", "--to", "alt-b", "--json",
                  LIFERAFT_TEST_KILL_AFTER_STEP="install-postgresql")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    runs = _runs(lab, state)
    assert [(r["mode"], r["target"], r["status"]) for r in runs] == [("standby", "alt-b", "running")]
    run = runs[0]["run"]
    steps = _steps(lab, state, run)
    assert list(steps)[:3] == ["allocate", "prepare", "install-postgresql"]
    assert {k for k, s in steps.items() if s["status"] == "done"} == {"allocate", "prepare", "install-postgresql"}
    assert {s["kind"] for k, s in steps.items() if k.startswith("keep-")} == {"standby.keep"}

    again = _cli(lab, state, "replicate", "--to", "alt-b", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert out["databases"]["blog"]["ok"] and out["buckets"]["images"]["ok"] and out["source_reachable"]
    after = list(steps)[list(steps).index("install-postgresql") + 1]  # the first step after the boundary (the
    assert f"run {run}: resuming at {after}" in again.stderr  # example's other kinds install theirs in between)
    runs = _runs(lab, state)
    assert [(r["run"], r["mode"], r["status"]) for r in runs] == [(run, "standby", "done")]  # resumed, not restarted
    steps = _steps(lab, state, run)
    assert all(s["status"] == "done" for s in steps.values())
    assert steps["allocate"]["attempts"] == steps["prepare"]["attempts"] == steps["install-postgresql"]["attempts"] == 1
    assert steps["install-postgresql"]["result"]["deployed"] is True
    rec = json.loads((state / "readiness" / "microblog.json").read_text())["standbys"]["alt-b"]
    assert rec["setup_run"] == run and rec["installed_on"] == lab.info.hosts["b"].address
    assert rec["databases"]["blog"]["subscription"] == "liferaft_microblog"

    # a later replicate is a new, shorter set-up run: the record says the host is installed
    later = _cli(lab, state, "replicate", "--to", "alt-b", "--json")
    assert later.returncode == 0, later.stderr[-3000:]
    runs = _runs(lab, state)
    assert len(runs) == 2 and runs[0]["mode"] == "standby" and runs[0]["status"] == "done"
    steps = _steps(lab, state, runs[0]["run"])
    assert "prepare" not in steps and steps["install-postgresql"]["result"]["deployed"] is False

    stop = _cli(lab, state, "replicate", "--to", "alt-b", "--stop", "--json")
    assert stop.returncode == 0, stop.stderr[-3000:]
    assert json.loads(stop.stdout)["databases"]["blog"]["slot_dropped"] is True
