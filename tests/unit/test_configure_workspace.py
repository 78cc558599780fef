"""Ansible runs killed with SIGKILL leave nothing running and no secret behind (liferaft.configure._guard,
_workspace): the guard ends the run when its parent dies; resume, rollback and the next run clean what a run
whose guard died too left in the state dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.configure import _guard
from liferaft.configure._workspace import clean_dead_runs, new_run_dirs, work_root
from liferaft.engine import Runner
from liferaft.errors import CheckFailed
from tests.unit.test_failover_toys import toy_plan

GUARD = Path(_guard.__file__ or "")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _guard._alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _plant_dead_run(state: Path, children: list[subprocess.Popen[bytes]]) -> tuple[Path, Path, int]:
    """A run folder of a dead owner holding a secrets file, and a process of that run still running."""
    folder = work_root(state) / f"run-{_dead_pid()}-1-deadbeef"
    folder.mkdir(parents=True, mode=0o700)
    control = Path(subprocess.check_output(["mktemp", "-d", "/tmp/lrcp-XXXXXX"], text=True).strip())
    (folder / "control_dir").write_text(str(control))
    secret = folder / "secret_vars.json"
    secret.write_text('{"liferaft_secrets": "s3cret"}')
    orphan = subprocess.Popen(["sleep", "60"], env={**os.environ, _guard.MARK: str(folder)})
    children.append(orphan)
    return folder, control, orphan.pid


@pytest.mark.parametrize("action", ["resume", "rollback"])
def test_resume_and_rollback_end_and_delete_a_dead_runs_ansible_leftovers(
        tmp_path: Path, action: str, children: list[subprocess.Popen[bytes]]) -> None:
    """Its processes are killed, its folder (secret variables) and control dir deleted, and the run says so."""
    state = tmp_path / "state"
    seen: list[str] = []
    runner = Runner(state, stack_name="toy", events=lambda e: seen.append(e.kind))
    with pytest.raises(CheckFailed):
        runner.start(toy_plan(tmp_path, gate_expect=tmp_path / "nope"))
    folder, control, orphan = _plant_dead_run(state, children)
    if action == "resume":
        with pytest.raises(CheckFailed):  # the gate still fails; the leftovers went first
            runner.resume("last")
    else:
        runner.rollback("last")
    assert not folder.exists() and not control.exists()
    assert _wait_gone([orphan]) == []
    assert "ansible.cleaned" in seen


def test_a_live_runs_folder_is_left_alone(tmp_path: Path) -> None:
    """This process's own run (owner alive, same start time) is not touched."""
    dirs = new_run_dirs(tmp_path)
    (dirs.private / "secret_vars.json").write_text("{}")
    assert not clean_dead_runs(tmp_path)
    assert dirs.private.exists() and dirs.control.exists()
    assert oct(dirs.private.stat().st_mode & 0o777) == "0o700"
    assert oct(work_root(tmp_path).stat().st_mode & 0o777) == "0o700"
    os.rmdir(dirs.control)


def test_a_reused_pid_does_not_keep_a_dead_runs_folder(tmp_path: Path) -> None:
    """Same pid as a live process but another start time: the owner is gone, the folder is a leftover."""
    folder = work_root(tmp_path) / f"run-{os.getpid()}-1-cafe0000"
    folder.mkdir(parents=True)
    assert clean_dead_runs(tmp_path).folders == (folder.name,)
    assert not folder.exists()


PARENT = """
import os, subprocess, sys, time
run_dir, control = sys.argv[1], sys.argv[2]
env = {**os.environ, "LIFERAFT_ANSIBLE_RUN": run_dir}
subprocess.Popen([sys.executable, "-I", sys.argv[3], str(os.getpid()), run_dir, control, "--",
                  "sh", "-c", "sleep 60 & sleep 60 & wait"], env=env, start_new_session=True)
time.sleep(60)
"""


def test_the_guard_ends_the_run_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL the process that started the guard: every process of the run dies within seconds (none is
    re-parented and left running) and the run's folder with its secrets is deleted."""
    run_dir = tmp_path / "run-x"
    run_dir.mkdir()
    (run_dir / "secret_vars.json").write_text("{}")
    control = Path(subprocess.check_output(["mktemp", "-d", "/tmp/lrcp-XXXXXX"], text=True).strip())
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(run_dir), str(control), str(GUARD)])
    try:
        deadline = time.monotonic() + 10
        while len(_guard.marked_pids(str(run_dir))) < 4:  # guard, sh, two sleeps
            assert time.monotonic() < deadline, _guard.marked_pids(str(run_dir))
            time.sleep(0.05)
        pids = _guard.marked_pids(str(run_dir))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_gone(pids) == []
        assert not run_dir.exists() and not control.exists()
    finally:
        _guard.end_run(str(run_dir), str(control))
