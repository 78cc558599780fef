"""Exclusive flocks in the stack's state folder: one run per stack, one user per standby site.

- `StackLock` (`<state_dir>/stacks/<stack>/lock`): one failover run (start, resume, rollback) of a stack at a time.
- `SiteLock` (`<state_dir>/stacks/<stack>/site-<site>.lock`): one process at a time keeps, drills or fails over
  into an alternate site: `replicate` holds it for as long as it runs (a `--watch` for hours), a drill for the whole
  drill (its standby set-up, the cut, the run, the teardown, the standby set up again), a failover run into the site
  for the run. Without it a `replicate --watch` would keep syncing into a standby that a drill or a real failover has
  just promoted, and a no-notice drill would tear down the standby under it.

The kernel releases a flock when its holder dies (even by SIGKILL), so a crashed process never leaves a stale lock.
The file records who holds it (pid, what, run id, the process's start time, and whether it yields) to say so in the
refusal and to find a keeper to stop; the flock is the truth. A lock is re-entrant in the thread that holds it (a
drill holds its site's lock and then starts the failover run into that site, which takes it too); any other thread
or process is refused at once, never made to wait -- except by `SiteLock.take`: a failover run takes the site from a
standby keeper (`replicate`, which acquires with `yields=True`): SIGTERM to the pid the note names (only if that pid
is still the process that wrote it: same start time), then up to `TAKE_WAIT_S` for it to end its round and let go.
A run or a drill never yields. A lock is as wide as the state dir: processes on other machines or with another
`--state-dir` do not see it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from liferaft.engine.journal import stack_dir
from liferaft.errors import LockHeld
from liferaft.events import Events, as_events

TAKE_WAIT_S = 30.0  # how long a failover waits for a standby keeper to end its round and let the site go
YIELD_SIGNAL = "SIGTERM"  # what a keeper that yields is sent (replicate ends its round, then exits 0)

_held: dict[str, tuple[int, int, int]] = {}  # path -> (fd, owning thread id, depth): the locks this process holds
_asked: dict[str, tuple[int, float, str]] = {}  # path -> (keeper pid, when asked, what): keepers asked to let go
_held_guard = threading.Lock()


class FileLock:
    """One exclusive, non-blocking flock on `path`. Subclasses say what it guards (`_refusal`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._by: str | None = None

    def acquire(self, run_id: str | None = None, *, by: str | None = None, yields: bool = False) -> Self:
        """Take the lock now or raise LockHeld (with the holder's note). `yields`: the holder gives the lock up
        when sent SIGTERM (a standby keeper); a failover run may then take it (`SiteLock.take`)."""
        key = str(self.path)
        me = threading.get_ident()
        with _held_guard:
            held = _held.get(key)
            if held is not None and held[1] == me:  # re-entered by its holder
                _held[key] = (held[0], me, held[2] + 1)
                self._fd, self._by = held[0], by
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
        _note_holder(fd, run_id, by, yields)
        self._fd, self._by = fd, by
        return self

    def _refusal(self, holder: dict[str, object]) -> LockHeld:
        return LockHeld(f"{self.path} is locked by {self._who(holder)}", holder=holder)

    @staticmethod
    def _who(holder: dict[str, object]) -> str:
        who = f"process {holder.get('pid')}" if holder.get("pid") else "another process"
        about = [str(holder["by"])] if holder.get("by") else []
        about += [f"run {holder['run']}"] if holder.get("run") else []
        return who + (f" ({'; '.join(about)})" if about else "")

    def set_run(self, run_id: str) -> None:
        """Name the run in the holder note (taken before the run id was known): when this object took the lock, or
        re-entered one taken for the same purpose (the failover command claims it before it plans the run); a
        drill's note stays the drill's."""
        held = _held.get(str(self.path))
        if self._fd is None or held is None:
            return
        note = _read_holder(self._fd)
        if held[2] == 1 or note.get("by") == self._by:
            _note_holder(self._fd, run_id, self._by, bool(note.get("yields")))

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
                        hint="wait for it to finish, or check `liferaft runs`", holder=holder)


