"""MySQL/MariaDB benchmark: liferaft's seed (the movers' dump into the target + GTID replication start) vs the plain
`mysqldump --single-transaction | mariadb`, the write freeze under load, and the verification.

Starts two throwaway MariaDB servers on 127.0.0.1 (its own temp dir, killed at the end), loads about --mb MB into the
source, then, in one run (compare the ratios: the machine is shared):
  peer      `mysqldump --single-transaction --quick db | mariadb db`, timed as one shell pipeline
  liferaft  `liferaft.datasets.mariadb.seed_replica` (target emptied, dump with --master-data --gtid piped into it,
            replication started and running)
  freeze    with a writer inserting at --rate rows/s at the source through replication: read_only at the source ->
            MASTER_GTID_WAIT at the target -> replica reset (what `freeze` does), repeated --freezes times
  verify    `liferaft.movers.mysql.verify` (per table count + order-independent hash + schema), both ends

    python -m bench.bench_mariadb [--mb 1024] [--rate 200] [--freezes 5] [--ours-first] [--json]
Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from liferaft.datasets.mariadb import seed_replica
from liferaft.movers import mysql as my

USER, PASSWORD, DB = "bench", "bench-pw", "benchdb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, root: Path, name: str, server_id: int) -> None:
        self.dir = root / name
        self.port = _free_port()
        self.sock = str(self.dir / "sock")
        self.server_id = server_id
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True)
        shutil.chown(self.dir, "mysql", "mysql")
        shutil.chown(data, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}", "--skip-test-db",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}", f"--socket={self.sock}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--server-id={self.server_id}",
             f"--log-bin={data}/binlog", "--binlog-format=ROW", f"--pid-file={self.dir}/pid",
             f"--log-error={self.dir}/error.log", "--innodb-buffer-pool-size=256M", "--skip-name-resolve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(300):
            if subprocess.run(["mariadb-admin", f"--socket={self.sock}", "-u", "root", "ping"],
                              capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)
        sql = (f"SET sql_log_bin=0; CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; "
               f"GRANT ALL ON *.* TO '{USER}'@'%' WITH GRANT OPTION; CREATE DATABASE {DB};")
        subprocess.run(["mariadb", f"--socket={self.sock}", "-u", "root"], input=sql.encode(), check=True)

    def conn(self) -> my.MyConn:
        return my.MyConn("127.0.0.1", self.port, USER, PASSWORD, DB)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def load(conn: my.MyConn, mb: int) -> int:
    """Three tables (two with many small rows, one with blobs), about `mb` MB of row data in all."""
    rows = 0
    with my.connect(conn) as c:
        my.query(c, "CREATE TABLE accounts (id BIGINT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(64), balance "
                    "DECIMAL(14,2), note VARCHAR(255), at DATETIME(6))")
        my.query(c, "CREATE TABLE events (id BIGINT PRIMARY KEY AUTO_INCREMENT, account BIGINT, kind VARCHAR(16), "
                    "body TEXT, KEY (account))")
        my.query(c, "CREATE TABLE files (id BIGINT PRIMARY KEY AUTO_INCREMENT, data MEDIUMBLOB)")
        target = mb * 1_000_000
        written = 0
        with c.cursor() as cur:
            while written < target:
                batch = [(f"acct {rows + i}", (rows + i) % 100000 / 7, os.urandom(60).hex()) for i in range(1000)]
                cur.execute("INSERT INTO accounts (name, balance, note, at) VALUES "
                            + ", ".join(["(%s, %s, %s, NOW(6))"] * len(batch)), [v for r in batch for v in r])
                ev = [((rows + i) % 5000, "kind" + str(i % 7), os.urandom(100).hex()) for i in range(1000)]
                cur.execute("INSERT INTO events (account, kind, body) VALUES "
                            + ", ".join(["(%s, %s, %s)"] * len(ev)), [v for r in ev for v in r])
                cur.execute("INSERT INTO files (data) VALUES " + ", ".join(["(%s)"] * 4),
                            [os.urandom(64 * 1024) for _ in range(4)])
                rows += 2004
                written += 1000 * (40 + 120 + 20) + 1000 * (220 + 20) + 4 * 65536
    return rows


def peer_copy(src: Server, tgt: Server) -> float:
    with my.connect(tgt.conn(), database=False) as t:
        my.reset_replica(t)
        my.query(t, f"DROP DATABASE IF EXISTS {DB}")
        my.query(t, f"CREATE DATABASE {DB}")
    with tempfile.TemporaryDirectory() as d:
        cnf = Path(d) / "c.cnf"
        cnf.write_text(f"[client]\nuser={USER}\npassword={PASSWORD}\nhost=127.0.0.1\nprotocol=tcp\n")
        os.chmod(cnf, 0o600)
        t0 = time.monotonic()
        subprocess.run(f"mysqldump --defaults-extra-file={cnf} -P {src.port} --single-transaction --quick {DB} | "
                       f"mariadb --defaults-extra-file={cnf} -P {tgt.port} {DB}", shell=True, check=True)
        return time.monotonic() - t0


def freezes(src: Server, tgt: Server, rate: float, count: int) -> list[float]:
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            try:
                with my.connect(src.conn()) as c:
                    while not stop.is_set():
                        my.query(c, "INSERT INTO events (account, kind, body) VALUES (1, 'w', 'x')")
                        time.sleep(1.0 / rate)
            except Exception:  # noqa: BLE001 - refused while read-only
                time.sleep(0.01)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    out = []
    try:
        for _ in range(count):
            seed_running = False
            with my.connect(tgt.conn(), database=False) as t:
                seed_running = my.replica_status(t) is not None
            if not seed_running:
                seed_replica(src.conn(), tgt.conn())
            time.sleep(2)
            with my.connect(src.conn(), database=False) as s, my.connect(tgt.conn(), database=False) as t:
                t0 = time.monotonic()
                my.set_read_only(s, True)
                assert my.wait_gtid(t, my.binlog_pos(s), 60)
                my.reset_replica(t)
                out.append(time.monotonic() - t0)
                my.set_read_only(s, False)
    finally:
        stop.set()
        th.join(5)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=1024)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--freezes", type=int, default=5)
    p.add_argument("--ours-first", action="store_true", help="time liferaft's seed before the peer's (caches)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="liferaft-bench-mariadb-"))
    os.chmod(root, 0o755)
    src, tgt = Server(root, "src", 1), Server(root, "tgt", 2)
    try:
        src.start()
        tgt.start()
        t0 = time.monotonic()
        rows = load(src.conn(), a.mb)
        load_s = time.monotonic() - t0
        with my.connect(src.conn()) as c:
            size = sum(t.bytes for t in my.tables(c, DB))
        def timed_seed() -> float:
            t0 = time.monotonic()
            seed_replica(src.conn(), tgt.conn())
            return time.monotonic() - t0

        if a.ours_first:
            ours = timed_seed()
            peer = peer_copy(src, tgt)
            timed_seed()  # leave the target replicating for what follows
        else:
            peer = peer_copy(src, tgt)
            ours = timed_seed()
        t0 = time.monotonic()
        with my.connect(src.conn()) as s, my.connect(tgt.conn()) as t:
            assert my.wait_gtid(t, my.binlog_pos(s), 60)
            problems = my.verify(s, t, DB, DB).problems()
        verify_s = time.monotonic() - t0
        fr = freezes(src, tgt, a.rate, a.freezes)
        result = {"mb_loaded": a.mb, "rows": rows, "bytes_on_disk": size, "load_s": round(load_s, 2),
                  "rows_out": [
                      {"what": "seed: mysqldump | mariadb (peer)" + (", timed second" if a.ours_first else ""),
                       "seconds": round(peer, 2), "ratio": 1.0},
                      {"what": "seed: liferaft (dump --master-data --gtid | mariadb + replication)",
                       "seconds": round(ours, 2), "ratio": round(ours / peer, 2)},
                      {"what": "verify: count + hash + schema, both ends", "seconds": round(verify_s, 2),
                       "ratio": None},
                      {"what": f"freeze under {a.rate:.0f} inserts/s (median of {len(fr)}, max)",
                       "seconds": round(statistics.median(fr), 3), "max_s": round(max(fr), 3), "ratio": None}],
                  "verify_problems": problems, "load_average": os.getloadavg()}
    finally:
        src.stop()
        tgt.stop()
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"MariaDB benchmark: {a.mb} MB loaded ({rows} rows, {size / 1e6:.0f} MB on disk at the source)")
        for r in result["rows_out"]:
            extra = f"  (max {r['max_s']} s)" if "max_s" in r else ""
            ratio = f"  {r['ratio']:.2f}x" if r["ratio"] is not None else ""
            print(f"  {r['what']:<70} {r['seconds']:>8.2f} s{ratio}{extra}")
        print(f"  verify problems: {problems or 'none'}; load average {os.getloadavg()[0]:.1f}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
