"""Run probes concurrently, each with its own deadline, so one hung provider never delays another's verdict.

Every probe runs in its own daemon thread (bounded by `max_workers`). The collector waits for each probe only until
that probe's deadline (its start + its timeout); a probe still running then is reported as `timeout` and its slot is
released, so queued probes start and the check finishes on time. The hung thread is a daemon: it never holds up the
process's exit. Probes may return follow-up probes (e.g. a host listing yields one HTTP probe per running host);
these are scheduled as soon as their parent finishes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from liferaft.events import Events, as_events
from liferaft.health.evidence import Evidence, classify_exception

DEFAULT_MAX_WORKERS = 256


@dataclass(frozen=True)
class Found:
    """What a probe returns when it succeeds."""

    detail: str = ""
    status: int | None = None
    latency_s: float | None = None  # when the probe measured it better than the wall clock (e.g. the API's own)
    data: dict[str, Any] = field(default_factory=dict)
    then: tuple[ProbeTask, ...] = ()  # follow-up probes to run now


@dataclass(frozen=True)
class ProbeTask:
    """One probe to run: identity (as it will appear in the evidence) plus the function doing the work."""

    probe: str
    kind: str
    plane: str
    fn: Callable[[], Found]
    timeout: float
    provider: str | None = None
    site: str | None = None
    target: str = ""

    def evidence(self, outcome: str, latency: float | None, **kw: Any) -> Evidence:
        return Evidence(probe=self.probe, kind=self.kind, plane=self.plane, outcome=outcome, provider=self.provider,
                        site=self.site, target=self.target, latency_s=latency, **kw)


IMPORT_RACE_RETRIES = (0.05, 0.1, 0.2, 0.4)


def _import_race(exc: BaseException) -> bool:
    """SDKs import lazily, and some (libcloud) have import cycles that break when two threads import them at once:
    Python then raises its import-lock `_DeadlockError` or "partially initialized module". The import completes
    in the other thread; trying again shortly after succeeds. (Adapters wrap unknown exceptions in ProviderError,
    keeping the original's name and message in the detail.)"""
    text = f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"
    return "_DeadlockError" in text or ("ImportError" in text and "partially initialized module" in text)


def _call(task: ProbeTask) -> Found:
    for delay in IMPORT_RACE_RETRIES:
        try:
            return task.fn()
        except Exception as exc:  # only import races are retried; everything else re-raised
            if not _import_race(exc):
                raise
            time.sleep(delay)
    return task.fn()


def _run_one(task: ProbeTask, started: float) -> tuple[Evidence, tuple[ProbeTask, ...]]:
    try:
        found = _call(task)
    except BaseException as exc:  # noqa: BLE001 - every failure is evidence, never a crash
        outcome, err, status, code, detail = classify_exception(exc)
        return task.evidence(outcome, time.monotonic() - started, error=err, status=status, code=code,
                             detail=detail), ()
    latency = found.latency_s if found.latency_s is not None else time.monotonic() - started
    return task.evidence("ok", latency, status=found.status, detail=found.detail, data=dict(found.data)), found.then


def run_probes(tasks: Sequence[ProbeTask], *, max_workers: int = DEFAULT_MAX_WORKERS,
               events: Events | None = None) -> list[Evidence]:
    """Run every task (and their follow-ups) concurrently; return one Evidence per task, in scheduling order."""
    ev = as_events(events)
    pending: list[ProbeTask] = list(tasks)
    order: list[int] = []  # task ids in scheduling order
    results: dict[int, Evidence] = {}
    running: dict[int, tuple[ProbeTask, float]] = {}  # id -> (task, deadline)
    done: queue.Queue[tuple[int, Evidence, tuple[ProbeTask, ...]]] = queue.Queue()
    next_id = 0

    def start(task: ProbeTask) -> None:
        nonlocal next_id
        tid, next_id = next_id, next_id + 1
        order.append(tid)
        started = time.monotonic()
        running[tid] = (task, started + max(0.0, task.timeout))

        def body() -> None:
            evidence, then = _run_one(task, started)
            done.put((tid, evidence, then))

        threading.Thread(target=body, name=f"probe:{task.probe}", daemon=True).start()

    def record(tid: int, evidence: Evidence) -> None:
        results[tid] = evidence
        ev.emit("health.probe", f"{evidence.subject} {evidence.probe}: {evidence.outcome}",
                probe=evidence.to_dict())

    while pending or running:
        while pending and len(running) < max_workers:
            start(pending.pop(0))
        if not running:
            continue
        now = time.monotonic()
        tid_next, (task_next, deadline) = min(running.items(), key=lambda kv: kv[1][1])
        try:
            tid, evidence, then = done.get(timeout=max(0.0, deadline - now))
        except queue.Empty:
            # The earliest deadline passed: report that probe as timed out and stop waiting for it.
            running.pop(tid_next)
            record(tid_next, task_next.evidence("timeout", task_next.timeout, error="Timeout",
                                                detail=f"no result within {task_next.timeout:g} s"))
            continue
        if tid not in running:  # finished after we gave up on it: its timeout is already recorded
            continue
        running.pop(tid)
        record(tid, evidence)
        pending.extend(then)
    return [results[t] for t in order]
