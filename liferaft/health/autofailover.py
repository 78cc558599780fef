"""The automatic failover `health --watch` starts on a confirmed termination, supervised until the stack has moved.

- **Mode from the evidence** (`choose_mode`): the primary site terminated (its provider refuses us) or unreachable
  (nothing answers) -> `cold`, from the standby `replicate` keeps (a live move reads from the source: a refusing or
  silent provider would stop it, as a suspended account's AccessDenied did); the site answers -> `live` (nothing
  lost). Cold needs a recorded standby; without one, live is the only mode left and is tried.
- **One run, supervised** (`AutoFailover`): the child `liferaft failover --mode M --to T --yes --json` is waited for
  by a thread of the watch, so its exit is noticed at once (no zombie) and reported as an event, through the
  stack's hook and webhook (a change payload with `kind: "failover"`), and in `--json`. Its run id is read from its
  own JSON events (`run.started`).
- **Bounded retries**: a failed attempt is retried `RETRIES` times, `RETRY_DELAY_S` apart: by `liferaft resume RUN`
  once the run exists, else (refused before a run was made: the site still held, planning failed) by starting the
  failover again -- never a second run: a run into the target left failed or stopped (by an earlier watch, or by
  hand) is resumed from the first attempt on, and a move completed meanwhile by another process ends it. Exit 2
  (usage: no standby, bad input) is not retried: it cannot pass alone.
- **Done** when an attempt exits 0 (the failover command then records the move: readiness/<stack>.moved.json) or
  when the budget is spent; the watch ends on the first, and stops triggering on both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.events import Events
from liferaft.health.evidence import Verdict

RETRIES = 2  # resumes (or restarts) after the first attempt
RETRY_DELAY_S = 5.0
NOT_RETRIED = frozenset({2})  # usage / invalid input: the same command cannot pass by itself


def choose_mode(verdicts: dict[str, Verdict], primary: str, standby_recorded: bool) -> tuple[str, str]:
    """(mode, why) from the confirmed verdicts of the primary site."""
    site = verdicts.get(f"site:{primary}")
    if site in (Verdict.TERMINATED, Verdict.UNREACHABLE):
        assert site is not None
        if standby_recorded:
            return "cold", (f"the source site {primary} is {site.value}: cold failover from the standby (a live move "
                            "would have to read from the source)")
        return "live", (f"the source site {primary} is {site.value} but no standby is recorded: a live failover is "
                        "the only move left (it needs the source to answer)")
    return "live", f"the source site {primary} answers ({site.value if site else 'unknown'}): live failover"


def failover_args(mode: str, target: str) -> list[str]:
    """The failover the watch starts (and `--explain` shows)."""
    return ["failover", "--mode", mode, "--to", target, "--yes", "--json"]


def liferaft_argv(stack_path: str | Path, state_dir: str | Path | None, *args: str,
                  program: list[str] | None = None) -> list[str]:
    """`liferaft --stack F [--state-dir D] ARGS...` run by this interpreter (`program` replaces the first part: a
    test's stand-in for the liferaft CLI)."""
    argv = [*(program or [sys.executable, "-m", "liferaft"]), "--stack", str(stack_path)]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    return argv + list(args)


@dataclass
class Attempt:
    n: int
    args: list[str]  # after `liferaft [--stack F] [--state-dir D]`
    pid: int | None
    log: str | None
    started_at: float
    ended_at: float | None = None
    returncode: int | None = None
    run: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.n, "command": ["liferaft", *self.args], "pid": self.pid, "log": self.log,
                "started_at": round(self.started_at, 3),
                "ended_at": round(self.ended_at, 3) if self.ended_at else None,
                "duration_s": round(self.ended_at - self.started_at, 3) if self.ended_at else None,
                "returncode": self.returncode, "run": self.run, "error": self.error}


