"""Where an Ansible run keeps its files: an owner-only folder under the state dir, never /tmp.

A run's private data dir holds the secret variables (database passwords, bucket keys), the inventory, module
payloads in Ansible's local temp and ansible-runner's artifacts. It lives in `<state dir>/ansible/run-<pid>-<start
time>-<token>/` (0700): the owner process is in the name, so a folder whose owner is gone (SIGKILL, power loss) is
known to be a leftover. `clean_dead_runs` ends what is left of such runs (their processes, their ssh masters) and
deletes their folders; the next playbook run, `resume` and `rollback` call it. Only the SSH control dir stays in the
system temp dir (socket paths are limited to ~100 bytes); it holds no secrets and is deleted with the run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from liferaft.configure._guard import end_run
from liferaft.statedir import owner_only_dir

WORK_FOLDER = "ansible"
CONTROL_FILE = "control_dir"  # in a run's folder: where its SSH control sockets are


def work_root(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / WORK_FOLDER


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid from the original), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else fields[19].decode()  # field 22 of stat; fields[0] is field 3


@dataclass(frozen=True)
class RunDirs:
    """One run's private data dir (under the state dir) and SSH control dir (short, in the temp dir)."""

    private: Path
    control: Path


def new_run_dirs(state_dir: str | os.PathLike[str], tmp_root: str | None = None) -> RunDirs:
    """Make a fresh run folder named after this process (pid and start time), and its control dir."""
    root = owner_only_dir(work_root(state_dir), parents_from=state_dir)
    pid = os.getpid()
    private = root / f"run-{pid}-{_start_time(pid) or 0}-{secrets.token_hex(4)}"
    private.mkdir(mode=0o700)
    control = Path(tempfile.mkdtemp(prefix="lrcp-", dir=tmp_root or "/tmp"))  # short: socket paths are limited
    (private / CONTROL_FILE).write_text(str(control))
    return RunDirs(private, control)


def _owner_alive(folder: Path) -> bool:
    parts = folder.name.split("-")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    return _start_time(int(parts[1])) == parts[2]


@dataclass(frozen=True)
class Cleaned:
    """What `clean_dead_runs` removed: run folders of dead owners and the processes they had left."""

    folders: tuple[str, ...] = ()
    processes: int = 0

    def __bool__(self) -> bool:
        return bool(self.folders)

    def describe(self) -> str:
        return (f"removed {len(self.folders)} Ansible run folder(s) left by killed runs (secret variables "
                f"included) and ended {self.processes} of their processes")


def clean_dead_runs(state_dir: str | os.PathLike[str]) -> Cleaned:
    """End and delete every run under `<state_dir>/ansible` whose owner process is gone. Live runs (of this or
    another process) are left alone."""
    root = work_root(state_dir)
    if not root.is_dir():
        return Cleaned()
    folders, killed = [], 0
    for folder in sorted(root.iterdir()):
        if not folder.name.startswith("run-") or _owner_alive(folder):
            continue
        try:
            control: str | None = (folder / CONTROL_FILE).read_text().strip()
        except OSError:
            control = None
        if control and not Path(control).name.startswith("lrcp-"):
            control = None  # only ever a control dir this module made
        killed += end_run(str(folder), control)
        shutil.rmtree(folder, ignore_errors=True)
        folders.append(folder.name)
    return Cleaned(tuple(folders), killed)