class SiteLock(FileLock):
    """One process at a time keeps a standby at, drills into, or fails over into the stack's site `site`."""

    def __init__(self, state_dir: Path, stack: str, site: str) -> None:
        super().__init__(stack_dir(state_dir, stack) / f"site-{_file_safe(site)}.lock")
        self.stack, self.site = stack, site

    def _refusal(self, holder: dict[str, object]) -> LockHeld:
        return LockHeld(f"site {self.site!r} of stack {self.stack!r} is in use by {self._who(holder)}: one process "
                        "at a time keeps a standby there, drills into it or fails over into it",
                        hint=f"stop `liferaft replicate --to {self.site}` first if it is running (it can be started "
                             "again afterwards), or wait for the drill or run to finish", holder=holder)

    def check(self) -> None:
        """Refuse now (LockHeld) if the site is held by a process that does not yield (a run, a drill); a site held
        by a standby keeper, or free, passes. Takes nothing."""
        try:
            self.acquire(by="check")
        except LockHeld as e:
            if not yields(e.holder):
                raise
            return
        self.release()

    def ask(self, *, by: str, events: Events | None = None) -> bool:
        """Without waiting: take the site if it is free (True: held now, release it later); refuse at once if a run
        or a drill holds it; if a standby keeper holds it, ask the keeper now (SIGTERM) to end its round and let
        go (False: `take` waits for it later). A failover plans while the keeper finishes its round."""
        try:
            self.acquire(by=by)
            return True
        except LockHeld as refused:
            if not yields(refused.holder) or refused.holder.get("pid") == os.getpid():
                raise
            self._ask_keeper(refused.holder, as_events(events), TAKE_WAIT_S)
            return False

    def take(self, run_id: str | None = None, *, by: str, events: Events | None = None,
             wait: float = TAKE_WAIT_S) -> Self:
        """Acquire; if a standby keeper holds the site, stop it in a controlled way and take the site from it:
        SIGTERM, then up to `wait` seconds for it to end its round in progress and release. A holder that does not
        yield (a failover run, a drill) is refused at once, as `acquire` does."""
        try:
            self.acquire(run_id, by=by)
        except LockHeld as refused:
            if not yields(refused.holder) or refused.holder.get("pid") == os.getpid():
                raise
            return self._evict(refused.holder, run_id, by, as_events(events), wait)
        self._taken(as_events(events))  # the keeper asked earlier (`ask`) may have let go already
        return self

    def _taken(self, ev: Events) -> None:
        """Report the site taken from a keeper this process asked to let go (nothing if none was asked)."""
        with _held_guard:
            asked = _asked.pop(str(self.path), None)
        if asked is None:
            return
        pid, t0, what = asked
        took = round(time.monotonic() - t0, 2)
        ev.emit("site.taken", f"took site {self.site} from {what} pid {pid} in {took:.1f} s", site=self.site,
                holder_pid=pid, holder=what, seconds=took)

    def _ask_keeper(self, holder: dict[str, object], ev: Events, wait: float) -> float:
        """SIGTERM the keeper once (not again if this process already asked it); when it was first asked."""
        key, pid = str(self.path), int(str(holder.get("pid")))
        with _held_guard:
            asked = _asked.get(key)
        if asked is not None and asked[0] == pid:
            return asked[1]
        t0 = time.monotonic()
        if _signal_holder(holder):
            what = str(holder.get("by") or "a standby keeper")
            with _held_guard:
                _asked[key] = (pid, t0, what)
            ev.emit("site.taking", f"site {self.site}: asking {what} (pid {pid}) to end its round and let the "
                    f"site go (up to {wait:g} s)", site=self.site, holder_pid=pid, holder=what)
        return t0

    def _evict(self, holder: dict[str, object], run_id: str | None, by: str, ev: Events, wait: float) -> Self:
        t0 = self._ask_keeper(holder, ev, wait)
        while True:
            pid, what = int(str(holder.get("pid"))), str(holder.get("by") or "a standby keeper")
            t0 = min(t0, self._ask_keeper(holder, ev, wait))
            time.sleep(0.05)
            try:
                self.acquire(run_id, by=by)
            except LockHeld as again:
                if not yields(again.holder):  # a run or a drill got it in between: one process at a time
                    raise
                holder = again.holder
                if time.monotonic() - t0 > wait:
                    raise LockHeld(f"site {self.site!r} of stack {self.stack!r}: {what} (pid {pid}) was asked to "
                                   f"stop {wait:g} s ago and still holds the site", holder=holder,
                                   hint=f"it stops after its round or set-up in progress; wait until process {pid} "
                                        "has exited and run this again, or stop it yourself") from None
                continue
            self._taken(ev)
            return self


def _file_safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return safe if safe == name and not name.startswith(".") else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def yields(holder: dict[str, object]) -> bool:
    """Does the holder this note describes give the lock up when asked (a standby keeper)?"""
    return holder.get("yields") == YIELD_SIGNAL and isinstance(holder.get("pid"), int)


def _proc_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names one
    process, so a pid reused by another process is never signalled. None where /proc does not tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _signal_holder(holder: dict[str, object]) -> bool:
    """SIGTERM the holder if it is still the process that wrote the note. False when it is gone, or the note is
    stale (another process holds the flock and has not written its own note yet)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = holder.get("start")
    if started is not None and _proc_start(pid) != started:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    except PermissionError:
        raise LockHeld(f"process {pid} ({holder.get('by')}) holds the site and liferaft may not signal it",
                       hint=f"stop process {pid} yourself", holder=holder) from None
    return True


def _note_holder(fd: int, run_id: str | None, by: str | None, yields: bool = False) -> None:
    """Who holds the lock, for the message a second process gets and for `SiteLock.take`. Best effort: the flock
    is the lock, and a full disk must not turn taking it into a crash."""
    note = {"pid": os.getpid(), "by": by, "run": run_id, "start": _proc_start(os.getpid()),
            "yields": YIELD_SIGNAL if yields else None}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(note).encode(), 0)
    except OSError:
        pass
