"""Soak: `liferaft replicate --to alt-b --watch` and `liferaft health --watch`, each for many rounds against the lab
under a write load, watching each watch process for growth (target: flat, no growth beyond noise).

    python -m bench.bench_soak [--rounds 2000] [--interval 1] [--every 20] [--warmup 100] [--only replicate,health]
                               [--log-dir DIR] [--json] [--write]
    python -m bench.bench_soak --report SAVED.json [--write]     (a run saved with --json, rendered again)

Starts a lab of its own (a temporary directory; stopped at the end) and the example's ledger writer at 10 writes/s
against host a, then both watches at once through the real CLI (`--watch --interval 1 --count N --json`, one JSON
line a round). Every `--every` rounds (and at round 1 and the second-to-last round, while the process sleeps between
rounds) it reads the process's RSS, open file descriptors, threads and child processes from /proc. Reported per
metric: the curve's start (round 1), its value after the warm-up, middle and end, and the least-squares slope per
1,000 rounds over the samples after `--warmup` rounds (the first rounds fill caches and connection pools). Flat
means the fitted growth over that span is within max(3 x the residual noise, a floor: 1 MiB of RSS, 1 fd, 1 thread,
1 child). A round failed when its JSON says so: replicate with an `error`, the source unreachable or a dataset not
ok; health with a verdict other than healthy. `--log-dir` keeps each watch's stdout (the JSON lines) and stderr.
`--write` replaces the soak section of bench/RESULTS.md (between its markers). Exits 1 when a round failed, a watch
did not finish its rounds, or a curve is not flat.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BEGIN, END = "<!-- soak results: bench/bench_soak.py -->", "<!-- end of soak results -->"
METRICS = ("rss_mib", "fds", "threads", "children")
FLOOR = {"rss_mib": 1.0, "fds": 1.0, "threads": 1.0, "children": 1.0}
WRITE_RATE = 10.0
STALL_S = 300.0  # no round for this long: the watch is stopped and reported as stalled


# ------------------------------------------------------------------------------------------- /proc and the curves
def children_of(pid: int) -> int:
    """Live child processes of `pid` (zombies included: an unreaped child is a leak too)."""
    n = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            n += 1
    return n


def proc_sample(pid: int) -> dict[str, float] | None:
    """RSS (MiB), open fds, threads and children of a live process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 2), "fds": float(fds),
            "threads": float(int(fields["Threads"])), "children": float(children_of(pid))}


