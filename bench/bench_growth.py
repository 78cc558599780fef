"""Growth benchmark (issue 26): how liferaft's object sync, plan and verification grow from 1,000 to 1,000,000
objects, against rclone at the same sizes in the same run.

    nice -n 19 python -m bench.bench_growth [--sizes 1000,10000,100000,1000000] [--object-bytes 1024]
                                            [--workers 16] [--dir /var/tmp] [--no-rclone] [--json]
                                            [--rows FILE] [--from-rows FILE] [--work DIR --keep]
                                            [--link-above N] [--peer-last]

Source and target: libcloud's `local` storage driver (liferaft's libcloud adapter), one directory per bucket on
the local disk (page cache). It is the fastest honest source the lab offers at a million objects: moto and
s3rver take 2-5 ms of server CPU per object (an hour and more per pass at 1M on this machine), and tmpfs would
need ~4 KiB of RAM per 1 KiB object per copy (12+ GiB for source + two targets at 1M, on a machine shared by
eight people). rclone works on the same directories with its local backend. Keys are `dNNNN/oNNNNNNN`, 1,000 per
"directory" prefix (object stores shard keys that way too; one flat directory of a million files would measure the
file system, not the tools).

Per size N (the source is filled once and grown; each tool copies into a fresh target bucket), each operation runs
in a child process, timed from outside, its peak RSS its own VmHWM (/proc; getrusage's ru_maxrss of a child
counts the parent's memory at the fork, see bench_objects.peak_rss_kib):
  sync      liferaft objects.sync (16 workers) into an empty bucket   | rclone copy (--transfers 16 --checkers 16)
  resync    the same again, nothing changed                            | rclone sync (size + modtime, no reads)
  observe   the bucket kind's observe (what `plan` lists)              | rclone size
  verify    verify_sync: every object read on both sides, by sha256   | rclone check (md5 of both sides)
  gate      the bucket kind's verify after the freeze (verify_delta:   | -
            listings + manifest, nothing read back)
Times are wall times of each process (Python's or Go's start included: ~0.3 s against ~0.05 s, visible at 1,000
objects only); liferaft's in-process time is in --json. liferaft's listing time is the time from the sync's start to its plan (both listings and the manifest joined).
The target: per-object time and peak RSS flat within 2x from 10k to the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
PER_PREFIX = 1000
RCLONE_FLAGS = ["--transfers", "16", "--checkers", "16"]


# ---------------------------------------------------------------------------------------------------- child side
def _endpoint(root: str, provider: str, bucket: str) -> Any:
    from liferaft.movers.objects import Endpoint
    from liferaft.providers.libcloud_ import LibcloudAdapter

    def make() -> Any:
        return LibcloudAdapter(provider, storage={"driver": "local", "path": root}).objects

    return Endpoint(provider, make(), bucket, factory=make)


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_main(argv: list[str]) -> None:
    """`child OP CONFIG`: one operation; prints one JSON line with its figures."""
    op, cfg = argv[0], json.loads(argv[1])
    src = _endpoint(cfg["src_root"], "src", cfg["bucket"])
    dst = _endpoint(cfg["dst_root"], "dst", cfg["target"])
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    if op in ("sync", "resync"):
        from liferaft.movers.objects import SyncOptions, sync

        marks: dict[str, float] = {}
        progress = Path(cfg["progress"])

        def on_event(ev: Any) -> None:
            if ev.kind == "objects.plan":
                marks.setdefault("plan", time.monotonic())
            if ev.kind == "objects.progress":  # a run cut short still says how far it got, how fast, how big
                with progress.open("a") as f:
                    f.write(json.dumps({"n": cfg["n"], "op": op, "done": ev.data["done"], "of": ev.data["total"],
                                        "seconds": time.monotonic() - t0, "listing_s": marks["plan"] - t0,
                                        "rss_kib": _vmhwm_kib()}) + "\n")

        r = sync(src, dst, cfg["state"], SyncOptions(workers=cfg["workers"], progress_interval=30.0, create_target=True),
                 events=on_event)
        out.update(copied=r.copied, skipped=r.skipped, listed=r.listed, listing_s=marks["plan"] - t0)
    elif op == "observe":
        from types import SimpleNamespace

        from liferaft.datasets.base import Dataset, Where
        from liferaft.datasets.bucket import Bucket
        from liferaft.stack import load_stack

        stack = load_stack(cfg["stack"])
        size = Bucket().observe(Where(stack, "a", "b", cfg["state"], None),  # type: ignore[arg-type]
                                Dataset("bucket", "media", SimpleNamespace(name=cfg["bucket"])))
        out.update(listed=size.items, bytes=size.bytes)
    elif op == "verify":
        from liferaft.movers.objects import verify_sync

        rep = verify_sync(src, dst, workers=cfg["workers"])
        out.update(listed=rep.checked, ok=rep.ok)
    elif op == "gate":
        from liferaft.datasets.bucket import verify_delta

        problems, listed = verify_delta(src, dst, [], cfg["state"])
        out.update(listed=listed, ok=not problems)
    else:
        raise SystemExit(f"unknown op {op}")
    out.update(seconds=time.monotonic() - t0, rss_kib=_vmhwm_kib())
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------------- parent side
def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run cmd; (wall seconds, its peak RSS in KiB from /proc/PID/status VmHWM polled every 20 ms, stdout)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        peak = 0
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        dt = time.monotonic() - t0
        err = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {err[-2000:]}")
        out.seek(0)
        return dt, peak, out.read()


def _key(i: int) -> str:
    return f"d{i // PER_PREFIX:04d}/o{i:07d}"


def fill(root: Path, bucket: str, start: int, end: int, size: int, link_above: int = 0) -> None:
    """Objects start..end-1 of the source bucket: `dNNNN/oNNNNNNN`, `size` random bytes each; with link_above, object
    i >= link_above is a hard link to object i % link_above (same bytes, its own key: a fill ~5x cheaper)."""
    base = root / bucket
    for i in range(start, end):
        d = base / f"d{i // PER_PREFIX:04d}"
        if i % PER_PREFIX == 0 or i == start:
            d.mkdir(parents=True, exist_ok=True)
        if link_above and i >= link_above:
            os.link(base / _key(i % link_above), base / _key(i))
        else:
            (base / _key(i)).write_bytes(os.urandom(size))


def filled_already(root: Path, bucket: str) -> int:
    """How many objects an earlier fill of this source made (it fills in key order)."""
    base = root / bucket
    return sum(len(os.listdir(base / d)) for d in os.listdir(base)) if base.is_dir() else 0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _save(path: str | None, row: dict[str, Any]) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def run_size(work: Path, n: int, workers: int, rclone_on: bool, rows_file: str | None, peer_last: bool = False
             ) -> list[dict[str, Any]]:
    src_root, dst_root = work / "src", work / "dst"
    state = work / f"state-{n}"
    lr_bucket, rc_bucket = f"lr-{n}", f"rc-{n}"
    cfg = {"src_root": str(src_root), "dst_root": str(dst_root), "bucket": "bench", "target": lr_bucket,
           "state": str(state), "workers": workers, "stack": str(work / "stack.yaml"), "n": n,
           "progress": rows_file + ".progress" if rows_file else os.devnull}
    rows: list[dict[str, Any]] = []

    def lr(op: str) -> dict[str, Any]:
        wall, _, stdout = measured([sys.executable, "-m", "bench.bench_growth", "child", op, json.dumps(cfg)])
        r = json.loads(stdout.strip().splitlines()[-1])
        row = {"n": n, "op": op, "tool": "liferaft", "seconds": wall, "in_process_s": r["seconds"],
               "rss_mib": r["rss_kib"] / 1024, "listing_s": r.get("listing_s")}
        if op == "sync":
            assert r["copied"] == n, r
            row["manifest_mb"] = _du(state / "objects-manifest.sqlite") / 1e6
        if op == "resync":
            assert r["copied"] == 0 and r["skipped"] == n, r
        if op in ("observe", "verify", "gate"):
            assert r["listed"] == n and r.get("ok", True), r
        rows.append(row)
        _save(rows_file, row)
        print(f"  {n:>8} {op:<8} liferaft {wall:8.2f} s  {r['rss_kib'] / 1024:6.1f} MiB", file=sys.stderr,
              flush=True)
        return row

    def rc(op: str, args: list[str]) -> None:
        env = {**os.environ, "RCLONE_CONFIG": "/dev/null"}
        wall, peak, _ = measured(["rclone", *args, *RCLONE_FLAGS], env)
        rows.append({"n": n, "op": op, "tool": "rclone", "seconds": wall, "rss_mib": peak / 1024,
                     "listing_s": None})
        _save(rows_file, rows[-1])
        print(f"  {n:>8} {op:<8} rclone   {wall:8.2f} s  {peak / 1024:6.1f} MiB", file=sys.stderr, flush=True)

    src_dir, lr_dir, rc_dir = src_root / "bench", dst_root / lr_bucket, dst_root / rc_bucket
    peers = {"sync": ["copy", str(src_dir), str(rc_dir)], "resync": ["sync", str(src_dir), str(rc_dir)],
             "observe": ["size", str(src_dir)], "verify": ["check", str(src_dir), str(rc_dir)]}
    if peer_last:  # liferaft's curve first (the target), then rclone's: a run cut short has the former
        lr("observe")
        if rclone_on:
            rc("observe", peers["observe"])
        for op in ("sync", "resync", "gate", "verify"):
            lr(op)
        for op in ("sync", "resync", "verify"):
            if rclone_on:
                rc(op, peers[op])
    else:
        for op in ("observe", "sync", "resync", "gate", "verify"):  # each op's pair together
            lr(op)
            if rclone_on and op in peers:
                rc(op, peers[op])
    shutil.rmtree(lr_dir, ignore_errors=True)
    shutil.rmtree(rc_dir, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| objects | operation | tool | seconds | µs/object | peak RSS MiB | listing s | manifest MB |",
           "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (["sync", "resync", "observe", "gate", "verify"].index(r["op"]), r["n"],
                                         r["tool"])):
        listing = f"{r['listing_s']:.2f}" if r.get("listing_s") is not None else "-"
        manifest = f"{r['manifest_mb']:.1f}" if r.get("manifest_mb") is not None else "-"
        out.append(f"| {r['n']:,} | {r['op']} | {r['tool']} | {r['seconds']:.2f} | {r['seconds'] / r['n'] * 1e6:.0f}"
                   f" | {r['rss_mib']:.1f} | {listing} | {manifest} |")
    return "\n".join(out)


def growth(rows: list[dict[str, Any]]) -> str:
    """Per operation and tool: per-object time and peak RSS at the largest size against 10k (target <= 2x)."""
    sizes = sorted({r["n"] for r in rows})
    base = 10_000 if 10_000 in sizes else sizes[0]
    top = sizes[-1]
    head = f"| operation | tool | µs/object {base:,} -> {top:,} | x | peak RSS MiB {base:,} -> {top:,} | x | within 2x |"
    lines = [head, "|---|---|---|---:|---|---:|---|"]
    by = {(r["op"], r["tool"], r["n"]): r for r in rows}
    for op in ["sync", "resync", "observe", "gate", "verify"]:
        for tool in ["liferaft", "rclone"]:
            a, b = by.get((op, tool, base)), by.get((op, tool, top))
            if a is None or b is None or base == top:
                continue
            ta, tb = a["seconds"] / base * 1e6, b["seconds"] / top * 1e6
            ok = tb / ta <= 2 and b["rss_mib"] / a["rss_mib"] <= 2
            curve = " / ".join(f"{by[(op, tool, s)]['seconds'] / s * 1e6:.0f}" for s in sizes if (op, tool, s) in by)
            mem = " / ".join(f"{by[(op, tool, s)]['rss_mib']:.0f}" for s in sizes if (op, tool, s) in by)
            lines.append(f"| {op} | {tool} | {curve} | {tb / ta:.2f} | {mem} | {b['rss_mib'] / a['rss_mib']:.2f} | "
                         f"{'yes' if ok else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--object-bytes", type=int, default=1024)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--dir", default="/var/tmp", help="where the buckets' directories go (a local disk)")
    p.add_argument("--no-rclone", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rows", help="append each row to this file (JSON lines) as it is measured")
    p.add_argument("--work", help="the work directory (default: a new one under --dir); a source filled there "
                   "before is reused and grown")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--link-above", type=int, default=0, help="objects from this index on are hard links to the "
                   "first ones (i %% N): a fill of a million files takes most of an hour on a loaded machine")
    p.add_argument("--peer-last", action="store_true", help="all of liferaft's operations first, then rclone's")
    p.add_argument("--from-rows", help="print the tables of a --rows file (e.g. of a run cut short) and exit")
    a = p.parse_args(argv)
    if a.from_rows:
        rows = [json.loads(line) for line in Path(a.from_rows).read_text().splitlines() if line.strip()]
        print(table(rows) + "\n\n" + growth(rows))
        return {"rows": rows}
    sizes = sorted(int(s) for s in a.sizes.split(","))
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="liferaft-growth-", dir=a.dir))
    (work / "stack.yaml").write_text(
        "version: 1\nname: growth\nproviders:\n"
        f"  src: {{type: libcloud, storage: {{driver: local, path: {work / 'src'}}}}}\n"
        f"  dst: {{type: libcloud, storage: {{driver: local, path: {work / 'dst'}}}}}\n"
        "  hosts: {type: ssh, user: root, private_key: file:key, hosts: [{name: a, address: 127.0.0.2, host_keys: "
        "['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA/ugkVGSOctNgI54jGZg2AY4iSHYxzkbPrw/BdRwxD9']}]}\n"
        "sites:\n  a: {compute: hosts, objects: src}\n  b: {compute: hosts, objects: dst}\nprimary: a\n"
        "alternates: [b]\nservices: {}\n")
    rows: list[dict[str, Any]] = []
    filled = filled_already(work / "src", "bench")
    t_start = time.monotonic()
    try:
        for n in sizes:
            t0 = time.monotonic()
            if n > filled:
                fill(work / "src", "bench", filled, n, a.object_bytes, a.link_above)
                filled = n
            print(f"filled {n:,} objects in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
            rows.extend(run_size(work, n, a.workers, not a.no_rclone, a.rows, a.peer_last))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows,
              "command": "python -m bench.bench_growth " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.platform()}, {os.cpu_count()} cores, load at the end {load[0]:.1f} / "
                         f"{load[1]:.1f} / {load[2]:.1f}", "total_s": round(time.monotonic() - t_start)}
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['command']}  ({result['date']}; {result['machine']}; {result['total_s']} s)\n")
        print(table(rows))
        print()
        print(growth(rows))
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        main()
