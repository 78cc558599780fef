"""Every drill, appended to a SQLite history in the state directory, so `liferaft drills` can show the trend.

One row per drill: the headline figures as columns (for listing and sorting) and the whole result as JSON (so a
report can be rebuilt). The file is owner-only, like the journal.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.drill.model import DrillResult
from liferaft.errors import InvalidInput, Problem

HISTORY_FILE = "drills.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS drills (
    id TEXT PRIMARY KEY, stack TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, scenario TEXT NOT NULL,
    started REAL NOT NULL, ended REAL NOT NULL, rto_s REAL, rpo_s REAL, objective_rto_s REAL NOT NULL,
    objective_rpo_s REAL NOT NULL, passed INTEGER NOT NULL, run_id TEXT, report_dir TEXT, result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drills_stack ON drills (stack, started);
"""
SPARK = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class HistoryEntry:
    result: DrillResult
    report_dir: str | None
    trend: str  # better | worse | same | first | n/a (RTO against the previous drill of the same stack and target)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"id": r.id, "stack": r.stack, "source": r.source, "target": r.target, "scenario": r.scenario,
                "started": round(r.started, 3), "rto_s": r.to_dict()["rto_s"], "rpo_s": r.to_dict()["rpo_s"],
                "objectives": {"rto_s": r.objective_rto_s, "rpo_s": r.objective_rpo_s},
                "passed": r.passed, "trend": self.trend, "run_id": r.run_id, "kept": r.kept,
                "torn_down": r.torn_down, "report_dir": self.report_dir}


def history_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / HISTORY_FILE


@contextmanager
def _open(state_dir: str | Path) -> Iterator[sqlite3.Connection]:
    path = history_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = not path.exists()
    try:
        db = sqlite3.connect(path, timeout=30.0)
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        raise InvalidInput([Problem(str(path), None, None, "", f"not a drill history: {e}")],
                           what="drill history") from None
    if fresh:
        os.chmod(path, 0o600)
    try:
        yield db
    finally:
        db.close()


def record(state_dir: str | Path, result: DrillResult, report_dir: str | Path | None = None) -> None:
    """Append (or replace, by id) one drill."""
    with _open(state_dir) as db, db:
        db.execute("INSERT OR REPLACE INTO drills VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (result.id, result.stack, result.source, result.target, result.scenario, result.started,
                    result.ended, result.rto_s, result.rpo_s, result.objective_rto_s, result.objective_rpo_s,
                    int(result.passed), result.run_id, str(report_dir) if report_dir else None,
                    json.dumps(result.to_dict())))


def trend_of(previous: DrillResult | None, current: DrillResult) -> str:
    """Better or worse than the previous drill: RTO decides, RPO breaks ties; a drill without an RTO is worse."""
    if previous is None:
        return "first"
    if current.rto_s is None:
        return "n/a" if previous.rto_s is None else "worse"
    if previous.rto_s is None:
        return "better"
    a = (round(current.rto_s, 1), round(current.rpo_s or 0.0, 1))
    b = (round(previous.rto_s, 1), round(previous.rpo_s or 0.0, 1))
    return "better" if a < b else "worse" if a > b else "same"


def entries(state_dir: str | Path, stack: str | None = None) -> list[HistoryEntry]:
    """Drills oldest first, each with its trend against the previous drill to the same target."""
    if not history_path(state_dir).exists():
        return []
    with _open(state_dir) as db:
        q = "SELECT result_json, report_dir FROM drills"
        args: tuple[Any, ...] = ()
        if stack is not None:
            q += " WHERE stack = ?"
            args = (stack,)
        rows = db.execute(q + " ORDER BY started, id", args).fetchall()
    out: list[HistoryEntry] = []
    last: dict[tuple[str, str], DrillResult] = {}
    for text, report_dir in rows:
        r = DrillResult.from_dict(json.loads(text))
        key = (r.stack, r.target)
        out.append(HistoryEntry(r, report_dir, trend_of(last.get(key), r)))
        last[key] = r
    return out


def sparkline(values: list[float | None]) -> str:
    """RTOs as a one-line chart (a gap for a drill that never answered)."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))]
                   for v in values)
