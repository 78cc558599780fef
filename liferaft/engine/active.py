"""Where the stack runs now: its active site, as state (never an edit of the stack file).

One JSON file per stack, `<state_dir>/readiness/<stack>.moved.json` (owner-only, replaced atomically), written when a
failover or failback run (live or cold) completes and restored to what it was before by the rollback of that run:

    {"format": 1, "stack": "microblog", "site": "alt-b", "since": 1764010000.0, "run": "20261203-...",
     "mode": "cold", "source": "primary",
     "hosts": [{"name": "b", "address": "10.213.7.12"}],          # where the stack's services run at `site`
     "fence": {"site": "primary", "host": {name, address, ...},   # the site it left, and what must never take
               "state": "pending" | "fenced" | "read-only",         # writes for the stack there again
               "mode": "cold", "fenced_at": ..., "detail": [...]},
     "previous": {...the record this one replaced, or null: the stack file's primary}}

No record: the stack runs at the stack file's primary. Every command that judges the stack (health, plan, drill,
replicate, audit) reads the stack through `Stack.at_site(active site)`: the active site is then the source, the old
primary one of the alternates. A team shares this state by sharing the state dir (`--state-dir`, `LIFERAFT_STATE_DIR`).
No secret goes here: hosts are names, addresses and pinned public keys.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from liferaft.errors import InvalidInput, Problem
from liferaft.statedir import default_state_dir, owner_only_dir, write_atomic

FORMAT = 1
FENCE_PENDING = "pending"  # a cold failover left the old primary as it was: fence it at the first contact
FENCED = "fenced"  # its services stopped, its databases read-only (by liferaft, at the first contact)
READ_ONLY = "read-only"  # a live failover's freeze left its databases read-only


def _dir(state_dir: str | os.PathLike[str] | None) -> Path:
    return Path(state_dir if state_dir is not None else default_state_dir()) / "readiness"


def active_path(state_dir: str | os.PathLike[str] | None, stack: str) -> Path:
    """The record's path; creates nothing (read-only commands read it)."""
    return _dir(state_dir) / f"{stack}.moved.json"


def load_active(state_dir: str | os.PathLike[str] | None, stack: str) -> dict[str, Any] | None:
    """The stack's active-site record, or None (it runs at the stack file's primary). An unreadable record is an
    error naming it: no command may guess where the stack runs."""
    path = active_path(state_dir, stack)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InvalidInput([Problem(str(path), None, None, "", f"unreadable active-site record: {e}")],
                           what="readiness state") from None
    if not isinstance(data, dict) or not data.get("site"):
        raise InvalidInput([Problem(str(path), None, None, "", "unreadable active-site record: no 'site'")],
                           what="readiness state")
    return data


def _write(state_dir: str | os.PathLike[str] | None, stack: str, rec: dict[str, Any] | None) -> None:
    path = active_path(state_dir, stack)
    if rec is None:
        path.unlink(missing_ok=True)
        return
    owner_only_dir(path.parent)
    write_atomic(path, json.dumps(rec, indent=1, sort_keys=True), 0o600)


def record_active(state_dir: str | os.PathLike[str] | None, stack: str, *, site: str, source: str, run: str,
                  mode: str, hosts: list[dict[str, Any]] | None = None,
                  source_host: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failover (or failback) run into `site` completed: the stack runs there now. The site it left is to be
    fenced: a cold failover never reached it (fenced at the first contact), a live one left its databases
    read-only. Idempotent per run (a second call for the same run keeps the first `since`)."""
    try:
        prev = load_active(state_dir, stack)
    except InvalidInput:
        prev = None
    if prev is not None and prev.get("run") == run:
        return prev
    fence = None
    if source != site:
        fence = {"site": source, "host": dict(source_host) if source_host else None, "mode": mode,
                 "state": FENCE_PENDING if mode == "cold" else READ_ONLY}
    rec = {"format": FORMAT, "stack": stack, "site": site, "source": source, "run": run, "mode": mode,
           "since": round(time.time(), 3), "hosts": [_host(h) for h in hosts or []], "fence": fence,
           "previous": prev}
    _write(state_dir, stack, rec)
    return rec


def _host(h: dict[str, Any]) -> dict[str, Any]:
    return {"name": h.get("name"), "address": h.get("address")}


def restore_previous(state_dir: str | os.PathLike[str] | None, stack: str, *, run: str) -> bool:
    """The run that made the current record was rolled back: the record it replaced is the active one again
    (none: the stack file's primary). True if the record changed."""
    try:
        rec = load_active(state_dir, stack)
    except InvalidInput:
        rec = None
    if rec is None or rec.get("run") != run:
        return False
    prev = rec.get("previous")
    _write(state_dir, stack, prev if isinstance(prev, dict) and prev.get("site") else None)
    return True


def update_fence(state_dir: str | os.PathLike[str] | None, stack: str, **fields: Any) -> dict[str, Any] | None:
    """Record what fencing the old site did (state, when, what)."""
    rec = load_active(state_dir, stack)
    if rec is None or not isinstance(rec.get("fence"), dict):
        return None
    rec["fence"] = {**rec["fence"], **fields}
    _write(state_dir, stack, rec)
    return rec


def fence_pending(rec: dict[str, Any] | None, site: str | None = None) -> dict[str, Any] | None:
    """The fence still to apply (to `site`, or to any site), or None."""
    fence = (rec or {}).get("fence")
    if not isinstance(fence, dict) or fence.get("state") != FENCE_PENDING:
        return None
    if site is not None and fence.get("site") != site:
        return None
    return fence


def active_site(rec: dict[str, Any] | None, primary: str) -> str:
    return str(rec["site"]) if rec else primary


def run_facts(plan_steps: Any, step_records: Any, standby_source_host: dict[str, Any] | None) -> tuple[
        list[dict[str, Any]], dict[str, Any] | None]:
    """(the hosts a done run put the stack on, the host it left) from its journal: the allocation step's result
    (`host.allocate`: the host and `hosts`), and the source host its steps were planned with (a live plan names it
    in its data steps' parameters; a cold plan never contacted it: the standby record says which host it was)."""
    hosts: list[dict[str, Any]] = []
    for s in step_records:
        if s.kind == "host.allocate" and s.status == "done" and isinstance(s.result, dict):
            hosts = [h for h in (s.result.get("hosts") or [s.result]) if isinstance(h, dict)]
    source_host = None
    for step in plan_steps:
        found = (step.params or {}).get("source_host")
        if isinstance(found, dict) and found.get("address"):
            source_host = dict(found)
            break
    return hosts, source_host or (dict(standby_source_host) if standby_source_host else None)
