#!/usr/bin/env python3
"""Write generator and ledger for the microblog: proves that no acknowledged write is lost by a move.

    writer.py run --url http://www.microblog.test:8080 --ledger ledger.sqlite --rate 50 --duration 60
    writer.py verify --ledger ledger.sqlite --dsn-file target.dsn        (exit 1 when any write is missing)

`run` POSTs at a fixed rate for a bounded time and records every attempt in a SQLite ledger; a write counts as
ACKNOWLEDGED only when the app answered 201 with the new post's id. `verify` looks every acknowledged write up at a
target database (id present, sha256 of the body equal). Also importable (liferaft.lab.example re-exports it):
`run_writer(...)`, `verify_ledger(ledger, dsn)`. `run` needs the standard library only; `verify` uses liferaft's
ledger check (liferaft.movers.ledger, the ledger's format is documented there).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import queue
import secrets
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

MAX_DURATION_S = 24 * 3600.0
MAX_RATE = 2000.0

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    seq          INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL,
    row_key,                         -- the post id; set only for acknowledged writes (HTTP 201 with an id)
    value_sha256 TEXT NOT NULL,      -- sha256 of the post's body
    sent_at      REAL NOT NULL,
    done_at      REAL NOT NULL,
    status       INTEGER,            -- HTTP status, NULL when no answer
    error        TEXT
);
CREATE INDEX IF NOT EXISTS writes_row_key ON writes (row_key);
"""


