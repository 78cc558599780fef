"""`liferaft health --watch`: repeat the check, apply hysteresis, and act on confirmed verdict changes.

Hysteresis: every subject (each provider, each site) starts "unknown"; its verdict becomes (or changes to) V only
after `confirm` results in a row agree on V. A single odd result never flips a verdict.

On every confirmed change (except unknown -> healthy, the quiet start) the watch
- runs the configured hook argv (never through a shell) with the change as JSON on stdin,
- POSTs the same JSON to the configured webhook,
- and, when the stack's policy says `failover_on: terminated` and the primary site's termination is confirmed,
  starts ONE automatic failover (`liferaft.health.autofailover`): the mode chosen from the evidence (cold from the
  standby when the source is terminated or unreachable), the child supervised (its exit reported at once through
  events, the hook and the webhook), a failed attempt retried by `liferaft resume RUN` within a bounded budget.
Once that failover completes the stack has moved: the watch ends (exit 0). A watch started after a move (the record
`readiness/<stack>.moved.json` the failover command writes) keeps checking but never fails over from the old primary.
A failing hook, webhook or failover attempt is reported as an event; it never stops the watch.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.events import Events, as_events
from liferaft.health.autofailover import AutoFailover, choose_mode, failover_args, liferaft_argv
from liferaft.health.evidence import Verdict
from liferaft.health.report import HealthReport

UNKNOWN = "unknown"
HOOK_TIMEOUT = 30.0
WEBHOOK_TIMEOUT = 10.0


# ------------------------------------------------------------------------------------------- hysteresis
@dataclass(frozen=True)
class Transition:
    subject: str
    previous: str  # a verdict value or "unknown"
    current: Verdict
    confirmations: int


class Hysteresis:
    """Per-subject confirmed verdicts; a new verdict is confirmed after `confirm` agreeing results in a row."""

    def __init__(self, confirm: int) -> None:
        if confirm < 1:
            raise ValueError("confirm must be at least 1")
        self.confirm = confirm
        self.confirmed: dict[str, Verdict] = {}
        self._candidate: dict[str, tuple[Verdict, int]] = {}
        self.last: dict[str, Verdict] = {}

    def observe(self, verdicts: dict[str, Verdict]) -> list[Transition]:
        out = []
        for subject, v in verdicts.items():
            self.last[subject] = v
            if self.confirmed.get(subject) is v:
                self._candidate.pop(subject, None)
                continue
            cand, streak = self._candidate.get(subject, (v, 0))
            streak = streak + 1 if cand is v else 1
            self._candidate[subject] = (v, streak)
            if streak >= self.confirm:
                prev = self.confirmed.get(subject)
                self.confirmed[subject] = v
                del self._candidate[subject]
                out.append(Transition(subject, prev.value if prev else UNKNOWN, v, streak))
        return out

    def effective(self) -> dict[str, Verdict]:
        """Confirmed verdicts, and the latest raw one for subjects not confirmed yet."""
        return {s: self.confirmed.get(s, v) for s, v in self.last.items()}


# ------------------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class ActionResult:
    action: str  # hook | webhook | failover
    ok: bool
    detail: str
    returncode: int | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "ok": self.ok, "detail": self.detail, "returncode": self.returncode,
                "duration_s": round(self.duration_s, 3)}


def change_payload(stack: str, t: Transition, report: HealthReport, overall: Verdict) -> dict[str, Any]:
    j = report.judgement(t.subject)
    kind, _, name = t.subject.partition(":")
    return {
        "stack": stack, "subject": t.subject, "kind": kind, "name": name, "previous": t.previous,
        "verdict": t.current.value, "confirmations": t.confirmations, "at": round(time.time(), 3),
        "rule": j.rule, "reason": j.reason, "overall": overall.value,
        "evidence": [e.to_dict() for e in j.evidence if not e.ok],
    }


def run_hook(argv: list[str], payload: dict[str, Any], *, cwd: Path | None = None,
             timeout: float = HOOK_TIMEOUT) -> ActionResult:
    """Run argv (no shell) with the change JSON on stdin. A relative argv[0] with a '/' is relative to cwd."""
    t0 = time.monotonic()
    cmd = list(argv)
    if cwd is not None and "/" in cmd[0] and not os.path.isabs(cmd[0]):
        cmd[0] = str(cwd / cmd[0])
    env = dict(os.environ, LIFERAFT_HEALTH_SUBJECT=str(payload.get("subject", "")),
               LIFERAFT_HEALTH_VERDICT=str(payload.get("verdict", "")),
               LIFERAFT_HEALTH_PREVIOUS=str(payload.get("previous", "")),
               LIFERAFT_HEALTH_EVENT=str(payload.get("event", "change")))
    try:
        proc = subprocess.run(cmd, input=json.dumps(payload).encode(), capture_output=True, timeout=timeout,
                              cwd=cwd, env=env, shell=False, check=False)
    except subprocess.TimeoutExpired:
        return ActionResult("hook", False, f"{cmd[0]} did not finish within {timeout:g} s",
                            duration_s=time.monotonic() - t0)
    except OSError as e:
        return ActionResult("hook", False, f"{cmd[0]} could not start: {e.strerror or e}",
                            duration_s=time.monotonic() - t0)
    tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
    detail = f"{cmd[0]} exited {proc.returncode}" + (f": {' | '.join(tail)}" if tail and proc.returncode else "")
    return ActionResult("hook", proc.returncode == 0, detail, proc.returncode, time.monotonic() - t0)


def post_webhook(url: str, payload: dict[str, Any], *, timeout: float = WEBHOOK_TIMEOUT) -> ActionResult:
    t0 = time.monotonic()
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "liferaft-health"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        return ActionResult("webhook", False, f"HTTP {e.code} from the webhook", e.code, time.monotonic() - t0)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return ActionResult("webhook", False, f"webhook not reachable: {reason}", None, time.monotonic() - t0)
    return ActionResult("webhook", 200 <= status < 300, f"HTTP {status}", status, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------- failover policy
@dataclass(frozen=True)
class Policy:
    """What the stack says to do on a confirmed termination of the primary site."""

    failover_on: str  # never | terminated
    primary: str
    target: str | None
    hook: tuple[str, ...] = ()
    webhook: str | None = None

    @classmethod
    def from_stack(cls, stack: Any) -> Policy:
        m = stack.model
        h = m.health
        return cls(failover_on=h.failover_on, primary=m.primary,
                   target=h.failover_to or (m.alternates[0] if m.alternates else None),
                   hook=tuple(h.hook), webhook=h.webhook)

    def decide(self, verdicts: dict[str, Verdict]) -> tuple[bool, str]:
        """(act?, why) for these (confirmed) verdicts."""
        primary = verdicts.get(f"site:{self.primary}")
        if self.failover_on != "terminated":
            return False, "policy failover_on is 'never': no automatic failover"
        if primary is not Verdict.TERMINATED:
            return False, f"primary site {self.primary} is {primary.value if primary else UNKNOWN}, not terminated"
        if not self.target:
            return False, "no failover target: set health.failover_to or list an alternate site"
        target = verdicts.get(f"site:{self.target}")
        if target in (Verdict.TERMINATED, Verdict.UNREACHABLE):
            return False, f"target site {self.target} is {target.value}: refusing to fail over into it"
        return True, f"primary site {self.primary} is terminated: fail over to {self.target}"


def failover_argv(stack_path: str | Path, target: str, state_dir: str | Path | None = None,
                  mode: str = "live") -> list[str]:
    return liferaft_argv(stack_path, state_dir, *failover_args(mode, target))


def explain(stack: Any, report: HealthReport, *, confirm: int, standby_at: Callable[[str], bool] | None = None,
            moved: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the watch policy would do given this check's verdicts, without doing anything."""
    policy = Policy.from_stack(stack)
    act, why = policy.decide(report.verdicts())
    if act and moved:
        act, why = False, _moved_why(moved)
    mode, mode_why = choose_mode(report.verdicts(), policy.primary,
                                 bool(policy.target and standby_at and standby_at(policy.target)))
    return {
        "verdict": report.verdict.value,
        "failover_on": policy.failover_on,
        "target": policy.target,
        "would_failover": act,
        "why": why,
        "mode": mode if act else None,
        "mode_why": mode_why if act else None,
        "command": failover_argv(stack.path, policy.target, mode=mode)[1:] if act and policy.target else None,
        "confirm": confirm,
        "note": f"under --watch, a verdict counts only after {confirm} agreeing result{'s' if confirm != 1 else ''}"
                " in a row; hooks and the webhook run on every confirmed change",
        "hook": list(policy.hook) or None,
        "webhook": policy.webhook,
    }


