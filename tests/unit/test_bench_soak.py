"""The soak benchmark's helpers (bench/bench_soak.py): the slope, the flatness test, the rounds' JSON, /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_soak import (
    BEGIN,
    END,
    Watch,
    children_of,
    curve,
    health_failure,
    proc_sample,
    replicate_failure,
    slope_per_1000,
    write_section,
)


def _samples(values: list[tuple[int, float]], metric: str = "rss_mib") -> list[dict[str, float]]:
    return [{"round": float(r), metric: v} for r, v in values]


def test_slope_is_least_squares_per_1000_rounds() -> None:
    assert slope_per_1000([(r, 2 + 0.003 * r) for r in range(0, 2001, 20)]) == pytest.approx(3.0)
    assert slope_per_1000([(0, 5.0), (10, 5.0), (20, 5.0)]) == 0.0
    assert slope_per_1000([(0, 1.0), (10, 0.0), (20, 1.0), (30, 0.0)]) == pytest.approx(-20.0)  # -10 / 500 per round
    assert slope_per_1000([(5, 1.0)]) == 0.0
    assert slope_per_1000([]) == 0.0


def test_a_steady_leak_is_not_flat_and_noise_or_warm_up_is() -> None:
    leak = curve(_samples([(r, 100 + 0.002 * r) for r in range(1, 2001, 20)]), "rss_mib", warmup=100)
    assert not leak["flat"] and leak["slope_per_1000"] == pytest.approx(2.0, abs=1e-3)
    assert leak["growth"] == pytest.approx(3.8, abs=0.05)  # fitted over rounds 101..1981
    # a 5 MiB jump in the first rounds (caches, pools) is left out of the slope; start still shows it
    warm = curve(_samples([(1, 95.0), (21, 97.0), *((r, 100.0 + (r % 40 == 1) * 0.5) for r in range(41, 2001, 20))]),
                 "rss_mib", warmup=100)
    assert warm["flat"] and warm["start"] == (1.0, 95.0) and warm["after_warmup"][0] >= 100
    # fds that come and go (connections per round) are noise, not growth
    fds = curve(_samples([(r, 6 + (r // 20) % 3 * 4) for r in range(1, 2001, 20)], "fds"), "fds", warmup=100)
    assert fds["flat"]
    assert curve([], "fds", warmup=100) == {"metric": "fds", "samples": 0, "flat": False}


def _rep(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {"target": "alt-b", "source_reachable": True,
                              "databases": {"blog": {"ok": True, "lag_bytes": 0}},
                              "buckets": {"images": {"ok": True, "lag_bytes": 0}}}
    doc.update(over)
    return doc


def test_replicate_round_failures() -> None:
    assert replicate_failure(_rep()) is None
    assert replicate_failure({"error": "source primary unreachable: timed out"}) == (
        "error: source primary unreachable: timed out")
    assert replicate_failure(_rep(source_reachable=False)) == "source unreachable"
    bad = _rep(buckets={"images": {"ok": False, "error": "SlowDown"}}, databases={"blog": {"ok": False}})
    assert replicate_failure(bad) == "databases blog: not ok; buckets images: SlowDown"


def test_health_round_failures_name_the_subjects() -> None:
    ok = {"round": 3, "report": {"verdict": "healthy", "providers": {"aws": {"verdict": "healthy"}}}}
    assert health_failure(ok) is None
    bad = {"round": 4, "report": {"verdict": "degraded", "providers": {"aws": {"verdict": "degraded"},
                                                                       "dnshost": {"verdict": "healthy"}},
                                  "sites": {"primary": {"verdict": "degraded"}}}}
    assert health_failure(bad) == "verdict degraded (provider aws: degraded; site primary: degraded)"


def test_watch_counts_rounds_from_json_lines_and_skips_events_and_the_closing_summary(tmp_path: Path) -> None:
    h = Watch("health", [], rounds=3, every=1, log_dir=tmp_path)
    lines = [json.dumps({"round": 1, "report": {"verdict": "healthy", "duration_s": 0.3}}),
             json.dumps({"ts": 1.0, "kind": "health.baseline", "message": "provider:aws healthy (confirmed)"}),
             json.dumps({"round": 2, "report": {"verdict": "unreachable", "duration_s": 2.0,
                                                "providers": {"aws": {"verdict": "unreachable"}}}}),
             "garbage",
             json.dumps({"round": 3, "report": {"verdict": "healthy", "duration_s": 0.4}}),
             *json.dumps({"watch": {"rounds": 3, "verdict": "healthy", "exit_code": 0, "changes": [],
                                    "actions": []}}, indent=2).splitlines()]
    for i, line in enumerate(lines):
        h.on_line(line + "\n", float(i))
    r = h.result(warmup=1)
    assert r["rounds"] == 3 and r["check_median_s"] == 0.4
    assert [f["round"] for f in r["failures"]] == [2, 3]
    assert "provider aws: unreachable" in r["failures"][0]["why"] and "not JSON" in r["failures"][1]["why"]
    assert r["closing"] == {"rounds": 3, "verdict": "healthy", "exit_code": 0, "changes": [], "actions": []}
    assert r["period_median_s"] == 2.0  # arrivals of rounds 1, 2, 3 at lines 0, 2, 4

    rep = Watch("replicate", [], rounds=2, every=1, log_dir=tmp_path)
    for line in (json.dumps(_rep()), json.dumps({"kind": "replicate.round", "message": "x"}),
                 json.dumps({"error": "source primary unreachable"})):
        rep.on_line(line + "\n", 0.0)
    assert rep.seen == 2 and rep.failures[0]["round"] == 2


def test_proc_sample_reads_rss_fds_threads_and_children() -> None:
    s = proc_sample(os.getpid())
    assert s is not None and s["rss_mib"] > 1 and s["fds"] >= 3 and s["threads"] >= 1
    before = children_of(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert children_of(os.getpid()) == before + 1
    finally:
        child.kill()
        child.wait()
    assert proc_sample(2**22 + 1) is None  # above pid_max's default: no such process


def test_write_section_replaces_only_its_block(tmp_path: Path) -> None:
    p = tmp_path / "RESULTS.md"
    p.write_text("# Results\n\nmovers\n")
    write_section("## Soak\n\nfirst\n", p)
    write_section("## Soak\n\nsecond\n", p)
    text = p.read_text()
    assert text.startswith("# Results\n\nmovers\n") and text.count(BEGIN) == 1 and text.count(END) == 1
    assert "second" in text and "first" not in text
