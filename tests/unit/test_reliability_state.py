"""The state directory under stress, without the lab: a full disk (a small tmpfs as the state dir) and permissions.

The run is the engine's toy plan (tests/unit/test_failover_toys.py) driven through the real CLI entry point.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_helpers import invoke
from tests.unit.test_reliability_input import STACK_TOY

pytestmark = pytest.mark.reliability



@pytest.fixture()
def small_state(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs as the state dir (root only: mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt / "state"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


def _stopped_toy_run(tmp_path: Path, state: Path) -> tuple[Path, str]:
    from liferaft.engine import Runner
    from tests.unit.test_failover_toys import toy_plan

    stack = tmp_path / "liferaft.yaml"
    stack.write_text(STACK_TOY)
    work = tmp_path / "work"
    work.mkdir()
    out = Runner(state, stack_name="toy").start(toy_plan(work), stop_before="gate")
    return stack, out.run_id


def test_full_state_dir_is_a_clear_resumable_stop(tmp_path: Path, small_state: Path) -> None:
    """With the state dir's disk full, resume stops with 'full' in the message (exit 4), never 'damaged' nor an
    internal error; once space is freed, the same run resumes and completes."""
    stack, run = _stopped_toy_run(tmp_path, small_state)
    filler = small_state.parent / "filler"
    _fill(filler)
    base = ("--stack", str(stack), "--state-dir", str(small_state))
    try:
        result = invoke(*base, "resume", run)
    finally:
        filler.unlink()
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "damaged" not in result.stderr and "cannot be resumed" not in result.stderr, result.stderr
    assert result.exit_code == 4 and "full" in result.stderr, (result.exit_code, result.stderr)
    again = invoke(*base, "resume", run)
    assert again.exit_code == 0, again.stderr


def test_state_dir_and_journal_are_owner_only_even_under_a_permissive_umask(tmp_path: Path) -> None:
    """Journal, lock and folders are created 0600/0700 whatever the umask."""
    old = os.umask(0)
    try:
        state = tmp_path / "state"
        _stopped_toy_run(tmp_path, state)
    finally:
        os.umask(old)
    for p in [state, *state.rglob("*")]:
        mode = p.stat().st_mode & 0o777
        assert mode == (0o700 if p.is_dir() else mode & 0o700) and mode & 0o077 == 0, (p, oct(mode))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


READERS = [("runs",), ("runs", "--json"), ("show", "last"), ("show", "last", "--json"), ("resume", "last"),
           ("rollback", "last", "--yes"), ("resume", "nosuchrun", "--json"), ("drills",), ("drills", "--json"),
           ("audit", "--no-dns", "--json"), ("validate",)]


@pytest.mark.parametrize("args", READERS)
def test_read_only_commands_create_no_state_dir(tmp_path: Path, args: tuple[str, ...]) -> None:
    """`runs`, `show` and a resume or rollback of a run that does not exist created the state dir, the stack's
    folder, an empty journal and a lock file: now nothing."""
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(STACK_TOY)
    state = tmp_path / "state"
    result = invoke("--stack", str(stack), "--state-dir", str(state), *args)
    reads_runs = args[0] in ("show", "resume", "rollback")
    assert result.exit_code in ((2,) if reads_runs else (0, 1)), (result.exit_code, result.stderr)
    assert "internal error" not in result.stderr
    assert not state.exists(), _tree(state)
    if reads_runs:
        assert "no run" in result.stderr


def test_read_only_commands_leave_an_existing_state_dir_as_it_was(tmp_path: Path) -> None:
    """With a journal already there: no file appears (no lock for a run that does not exist, no -wal left)."""
    stack, run = _stopped_toy_run(tmp_path, tmp_path / "state")
    state = tmp_path / "state"
    lock = state / "stacks" / "toy" / "lock"
    if lock.exists():
        lock.unlink()
    before = _tree(state)
    for args in (("runs",), ("show", run), ("show", "last", "--json"), ("resume", "nosuchrun"),
                 ("rollback", "nosuchrun", "--yes")):
        result = invoke("--stack", str(stack), "--state-dir", str(state), *args)
        assert result.exit_code in (0, 2) and "internal error" not in result.stderr, result.stderr
        assert _tree(state) == before, (args, _tree(state) ^ before)
