"""Droplet create -> SSH login ready, through the `digitalocean` adapter (libcloud's DigitalOcean driver) against the
lab's DigitalOcean cloud; the same through `hcloud` against the lab's Hetzner cloud, in the same lab, for comparison
(root needed).

Run: python -m bench.bench_do [--runs N] [--parallel K] [--clouds digitalocean,hcloud] [--write]
Starts a lab of its own (no example app). Per cloud: N servers one after another (each: create with its firewall,
wait until an SSH login checked against the pinned, injected host key succeeds, delete and wait until the API no
longer lists it), then K at once. The lab clouds build a host in a fraction of a second; a real cloud takes tens of
seconds: this measures liferaft's own overhead (API calls, key generation, firewall and tag calls, polling, the
verified login), not a cloud's boot time. `--write` replaces the section of bench/RESULTS.md between its markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liferaft.lab.core import Lab
from liferaft.providers.base import HostSpec
from liferaft.providers.registry import open_provider

BEGIN, END = "<!-- provider clouds: bench/bench_do.py -->", "<!-- end of provider clouds -->"


def _resolve(ref: str) -> str:
    return Path(ref.partition(":")[2]).read_text().strip()


def config(cloud: str, info: Any) -> dict[str, Any]:
    key = f"file:{info.secrets_dir / 'id_ed25519'}"
    if cloud == "digitalocean":
        return {"type": "digitalocean", "endpoint": info.endpoints["digitalocean"], "region": "fra1",
                "size": "s-1vcpu-1gb", "image": "debian-12-x64",
                "credentials": {"token": f"file:{info.secrets_dir / 'do_token'}"}, "private_key": key}
    return {"type": "hcloud", "endpoint": info.endpoints["hcloud"] + "/v1", "server_type": "cx22",
            "image": "debian-12", "location": "fsn1",
            "credentials": {"token": f"file:{info.secrets_dir / 'hcloud_token'}"}, "private_key": key}


def measure(cloud: str, info: Any, state: Path, runs: int, parallel: int) -> dict[str, Any]:
    compute = open_provider(cloud, config(cloud, info), _resolve, state_dir=state).require("compute")

    def one(name: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        host = compute.create_host(HostSpec(name=name, ports=(8080,), private_ports=(5432,)))
        compute.wait_reachable(host, timeout=60)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        compute.destroy_host(host.id)
        return ready, time.perf_counter() - t1

    seq = [one(f"bench-{cloud[:2]}-{i}") for i in range(runs)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        par = list(pool.map(one, [f"bench-{cloud[:2]}-p{i}" for i in range(parallel)]))
    return {"cloud": cloud, "ready": [r for r, _ in seq], "gone": [g for _, g in seq],
            "parallel": parallel, "parallel_total": time.perf_counter() - t0, "parallel_max": max(r for r, _ in par)}


def table(rows: list[dict[str, Any]], command: str) -> str:
    adapter = {"digitalocean": "`digitalocean` (libcloud's DigitalOcean driver, API v2)",
               "hcloud": "`hcloud` (Hetzner's `hcloud` library)"}
    lines = [f"## Provider clouds: server create -> verified SSH login (`{command}`)", "",
             (f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.platform()}, "
              f"{os.cpu_count()} cores, shared (load average {os.getloadavg()[0]:.1f} at the end). The lab "
              "clouds build a host in well under a second: these are liferaft's own costs (API calls, host key "
              "generation, firewall, polling, the login checked against the pinned key), not a cloud's boot."), "",
             ("| cloud / adapter | runs | create -> SSH ready, median s | min | max | delete, median s | "
              "K at once: all ready+deleted s (max ready) |"), "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ready = r["ready"]
        lines.append(f"| {adapter[r['cloud']]} | {len(ready)} | {statistics.median(ready):.2f} | {min(ready):.2f} | "
                     f"{max(ready):.2f} | {statistics.median(r['gone']):.2f} | {r['parallel']}: "
                     f"{r['parallel_total']:.2f} ({r['parallel_max']:.2f}) |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--clouds", default="digitalocean,hcloud")
    ap.add_argument("--write", action="store_true", help="write the table into bench/RESULTS.md")
    args = ap.parse_args()
    command = "python -m bench.bench_do " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-do-") as d:
        lab = Lab(Path(d) / "lab")
        lab.up(example=False, die_with_caller=True)
        try:
            rows = [measure(c, lab.info, Path(d) / f"state-{c}", args.runs, args.parallel)
                    for c in args.clouds.split(",")]
        finally:
            lab.down()
    text = table(rows, command.strip())
    print(text)
    if args.write:
        from bench.bench_drill import write_section

        write_section(text, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
