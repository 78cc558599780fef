"""A liferaft process SIGKILLed in the middle of a real playbook against a lab host (netns + sshd).

Before: the secret variables stayed in /tmp/liferaft-ansible-*/secret_vars.json and ansible-playbook with its
workers went on configuring the host, re-parented to PID 1. Now: the run's files live under the state dir, its
processes die with it (the guard), and when even the guard was killed, rollback (or resume, or the next run)
ends what is left and deletes the state-dir copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.configure import _guard
from liferaft.engine import Runner
from liferaft.errors import CheckFailed
from tests.unit.test_failover_toys import toy_plan

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
from pathlib import Path
from liferaft.configure import TargetHost, run_playbook
a = json.loads(sys.stdin.read())
host = TargetHost(a["name"], a["address"], a["port"], a["user"], tuple(a["host_keys"]), a["key"])
def on_event(ev):
    if ev.kind == "task.start" and ev.task == "Sleep":
        Path(a["started"]).write_text("x")
run_playbook(a["book"], [host], secret_variables={"liferaft_secrets": {"databases": {"db": {"password": a["secret"]}}}},
             on_event=on_event, state_dir=a["state"], timeout=600)
"""


@pytest.fixture
def crash(lab_hosts: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A child liferaft process running a playbook that sleeps 300 s on host c, stopped in its Sleep task."""
    state = Path(subprocess.check_output(["mktemp", "-d", "/var/tmp/lr-crash-XXXXXX"], text=True).strip())
    book = tmp_path / "slow.yml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: Sleep\n      ansible.builtin.command: sleep 300\n")
    h = lab_hosts["c"]
    secret = "pw-" + os.urandom(12).hex()
    args = {"name": "c", "address": h.address, "port": h.port, "user": h.user, "host_keys": [h.host_public_key],
            "key": str(lab_hosts.client_key), "book": str(book), "secret": secret, "state": str(state),
            "started": str(tmp_path / "started")}
    t0 = time.time()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, cwd=REPO, text=True)
    assert child.stdin is not None
    child.stdin.write(json.dumps(args))
    child.stdin.close()
    info: dict[str, Any] = {"child": child, "state": state, "secret": secret, "t0": t0, "run_dir": None}
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the playbook never reached Sleep"
            time.sleep(0.1)
        time.sleep(1.5)  # the worker and its ssh session to host c are up
        (run_dir,) = (state / "ansible").glob("run-*")
        info["run_dir"] = run_dir
        info["pids"] = _guard.marked_pids(str(run_dir))
        assert len(info["pids"]) >= 3, "expected the guard, ansible-playbook, a worker and ssh"
        yield info
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if info["run_dir"] is not None:
            _guard.end_run(str(info["run_dir"]), None)
        subprocess.run(["rm", "-rf", str(state)], check=False)


def _wait_gone(pids: list[int], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _guard._alive(p)]
        if not alive or time.monotonic() > deadline:
            return [_cmdline(p) for p in alive]
        time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return f"{pid} (gone)"


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])


def _tmp_files_holding(secret: str, since: float) -> list[str]:
    """Files under /tmp written since `since` that contain the secret value (a bounded scan)."""
    needle, found = secret.encode(), []
    for root, _dirs, files in os.walk("/tmp"):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
                if st.st_mtime < since - 1 or st.st_size > 1 << 20 or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    if needle in f.read():
                        found.append(path)
            except OSError:
                continue
    return found


def test_sigkill_mid_playbook_ends_every_ansible_process_and_leaves_no_secret(crash: dict[str, Any]) -> None:
    """The run's processes (ansible-playbook, workers, ssh) are gone within seconds of the SIGKILL, its folder in
    the state dir is deleted and no file in /tmp holds the secret (the old code left it in
    /tmp/liferaft-ansible-*/secret_vars.json)."""
    os.kill(crash["child"].pid, signal.SIGKILL)
    crash["child"].wait()
    assert _wait_gone(crash["pids"], timeout=10) == []
    assert not crash["run_dir"].exists()
    assert _tmp_files_holding(crash["secret"], crash["t0"]) == []


def test_guard_killed_too_then_rollback_ends_the_rest_and_deletes_the_state_dir_copy(crash: dict[str, Any],
                                                                                    tmp_path: Path) -> None:
    """Even with the guard killed at the same moment, ansible-playbook dies (its parent-death signal); the secret
    stays only in the owner-only state dir, never in /tmp; `rollback` of the stack's run ends what is left of
    the dead run and deletes its folder."""
    state = crash["state"]
    runner = Runner(state, stack_name="toy")
    with pytest.raises(CheckFailed):  # a failed run of the stack, to roll back
        runner.start(toy_plan(tmp_path, gate_expect=tmp_path / "nope"))
    guard = next(p for p in crash["pids"] if "_guard.py" in _cmdline(p))
    playbook = next(p for p in crash["pids"] if _ppid(p) == guard)  # ansible-playbook itself (not a worker)
    os.kill(crash["child"].pid, signal.SIGKILL)
    os.kill(guard, signal.SIGKILL)
    crash["child"].wait()
    run_dir = crash["run_dir"]
    assert (run_dir / "secret_vars.json").exists()
    assert oct((state / "ansible").stat().st_mode & 0o777) == "0o700"
    assert _tmp_files_holding(crash["secret"], crash["t0"]) == []
    assert _wait_gone([playbook], timeout=10) == []

    seen: list[str] = []
    Runner(state, stack_name="toy", events=lambda e: seen.append(e.kind)).rollback("last")
    assert "ansible.cleaned" in seen
    assert not run_dir.exists()
    assert _wait_gone(crash["pids"], timeout=10) == []
