"""The no-notice day, measured: cut -> first 200 by DNS after a cold failover into a standby of each tier, and the
acknowledged writes lost (issue 24's table). Run by hand, never in CI:

    python -m bench.bench_no_notice [--runs 3] [--tiers warm,pilot-light] [--auto] [--typed-after 0] [--write]

Starts a lab of its own (a temporary directory; stopped at the end). Per run, through the real CLI as an operator
would: the lab's stack with `sites.alt-b.standby: <tier>`; the example's writer at 20 writes/s through the app's DNS
name (its ledger is what "acknowledged" means); `replicate --to alt-b --watch --interval 1` until three good rounds
(for warm: the service deployed and stopped at b); then the cut -- `lab cut aws --mode down` and host a's network cut
-- and, `--typed-after` seconds later (default 0: at the cut), the one command `failover --mode cold --to alt-b
--yes`. A client polls from the cut until the app's name resolves to b and b answers 200: cut -> first 200. Lost:
ledger writes acknowledged before the cut that are missing at b (allowed: the lag replicate reported before the cut).
Then the cut is healed and the run rolled back (the app back at a), and the next run starts.

`--auto` adds the automatic row: `health.failover_on: terminated` and `health --watch --confirm 2 --interval 2`
(warm standby), the account suspended (`lab cut aws --mode deny`) plus host a cut, no command typed.
Runs alternate between the rows so a slow spell of the machine does not land on one row only. The load average
(1 min) is taken at each cut. `--write` replaces this benchmark's section of bench/RESULTS.md.
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
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_drill import write_section

BEGIN, END = "<!-- no-notice benchmark: bench/bench_no_notice.py -->", "<!-- end of no-notice benchmark -->"
RATE = 20.0
# Issue 24's targets; the pilot-light row is there for comparison (the issue sets the 15 s for a warm standby).
TARGETS: dict[str, float | None] = {"warm": 15.0, "pilot-light": None, "auto": 30.0}


def _env(stack_file: Path, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    env.update(LIFERAFT_STACK=str(stack_file), LIFERAFT_STATE_DIR=str(state), **extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "liferaft", *args]


def stack_for(info: Any, tier: str, auto: bool) -> Path:
    """The lab's stack with the standby tier (and, for the automatic row, the failover policy), beside it."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(info.stack_file.read_text())
    doc["sites"]["alt-b"]["standby"] = tier
    if auto:
        doc["health"] = {"timeout": "2s", "interval": "2s", "confirm": 2, "failover_on": "terminated",
                         "failover_to": "alt-b"}
    path = info.stack_file.with_name(f"liferaft-bench-{tier}{'-auto' if auto else ''}.yaml")
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return path


class Lines:
    """A long-running liferaft process whose stdout JSON lines are collected."""

    def __init__(self, argv: list[str], env: dict[str, str], err: Path) -> None:
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.err = err
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err.open("w"), text=True,
                                  stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        block: list[str] = []  # a pretty-printed document (a watch's final result) spans lines
        for line in self.p.stdout:
            if block or line.rstrip() == "{":
                block.append(line)
                if line.rstrip() != "}":
                    continue
                line, block = "".join(block), []
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                self.lines.append((time.time(), doc))

    def wait_for(self, pred: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, doc in list(self.lines):
                if pred(t, doc):
                    return doc
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{what}: not within {timeout} s (exit {self.p.poll()})\n"
                           + self.err.read_text()[-3000:])

    def end(self, timeout: float = 60) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)


def _resolve(info: Any) -> str | None:
    from tests.lab_checks import app_records

    try:
        return app_records(info)[0]
    except Exception:  # noqa: BLE001 - no answer yet
        return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except Exception:  # noqa: BLE001 - not yet (refused, timed out, HTTP error)
        return False


