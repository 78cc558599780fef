"""Server create -> SSH login ready, through the `hcloud` adapter against the lab's Hetzner cloud (root needed).

Run: python -m bench.bench_hcloud [--runs N] [--parallel K]
Starts a lab of its own (no example app), creates N servers one after another (each: create, wait until an SSH
login checked against the pinned, injected host key succeeds, delete), then K servers at once, and prints the times.
The lab cloud builds a host in a fraction of a second; a real cloud takes tens of seconds: this measures liferaft's
own overhead (API calls, key generation, polling, the verified login), not a cloud's boot time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from liferaft.lab.core import Lab
from liferaft.providers.base import HostSpec
from liferaft.providers.registry import open_provider


def _resolve(ref: str) -> str:
    return Path(ref.partition(":")[2]).read_text().strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hcloud-") as d:
        lab = Lab(Path(d) / "lab")
        lab.up(example=False, die_with_caller=True)
        try:
            info = lab.info
            compute = open_provider("hetzner", {
                "type": "hcloud", "endpoint": info.endpoints["hcloud"] + "/v1",
                "credentials": {"token": f"file:{info.secrets_dir / 'hcloud_token'}"},
                "private_key": f"file:{info.secrets_dir / 'id_ed25519'}"}, _resolve,
                state_dir=Path(d) / "state").require("compute")

            def one(name: str) -> tuple[float, float]:
                t0 = time.perf_counter()
                host = compute.create_host(HostSpec(name=name, ports=(8080,)))
                compute.wait_reachable(host, timeout=60)
                ready = time.perf_counter() - t0
                t1 = time.perf_counter()
                compute.destroy_host(host.id)
                return ready, time.perf_counter() - t1

            seq = [one(f"bench-{i}") for i in range(args.runs)]
            ready = [r for r, _ in seq]
            gone = [g for _, g in seq]
            print(f"sequential, {args.runs} servers: create -> SSH login ready median {statistics.median(ready):.2f} s "
                  f"(min {min(ready):.2f}, max {max(ready):.2f}); delete median {statistics.median(gone):.2f} s")
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.parallel) as pool:
                par = list(pool.map(one, [f"bench-p{i}" for i in range(args.parallel)]))
            print(f"{args.parallel} at once: all ready and deleted in {time.perf_counter() - t0:.2f} s; create -> "
                  f"ready max {max(r for r, _ in par):.2f} s")
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