# ------------------------------------------------------------------------------------------- the loop
@dataclass
class WatchResult:
    rounds: int = 0
    confirmed: dict[str, Verdict] = field(default_factory=dict)
    effective: dict[str, Verdict] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    actions: list[ActionResult] = field(default_factory=list)
    failover: dict[str, Any] | None = None  # the automatic failover: mode, run, attempts, outcome
    moved: dict[str, Any] | None = None  # the stack moved (by this watch's failover, or before it started)

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst(list(self.effective.values()))

    @property
    def failover_pid(self) -> int | None:
        attempts = (self.failover or {}).get("attempts") or []
        return attempts[0]["pid"] if attempts else None

    @property
    def failover_returncode(self) -> int | None:
        attempts = (self.failover or {}).get("attempts") or []
        return attempts[-1]["returncode"] if attempts else None

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "verdict": self.verdict.value, "exit_code": self.verdict.exit_code,
                "confirmed": {k: v.value for k, v in self.confirmed.items()},
                "changes": self.changes, "actions": [a.to_dict() for a in self.actions],
                "failover": self.failover, "moved": self.moved,
                "failover_pid": self.failover_pid, "failover_returncode": self.failover_returncode}


def watch(stack: Any, check: Callable[[], HealthReport], *, interval: float, confirm: int, count: int | None = None,
          state_dir: str | Path | None = None, events: Events | None = None,
          stop: threading.Event | None = None, standby_at: Callable[[str], bool] | None = None,
          moved: Callable[[], dict[str, Any] | None] | None = None, **auto_options: Any) -> WatchResult:
    """Check every `interval` seconds (from the start of one check to the next) until `count` rounds, `stop`, or
    the stack has moved by this watch's failover. `standby_at(site)`: is a standby recorded there (cold possible)?
    `moved()`: the stack's move record, if a failover moved it (then this watch never fails over). `auto_options`
    go to the AutoFailover (retries, retry_delay, program)."""
    ev = as_events(events)
    stop = stop or threading.Event()
    policy = Policy.from_stack(stack)
    hyst = Hysteresis(confirm)
    result = WatchResult(moved=moved() if moved else None)
    if result.moved:
        ev.emit("health.moved", _moved_why(result.moved), moved=result.moved)
    auto: AutoFailover | None = None
    try:
        while count is None or result.rounds < count:
            t0 = time.monotonic()
            _round(stack, check, hyst, result, policy, ev)
            if auto is None and not result.moved:
                auto = _maybe_fail_over(stack, policy, hyst.confirmed, result, ev, state_dir, standby_at, moved,
                                        auto_options)
            if _has_moved(auto) or (count is not None and result.rounds >= count):
                break
            if _wait(stop, auto, max(0.0, interval - (time.monotonic() - t0))) or _has_moved(auto):
                break  # stopped, or woken by the failover's end: the stack moved, no more rounds
    finally:
        if auto is not None:
            auto.close()
            result.failover = auto.to_dict()
            if auto.outcome == "moved":
                result.moved = {"site": auto.target, "run": auto.run, "mode": auto.mode, "by": "this watch"}
    return result


