"""The object-sync manifest: what liferaft copied, per bucket pair and key (SQLite in the state directory).

One row per copied object: size, sha256 computed while streaming at the source, sha256 of what the target stored,
and the source's and target's ETags at copy time (used only to notice that an object changed *on the same
provider*; ETags are never compared across providers). A row is committed after each object, so a sync killed at
any moment resumes without recopying a finished object.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

SCHEMA = """
CREATE TABLE IF NOT EXISTS copied (
    pair TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    src_sha256 TEXT NOT NULL,
    tgt_sha256 TEXT NOT NULL,
    src_etag TEXT,
    tgt_etag TEXT,
    copied_at REAL NOT NULL,
    PRIMARY KEY (pair, key)
) WITHOUT ROWID;
"""

PAGE = 1000  # manifest rows read at once by `rows`
_SELECT = "SELECT key, size, src_sha256, tgt_sha256, src_etag, tgt_etag, copied_at FROM copied"


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    src_sha256: str
    tgt_sha256: str
    src_etag: str | None
    tgt_etag: str | None
    copied_at: float


class Manifest:
    """Thread-safe access to one pair's rows. Each `record` is its own committed transaction."""

    def __init__(self, path: str | Path, pair: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pair = pair
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill (WAL), cheap per commit
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> dict[str, Entry]:
        """Every row of the pair at once (small manifests; a sync walks `rows` instead)."""
        with self._lock:
            rows = self._db.execute(f"{_SELECT} WHERE pair = ?", (self.pair,)).fetchall()
        return {r[0]: Entry(*r) for r in rows}

    def rows(self, page: int | None = None) -> Iterator[Entry]:
        """Every row of the pair in key order, read a page at a time (memory flat whatever the count). Each page is
        its own short read (key > the last one seen), so no read transaction stays open while a sync records rows:
        a long one would keep SQLite from checkpointing, and the WAL would grow by a page per object."""
        page = page or PAGE
        last: str | None = None
        while True:
            with self._lock:
                if last is None:
                    batch = self._db.execute(f"{_SELECT} WHERE pair = ? ORDER BY key LIMIT ?",
                                             (self.pair, page)).fetchall()
                else:
                    batch = self._db.execute(f"{_SELECT} WHERE pair = ? AND key > ? ORDER BY key LIMIT ?",
                                             (self.pair, last, page)).fetchall()
            yield from (Entry(*r) for r in batch)
            if len(batch) < page:
                return
            last = batch[-1][0]

    def record(self, entry: Entry) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO copied (pair, key, size, src_sha256, tgt_sha256, src_etag, tgt_etag,"
                " copied_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.pair, entry.key, entry.size, entry.src_sha256, entry.tgt_sha256, entry.src_etag,
                 entry.tgt_etag, entry.copied_at))

    def forget(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM copied WHERE pair = ? AND key = ?", (self.pair, key))

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM copied WHERE pair = ?", (self.pair,)).fetchone()
        return int(row[0])


def new_entry(key: str, size: int, src_sha256: str, tgt_sha256: str, src_etag: str | None,
              tgt_etag: str | None) -> Entry:
    return Entry(key, size, src_sha256, tgt_sha256, src_etag, tgt_etag, time.time())
