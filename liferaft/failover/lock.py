"""One run per stack: an exclusive flock on `<state_dir>/stacks/<stack>/lock`.

The kernel releases a flock when its holder dies (even by SIGKILL), so a crashed run never leaves a stale lock.
The file records who holds it (pid, run id) only to say so in the refusal; the flock is the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Self

from liferaft.errors import LockHeld
from liferaft.failover.journal import stack_dir


class StackLock:
    def __init__(self, state_dir: Path, stack: str) -> None:
        self.stack = stack
        self.path = stack_dir(state_dir, stack) / "lock"
        self._fd: int | None = None

    def acquire(self, run_id: str | None = None) -> StackLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"process {holder.get('pid')}" if holder.get("pid") else "another process"
            run = f" (run {holder['run']})" if holder.get("run") else ""
            raise LockHeld(f"stack {self.stack!r} is locked by {who}{run}: one run per stack at a time",
                           hint="wait for it to finish, or check `liferaft runs`") from None
        _note_holder(fd, run_id)
        self._fd = fd
        return self

    def set_run(self, run_id: str) -> None:
        if self._fd is not None:
            _note_holder(self._fd, run_id)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Self:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _note_holder(fd: int, run_id: str | None) -> None:
    """Who holds the lock, for the message a second run gets. Best effort: the flock is the lock, and a full disk
    must not turn taking it into a crash."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "run": run_id}).encode(), 0)
    except OSError:
        pass
