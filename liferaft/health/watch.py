"""`liferaft health --watch`: repeat the check, apply hysteresis, and act on confirmed verdict changes.

Hysteresis: every subject (each provider, each site) starts "unknown"; its verdict becomes (or changes to) V only
after `confirm` results in a row agree on V. A single odd result never flips a verdict.

On every confirmed change (except unknown -> healthy, the quiet start) the watch
- runs the configured hook argv (never through a shell) with the change as JSON on stdin,
- POSTs the same JSON to the configured webhook,
- and, when the stack's policy says `failover_on: terminated` and the primary site's termination is confirmed,
  starts `liferaft failover --to <target> --yes` as a subprocess (once per watch).
A failing hook, webhook or failover start is reported as an event; it never stops the watch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.events import Events, as_events
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
    env = dict(os.environ, LIFERAFT_HEALTH_SUBJECT=payload["subject"], LIFERAFT_HEALTH_VERDICT=payload["verdict"],
               LIFERAFT_HEALTH_PREVIOUS=payload["previous"])
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


def failover_argv(stack_path: str | Path, target: str, state_dir: str | Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack_path)]
    if state_dir is not None:
        argv += ["--state-dir", str(state_dir)]
    return argv + ["failover", "--to", target, "--yes"]


def explain(stack: Any, report: HealthReport, *, confirm: int) -> dict[str, Any]:
    """What the watch policy would do given this check's verdicts, without doing anything."""
    policy = Policy.from_stack(stack)
    act, why = policy.decide(report.verdicts())
    return {
        "verdict": report.verdict.value,
        "failover_on": policy.failover_on,
        "target": policy.target,
        "would_failover": act,
        "why": why,
        "command": failover_argv(stack.path, policy.target)[1:] if act and policy.target else None,
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
    failover_pid: int | None = None
    failover_returncode: int | None = None

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst(list(self.effective.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "verdict": self.verdict.value, "exit_code": self.verdict.exit_code,
                "confirmed": {k: v.value for k, v in self.confirmed.items()},
                "changes": self.changes, "actions": [a.to_dict() for a in self.actions],
                "failover_pid": self.failover_pid, "failover_returncode": self.failover_returncode}


def watch(stack: Any, check: Callable[[], HealthReport], *, interval: float, confirm: int, count: int | None = None,
          state_dir: str | Path | None = None, events: Events | None = None,
          stop: threading.Event | None = None) -> WatchResult:
    """Check every `interval` seconds (from the start of one check to the next) until `count` rounds or `stop`."""
    ev = as_events(events)
    stop = stop or threading.Event()
    policy = Policy.from_stack(stack)
    hyst = Hysteresis(confirm)
    result = WatchResult()
    failover: subprocess.Popen[bytes] | None = None
    try:
        while count is None or result.rounds < count:
            t0 = time.monotonic()
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
            if failover is None:
                act, why = policy.decide(hyst.confirmed)
                if act and policy.target:
                    failover, action = _start_failover(stack, policy.target, state_dir)
                    result.actions.append(action)
                    result.failover_pid = failover.pid if failover else None
                    ev.emit("health.failover", f"{why}: {action.detail}", action=action.to_dict())
            if count is not None and result.rounds >= count:
                break
            if stop.wait(max(0.0, interval - (time.monotonic() - t0))):
                break
    finally:
        if failover is not None:
            result.failover_returncode = failover.wait()
            ev.emit("health.failover", f"liferaft failover exited {result.failover_returncode}",
                    returncode=result.failover_returncode)
    return result


def _notify(stack: Any, policy: Policy, payload: dict[str, Any]) -> list[ActionResult]:
    out = []
    if policy.hook:
        out.append(run_hook(list(policy.hook), payload, cwd=stack.base_dir))
    if policy.webhook:
        out.append(post_webhook(policy.webhook, payload))
    return out


def _start_failover(stack: Any, target: str, state_dir: str | Path | None
                    ) -> tuple[subprocess.Popen[bytes] | None, ActionResult]:
    argv = failover_argv(stack.path, target, state_dir)
    log_dir = Path(state_dir) if state_dir is not None else stack.base_dir
    log_path = log_dir / f"health-failover-{time.strftime('%Y%m%dT%H%M%S')}.log"
    try:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    except OSError:
        log = None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, cwd=stack.base_dir, shell=False)
    except OSError as e:
        return None, ActionResult("failover", False, f"could not start liferaft failover: {e}")
    finally:
        if log is not None:
            log.close()
    return proc, ActionResult("failover", True, f"started pid {proc.pid}: {' '.join(argv[1:])}"
                              + (f" (log {log_path})" if log else ""), None)
