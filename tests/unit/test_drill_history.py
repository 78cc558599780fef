"""The drill history (SQLite in the state dir) and `liferaft drills`, plus the drill command's refusals."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from liferaft.cli import main
from liferaft.drill import history
from liferaft.drill.model import DrillResult
from liferaft.drill.run import phases_from
from liferaft.engine.journal import StepRecord
from tests.unit.test_drill_report import T0, result

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "examples" / "microblog" / "liferaft.yaml"


def at(r: DrillResult, n: int, rto: float | None, rpo: float = 0.0) -> DrillResult:
    return replace(r, id=f"d{n}", started=T0 + 1000 * n, ended=T0 + 1000 * n + 50, rto_s=rto, rpo_s=rpo,
                   first_healthy_at=None if rto is None else T0 + 1000 * n + rto)


def test_history_appends_and_computes_the_trend(tmp_path: Path) -> None:
    """Every drill is kept; each is better or worse than the previous one to the same target."""
    base = result()
    for n, rto in enumerate([50.0, 42.0, 42.0, 58.0, None]):
        history.record(tmp_path, at(base, n, rto), tmp_path / "reports")
    history.record(tmp_path, replace(at(base, 9, 10.0), target="alt-c"))
    got = history.entries(tmp_path, "microblog")
    assert [e.result.id for e in got] == ["d0", "d1", "d2", "d3", "d4", "d9"]
    assert [e.trend for e in got] == ["first", "better", "same", "worse", "worse", "first"]
    assert got[0].report_dir == str(tmp_path / "reports")
    assert stat.S_IMODE(history.history_path(tmp_path).stat().st_mode) == 0o600
    assert history.entries(tmp_path, "other") == []


def test_rpo_breaks_ties_in_the_trend() -> None:
    a, b = at(result(), 1, 40.0, 0.0), at(result(), 2, 40.0, 1.5)
    assert history.trend_of(a, b) == "worse" and history.trend_of(b, a) == "better"


def test_sparkline() -> None:
    assert history.sparkline([10.0, 20.0, None, 30.0]) == "▁▅ █"
    assert history.sparkline([]) == "" and history.sparkline([5.0, 5.0]) == "▁▁"


def test_phases_from_journal_records() -> None:
    """A phase spans from its first step's start to its last step's end; a failed step marks its phase;
    housekeeping after the move (db.release) is no phase of its own."""
    def rec(step_id: str, kind: str, a: float, b: float | None, status: str = "done") -> StepRecord:
        return StepRecord(run_id="r", step_id=step_id, position=0, kind=kind, status=status, attempts=1,
                          started=T0 + a, finished=None if b is None else T0 + b, result={}, memo={}, error=None)

    phases = phases_from([rec("allocate", "host.allocate", 0, 1), rec("prepare", "host.configure", 1, 5),
                          rec("migrate", "db.migrate", 5, 9), rec("deploy", "service.deploy", 9, 12),
                          rec("cut", "drill.cut", 12, 13, "failed"), rec("x", "drill.verify_data", 13, None, "running"),
                          rec("release", "db.release", 14, 15)])
    assert [(p.name, p.start - T0, p.end - T0, p.status) for p in phases] == [
        ("provision", 0, 1, "ok"), ("configure", 1, 12, "ok"), ("data", 5, 13, "failed"), ("verify", 13, 13, "ok")]


def cli(tmp_path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["--stack", str(STACK), "--state-dir", str(tmp_path / "state"), *args])
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_drills_command_lists_history_with_trend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(tmp_path, "drills", capsys=capsys)
    assert code == 0 and "no drills yet" in out
    for n, rto in enumerate([50.0, 42.0]):
        history.record(tmp_path / "state", at(result(), n, rto))
    code, out, _ = cli(tmp_path, "drills", "--json", capsys=capsys)
    doc = json.loads(out)
    assert code == 0 and [d["id"] for d in doc["drills"]] == ["d1", "d0"]
    assert doc["drills"][0]["trend"] == "better" and doc["drills"][0]["rto_s"] == 42.0
    assert doc["drills"][0]["passed"] is True and doc["rto_sparkline"] == "█▁"
    code, out, _ = cli(tmp_path, "drills", capsys=capsys)
    assert code == 0 and "d1" in out and "better" in out and "42.0 s" in out


def test_unknown_site_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(tmp_path, "drill", "--to", "nowhere", capsys=capsys)
    assert code == 2 and "nowhere" in err