def slope_per_1000(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (round, value) points, per 1,000 rounds; 0 with fewer than 2 distinct rounds."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 1000.0


def curve(samples: Sequence[dict[str, float]], metric: str, warmup: int) -> dict[str, Any]:
    """Start / after warm-up / middle / end of one metric, its slope per 1,000 rounds after the warm-up, the
    residual noise around that fit and whether the fitted growth stays within the noise (or the floor)."""
    pts = [(s["round"], s[metric]) for s in samples]
    if not pts:
        return {"metric": metric, "samples": 0, "flat": False}
    late = [p for p in pts if p[0] >= warmup] or pts
    k = slope_per_1000(late)
    mx, my = statistics.fmean(x for x, _ in late), statistics.fmean(y for _, y in late)
    resid = [y - (my + k / 1000.0 * (x - mx)) for x, y in late]
    noise = statistics.pstdev(resid) if len(resid) > 1 else 0.0
    growth = k / 1000.0 * (late[-1][0] - late[0][0])
    mid = pts[len(pts) // 2]
    return {"metric": metric, "samples": len(pts), "start": pts[0], "after_warmup": late[0], "middle": mid,
            "end": pts[-1], "slope_per_1000": round(k, 4), "growth": round(growth, 3), "noise": round(noise, 3),
            "flat": abs(growth) <= max(3 * noise, FLOOR[metric])}


# ------------------------------------------------------------------------------------------- the rounds' JSON
def replicate_failure(doc: dict[str, Any]) -> str | None:
    """Why a `replicate --watch --json` round failed, or None."""
    if doc.get("error"):
        return f"error: {doc['error']}"
    if not doc.get("source_reachable"):
        return "source unreachable"
    bad = [f"{kind} {name}: {(v.get('error') or 'not ok')}" for kind in ("databases", "buckets")
           for name, v in (doc.get(kind) or {}).items() if not v.get("ok")]
    return "; ".join(bad) or None


def health_failure(doc: dict[str, Any]) -> str | None:
    """Why a `health --watch --json` round failed (any verdict but healthy, with the subjects that were not)."""
    report = doc.get("report") or {}
    if report.get("verdict") == "healthy":
        return None
    bad = [f"{kind[:-1]} {name}: {j.get('verdict')}" for kind in ("providers", "sites")
           for name, j in (report.get(kind) or {}).items() if j.get("verdict") != "healthy"]
    return f"verdict {report.get('verdict')}" + (f" ({'; '.join(bad)})" if bad else "")


def round_of(kind: str, doc: dict[str, Any], seen: int) -> int | None:
    """The round a JSON line reports (None for a line that is not a round: health's closing summary)."""
    if kind == "health":
        return int(doc["round"]) if "round" in doc else None
    return seen + 1 if "kind" not in doc and ("source_reachable" in doc or "error" in doc) else None


FAILURE: dict[str, Callable[[dict[str, Any]], str | None]] = {"replicate": replicate_failure,
                                                               "health": health_failure}


# ------------------------------------------------------------------------------------------- one watch process
@dataclass
class Watch:
    kind: str
    argv: list[str]
    rounds: int
    every: int
    log_dir: Path
    samples: list[dict[str, float]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    seen: int = 0
    stalled: bool = False
    closing: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    started: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        err = open(self.log_dir / f"{self.kind}.stderr", "w")  # noqa: SIM115 - the child's, closed below
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=err, text=True)
        err.close()
        threading.Thread(target=self._read, daemon=True).start()

    def _due(self, n: int) -> bool:
        return n == 1 or n == self.rounds - 1 or (n % self.every == 0 and n < self.rounds)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_dir / f"{self.kind}.jsonl", "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                self.on_line(line, time.monotonic())

    def on_line(self, line: str, now: float) -> None:
        if self.closing or line.rstrip("\n") == "{":  # health's closing summary, pretty-printed after the rounds
            self.closing.append(line)
            return
        try:
            doc = json.loads(line)
        except ValueError:
            self.failures.append({"round": self.seen + 1, "why": f"not JSON: {line[:200]!r}"})
            return
        n = round_of(self.kind, doc, self.seen)
        if n is None:
            return
        self.seen = n
        self.arrivals.append(now)
        if self.kind == "health":
            self.durations.append(float((doc.get("report") or {}).get("duration_s") or 0.0))
        why = FAILURE[self.kind](doc)
        if why:
            self.failures.append({"round": n, "at": time.strftime("%H:%M:%S", time.gmtime()), "why": why[:300]})
        if self._due(n) and self.proc is not None:
            s = proc_sample(self.proc.pid)
            if s is not None:
                self.samples.append({"round": float(n), "t_s": round(now - self.started, 1), **s})

    def wait(self) -> int:
        """Until the watch exits; stops it (SIGTERM, then SIGKILL) when no round came for STALL_S."""
        assert self.proc is not None
        while self.proc.poll() is None:
            last = self.arrivals[-1] if self.arrivals else self.started
            if time.monotonic() - last > STALL_S and not self.stalled:
                self.stalled = True
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            time.sleep(1.0)
        return int(self.proc.returncode)

    def result(self, warmup: int) -> dict[str, Any]:
        periods = [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]
        return {
            "watch": self.kind, "rounds": self.seen, "asked": self.rounds, "exit": self.proc.returncode
            if self.proc else None, "stalled": self.stalled, "failures": self.failures,
            "wall_s": round((self.arrivals[-1] - self.started) if self.arrivals else 0.0, 1),
            "period_median_s": round(statistics.median(periods), 3) if periods else None,
            "period_max_s": round(max(periods), 3) if periods else None,
            "check_median_s": round(statistics.median(self.durations), 3) if self.durations else None,
            "curves": {m: curve(self.samples, m, warmup) for m in METRICS}, "samples": self.samples,
            "closing": _closing(self.closing),
        }


def _closing(lines: list[str]) -> dict[str, Any] | None:
    """health --watch's closing document (rounds, confirmed verdicts, changes), without the per-change detail."""
    try:
        doc = json.loads("".join(lines)).get("watch") if lines else None
    except ValueError:
        return {"unparsed": "".join(lines)[:500]}
    return None if doc is None else {k: doc.get(k) for k in ("rounds", "verdict", "exit_code", "changes", "actions")}


# ------------------------------------------------------------------------------------------- report
def _pt(p: Any, metric: str) -> str:
    if not p:
        return "-"
    v = f"{p[1]:.1f}" if metric == "rss_mib" else f"{p[1]:g}"
    return f"{v} (r{int(p[0])})"


def table(results: list[dict[str, Any]]) -> str:
    lines = [("| watch | rounds | failed rounds | exit | wall | period median / max | metric | start | after warm-up "
              "| middle | end | slope per 1,000 rounds | noise (sd) | flat |"),
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for i, m in enumerate(METRICS):
            c = r["curves"][m]
            head = (f"| {r['watch']} | {r['rounds']} / {r['asked']} | {len(r['failures'])} | {r['exit']} | "
                    f"{r['wall_s'] / 60:.1f} min | {r['period_median_s']} / {r['period_max_s']} s |"
                    if i == 0 else "| | | | | | |")
            lines.append(f"{head} {m.replace('_mib', ' MiB')} | {_pt(c.get('start'), m)} | "
                         f"{_pt(c.get('after_warmup'), m)} | {_pt(c.get('middle'), m)} | {_pt(c.get('end'), m)} | "
                         f"{c.get('slope_per_1000', 0):+.3f} | {c.get('noise', 0):.3f} | "
                         f"{'yes' if c.get('flat') else 'NO'} |")
    return "\n".join(lines)


def failures_text(results: list[dict[str, Any]], limit: int = 20) -> str:
    out = []
    for r in results:
        fs = r["failures"]
        out.append(f"- {r['watch']}: {len(fs)} failed round(s)" + (":" if fs else "")
                   + ("" if not r["stalled"] else " (STALLED: stopped after no round for "
                      f"{STALL_S:g} s)"))
        out += [f"  - round {f['round']} {f.get('at', '')}: {f['why']}" for f in fs[:limit]]
        if len(fs) > limit:
            out.append(f"  - ... {len(fs) - limit} more")
    return "\n".join(out)


def ok(results: list[dict[str, Any]]) -> bool:
    return all(r["rounds"] >= r["asked"] and not r["failures"] and not r["stalled"]
               and all(c.get("flat") for c in r["curves"].values()) for r in results)


def write_section(text: str, path: Path | None = None) -> None:
    """The soak section of RESULTS.md (bench_drill's writer, with this benchmark's markers)."""
    from bench import bench_drill

    bench_drill.write_section(text, BEGIN, END, path or bench_drill.RESULTS)


# ------------------------------------------------------------------------------------------- main
def _argv(kind: str, stack_file: Path, state: Path, rounds: int, interval: float) -> list[str]:
    base = [sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(state)]
    what = ["replicate", "--to", "alt-b"] if kind == "replicate" else ["health"]
    return [*base, *what, "--watch", "--interval", f"{interval:g}", "--count", str(rounds), "--json"]


def soak(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from liferaft.lab.core import Lab
    from liferaft.lab.example import run_writer

    lab = Lab(work / "lab")
    t0 = time.monotonic()
    lab.up(timeout=600, die_with_caller=True)
    print(f"lab up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    stop = threading.Event()
    box: dict[str, Any] = {}
    try:
        info = lab.info
        url = f"http://{info.hosts['a'].address}:{info.app_port}"
        duration = min(24 * 3600.0, args.rounds * args.interval * 6 + 1800)
        writer = threading.Thread(target=lambda: box.update(report=run_writer(
            url, str(work / "ledger.sqlite"), rate=WRITE_RATE, duration=duration, stop=stop, timeout=2.0)),
            daemon=True)
        writer.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
        log_dir = Path(args.log_dir) if args.log_dir else work / "logs"
        watches = [Watch(k, _argv(k, info.stack_file, work / "state", args.rounds, args.interval), args.rounds,
                         args.every, log_dir) for k in args.only.split(",")]
        for w in watches:
            w.start(env)
        threading.Thread(target=_progress, args=(watches,), daemon=True).start()
        for w in watches:
            w.wait()
        stop.set()
        writer.join(30)
    finally:
        stop.set()
        lab.down()
    report = box.get("report")
    return [w.result(args.warmup) for w in watches], (report.to_dict() if report is not None else {})


def _progress(watches: list[Watch]) -> None:
    while any(w.proc is not None and w.proc.poll() is None for w in watches):
        time.sleep(60)
        print(time.strftime("%H:%M:%S ") + "; ".join(
            f"{w.kind} round {w.seen}, {len(w.failures)} failed, last {w.samples[-1] if w.samples else '-'}"
            for w in watches), file=sys.stderr, flush=True)


def section(meta: dict[str, Any], results: list[dict[str, Any]], writer: dict[str, Any]) -> str:
    """The soak section of bench/RESULTS.md for one run."""
    load = meta.get("load_at_end")
    prose = textwrap.fill(
        f"Run {meta.get('started')} to {meta.get('ended')}"
        + (f"; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}" if load else "")
        + f". Both watches at once (`--watch --interval {meta.get('interval', 1.0):g} --count "
        f"{meta.get('rounds')} --json`), the ledger writer at {WRITE_RATE:g} writes/s against host a throughout "
        f"(acknowledged {writer.get('acknowledged', '?')}, failed {writer.get('failed', '?')}, longest gap between "
        f"acknowledgements {writer.get('max_ack_gap_s', '?')} s). Sampled every {meta.get('every')} rounds; slope "
        f"and noise from round {meta.get('warmup')} on. Period: from one round's JSON line to the next.", 118)
    rss = []
    for r in results:
        picked = r["samples"][:: max(1, len(r["samples"]) // 10)]
        picked += [] if r["samples"][-1:] == picked[-1:] else r["samples"][-1:]
        rss.append(f"- {r['watch']}: " + ", ".join(f"{s['rss_mib']:.1f} (r{int(s['round'])})" for s in picked))
    return (f"## Soak: watch processes over {meta.get('rounds')} rounds (`python -m bench.bench_soak --rounds "
            f"{meta.get('rounds')}`)\n\n{prose}\n\n{table(results)}\n\nRSS (MiB) along the run:\n"
            + "\n".join(rss) + f"\n\nFailed rounds:\n{failures_text(results)}\n")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000, help="rounds per watch (default 2000)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between rounds (default 1)")
    ap.add_argument("--every", type=int, default=20, help="sample the processes every N rounds (default 20)")
    ap.add_argument("--warmup", type=int, default=100, help="rounds left out of the slope (default 100)")
    ap.add_argument("--only", default="replicate,health", help="which watches (default both, at once)")
    ap.add_argument("--log-dir", default=None, help="keep each watch's stdout (JSON lines) and stderr here")
    ap.add_argument("--json", action="store_true", help="print the results (with every sample) as JSON")
    ap.add_argument("--write", action="store_true", help="replace the soak section of bench/RESULTS.md")
    ap.add_argument("--report", metavar="FILE", default=None,
                    help="no run: render (and with --write, write) a run saved with --json")
    args = ap.parse_args()
    if args.rounds < 3 or args.every < 1 or not set(args.only.split(",")) <= set(FAILURE):
        ap.error("--rounds >= 3, --every >= 1, --only from replicate,health")
    return args


def main() -> int:
    args = _args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        meta, results, writer = saved.get("meta") or {}, saved["results"], saved.get("writer") or {}
        for r in results:  # the curves again from the samples (the warm-up may differ)
            r["curves"] = {m: curve(r["samples"], m, int(meta.get("warmup", args.warmup))) for m in METRICS}
    else:
        meta = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
                "interval": args.interval, "every": args.every, "warmup": args.warmup}
        with tempfile.TemporaryDirectory(prefix="liferaft-bench-soak-") as tmp:
            results, writer = soak(args, Path(tmp))
        meta.update(ended=time.strftime("%H:%M UTC", time.gmtime()), load_at_end=[round(x, 2) for x in os.getloadavg()])
        print(f"writer: {writer}", file=sys.stderr)
    good = ok(results)
    if args.json:
        print(json.dumps({"meta": meta, "results": results, "writer": writer, "ok": good}, indent=1))
    else:
        print(table(results) + "\n\n" + failures_text(results))
    if args.write:
        write_section(section(meta, results, writer))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
