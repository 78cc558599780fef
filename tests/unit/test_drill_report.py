"""Drill reports: JSON with the figures, Markdown, and a self-contained HTML page checked in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from liferaft.drill.model import PHASES, DataSummary, DrillResult, LedgerSummary, Phase
from liferaft.drill.report import seconds, to_html, to_markdown, write_report

T0 = 1_795_000_000.0
NOTICE_PHASES = [p for p in PHASES if p != "standby"]  # "standby": a no-notice drill that made its own standby
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def result(rto: float | None = 41.25, rpo: float | None = 0.0, *, objective_rto: float = 60.0,
           error: str | None = None) -> DrillResult:
    spans = {"provision": (0.5, 1.2), "configure": (1.2, 22.0), "data": (9.0, 30.5), "verify": (30.5, 40.1),
             "dns": (40.0, 40.2), "teardown": (41.3, 49.0)}
    return DrillResult(
        id="20261124-210000-abcd", stack="microblog", source="primary", target="alt-b", scenario="notice",
        started=T0, ended=T0 + 49.0, phases=tuple(Phase(n, T0 + a, T0 + b) for n, (a, b) in spans.items()),
        rto_s=rto, rpo_s=rpo, objective_rto_s=objective_rto, objective_rpo_s=0.0,
        data=DataSummary(ok=True, checked={"database blog tables": 2, "bucket images objects": 60},
                         replication_lag_s=0.012, replication_lag_bytes=512),
        ledger=LedgerSummary(acknowledged_before_cut=812, present=812, missing=0, mismatched=0, writes_after_cut=95),
        run_id="20261124-210001-beef", drill_record="drill.microblog.test.", target_address="10.1.2.12",
        cut_at=T0 + 29.0, first_healthy_at=None if rto is None else T0 + rto, torn_down=True, error=error)


def test_json_round_trip_has_the_figures(tmp_path: Path) -> None:
    """rto_s, rpo_s, the objectives and each phase's start and end are in the JSON, and it reads back equal."""
    files = write_report(result(), tmp_path)
    d = json.loads(files.json.read_text())
    assert d["rto_s"] == 41.25 and d["rpo_s"] == 0.0
    assert d["objectives"] == {"rto_s": 60.0, "rpo_s": 0.0} and d["objectives_met"] == {"rto": True, "rpo": True}
    assert [p["name"] for p in d["phases"]] == NOTICE_PHASES
    assert all(p["end"] >= p["start"] > 0 for p in d["phases"])
    assert d["passed"] is True and d["ledger"]["acknowledged_before_cut"] == 812
    assert DrillResult.from_dict(d).to_dict() == d


def test_missed_objective_fails_the_drill() -> None:
    assert not result(rto=75.0).passed and not result(rto=75.0).rto_met
    assert not result(rpo=2.0).passed and not result(rpo=2.0).rpo_met
    assert not result(rto=None).passed
    assert not result(error="boom").passed
    assert result().passed


def test_markdown_names_figures_and_verdicts(tmp_path: Path) -> None:
    md = to_markdown(result(rto=75.0))
    assert "**Result: FAILED**" in md and "| RTO | 1m 15s | 1m 00s | MISSED |" in md
    assert "| RPO | 0.0 s | 0.0 s | met |" in md
    for name in NOTICE_PHASES:
        assert f"| {name} |" in md


def test_html_is_self_contained_with_one_bar_per_phase() -> None:
    page = to_html(result())
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    assert len(re.findall(r'<rect class="phase-bar"', page)) == len(result().phases)
    assert {p.name for p in result().phases} <= set(PHASES)
    assert 'id="rto-measured"' in page and 'id="rto-objective"' in page


def test_no_notice_rto_is_drawn_from_the_cut() -> None:
    """No-notice: the RTO runs from the cut, so its line sits at cut + RTO on the drill's time axis."""
    from dataclasses import replace

    r = replace(result(rto=12.0), scenario="no-notice", rto_from="cut", cut_at=T0 + 20.0, first_healthy_at=T0 + 32.0)
    assert r.rto_origin == T0 + 20.0 and DrillResult.from_dict(r.to_dict()) == r
    page = to_html(r)
    xs = {m.group(1): float(m.group(2)) for m in re.finditer(r'<line id="(cut|rto-measured)" x1="([0-9.]+)"', page)}
    notice = {m.group(1): float(m.group(2)) for m in
              re.finditer(r'<line id="(rto-measured)" x1="([0-9.]+)"', to_html(replace(r, rto_from="start")))}
    assert xs["cut"] < xs["rto-measured"] and notice["rto-measured"] < xs["rto-measured"]
    assert "from the cut" in to_markdown(r)


def test_objective_far_beyond_the_drill_is_named_not_drawn() -> None:
    page = to_html(result(objective_rto=3600.0))
    assert 'id="rto-objective"' not in page and "beyond the chart" in page


def test_html_escapes_what_it_shows() -> None:
    r = result(error="<img src=x onerror=alert(1)>")
    assert "<img src=x" not in to_html(r) and "&lt;img src=x" in to_html(r)


def test_seconds_formatting() -> None:
    assert [seconds(x) for x in (None, 0.04, 12.34, 90, 3725)] == ["n/a", "0.0 s", "12.3 s", "1m 30s", "1h 02m"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Chromium parses the page: the chart has one bar per phase and the RTO/RPO figures are on it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (Debian's package)")
    files = write_report(result(), tmp_path / "report")
    dom = chromium(tmp_path, "--dump-dom", files.html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    svg = re.search(r'<svg id="timeline".*?</svg>', html, re.DOTALL)
    assert svg, "no timeline chart in the rendered DOM"
    bars = re.findall(r'<rect class="phase-bar" data-phase="([a-z]+)"', svg.group(0))
    assert bars == NOTICE_PHASES
    assert re.search(r'id="rto".*?data-seconds="41\.250">41\.2 s<', html, re.DOTALL)
    assert re.search(r'id="rpo".*?data-seconds="0\.000">0\.0 s<', html, re.DOTALL)
    assert "objective 1m 00s: met" in html and ">PASSED<" in html
    shot = tmp_path / "report.png"
    run = chromium(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", files.html.as_uri())
    assert run.returncode == 0 and shot.stat().st_size > 20_000, run.stderr[-2000:]


def test_reports_say_how_long_resolvers_may_keep_the_old_address() -> None:
    """Issue 24 item 5: the report says how long, on the day, clients may still reach the old address (the TTL)."""
    import dataclasses

    r = dataclasses.replace(result(), dns_stale_for_s=60)
    assert "up to 60 s after the cut" in to_markdown(r) and "up to 60 s after the cut" in to_html(r)
    assert DrillResult.from_dict(r.to_dict()).dns_stale_for_s == 60
    assert "resolvers" not in to_markdown(result())  # no DNS records: nothing to say
