"""PostgreSQL benchmark: liferaft dump/restore vs pg_dump -Fd -j2 + pg_restore -j2, and the write freeze of a
logical-replication cutover under a pgbench write load. Starts its own two local clusters.

    python -m bench.bench_postgres [--scale 70] [--jobs 2] [--load-clients 4] [--json]

--scale 70 makes a ~1 GB database (pgbench -i). Takes a few minutes; run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_objects import _row, table


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=70)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--load-clients", type=int, default=4)
    p.add_argument("--load-seconds", type=float, default=8.0, help="write load before the cutover")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import conn_args, connect, pg_tool, tool_env
    from tests.pg_fixtures import PgCluster

    rows: list[dict[str, Any]] = []
    # production-like durability semantics for commits (the test fixture's default is synchronous_commit=off);
    # fsync stays off so the benchmark does not hammer the shared machine's disk (same for liferaft and the peer)
    settings = {"synchronous_commit": "on"}
    src_c = PgCluster.start("bench-src", settings=settings)
    tgt_c = PgCluster.start("bench-tgt", settings=settings)
    try:
        src = src_c.create_db("bench")
        with tool_env(src, tgt_c.conn()) as env:
            t_init = _timed([pg_tool("pgbench"), *conn_args(src)[:-3], "-i", "-s", str(a.scale), "-q", "--no-vacuum",
                             src.dbname], env)
            with connect(src) as c:
                c.execute("VACUUM ANALYZE")
                size = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]

            # -- peer: pg_dump -Fd -j + pg_restore -j, as users run it (default compression) and with -Z0
            peer: dict[str, float] = {}
            for label, extra in (("default", []), ("Z0", ["-Z", "0"])):
                base = tgt_c.create_db("peer")
                work = Path(tempfile.mkdtemp(prefix="liferaft-bench-pg-"))
                t0 = time.monotonic()
                subprocess.run([pg_tool("pg_dump"), *conn_args(src), "-Fd", "-j", str(a.jobs), *extra, "-f",
                                str(work / "d")], env=env, check=True, capture_output=True)
                subprocess.run([pg_tool("pg_restore"), *conn_args(base), "-j", str(a.jobs), "--no-owner",
                                "--no-acl", str(work / "d")], env=env, check=True, capture_output=True)
                peer[label] = time.monotonic() - t0
                shutil.rmtree(work, ignore_errors=True)
                tgt_c.drop_db("peer")
            t_peer = peer["default"]

        # -- liferaft dump/restore
        res = pg.dump_restore(src, tgt_c.conn("lr"), jobs=a.jobs)
        t_ver0 = time.monotonic()
        pg.verify(src, tgt_c.conn("lr"))
        t_verify = time.monotonic() - t_ver0
        rows.append(_row(f"dump/restore {size / 1e9:.2f} GB (pgbench -s {a.scale}), seconds", res.total_s, t_peer,
                         "<=", 1.1, f"peer: pg_dump -Fd -j{a.jobs} + pg_restore -j{a.jobs} (default compression); "
                         f"liferaft dumps with -Z0; verify (count+hash+schema) afterwards {t_verify:.1f} s: ok"))
        rows.append(_row("dump/restore vs the peer also uncompressed (-Z0), seconds", res.total_s, peer["Z0"], "<=",
                         1.1, f"peer: pg_dump -Fd -j{a.jobs} -Z0 + pg_restore -j{a.jobs}"))
        tgt_c.drop_db("lr")

        # -- logical replication + cutover under a write load
        target = tgt_c.conn("logical")
        t0 = time.monotonic()
        rep = pg.start(src, target, timeout=1800, replica_identity_full=True)  # pgbench_history has no key
        t_sync = time.monotonic() - t0
        with tool_env(src) as env:
            load = subprocess.Popen([pg_tool("pgbench"), *conn_args(src)[:-3], "-n", "-c", str(a.load_clients),
                                     "-j", "2", "-T", "600", "-P", "1", src.dbname], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lags: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    lags.append(pg.lag(rep).bytes)
                    time.sleep(0.5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(a.load_seconds)
            stop.set()
            sampler.join()
            cut = pg.cutover(rep)
            try:
                _, err = load.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                load.kill()
                _, err = load.communicate()
        tps = [float(x.split("tps")[0].split(",")[-1]) for x in err.splitlines() if x.startswith("progress:")
               and " tps" in x]
        t_ver0 = time.monotonic()
        report = pg.verify(src, target)
        t_verify = time.monotonic() - t_ver0
        lags.sort()
        median_lag = lags[len(lags) // 2] if lags else 0
        rows.append(_row("logical cutover write freeze under pgbench load, seconds", cut.freeze_s, float("nan"),
                         "<", 1.0, f"initial sync {t_sync:.1f} s; load ~{(sum(tps) / len(tps)) if tps else 0:.0f} tps "
                         f"({a.load_clients} clients); median lag {median_lag / 1e3:.0f} kB; catch-up "
                         f"{cut.catch_up_s:.3f} s; {cut.sessions_ended} sessions ended; "
                         f"verify {t_verify:.1f} s: {'ok' if report.ok else 'DIFFERS'}", ratio=cut.freeze_s))
        pg.undo_read_only(src)
    finally:
        src_c.stop()
        tgt_c.stop()
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows, "pgbench_init_s": t_init,
              "command": "python -m bench.bench_postgres " + " ".join(argv if argv is not None else sys.argv[1:])}
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(rows))
    return result


if __name__ == "__main__":
    main()
