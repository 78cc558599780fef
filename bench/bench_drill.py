"""Drill RTO/RPO in the local lab: `liferaft drill --to alt-b` in both scenarios, against the issue's target
(RTO under 60 s for the example app in the lab; RPO 0 with a warm standby or a live move).

    python -m bench.bench_drill [--runs 2] [--scenarios notice,no-notice] [--json] [--write]

Starts a lab of its own (a temporary directory; stopped at the end), then per run: the example's ledger writer at
10 writes/s against host a, `liferaft drill --to alt-b --scenario S --ledger L --json` through the real CLI, and the
figures from its JSON. RTO: notice from the drill's start, no-notice from the cut (the primary switched off) -- each
to the first healthy answer at the target through the drill record. No-notice runs alternate between a standby the
drill makes itself (first run) and one kept by `liferaft replicate` beforehand (later runs).
`--write` replaces the drill section of bench/RESULTS.md (between its markers) with this run's table.
Exits 1 when a drill fails or the median RTO of a scenario misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_RTO_S = 60.0
BEGIN, END = "<!-- drill results: bench/bench_drill.py -->", "<!-- end of drill results -->"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _cli(stack_file: Path, state: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False)


def one_drill(info: Any, state: Path, work: Path, scenario: str, n: int) -> dict[str, Any]:
    from liferaft.lab import example

    a = info.hosts["a"].address
    ledger = work / f"ledger-{scenario}-{n}.sqlite"
    stop = threading.Event()
    writer = threading.Thread(target=lambda: example.run_writer(
        f"http://{a}:{info.app_port}", str(ledger), rate=10, duration=1800, stop=stop, timeout=2.0), daemon=True)
    writer.start()
    time.sleep(2.0)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        out = _cli(info.stack_file, state, "drill", "--to", "alt-b", "--scenario", scenario, "--ledger", str(ledger),
                   "--report", str(work / "reports"), "--json")
    finally:
        stop.set()
        writer.join(30)
    wall = time.monotonic() - t0
    try:
        doc: dict[str, Any] = json.loads(out.stdout)
    except ValueError:
        doc = {"passed": False, "error": (out.stderr or out.stdout)[-500:]}
    doc.update(wall_s=round(wall, 1), load=round(load, 1), exit=out.returncode)
    return doc


def row(scenario: str, n: int, d: dict[str, Any], standby: str) -> dict[str, Any]:
    phases = {p["name"]: p["duration_s"] for p in d.get("phases") or []}
    order = ("standby", "provision", "configure", "data", "verify", "dns", "teardown")
    lg = d.get("ledger") or {}
    return {"scenario": scenario, "run": n, "standby": standby, "rto_s": d.get("rto_s"), "rpo_s": d.get("rpo_s"),
            "from": d.get("rto_from", "start"), "passed": bool(d.get("passed")), "exit": d.get("exit"),
            "wall_s": d.get("wall_s"), "load": d.get("load"),
            "phases": " / ".join(f"{phases[p]:.1f}" if p in phases else "-" for p in order),
            "ledger": (f"{lg.get('acknowledged_before_cut')} before the cut, {lg.get('missing')} missing"
                       if lg else "-"), "error": d.get("error")}


def _s(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | run | standby | RTO (from) | RPO | passed | phases standby / provision / configure / data / "
            "verify / dns / teardown (s) | ledger | load |\n|---|---:|---|---:|---:|---|---|---|---:|\n")
    body = "\n".join(
        f"| {r['scenario']} | {r['run']} | {r['standby']} | {_s(r['rto_s'])} ({r['from']}) | {_s(r['rpo_s'], 3)} | "
        f"{'yes' if r['passed'] else 'NO'} | {r['phases']} | {r['ledger']} | {r['load']} |" for r in rows)
    return head + body


def summary(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    lines = ["| scenario | runs | median RTO | best | worst | target | ok |", "|---|---:|---:|---:|---:|---|---|"]
    ok_all = True
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        rtos = [r["rto_s"] for r in rows if r["scenario"] == sc and r["rto_s"] is not None]
        passed = all(r["passed"] for r in rows if r["scenario"] == sc)
        med = statistics.median(rtos) if rtos else None
        ok = passed and med is not None and med < TARGET_RTO_S
        ok_all &= ok
        best, worst = (min(rtos), max(rtos)) if rtos else (None, None)
        lines.append(f"| {sc} | {len(rtos)} | {_s(med)} | {_s(best)} | {_s(worst)} | "
                     f"< {TARGET_RTO_S:g} s, every drill passed | {'yes' if ok else 'NO'} |")
    return "\n".join(lines), ok_all


def write_section(text: str, begin: str = BEGIN, end: str = END, path: Path = RESULTS) -> None:
    """Replace the block between `begin` and `end` in RESULTS.md with `text` (appended when there is none)."""
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="drills per scenario (default 2)")
    ap.add_argument("--scenarios", default="notice,no-notice")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    ap.add_argument("--write", action="store_true", help="replace the drill section of bench/RESULTS.md")
    args = ap.parse_args()
    from liferaft.lab.core import Lab

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="liferaft-bench-drill-") as tmp:
        work = Path(tmp)
        lab = Lab(work / "lab")
        t0 = time.monotonic()
        lab.up(timeout=600, die_with_caller=True)
        print(f"lab up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        try:
            info = lab.info
            state = work / "state"
            for sc in scenarios:
                for n in range(1, args.runs + 1):
                    standby = "-"
                    if sc == "no-notice":
                        standby = "made by the drill" if n % 2 == 1 else "kept by replicate"
                        if n % 2 == 0:
                            rep = _cli(info.stack_file, state, "replicate", "--to", "alt-b", "--json", timeout=600)
                            if rep.returncode != 0:
                                raise SystemExit(f"replicate failed: {rep.stderr[-2000:]}")
                    d = one_drill(info, state, work, sc, n)
                    r = row(sc, n, d, standby)
                    rows.append(r)
                    print(f"{sc} #{n}: RTO {r['rto_s']} s ({r['from']}), RPO {r['rpo_s']} s, passed {r['passed']}"
                          + (f", error: {r['error']}" if r["error"] else ""), file=sys.stderr)
        finally:
            lab.down()
    summ, ok = summary(rows)
    if args.json:
        print(json.dumps({"rows": rows, "ok": ok}, indent=2))
    else:
        print(table(rows) + "\n\n" + summ)
    if args.write:
        load = os.getloadavg()
        write_section(
            f"## Drill: RTO and RPO in the lab (`python -m bench.bench_drill --runs {args.runs} --write`)\n\n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end {load[0]:.1f} / "
            f"{load[1]:.1f} / {load[2]:.1f}. Target: RTO under {TARGET_RTO_S:g} s for the example app in the lab "
            "(the lab stack's own objective is 300 s); RPO 0. RTO: notice from the drill's start, no-notice from the "
            "cut, to the first healthy answer through the drill record. The ledger writer sends 10 writes/s to "
            "host a during every drill.\n\n" + table(rows) + "\n\n" + summ + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
