"""The standby's recorded state: what is replicated where, when it last synced, and the recent lag.

One JSON file per stack, `<state_dir>/readiness/<stack>.json` (owner-only, replaced atomically so a reader -- cold
failover, drill, health, audit -- sees the previous file or the next one, never half of one):

    {"format": 1, "stack": "microblog", "updated_at": 1764010000.0,
     "standbys": {"alt-b": {
         "source": "primary", "target": "alt-b", "started_at": ..., "updated_at": ...,
         "source_host": {name, address, ...}, "standby_host": {name, address, ..., "spec_name", "provider"},
         "source_reachable": true, "source_error": null,
         "databases": {"blog": {"method": "logical", "name": "microblog", "subscription": "liferaft_microblog",
                                "lag_bytes": 120, "lag_seconds": 0.02, "measured_at": ..., "last_sync_at": ...,
                                "caught_up_at": ..., "ok": true, "error": null, "history": [[t, bytes, s], ...]}},
         "buckets": {"images": {"name": "microblog-images", "source": "aws", "target": "objstore",
                                "last_sync_started_at": ..., "last_sync_at": ..., "listed": 60, "copied": 0,
                                "lag_bytes": 0, "lag_seconds": 1.2, "ok": true, "error": null, "history": [...]}},
         "rpo_exposure_s": 1.2}}}

No secret ever goes here: hosts are addresses and pinned public keys, databases are names.

Beside it, `<state_dir>/readiness/<stack>.moved.json` records that a failover run moved the stack (written by
`failover`/`resume` when a run completes, removed by the rollback of that run): {"site", "source", "run", "mode",
"since", ...}: the stack's active site (liferaft.engine.active). `health --watch` reads it to stop watching (and never
trigger again for) a primary the stack has left.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.engine.active import load_active, record_active, restore_previous
from liferaft.errors import InvalidInput, Problem
from liferaft.statedir import default_state_dir, owner_only_dir, write_atomic

STATE_FORMAT = 1
HISTORY_MAX = 120  # samples kept per dataset (the recent lag, for reports and drills)


def readiness_dir(state_dir: str | os.PathLike[str] | None) -> Path:
    if state_dir is None:  # library callers without a state dir get liferaft's default one
        state_dir = default_state_dir()
    return owner_only_dir(Path(state_dir) / "readiness")


def state_path(state_dir: str | os.PathLike[str], stack: str) -> Path:
    return readiness_dir(state_dir) / f"{stack}.json"


def write_json_atomic(path: Path, data: Any, mode: int = 0o600) -> None:
    """Temp file in the same directory (created 0600), fsync, rename over `path`."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True), mode)


@dataclass(frozen=True)
class StandbyRecord:
    """One standby (a target site) as recorded: a read-only view over the JSON, for cold failover and reports."""

    target: str
    data: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.data.get("source", ""))

    @property
    def standby_host(self) -> dict[str, Any] | None:
        host = self.data.get("standby_host")
        return dict(host) if isinstance(host, dict) else None

    @property
    def source_address(self) -> str | None:
        """The address of the source host the standby replicates from (its slots and publications live there)."""
        host = self.data.get("source_host")
        return str(host["address"]) if isinstance(host, dict) and host.get("address") else None

    def entry(self, group: str, key: str) -> dict[str, Any]:
        """What the record holds of one dataset: its kind's group (`record_group`: databases, buckets...), its key."""
        return dict((self.data.get(group) or {}).get(key) or {})

    @property
    def rpo_exposure_s(self) -> float | None:
        value = self.data.get("rpo_exposure_s")
        return float(value) if value is not None else None


def load_state(state_dir: str | os.PathLike[str], stack: str) -> dict[str, Any]:
    """The stack's readiness file, or an empty one. A corrupt file is an error naming it (never silently reset)."""
    path = state_path(state_dir, stack)
    if not path.exists():
        return {"format": STATE_FORMAT, "stack": stack, "standbys": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("standbys", {}), dict):
            raise ValueError("expected an object with 'standbys'")  # noqa: TRY004 - reported as bad input
    except (OSError, ValueError) as e:
        raise InvalidInput([Problem(str(path), None, None, "", f"unreadable readiness state: {e}")],
                           what="readiness state") from None
    data.setdefault("standbys", {})
    data["stack"] = stack
    return data


def load_standby(state_dir: str | os.PathLike[str], stack: str, target: str) -> StandbyRecord | None:
    data = load_state(state_dir, stack)
    rec = data["standbys"].get(target)
    return StandbyRecord(target, rec) if isinstance(rec, dict) else None


def save_standby(state_dir: str | os.PathLike[str], stack: str, target: str, record: dict[str, Any]) -> Path:
    """Replace one standby's record (others kept), atomically, 0600."""
    data = load_state(state_dir, stack)
    now = time.time()
    data.update(format=STATE_FORMAT, stack=stack, updated_at=now)
    data["standbys"][target] = {**record, "updated_at": now}
    path = state_path(state_dir, stack)
    write_json_atomic(path, data)
    return path


def forget_standby(state_dir: str | os.PathLike[str], stack: str, target: str) -> bool:
    """Remove one standby's record (a drill's own, or one promoted and gone). True if there was one."""
    data = load_state(state_dir, stack)
    if target not in data["standbys"]:
        return False
    del data["standbys"][target]
    data["updated_at"] = time.time()
    write_json_atomic(state_path(state_dir, stack), data)
    return True


def push_history(entry: dict[str, Any], sample: list[float]) -> None:
    hist = list(entry.get("history") or [])
    hist.append([round(x, 3) for x in sample])
    entry["history"] = hist[-HISTORY_MAX:]





def record_move(state_dir: str | os.PathLike[str], stack: str, *, site: str, source: str, run: str,
                mode: str, **more: Any) -> dict[str, Any]:
    """A failover run into `site` completed: the stack runs there now (liferaft.engine.active)."""
    return record_active(state_dir, stack, site=site, source=source, run=run, mode=mode, **more)


def load_move(state_dir: str | os.PathLike[str], stack: str) -> dict[str, Any] | None:
    """The stack's active-site record, or None (it runs at the stack file's primary)."""
    return load_active(state_dir, stack)


def forget_move(state_dir: str | os.PathLike[str], stack: str, *, run: str) -> bool:
    """The run that moved the stack was rolled back: the active site before it is restored."""
    return restore_previous(state_dir, stack, run=run)
