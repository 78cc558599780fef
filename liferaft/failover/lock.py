"""Exclusive flocks in the stack's state folder: one run per stack, one user per standby site.

- `StackLock` (`<state_dir>/stacks/<stack>/lock`): one failover run (start, resume, rollback) of a stack at a time.
- `SiteLock` (`<state_dir>/stacks/<stack>/site-<site>.lock`): one process at a time keeps, drills or fails over
  into an alternate site: `replicate` holds it for as long as it runs (a `--watch` for hours), a drill for the whole
  drill (its standby set-up, the cut, the run, the teardown, the standby set up again), a failover run into the site
  for the run. Without it a `replicate --watch` would keep syncing into a standby that a drill or a real failover has
  just promoted, and a no-notice drill would tear down the standby under it.

The kernel releases a flock when its holder dies (even by SIGKILL), so a crashed process never leaves a stale lock.
The file records who holds it (pid, what, run id) only to say so in the refusal; the flock is the truth. A lock is
re-entrant in the thread that holds it (a drill holds its site's lock and then starts the failover run into that
site, which takes it too); any other thread or process is refused at once, never made to wait.
A lock is as wide as the state dir: processes on other machines or with another `--state-dir` do not see it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from liferaft.errors import LockHeld
from liferaft.failover.journal import stack_dir

_held: dict[str, tuple[int, int, int]] = {}  # path -> (fd, owning thread id, depth): the locks this process holds
_held_guard = threading.Lock()


class FileLock:
    """One exclusive, non-blocking flock on `path`. Subclasses say what it guards (`_refusal`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._by: str | None = None

    def acquire(self, run_id: str | None = None, *, by: str | None = None) -> Self:
        key = str(self.path)
        me = threading.get_ident()
        with _held_guard:
            held = _held.get(key)
            if held is not None and held[1] == me:  # re-entered by its holder
                _held[key] = (held[0], me, held[2] + 1)
                self._fd = held[0]
                return self
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if held is not None:
                    raise BlockingIOError  # another thread of this process holds it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._refusal(holder) from None
            _held[key] = (fd, me, 1)
        _note_holder(fd, run_id, by)
        self._fd, self._by = fd, by
        return self

    def _refusal(self, holder: dict[str, object]) -> LockHeld:
        return LockHeld(f"{self.path} is locked by {self._who(holder)}")

    @staticmethod
    def _who(holder: dict[str, object]) -> str:
        who = f"process {holder.get('pid')}" if holder.get("pid") else "another process"
        about = [str(holder["by"])] if holder.get("by") else []
        about += [f"run {holder['run']}"] if holder.get("run") else []
        return who + (f" ({'; '.join(about)})" if about else "")

    def set_run(self, run_id: str) -> None:
        """Name the run in the holder note (taken before the run id was known); not when merely re-entered."""
        if self._fd is not None and _held.get(str(self.path), (0, 0, 0))[2] == 1:
            _note_holder(self._fd, run_id, self._by)

    def release(self) -> None:
        if self._fd is None:
            return
        key = str(self.path)
        fd, self._fd = self._fd, None
        with _held_guard:
            held = _held.get(key)
            if held is not None and held[2] > 1:
                _held[key] = (held[0], held[1], held[2] - 1)
                return
            _held.pop(key, None)
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> Self:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


class StackLock(FileLock):
    """One failover run of the stack at a time."""

    def __init__(self, state_dir: Path, stack: str) -> None:
        super().__init__(stack_dir(state_dir, stack) / "lock")
        self.stack = stack

    def _refusal(self, holder: dict[str, object]) -> LockHeld:
        return LockHeld(f"stack {self.stack!r} is locked by {self._who(holder)}: one run per stack at a time",
                        hint="wait for it to finish, or check `liferaft runs`")


class SiteLock(FileLock):
    """One process at a time keeps a standby at, drills into, or fails over into the stack's site `site`."""

    def __init__(self, state_dir: Path, stack: str, site: str) -> None:
        super().__init__(stack_dir(state_dir, stack) / f"site-{_file_safe(site)}.lock")
        self.stack, self.site = stack, site

    def _refusal(self, holder: dict[str, object]) -> LockHeld:
        return LockHeld(f"site {self.site!r} of stack {self.stack!r} is in use by {self._who(holder)}: one process "
                        "at a time keeps a standby there, drills into it or fails over into it",
                        hint=f"stop `liferaft replicate --to {self.site}` first if it is running (it can be started "
                             "again afterwards), or wait for the drill or run to finish")


def _file_safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return safe if safe == name and not name.startswith(".") else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _note_holder(fd: int, run_id: str | None, by: str | None) -> None:
    """Who holds the lock, for the message a second process gets. Best effort: the flock is the lock, and a full
    disk must not turn taking it into a crash."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "by": by, "run": run_id}).encode(), 0)
    except OSError:
        pass