@dataclass(frozen=True)
class WriterReport:
    """What a write run did. `max_ack_gap_s` is the longest time between two acknowledged writes (stalls count)."""

    run_id: str
    attempted: int
    acknowledged: int
    failed: int
    duration_s: float
    max_ack_gap_s: float
    failure_windows: tuple[tuple[float, float], ...] = ()  # (first failed send, next acknowledged) unix times

    @property
    def max_unavailable_s(self) -> float:
        return max((b - a for a, b in self.failure_windows), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_unavailable_s": round(self.max_unavailable_s, 3)}


class Ledger:
    """The SQLite ledger; thread-safe appends."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(LEDGER_SCHEMA)
        self._lock = threading.Lock()

    def record(self, run_id: str, post_id: int | None, digest: str, sent: float, done: float,
               status: int | None, error: str | None) -> None:
        with self._lock:
            self._db.execute("INSERT INTO writes (run_id, row_key, value_sha256, sent_at, done_at, status, error) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, post_id, digest, sent, done, status, error))

    def acknowledged(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._db.execute(
                "SELECT row_key, value_sha256 FROM writes WHERE row_key IS NOT NULL ORDER BY row_key"))

    def attempts(self, run_id: str) -> list[tuple[float, float, int | None]]:
        with self._lock:
            return list(self._db.execute("SELECT sent_at, done_at, row_key FROM writes WHERE run_id = ? "
                                         "ORDER BY sent_at", (run_id,)))

    def close(self) -> None:
        self._db.close()


def _post_once(url: str, body: str, author: str, timeout: float) -> tuple[int | None, int | None, str | None]:
    data = json.dumps({"author": author, "body": body}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/posts", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read())
            if resp.status == 201 and isinstance(doc.get("id"), int):
                return resp.status, doc["id"], None
            return resp.status, None, "unexpected answer"
    except urllib.error.HTTPError as e:
        return e.code, None, e.reason if isinstance(e.reason, str) else "http error"
    except (OSError, ValueError) as e:
        return None, None, type(e).__name__


def run_writer(url: str | Callable[[], str], ledger_path: str, *, rate: float, duration: float,
               concurrency: int = 4, timeout: float = 5.0, stop: threading.Event | None = None,
               author: str = "ledger-writer", on_progress: Any = None) -> WriterReport:
    """POST `rate` writes per second for `duration` seconds (or until `stop` is set); record every one.

    `url` may be a callable returning the current base URL, called per write: writes then follow a DNS cut-over
    (e.g. resolve the app's name at the authoritative server each time)."""
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE:g}]")
    if not 0 < duration <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds")
    stop = stop or threading.Event()
    ledger = Ledger(ledger_path)
    run_id = secrets.token_hex(6)
    jobs: queue.Queue[int | None] = queue.Queue(maxsize=max(16, int(rate)))
    counts = {"ok": 0, "fail": 0}
    lock = threading.Lock()

    def worker() -> None:
        while (n := jobs.get()) is not None:
            body = f"ledger {run_id} write {n}: {secrets.token_hex(12)}"
            digest = hashlib.sha256(body.encode()).hexdigest()
            sent = time.time()
            try:
                base = url() if callable(url) else url
            except Exception as e:  # noqa: BLE001 - a failed lookup is a failed write, recorded as such
                status, post_id, error = None, None, f"resolve: {type(e).__name__}"
            else:
                status, post_id, error = _post_once(base, body, author, timeout)
            ledger.record(run_id, post_id, digest, sent, time.time(), status, error)
            with lock:
                counts["ok" if post_id is not None else "fail"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    n = 0
    try:
        while not stop.is_set():
            due = t0 + n / rate
            now = time.monotonic()
            if now - t0 >= duration:
                break
            if due > now:
                stop.wait(due - now)
                continue
            jobs.put(n)
            n += 1
            if on_progress is not None and n % max(1, int(rate)) == 0:
                on_progress(dict(counts))
    finally:
        for _ in threads:
            jobs.put(None)
        for t in threads:
            t.join(timeout + 1)
    elapsed = time.monotonic() - t0
    report = _summarise(run_id, ledger.attempts(run_id), elapsed)
    ledger.close()
    return report


def _summarise(run_id: str, attempts: list[tuple[float, float, int | None]], elapsed: float) -> WriterReport:
    acks = sorted(done for _, done, pid in attempts if pid is not None)
    gaps = [b - a for a, b in itertools.pairwise(acks)]
    windows: list[tuple[float, float]] = []
    start: float | None = None
    for sent, done, pid in attempts:  # ordered by send time
        if pid is None and start is None:
            start = sent
        elif pid is not None and start is not None:
            windows.append((start, done))
            start = None
    if start is not None:
        windows.append((start, max(d for _, d, _ in attempts)))
    failed = sum(1 for *_, pid in attempts if pid is None)
    return WriterReport(run_id=run_id, attempted=len(attempts), acknowledged=len(acks), failed=failed,
                        duration_s=round(elapsed, 3), max_ack_gap_s=round(max(gaps, default=0.0), 3),
                        failure_windows=tuple((round(a, 3), round(b, 3)) for a, b in windows))


def verify_ledger(ledger_path: str, dsn: str | Mapping[str, Any]) -> Any:
    """Look every acknowledged write of the ledger up in the `posts` table at `dsn` (a libpq string or connect
    keywords), with liferaft's own ledger check (liferaft.movers.ledger): id present, sha256 of the body equal."""
    from liferaft.movers.ledger import LedgerSpec, check
    from liferaft.movers.pg_conn import PgConn

    if isinstance(dsn, str):
        from psycopg.conninfo import conninfo_to_dict

        dsn = conninfo_to_dict(dsn)
    conn = PgConn(host=str(dsn.get("host", "localhost")), port=int(dsn.get("port", 5432)),
                  dbname=str(dsn["dbname"]), user=str(dsn["user"]),
                  password=None if dsn.get("password") is None else str(dsn["password"]))
    return check(ledger_path, conn, LedgerSpec(table="posts", key="id", value="body"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="generate writes and record them")
    r.add_argument("--url", required=True)
    r.add_argument("--ledger", required=True)
    r.add_argument("--rate", type=float, default=20.0, help="writes per second")
    r.add_argument("--duration", type=float, required=True, help="seconds (bounded)")
    r.add_argument("--concurrency", type=int, default=4)
    v = sub.add_parser("verify", help="check every acknowledged write at a database")
    v.add_argument("--ledger", required=True)
    v.add_argument("--dsn-file", required=True, help="file holding a libpq DSN (kept off the command line)")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        report = run_writer(args.url, args.ledger, rate=args.rate, duration=args.duration,
                            concurrency=args.concurrency)
        print(json.dumps(report.to_dict()))
        return 0
    with open(args.dsn_file, encoding="utf-8") as f:
        dsn = f.read().strip()
    check = verify_ledger(args.ledger, dsn)
    print(json.dumps(check.to_dict()))
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
