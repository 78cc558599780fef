"""Health-check concurrency: 200 HTTP health endpoints, some slow, checked at once (target: total <= 1.5x the slowest
single probe).

    python bench/bench_health.py [--endpoints 200] [--slow 40] [--runs 3] [--json]

A child process serves the endpoints on 127.0.0.1, one HTTP server (own port) each; `--slow` of them sleep
0.5-1.0 s before answering (fixed seed), one of them exactly 1.0 s. The child stops itself when stdin closes or
after 120 s, whatever happens to this process. Measured:
  slowest single   the slowest endpoint probed alone (median of runs)
  liferaft         all endpoints through liferaft.health's runner (one deadline-bound thread per probe)
  pool of 8        the same probes through a ThreadPoolExecutor(8), the usual way, for comparison
Exits 1 when liferaft's ratio misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET = 1.5
CHILD_DEADLINE_S = 120.0


# ---------------------------------------------------------------------------------------------------- the servers
def serve(n: int, slow: int, seed: int) -> None:
    """Child: start n servers, print [[port, delay], ...] on stdout, serve until stdin closes (or the deadline)."""
    rng = random.Random(seed)
    delays = [0.0] * n
    slow_ix = rng.sample(range(n), slow)
    for i, ix in enumerate(slow_ix):
        delays[ix] = 1.0 if i == 0 else round(rng.uniform(0.5, 1.0), 3)
    servers = []
    for delay in delays:
        class Handler(BaseHTTPRequestHandler):
            wait = delay

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.wait:
                    time.sleep(self.wait)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.request_queue_size = 64
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        servers.append(httpd)
    print(json.dumps([[s.server_address[1], d] for s, d in zip(servers, delays)]), flush=True)
    # Until stdin closes (the parent ended) or the deadline: never outlive the benchmark for long.
    threading.Thread(target=lambda: (time.sleep(CHILD_DEADLINE_S), os._exit(0)), daemon=True).start()
    while sys.stdin.readline():
        pass


# ---------------------------------------------------------------------------------------------------- probes
def tasks(endpoints: list[tuple[int, float]], timeout: float) -> list[Any]:
    from liferaft.health import ProbeTask
    from liferaft.health.probes import http_probe

    return [ProbeTask(probe=f"http:{port}", kind="http", plane="data", site="bench", target=str(port),
                      timeout=timeout, fn=lambda p=port: http_probe("http", "127.0.0.1", p, "/healthz",
                                                                    expect_status=200, timeout=timeout))
            for port, _ in endpoints]


def time_liferaft(endpoints: list[tuple[int, float]], timeout: float) -> tuple[float, int]:
    from liferaft.health import run_probes

    t0 = time.monotonic()
    results = run_probes(tasks(endpoints, timeout))
    return time.monotonic() - t0, sum(1 for e in results if e.ok)


def time_pool(endpoints: list[tuple[int, float]], timeout: float, workers: int) -> tuple[float, int]:
    t0 = time.monotonic()
    ok = 0
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for fut in [ex.submit(t.fn) for t in tasks(endpoints, timeout)]:
            try:
                fut.result()
                ok += 1
            except Exception:  # noqa: BLE001, S110 - a failed probe simply does not count as ok
                pass
    return time.monotonic() - t0, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=200)
    ap.add_argument("--slow", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=5.0, help="per-probe timeout")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.endpoints, args.slow, args.seed)
        return 0

    child = subprocess.Popen([sys.executable, __file__, "--serve", "--endpoints", str(args.endpoints),
                              "--slow", str(args.slow), "--seed", str(args.seed)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        endpoints = [(int(p), float(d)) for p, d in json.loads(child.stdout.readline())]
        slowest = max(endpoints, key=lambda e: e[1])
        singles, ours, pools, ok_ours = [], [], [], 0
        time_liferaft(endpoints[:20], args.timeout)  # warm-up: imports, first connections
        for _ in range(args.runs):
            singles.append(time_liferaft([slowest], args.timeout)[0])
            t, ok_ours = time_liferaft(endpoints, args.timeout)
            ours.append(t)
        pools.append(time_pool(endpoints, args.timeout, 8)[0])
    finally:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    single, total, pool = statistics.median(singles), statistics.median(ours), statistics.median(pools)
    ratio = total / single
    row = {"endpoints": args.endpoints, "slow": args.slow, "slowest_delay_s": slowest[1], "ok": ok_ours,
           "slowest_single_s": round(single, 3), "liferaft_total_s": round(total, 3), "ratio": round(ratio, 2),
           "pool8_total_s": round(pool, 3), "pool8_ratio": round(pool / single, 2), "target_ratio": TARGET,
           "runs": args.runs, "liferaft_runs_s": [round(t, 3) for t in ours]}
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"health bench: {args.endpoints} endpoints on 127.0.0.1, {args.slow} slow (0.5-1.0 s), "
              f"median of {args.runs} runs")
        print(f"{'what':<34}{'time':>9}{'x slowest':>11}")
        print(f"{'slowest single probe (1.0 s)':<34}{single:>8.3f}s{1.0:>10.2f}x")
        print(f"{'liferaft runner, all at once':<34}{total:>8.3f}s{ratio:>10.2f}x   target <= {TARGET}x "
              f"({'met' if ratio <= TARGET else 'MISSED'}; {ok_ours}/{args.endpoints} ok)")
        print(f"{'ThreadPoolExecutor(8), same probes':<34}{pool:>8.3f}s{pool / single:>10.2f}x   (comparison)")
    return 0 if ratio <= TARGET and ok_ours == args.endpoints else 1


if __name__ == "__main__":
    sys.exit(main())