def first_200(info: Any, address: str, since: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _resolve(info) == address and _answers(f"http://{address}:{info.app_port}/healthz"):
            return time.time() - since
        time.sleep(0.1)
    return None


def _owner_dsn(info: Any, address: str) -> dict[str, Any]:
    from tests.lab_checks import owner_dsn

    return {**owner_dsn(info, address), "connect_timeout": 5}


def _wait_primary_db(info: Any, timeout: float = 90) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(**_owner_dsn(info, info.primary_address)) as c:
                c.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _phases(log: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in log.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("kind") == "step.done" and "step" in e:
            out[str(e["step"])] = float(e.get("duration_s") or 0.0)
    return out


def one_run(lab: Any, state: Path, work: Path, row: str, n: int, typed_after: float) -> dict[str, Any]:
    """One no-notice day for `row` (warm | pilot-light | auto): standby kept, cut, failover, measured, undone."""
    from liferaft.lab.example import run_writer, verify_ledger

    info = lab.info
    b = info.hosts["b"].address
    tier = "warm" if row == "auto" else row
    stack_file = stack_for(info, tier, row == "auto")
    ledger = work / f"ledger-{row}-{n}.sqlite"
    stop = threading.Event()
    writer = threading.Thread(target=lambda: run_writer(lambda: f"http://{_resolve(info)}:{info.app_port}",
                                                        str(ledger), rate=RATE, duration=1800, stop=stop,
                                                        timeout=2.0), daemon=True)
    writer.start()
    rep = Lines(_cli("replicate", "--to", "alt-b", "--watch", "--interval", "1", "--source-timeout", "2", "--json"),
                _env(stack_file, state), work / f"replicate-{row}-{n}.err")
    watch: Lines | None = None
    result: dict[str, Any] = {"row": row, "run": n, "tier": tier}
    run_id: str | None = None
    try:
        rep.wait_for(lambda t, d: sum(1 for _, x in rep.lines if x.get("source_reachable")) >= 3, 600,
                     "three good replicate rounds")
        last = rep.lines[-1][1]
        if tier == "warm" and not (last.get("services") or {}).get("web", {}).get("ok"):
            raise RuntimeError(f"the warm standby holds no current service: {last}")
        if row == "auto":
            watch = Lines(_cli("health", "--watch", "--confirm", "2", "--interval", "2", "--json"),
                          _env(stack_file, state, LIFERAFT_VERIFY_LEDGER=str(ledger)), work / f"health-{n}.err")
            watch.wait_for(lambda t, d: d.get("confirmed", {}).get("site:primary") == "healthy", 120, "baseline")
        lag = float(rep.lines[-1][1]["databases"]["blog"]["lag_seconds"])
        load = os.getloadavg()[0]
        t_cut = time.time()
        lab.cut("aws", "deny" if row == "auto" else "down")
        lab.cut_host("a")
        box: dict[str, Any] = {}
        poller = threading.Thread(target=lambda: box.update(s=first_200(info, b, t_cut, 300)), daemon=True)
        poller.start()
        log = ""
        if row == "auto":
            assert watch is not None
            watch.p.wait(300)
            time.sleep(0.5)  # the reader thread takes the last document
            final: dict[str, Any] = next((d["watch"] for _, d in reversed(watch.lines) if isinstance(d.get("watch"), dict)), {})
            attempts = (final.get("failover") or {}).get("attempts") or []
            log = Path(attempts[0]["log"]).read_text() if attempts else ""
            moved = json.loads((state / "readiness" / "microblog.moved.json").read_text())
            run_id = moved.get("run")
        else:
            time.sleep(max(0.0, typed_after - (time.time() - t_cut)))
            fo = subprocess.run(_cli("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json"),
                                env=_env(stack_file, state, LIFERAFT_VERIFY_LEDGER=str(ledger),
                                         LIFERAFT_SOURCE_TIMEOUT="2"),
                                capture_output=True, text=True, timeout=900, check=False)
            log = fo.stderr
            if fo.returncode != 0:
                raise RuntimeError(f"failover exited {fo.returncode}: {fo.stderr[-2000:]}")
            run_id = json.loads(fo.stdout)["run"]
        poller.join(300)
        stop.set()
        writer.join(30)
        check = verify_ledger(str(ledger), _owner_dsn(info, b))
        steps = _phases(log)
        result.update(first_200_s=box.get("s"), lag_s=lag, load=round(load, 2), acknowledged=check.acknowledged,
                      lost=len(check.missing) + len(check.mismatched), allowed=int(RATE * (lag + 0.5)) + 1,
                      steps=steps, deployed=[s for s in steps if s.startswith("deploy-")],
                      started=[s for s in steps if s.startswith("start-")], ok=True)
    except Exception as e:  # noqa: BLE001 - a failed run is a row of the table, not the end of the benchmark
        result.update(ok=False, error=f"{type(e).__name__}: {str(e)[-600:]}")
    finally:
        stop.set()
        for p in (watch, rep):
            if p is not None:
                p.end()
        lab.heal()
    if run_id:
        _wait_primary_db(info)
        back = subprocess.run(_cli("rollback", run_id, "--yes", "--json"), env=_env(stack_file, state),
                              capture_output=True, text=True, timeout=900, check=False)
        if back.returncode != 0:
            raise SystemExit(f"rollback of {run_id} failed; the lab is not back at a: {back.stderr[-2000:]}")
    return result


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def table(rows: list[dict[str, Any]], typed_after: float) -> tuple[str, bool]:
    names = {"warm": f"cold failover after a no-notice cut, **warm** standby, one command typed {typed_after:g} s "
                     "after the cut",
             "pilot-light": f"the same, **pilot-light** standby (for comparison), one command typed {typed_after:g} s "
                            "after the cut",
             "auto": "the same, automatic (`health --watch --confirm 2 --interval 2`, `failover_on: terminated`), "
                     "warm standby"}
    lines = [("| scenario | target | median cut -> first 200 | runs (s) | writes lost / acknowledged (allowed) | "
             "load (1 min) at the cut | service at the standby | met |"), "|---|---|---:|---|---|---|---|---|"]
    ok_all = True
    for row in dict.fromkeys(r["row"] for r in rows):
        rs = [r for r in rows if r["row"] == row]
        times = [r["first_200_s"] for r in rs if r.get("ok") and r.get("first_200_s") is not None]
        med = statistics.median(times) if times else None
        lost_ok = all(r.get("ok") and r["lost"] <= r["allowed"] for r in rs)
        target = TARGETS[row]
        met = med is not None and (target is None or med <= target) and lost_ok and len(times) == len(rs)
        ok_all &= met
        how = "; ".join(sorted({("started (" + ", ".join(r["started"]) + ")") if r.get("started") else
                                ("deployed (" + ", ".join(r.get("deployed") or []) + ")") for r in rs if r.get("ok")}))
        lines.append(
            f"| {names[row]} | " + (f"<= {target:g} s" if target is not None else "- (comparison)")
            + f" | {_s(med)} s | "
            + " / ".join(_s(r.get("first_200_s")) if r.get("ok") else "failed" for r in rs) + " | "
            + " / ".join(f"{r['lost']} of {r['acknowledged']} ({r['allowed']})" if r.get("ok") else "-" for r in rs)
            + " | " + " / ".join(str(r.get("load", "-")) for r in rs) + f" | {how or '-'} | "
            + ("-" if target is None and met else "yes" if met else "**no**") + " |")
    return "\n".join(lines), ok_all


def step_lines(rows: list[dict[str, Any]]) -> str:
    """Where each failover's time went (its steps, seconds), one line per run."""
    out = []
    for r in rows:
        if r.get("ok"):
            steps = ", ".join(f"{k} {v:.1f}" for k, v in r["steps"].items())
            out.append(f"- {r['row']} #{r['run']}: cut -> first 200 {_s(r['first_200_s'])} s; lag before the cut "
                       f"{r['lag_s']} s; steps: {steps or '?'}")
        else:
            out.append(f"- {r['row']} #{r['run']}: failed: {r.get('error')}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    ap.add_argument("--tiers", default="warm,pilot-light", help="rows typed by hand (default warm,pilot-light)")
    ap.add_argument("--auto", action="store_true", help="also the automatic row (warm standby)")
    ap.add_argument("--typed-after", type=float, default=0.0, help="seconds from the cut to the command (default 0)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--write", action="store_true", help="replace this benchmark's section of bench/RESULTS.md")
    args = ap.parse_args()
    from liferaft.lab.core import Lab

    order = [t.strip() for t in args.tiers.split(",") if t.strip()] + (["auto"] if args.auto else [])
    unknown = set(order) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))}")
    rows: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="liferaft-bench-no-notice-") as tmp:
        work = Path(tmp)
        lab = Lab(work / "lab")
        t0 = time.monotonic()
        lab.up(timeout=600, die_with_caller=True)
        print(f"lab up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        try:
            state = work / "state"
            for n in range(1, args.runs + 1):
                for row in order:
                    r = one_run(lab, state, work, row, n, args.typed_after)
                    rows.append(r)
                    print(f"{row} #{n}: " + (f"cut -> first 200 {_s(r['first_200_s'])} s, lost {r['lost']} of "
                                             f"{r['acknowledged']} (allowed {r['allowed']}), load {r['load']}, "
                                             f"steps {r['steps']}" if r.get("ok") else f"FAILED {r.get('error')}"),
                          file=sys.stderr, flush=True)
        finally:
            lab.down()
    text, ok = table(rows, args.typed_after)
    if args.json:
        print(json.dumps({"rows": rows, "ok": ok}, indent=2))
    else:
        print(text + "\n\n" + step_lines(rows))
    if args.write:
        load = os.getloadavg()
        cmd = "python -m bench.bench_no_notice" + (f" --runs {args.runs}" if args.runs != 3 else "") + (
            f" --tiers {args.tiers}" if args.tiers != "warm,pilot-light" else "") + (" --auto" if args.auto else "") + (
            f" --typed-after {args.typed_after:g}" if args.typed_after else "") + " --write"
        write_section(
            f"## The no-notice day by tier (`{cmd}`)\n\n"
            f"Run {started} to {time.strftime('%H:%M UTC', time.gmtime())} on this 2-core machine; load average at "
            f"the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 min load at each cut in the table). A lab of "
            "its own; per run: the writer at 20 writes/s through the app's DNS name, `replicate --watch --interval "
            "1` for three good rounds, then `lab cut aws` and host a cut off, then one `failover --mode cold --to "
            "alt-b --yes`; cut -> first 200 is a client polling the app's name from the cut; lost: ledger writes "
            "acknowledged and missing at b (allowed: the lag reported before the cut, at 20 writes/s, + 1); each "
            "run rolled back afterwards. Medians of the runs; rows alternate run by run.\n\n"
            + text + "\n\nPer run (the failover's steps, seconds):\n\n" + step_lines(rows) + "\n", BEGIN, END)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
