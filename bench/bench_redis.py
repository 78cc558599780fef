"""Redis: liferaft's seed (REPLICAOF + the initial sync waited for) and verify (key count + per-key digest over a full
SCAN at both ends) of 1M keys, against the peer a person uses by hand: `redis-cli --rdb` (a snapshot over the
replication protocol) + a new redis-server loading it.

Run: python -m bench.bench_redis [--keys 1000000] [--rounds 3] [--write]
Local servers on loopback (Debian's redis-server 7.0), no lab needed; not in CI. The source holds `--keys` keys:
90 % strings of 100 bytes (DEBUG POPULATE), the rest hashes of 10 fields. Each round: an empty target (with save
points, as redis.yml's servers have) replicates the source (seed: until its link is up and the sync over; durable:
until the BGSAVE liferaft starts after a diskless load is over) and liferaft's digest compares both ends side by
side; the peer dumps the RDB and a fresh server loads it. Medians of `--rounds`, alternating who goes first. `--write` replaces the section of bench/RESULTS.md between its markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liferaft.movers import redis_ as r

BEGIN, END = "<!-- redis: bench/bench_redis.py -->", "<!-- end of redis -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, root: Path, name: str, *extra: str) -> None:
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.dir), "--save", "", "--appendonly", "no",
                                      "--repl-diskless-sync-delay", "0", "--enable-debug-command", "local", *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.conn = r.RedisConn("127.0.0.1", self.port)

    def ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if int(r.info(self.conn, "persistence").get("loading", 0)) == 0:
                    return
            except Exception:  # noqa: BLE001, S110 - not listening yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} not ready")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def populate(src: Server, keys: int) -> None:
    c = r.client(src.conn, 300)
    strings = keys * 9 // 10
    c.execute_command("DEBUG", "POPULATE", strings, "s", 100)
    pipe = c.pipeline(transaction=False)
    for i in range(keys - strings):
        pipe.hset(f"h:{i}", mapping={f"f{j}": f"v{i}.{j}" for j in range(10)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    assert c.dbsize() == keys, c.dbsize()


def liferaft_round(src: Server, root: Path) -> dict[str, float]:
    # The target persists like redis.yml's servers (save points): after its diskless load, liferaft starts the
    # BGSAVE that leaves the RDB on disk; "durable" is when that save is over.
    tgt = Server(root, f"tgt-{time.monotonic_ns()}", "--save", "3600 1")
    try:
        tgt.ready()
        t0 = time.monotonic()
        r.replicate(tgt.conn, src.conn)
        r.wait_synced(tgt.conn, src.conn, 600)
        t1 = time.monotonic()
        while int(r.info(tgt.conn, "persistence")["rdb_bgsave_in_progress"]):
            time.sleep(0.02)
        t_durable = time.monotonic()
        assert (tgt.dir / "dump.rdb").exists()
        # Both ends digested side by side, as the kind's verify does (datasets/redis_._compare).
        with ThreadPoolExecutor(max_workers=2) as pool:
            fa, fb = pool.submit(r.digests, src.conn, timeout=300), pool.submit(r.digests, tgt.conn, timeout=300)
            a, b = fa.result(), fb.result()
        t2 = time.monotonic()
        missing, differ, extra = r.compare(a, b)
        assert not (missing or differ or extra) and len(a.keys) == len(b.keys) and a.digest == b.digest
        return {"seed": t1 - t0, "durable": t_durable - t0, "verify": t2 - t_durable,
                "total": t1 - t0 + t2 - t_durable}
    finally:
        tgt.stop()


def peer_round(src: Server, root: Path) -> dict[str, float]:
    d = root / f"peer-{time.monotonic_ns()}"
    d.mkdir()
    t0 = time.monotonic()
    subprocess.run(["redis-cli", "-p", str(src.port), "--rdb", str(d / "dump.rdb")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.monotonic()
    tgt = Server(root, d.name, "--dbfilename", "dump.rdb")
    try:
        tgt.ready()
        t2 = time.monotonic()
        assert r.client(tgt.conn).dbsize() == r.client(src.conn).dbsize()
        return {"seed": t2 - t0, "rdb": t1 - t0, "restore": t2 - t1, "total": t2 - t0}
    finally:
        tgt.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="liferaft-bench-redis-") as tmp:
        root = Path(tmp)
        src = Server(root, "src")
        try:
            src.ready()
            t0 = time.monotonic()
            populate(src, args.keys)
            fill_s = time.monotonic() - t0
            used = int(r.info(src.conn, "memory")["used_memory_dataset"])
            lf: list[dict[str, float]] = []
            peer: list[dict[str, float]] = []
            liferaft_round(src, root)  # warm-up (page cache, the script loaded)
            for i in range(args.rounds):
                order = (liferaft_round, peer_round) if i % 2 == 0 else (peer_round, liferaft_round)
                for fn in order:
                    (lf if fn is liferaft_round else peer).append(fn(src, root))
        finally:
            src.stop()

    def med(rows: list[dict[str, float]], k: str) -> float:
        return statistics.median(x[k] for x in rows)

    def spread(rows: list[dict[str, float]], k: str) -> str:
        return "/".join(f"{x[k]:.2f}" for x in rows)

    rows = [
        ("seed: REPLICAOF + initial sync vs redis-cli --rdb + load, seconds", med(lf, "seed"), med(peer, "seed"),
         "<= 1.0", (f"liferaft {spread(lf, 'seed')} s, peer {spread(peer, 'seed')} s (peer rdb "
                    f"{med(peer, 'rdb'):.2f} s + load {med(peer, 'restore'):.2f} s); liferaft's target loads from "
                    "the socket (repl-diskless-load on-empty-db)")),
        ("seed until the target's RDB is on disk (its BGSAVE after the diskless load) vs the peer, seconds",
         med(lf, "durable"), med(peer, "seed"), "-", (f"liferaft {spread(lf, 'durable')} s; the peer's RDB is on "
         "disk before its load")),
        ("seed + verify (key count + per-key digest, both ends) vs the peer's copy, seconds", med(lf, "total"),
         med(peer, "total"), "-", (f"verify {med(lf, 'verify'):.2f} s "
         f"({args.keys / med(lf, 'verify'):,.0f} keys/s per end, both ends side by side as the gate does, after "
         "the BGSAVE); the peer checks nothing")),
    ]
    load = os.getloadavg()
    lines = [BEGIN, "## Redis (bench/bench_redis.py)", "",
             f"Command: `python -m bench.bench_redis --keys {args.keys} --rounds {args.rounds}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
             (f"Machine: {platform.platform()}, {os.cpu_count()} cores, load average at the end "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared: compare the ratios).  "),
             (f"Source: redis-server {_version()} on loopback, {args.keys:,} keys "
             f"({used / 1e6:.0f} MB dataset, filled in {fill_s:.1f} s); medians of {args.rounds} rounds "
             "after a warm-up, alternating who goes first."), "",
             "| scenario | liferaft | peer | ratio | target | note |", "|---|---:|---:|---:|---|---|"]
    for name, a, b, target, note in rows:
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.3f} | {target} | {note} |")
    lines.append(END)
    text = "\n".join(lines)
    print(text)
    print("liferaft rounds:", [{k: round(v, 2) for k, v in x.items()} for x in lf], file=sys.stderr)
    print("peer rounds:", [{k: round(v, 2) for k, v in x.items()} for x in peer], file=sys.stderr)
    if args.write:
        path = Path(__file__).resolve().parent / "RESULTS.md"
        old = path.read_text()
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        path.write_text(new)
    return 0


def _version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    return next((p.split("=")[1] for p in out.split() if p.startswith("v=")), "?")


if __name__ == "__main__":
    sys.exit(main())