class AutoFailover:
    """One automatic failover of a stack into `target`: started once, supervised, retried within a budget."""

    def __init__(self, stack: Any, target: str, mode: str, *, state_dir: str | Path | None, events: Events,
                 notify: Callable[[dict[str, Any]], None], retries: int = RETRIES,
                 retry_delay: float = RETRY_DELAY_S, program: list[str] | None = None,
                 moved: Callable[[], dict[str, Any] | None] | None = None,
                 standing_run: Callable[[str], str | None] | None = None) -> None:
        """`moved()`: the stack's move record (checked before any fresh start: a run may have completed since);
        `standing_run(site)`: a run into `site` left failed or stopped (an earlier watch's, or by hand): it is
        resumed, never doubled by a second run."""
        self.stack, self.target, self.mode = stack, target, mode
        self.state_dir = state_dir
        self.events, self.notify = events, notify
        self.retries, self.retry_delay = retries, retry_delay
        self.program = program
        self._moved, self._standing_run = moved, standing_run
        self.attempts: list[Attempt] = []
        self.run: str | None = None
        self.outcome: str | None = None  # moved | gave-up
        self.done = threading.Event()
        self._closing = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    # ------------------------------------------------------------------------------------------------ life
    def start(self, why: str) -> Attempt:
        self.run = self._standing_run(self.target) if self._standing_run else None
        attempt = self._launch(self._next_args())
        self._report("started", attempt, f"{why}: started liferaft {' '.join(attempt.args[:-1])}"
                     + (f" (pid {attempt.pid}, log {attempt.log})" if attempt.pid else f": {attempt.error}"))
        self._thread = threading.Thread(target=self._supervise, name="liferaft-auto-failover", daemon=True)
        self._thread.start()
        return attempt

    def close(self, timeout: float | None = None) -> None:
        """The watch ends: no new attempt; the one running is waited for (it must not be orphaned mid-step)."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        with self._guard:
            return self._proc is not None and self._proc.poll() is None

    def to_dict(self) -> dict[str, Any]:
        with self._guard:
            return {"target": self.target, "mode": self.mode, "run": self.run, "outcome": self.outcome,
                    "attempts": [a.to_dict() for a in self.attempts], "retries": self.retries}

    # ------------------------------------------------------------------------------------------- internals
    def _launch(self, args: list[str]) -> Attempt:
        argv = liferaft_argv(self.stack.path, self.state_dir, *args, program=self.program)
        log_dir = Path(self.state_dir) if self.state_dir is not None else Path(self.stack.base_dir)
        log_path = log_dir / f"health-failover-{time.strftime('%Y%m%dT%H%M%S')}-{len(self.attempts) + 1}.log"
        attempt = Attempt(len(self.attempts) + 1, list(args), None, None, time.time())
        try:
            with open(log_path, "ab") as log:
                # its own session: a Ctrl-C at the watch's terminal must not interrupt a failover mid-step
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.stack.base_dir, shell=False, start_new_session=True)
            attempt.pid, attempt.log = proc.pid, str(log_path)
        except OSError as e:
            proc, attempt.error = None, f"could not start: {e.strerror or e}"
            attempt.ended_at = time.time()
        with self._guard:
            self.attempts.append(attempt)
            self._proc = proc
        return attempt

    def _supervise(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - the watch must learn that supervision stopped, never hang on it
            attempt = self.attempts[-1]
            self._finish("gave-up", attempt, f"supervising the failover failed: {type(e).__name__}: {e}")

    def _loop(self) -> None:
        while True:
            with self._guard:
                proc, attempt = self._proc, self.attempts[-1]
            if proc is not None:
                attempt.returncode = proc.wait()  # reaped here: noticed at once, never a zombie
                attempt.ended_at = time.time()
                attempt.run = _run_id(attempt.log) or None
            with self._guard:
                self.run = attempt.run or self.run
            ok = attempt.returncode == 0
            self._report("exited", attempt, f"attempt {attempt.n} (liferaft {' '.join(attempt.args[:2])}) "
                         + (f"exited {attempt.returncode}" if attempt.error is None else attempt.error)
                         + (f" after {attempt.ended_at - attempt.started_at:.1f} s" if attempt.ended_at else "")
                         + (f", run {attempt.run}" if attempt.run else ""))
            if ok:
                return self._finish("moved", attempt, f"the stack moved to {self.target} (run {self.run}): the "
                                    "watch ends; it does not fail over from the old primary again")
            moved = self._moved() if self._moved else None
            if moved:  # another process's run (an earlier watch's child, or by hand) completed meanwhile
                with self._guard:
                    self.run = str(moved.get("run") or self.run)
                return self._finish("moved", attempt, f"the stack was moved to {moved.get('site')} by run "
                                    f"{moved.get('run')} meanwhile: no failover of ours is needed")
            if attempt.returncode in NOT_RETRIED or len(self.attempts) > self.retries:
                return self._finish("gave-up", attempt, f"automatic failover to {self.target} gave up after "
                                    f"{len(self.attempts)} attempt(s); see {attempt.log or 'the log'}"
                                    + (f" and `liferaft show {self.run}`" if self.run else ""))
            if self._closing.wait(self.retry_delay):
                return self._finish("gave-up", attempt, "the watch ended before a retry: "
                                    + (f"`liferaft resume {self.run}`" if self.run else "start the failover again"))
            args = self._next_args()
            retry = self._launch(args)
            self._report("retrying", retry, f"retry {retry.n - 1} of {self.retries}: liferaft {' '.join(args[:2])}"
                         + (f" (pid {retry.pid})" if retry.pid else f": {retry.error}"))

    def _next_args(self) -> list[str]:
        if self.run:
            return ["resume", self.run, "--json"]
        return failover_args(self.mode, self.target)

    def _finish(self, outcome: str, attempt: Attempt, message: str) -> None:
        with self._guard:
            self.outcome = outcome
        self._report(outcome, attempt, message)
        self.done.set()

    def _report(self, what: str, attempt: Attempt, message: str) -> None:
        payload = {"stack": self.stack.model.name, "subject": f"failover:{self.target}", "kind": "failover",
                   "name": self.target, "event": what, "mode": self.mode, "at": round(time.time(), 3),
                   **attempt.to_dict(), "run": attempt.run or self.run}
        self.events.emit(f"health.failover.{what}", message, failover=payload)
        self.notify(payload)


def _run_id(log: str | None) -> str | None:
    """The run the child made or resumed, from its own JSON event lines (`run.started` / `run.resumed`)."""
    if not log:
        return None
    run = None
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if '"run.' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("kind") in ("run.started", "run.resumed") and event.get("run"):
                    run = str(event["run"])
    except OSError:
        return None
    return run
