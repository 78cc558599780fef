"""The failover commands through the real CLI entry point (runs, show, resume, rollback, lock, confirmation)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.cli import main
from liferaft.engine import Runner, journal_path
from tests.unit.test_failover_toys import toy_plan

REPO = Path(__file__).resolve().parents[2]
STACK = """\
version: 1
name: toy
providers:
  p:
    type: ssh
    hosts: [{name: a, address: 127.0.0.1, host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"]}]
  o:
    type: libcloud
    storage: {driver: local, path: /tmp}
sites:
  s1: {compute: p, objects: o}
  s2: {compute: p, objects: o}
primary: s1
alternates: [s2]
"""


@pytest.fixture()
def env(tmp_path: Path) -> tuple[Path, Path]:
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(STACK)
    return stack, tmp_path / "state"


def cli(env: tuple[Path, Path], *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    stack, state = env
    with pytest.raises(SystemExit) as exit_:
        main(["--stack", str(stack), "--state-dir", str(state), *args])
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_runs_and_show_list_a_finished_run(env: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = Runner(env[1], stack_name="toy").start(toy_plan(tmp_path))
    code, stdout, _ = cli(env, "runs", "--json", capsys=capsys)
    assert code == 0
    (row,) = json.loads(stdout)
    assert row["run"] == out.run_id and row["status"] == "done" and row["steps_done"] == 6
    code, stdout, _ = cli(env, "show", out.run_id[:10], "--json", capsys=capsys)
    shown = json.loads(stdout)
    assert code == 0 and [s["status"] for s in shown["steps"]] == ["done"] * 6
    assert shown["plan_hash"] == shown["plan"]["hash"] == toy_plan(tmp_path).hash
    code, stdout, _ = cli(env, "show", "last", capsys=capsys)
    assert code == 0 and "dns" in stdout and "done" in stdout


def test_show_unknown_run_is_a_usage_error(env: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(env, "show", "nope", capsys=capsys)
    assert code == 2 and "no run 'nope'" in err


def test_rollback_needs_yes_when_not_interactive(env: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = Runner(env[1], stack_name="toy").start(toy_plan(tmp_path))
    code, _, err = cli(env, "rollback", out.run_id, capsys=capsys)
    assert code == 2 and "--yes" in err and (tmp_path / "a").exists()
    code, stdout, _ = cli(env, "rollback", out.run_id, "--yes", "--json", capsys=capsys)
    assert code == 0 and json.loads(stdout)["status"] == "rolled-back" and not (tmp_path / "a").exists()


def test_resume_after_a_kill_through_the_cli(env: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(toy_plan(tmp_path).to_dict()))
    proc = subprocess.run([sys.executable, "-m", "tests.unit.test_failover_toys", "start", str(env[1]),
                           str(plan_file)], cwd=REPO, env={"LIFERAFT_TEST_KILL_AFTER_STEP": "gate",
                                                           "PATH": "/usr/bin:/bin"}, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    code, stdout, _ = cli(env, "runs", "--json", capsys=capsys)
    (row,) = json.loads(stdout)
    assert row["status"] == "running" and row["steps_done"] == 4
    code, stdout, err = cli(env, "resume", row["run"], capsys=capsys)
    assert code == 0 and "done (6/6 steps" in stdout, err
    assert (tmp_path / "c").exists()


def test_second_run_while_locked_exits_5(env: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    runner = Runner(env[1], stack_name="toy")
    out = runner.start(toy_plan(tmp_path), stop_before="dns")
    holder = subprocess.Popen([sys.executable, "-m", "tests.unit.test_failover_toys", "hold-lock", str(env[1]), "toy"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, _, err = cli(env, "resume", out.run_id, capsys=capsys)
        assert code == 5 and "locked by process" in err
    finally:
        holder.kill()
        holder.wait()


def test_corrupted_journal_exits_2_without_traceback(env: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = journal_path(env[1], "toy")
    path.write_bytes(b"this is not a journal" * 100)
    for args in (["runs"], ["show", "last"], ["resume", "last"], ["rollback", "last", "--yes"]):
        code, _, err = cli(env, *args, capsys=capsys)
        assert code == 2 and "not a liferaft journal" in err and "Traceback" not in err