def _round(stack: Any, check: Callable[[], HealthReport], hyst: Hysteresis, result: WatchResult, policy: Policy,
           ev: Events) -> None:
    report = check()
    result.rounds += 1
    transitions = hyst.observe(report.verdicts())
    result.confirmed, result.effective = dict(hyst.confirmed), hyst.effective()
    ev.emit("health.round", f"round {result.rounds}: {report.verdict.value}", round=result.rounds,
            report=report, confirmed={k: v.value for k, v in hyst.confirmed.items()})
    for t in transitions:
        payload = change_payload(report.stack, t, report, result.verdict)
        if t.previous == UNKNOWN and t.current is Verdict.HEALTHY:
            ev.emit("health.baseline", f"{t.subject} healthy (confirmed)", change=payload)
            continue
        result.changes.append(payload)
        ev.emit("health.change", f"{t.subject}: {t.previous} -> {t.current.value}", change=payload)
        for action in _notify(stack, policy, payload):
            result.actions.append(action)
            ev.emit(f"health.{action.action}", action.detail, action=action.to_dict())


def _maybe_fail_over(stack: Any, policy: Policy, confirmed: dict[str, Verdict], result: WatchResult, ev: Events,
                     state_dir: str | Path | None, standby_at: Callable[[str], bool] | None,
                     moved: Callable[[], dict[str, Any] | None] | None,
                     auto_options: dict[str, Any]) -> AutoFailover | None:
    act, why = policy.decide(confirmed)
    if not act or not policy.target:
        return None
    result.moved = moved() if moved else None  # a failover run by hand may have moved it meanwhile
    if result.moved:
        ev.emit("health.moved", _moved_why(result.moved), moved=result.moved)
        return None
    mode, mode_why = choose_mode(confirmed, policy.primary, bool(standby_at and standby_at(policy.target)))
    lock = threading.Lock()

    def notify(payload: dict[str, Any]) -> None:  # runs on the supervisor's thread too
        actions = _notify(stack, policy, payload)
        with lock:
            result.actions.extend(actions)
        for action in actions:
            ev.emit(f"health.{action.action}", action.detail, action=action.to_dict())

    auto = AutoFailover(stack, policy.target, mode, state_dir=state_dir, events=ev, notify=notify, moved=moved,
                        **auto_options)
    attempt = auto.start(f"{why}; {mode_why}")
    with lock:
        result.actions.append(ActionResult("failover", attempt.error is None,
                                           attempt.error or f"started pid {attempt.pid}: "
                                           f"{' '.join(attempt.to_dict()['command'])} (log {attempt.log})"))
    return auto


def _wait(stop: threading.Event, auto: AutoFailover | None, seconds: float) -> bool:
    """Sleep until the next round; True if the watch must stop. Wakes at once when the failover ends."""
    deadline = time.monotonic() + seconds
    ended_before = auto is not None and auto.done.is_set()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if stop.wait(min(left, 0.2)):
            return True
        if auto is not None and not ended_before and auto.done.is_set():
            return False


def _has_moved(auto: AutoFailover | None) -> bool:
    return auto is not None and auto.outcome == "moved"


def _moved_why(moved: dict[str, Any]) -> str:
    return (f"the stack was moved to {moved.get('site')} (run {moved.get('run')}, {moved.get('mode')}): the watch "
            "does not fail over from the old primary again")


def _notify(stack: Any, policy: Policy, payload: dict[str, Any]) -> list[ActionResult]:
    out = []
    if policy.hook:
        out.append(run_hook(list(policy.hook), payload, cwd=stack.base_dir))
    if policy.webhook:
        out.append(post_webhook(policy.webhook, payload))
    return out
