"""What a no-notice cut would lose now, from the standby record: the worst dataset's lag (the RPO exposure), per
recorded standby for `health`, and as Prometheus text for `replicate --prom-file`. Every dataset kind's group in the
record counts (`record_groups`), whatever the kind."""

from __future__ import annotations

import os
import time
from typing import Any

from liferaft.datasets.base import record_groups
from liferaft.engine.standby_state import load_state


def _nouns() -> dict[str, str]:
    """Each kind's group in the record ("<noun>s", `record_group`) -> its noun (the metrics' `kind` label)."""
    return {g: g.removesuffix("s") for g in record_groups()}


def exposure(state_dir: str | os.PathLike[str], stack: str, now: float | None = None) -> dict[str, Any]:
    """What a no-notice cut would lose now, per recorded standby (from the state file only; no network): the
    last measured RPO exposure, how old that measurement is, and the last error replicate saw."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {}
    for target, rec in sorted(load_state(state_dir, stack)["standbys"].items()):
        if not isinstance(rec, dict):
            continue
        updated = rec.get("updated_at")
        out[target] = {"rpo_exposure_s": rpo_exposure(rec),
                       "measured_ago_s": round(now - float(updated), 1) if updated else None,
                       "standby_host": (rec.get("standby_host") or {}).get("name"),
                       "source_error": rec.get("source_error")}
    return out


def rpo_exposure(record: dict[str, Any]) -> float | None:
    """The worst dataset's lag in seconds: what a no-notice cut now would lose, at most (None: nothing measured)."""
    values = [float(d["lag_seconds"]) for group in record_groups()
              for d in (record.get(group) or {}).values() if d.get("lag_seconds") is not None]
    return round(max(values), 3) if values else None


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(stack: str, record: dict[str, Any]) -> str:
    """Prometheus text format (0.0.4) for one standby: lag per dataset in seconds and bytes, sync times, RPO."""
    target = record.get("target", "")
    out: list[str] = []

    def family(name: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} gauge")

    rows = [(noun, key, d) for group, noun in _nouns().items()
            for key, d in sorted((record.get(group) or {}).items())]

    def labels(kind: str, key: str) -> str:
        return f'{{stack="{_esc(stack)}",target="{_esc(target)}",kind="{kind}",dataset="{_esc(key)}"}}'

    family("liferaft_standby_lag_seconds", "What a no-notice cut now would lose, per dataset, in seconds.")
    out += [f"liferaft_standby_lag_seconds{labels(k, key)} {float(d['lag_seconds']):.3f}" for k, key, d in rows
            if d.get("lag_seconds") is not None]
    family("liferaft_standby_lag_bytes", "Bytes not yet at the standby (WAL for databases, objects for buckets).")
    out += [f"liferaft_standby_lag_bytes{labels(k, key)} {int(d['lag_bytes'])}" for k, key, d in rows
            if d.get("lag_bytes") is not None]
    family("liferaft_standby_last_sync_timestamp_seconds", "When the dataset was last synced or measured in sync.")
    out += [f"liferaft_standby_last_sync_timestamp_seconds{labels(k, key)} {float(d['last_sync_at']):.3f}"
            for k, key, d in rows if d.get("last_sync_at") is not None]
    family("liferaft_standby_ok", "1 if the last round reached the source and synced this dataset.")
    out += [f"liferaft_standby_ok{labels(k, key)} {int(bool(d.get('ok')))}" for k, key, d in rows]
    family("liferaft_standby_rpo_exposure_seconds", "The worst dataset's lag: the live RPO exposure.")
    rpo = rpo_exposure(record)
    if rpo is not None:
        out.append(f'liferaft_standby_rpo_exposure_seconds{{stack="{_esc(stack)}",target="{_esc(target)}"}} {rpo:.3f}')
    return "\n".join(out) + "\n"
