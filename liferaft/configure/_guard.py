"""Run ansible-playbook so that it dies with the liferaft process that started it (standard library only).

ansible-runner starts its command through pexpect with SIGHUP ignored, in a session of its own: when liferaft is
SIGKILLed, ansible-playbook, its forked workers and their ssh processes are re-parented to PID 1 and go on
configuring hosts, while a resume runs the same playbook again. ansible-runner starts this script instead
(`python -I _guard.py PARENT_PID RUN_DIR CONTROL_DIR -- ansible-playbook ...`). It:

- asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG) and checks the parent is still the one
  that started it (it may have died before the request was made);
- starts ansible-playbook with PR_SET_PDEATHSIG=SIGKILL too (if this guard itself is SIGKILLed);
- on SIGTERM (the parent died, or anyone asked): SIGKILLs every process of the run -- found by the
  `LIFERAFT_ANSIBLE_RUN=<run dir>` variable they all inherit, which also finds the ssh ControlPersist masters that
  left the session -- then deletes the run dir (it holds the secret variables) and the SSH control dir.

`end_run` and `marked_pids` are also what `clean_dead_runs` uses when even this guard was killed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

MARK = "LIFERAFT_ANSIBLE_RUN"
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> bool:
    """Have the kernel send `sig` to this process when its parent dies (Linux); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def marked_pids(run_dir: str) -> list[int]:
    """Every process (but this one) whose environment carries `LIFERAFT_ANSIBLE_RUN=<run_dir>`."""
    needle = f"{MARK}={run_dir}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if needle in env:
            found.append(int(name))
    return found


def end_run(run_dir: str, control_dir: str | None, *, attempts: int = 20) -> int:
    """SIGKILL every process of the run (until none is left: workers may fork while we look), then delete the
    run dir and the control dir. Returns how many processes were killed."""
    killed: set[int] = set()
    for _ in range(attempts):
        pids = [p for p in marked_pids(run_dir) if p not in killed or _alive(p)]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except (ProcessLookupError, PermissionError):  # gone, or (setuid) not ours to end
                killed.add(pid)
        time.sleep(0.05)
    for path in (run_dir, control_dir):
        if path:
            shutil.rmtree(path, ignore_errors=True)
    return len(killed)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # a zombie is dead, only not reaped yet
    except (OSError, IndexError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) < 6 or argv[4] != "--":
        sys.stderr.write("usage: _guard.py PARENT_PID RUN_DIR CONTROL_DIR -- COMMAND...\n")
        return 2
    parent, run_dir, control_dir, command = int(argv[1]), argv[2], argv[3], argv[5:]

    def bail(signum: int, _frame: object) -> None:
        end_run(run_dir, control_dir)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, bail)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request above
        bail(signal.SIGTERM, None)
    child = subprocess.Popen(command, preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL))  # noqa: PLW1509
    rc = child.wait()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
