"""What a drill measured: frozen values, serialised only at the edge (JSON, Markdown, HTML, the history).

A drill has phases (provision, configure, data, verify, dns, teardown), each with a start and an end in unix
seconds; an RTO (from the drill's start to the first healthy answer of the service at the target, through the drill
record) and an RPO (the span of acknowledged writes made before the cut that are missing at the target, or the
replication lag at the cut when there is no ledger); and the stack's objectives, met or missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PHASES: tuple[str, ...] = ("standby", "provision", "configure", "data", "verify", "dns", "teardown")
SCENARIOS: tuple[str, ...] = ("notice", "no-notice")
REPORT_FORMAT = 1


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class Phase:
    """One phase of a drill: from the first of its steps starting to the last one ending."""

    name: str
    start: float
    end: float
    status: str = "ok"  # ok | failed

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.start)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": round(self.start, 3), "end": round(self.end, 3),
                "duration_s": round(self.duration_s, 3), "status": self.status}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Phase:
        return cls(name=str(d["name"]), start=float(d["start"]), end=float(d["end"]),
                   status=str(d.get("status", "ok")))


@dataclass(frozen=True)
class LedgerSummary:
    """The write ledger against the target: acknowledged writes before the cut, and those missing there."""

    acknowledged_before_cut: int
    present: int
    missing: int
    mismatched: int
    writes_after_cut: int  # acknowledged by the source after the cut: not expected at the target
    first_missing_at: float | None = None  # when the oldest missing write was acknowledged (unix seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"acknowledged_before_cut": self.acknowledged_before_cut, "present": self.present,
                "missing": self.missing, "mismatched": self.mismatched, "writes_after_cut": self.writes_after_cut,
                "first_missing_at": _r(self.first_missing_at)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LedgerSummary:
        return cls(int(d["acknowledged_before_cut"]), int(d["present"]), int(d["missing"]), int(d["mismatched"]),
                   int(d["writes_after_cut"]), d.get("first_missing_at"))


@dataclass(frozen=True)
class DataSummary:
    """How the target's data was verified: what was checked, what differs, what the source did after the cut."""

    ok: bool
    checked: dict[str, int] = field(default_factory=dict, hash=False)  # "database blog" -> tables, ...
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    replication_lag_s: float | None = None  # at the cut (exposure had the source died then)
    replication_lag_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": dict(self.checked), "problems": list(self.problems),
                "notes": list(self.notes), "replication_lag_s": _r(self.replication_lag_s),
                "replication_lag_bytes": self.replication_lag_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSummary:
        return cls(ok=bool(d["ok"]), checked={str(k): int(v) for k, v in (d.get("checked") or {}).items()},
                   problems=tuple(d.get("problems") or ()), notes=tuple(d.get("notes") or ()),
                   replication_lag_s=d.get("replication_lag_s"), replication_lag_bytes=d.get("replication_lag_bytes"))


@dataclass(frozen=True)
class DrillResult:
    """One drill, start to end."""

    id: str
    stack: str
    source: str
    target: str
    scenario: str
    started: float
    ended: float
    phases: tuple[Phase, ...]
    rto_s: float | None  # None: the service never answered at the target
    rpo_s: float | None  # None: the data could not be checked
    objective_rto_s: float
    objective_rpo_s: float
    data: DataSummary
    ledger: LedgerSummary | None = None
    run_id: str | None = None
    drill_record: str | None = None  # fqdn pointed at the target during the drill
    target_address: str | None = None
    cut_at: float | None = None
    first_healthy_at: float | None = None
    kept: bool = False  # --keep: the target was left running
    torn_down: bool = False
    error: str | None = None  # why the drill stopped early, if it did
    rto_from: str = "start"  # "start" (notice: the drill's start) or "cut" (no-notice: the primary cut off)
    tier: str | None = None  # no-notice: the standby tier drilled (`pilot-light` | `warm`); None for notice drills
    # On the day, resolvers may still send clients to the old address this long after the cut: the longest TTL of the
    # production records the failover would cut over (the drill record is not one of them). None: no DNS records.
    dns_stale_for_s: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))

    @property
    def rto_met(self) -> bool:
        return self.rto_s is not None and self.rto_s <= self.objective_rto_s

    @property
    def rpo_met(self) -> bool:
        return self.rpo_s is not None and self.rpo_s <= self.objective_rpo_s

    @property
    def passed(self) -> bool:
        return self.error is None and self.data.ok and self.rto_met and self.rpo_met

    @property
    def rto_origin(self) -> float:
        """The instant the RTO is measured from."""
        return self.cut_at if self.rto_from == "cut" and self.cut_at is not None else self.started

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended - self.started)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT, "id": self.id, "stack": self.stack, "source": self.source,
            "target": self.target, "scenario": self.scenario, "run_id": self.run_id,
            "started": round(self.started, 3), "ended": round(self.ended, 3), "duration_s": round(self.duration_s, 3),
            "passed": self.passed, "rto_s": _r(self.rto_s), "rpo_s": _r(self.rpo_s),
            "objectives": {"rto_s": self.objective_rto_s, "rpo_s": self.objective_rpo_s},
            "objectives_met": {"rto": self.rto_met, "rpo": self.rpo_met},
            "phases": [p.to_dict() for p in self.phases],
            "data": self.data.to_dict(), "ledger": self.ledger.to_dict() if self.ledger else None,
            "drill_record": self.drill_record, "target_address": self.target_address,
            "cut_at": _r(self.cut_at), "first_healthy_at": _r(self.first_healthy_at),
            "kept": self.kept, "torn_down": self.torn_down, "error": self.error, "rto_from": self.rto_from,
            "tier": self.tier, "dns_stale_for_s": self.dns_stale_for_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DrillResult:
        obj = d.get("objectives") or {}
        return cls(id=str(d["id"]), stack=str(d["stack"]), source=str(d["source"]), target=str(d["target"]),
                   scenario=str(d.get("scenario", "notice")), started=float(d["started"]), ended=float(d["ended"]),
                   phases=tuple(Phase.from_dict(p) for p in d.get("phases") or ()),
                   rto_s=d.get("rto_s"), rpo_s=d.get("rpo_s"), objective_rto_s=float(obj.get("rto_s", 0.0)),
                   objective_rpo_s=float(obj.get("rpo_s", 0.0)), data=DataSummary.from_dict(d["data"]),
                   ledger=LedgerSummary.from_dict(d["ledger"]) if d.get("ledger") else None,
                   run_id=d.get("run_id"), drill_record=d.get("drill_record"),
                   target_address=d.get("target_address"), cut_at=d.get("cut_at"),
                   first_healthy_at=d.get("first_healthy_at"), kept=bool(d.get("kept")),
                   torn_down=bool(d.get("torn_down")), error=d.get("error"),
                   rto_from=str(d.get("rto_from", "start")), tier=d.get("tier"),
                   dns_stale_for_s=d.get("dns_stale_for_s"))
