"""Write ledgers: the strongest proof that a move lost no acknowledged write.

A **write ledger** is a SQLite file an application's write generator (or the application itself) keeps while it
writes: one row per write it sent, with the key of the row the write created once the application acknowledged it.
liferaft looks every acknowledged write up at the target database: the row must be there, and the sha256 of its value
column must equal the one the writer recorded. The stack says where to look, per database:

    data:
      databases:
        blog:
          ...
          ledger: {table: posts, key: id, value: body}   # acknowledged row keys are posts.id; sha256(posts.body)

The ledger file's format (the example app's `writer.py` writes it; any writer may):

    CREATE TABLE writes (
        seq           INTEGER PRIMARY KEY,
        run_id        TEXT NOT NULL,      -- one writer run
        row_key,                          -- the key of the row the write created (any type); NULL unless acknowledged
        value_sha256  TEXT NOT NULL,      -- hex sha256 of the value written (UTF-8)
        sent_at       REAL NOT NULL,      -- unix seconds
        done_at       REAL NOT NULL,      -- unix seconds the acknowledgement (or the failure) came back
        status        INTEGER,            -- the application's answer (HTTP status), NULL when none
        error         TEXT
    );

The product reads ledgers only through this module; it imports no application code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import CheckFailed, UsageError
from liferaft.movers.pg_conn import PgConn, connect

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    seq           INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    row_key,
    value_sha256  TEXT NOT NULL,
    sent_at       REAL NOT NULL,
    done_at       REAL NOT NULL,
    status        INTEGER,
    error         TEXT
);
CREATE INDEX IF NOT EXISTS writes_row_key ON writes (row_key);
"""
_COLUMNS = "seq, run_id, row_key, value_sha256, sent_at, done_at, status, error"


@dataclass(frozen=True)
class LedgerSpec:
    """Where a database keeps the rows a ledger's writes created (from the stack: `data.databases.X.ledger`)."""

    table: str
    key: str
    value: str


@dataclass(frozen=True)
class LedgerCheck:
    """Every acknowledged write of a ledger looked up at a database."""

    acknowledged: int
    present: int
    missing: tuple[Any, ...] = field(default=())  # row keys not found
    mismatched: tuple[Any, ...] = field(default=())  # found, but the value's sha256 differs

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "acknowledged": self.acknowledged, "present": self.present,
                "missing": list(self.missing[:100]), "missing_count": len(self.missing),
                "mismatched": list(self.mismatched[:100]), "mismatched_count": len(self.mismatched)}


def _open_ro(path: str) -> sqlite3.Connection:
    if not os.path.isfile(path):
        raise CheckFailed(f"write ledger {path} not found")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("SELECT row_key, value_sha256, done_at FROM writes LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        db.close()
        raise UsageError(f"{path} is not a write ledger: {e}",
                         hint="see liferaft.movers.ledger for the ledger's format (table `writes`)") from None
    return db


def acknowledged(path: str) -> list[tuple[Any, str]]:
    """(row key, value sha256) of every acknowledged write, in key order."""
    with contextlib.closing(_open_ro(path)) as db:
        return list(db.execute("SELECT row_key, value_sha256 FROM writes WHERE row_key IS NOT NULL ORDER BY row_key"))


def acknowledged_between(path: str, after: float, until: float) -> int:
    """How many writes were acknowledged in (after, until]."""
    with contextlib.closing(_open_ro(path)) as db:
        row = db.execute("SELECT count(*) FROM writes WHERE row_key IS NOT NULL AND done_at > ? AND done_at <= ?",
                         (after, until)).fetchone()
    return int(row[0]) if row else 0


def copy_before(path: str, cut_at: float, directory: str) -> tuple[str, int, int, dict[Any, float]]:
    """A copy of the ledger (in `directory`) holding only the writes acknowledged at or before `cut_at`; the counts
    acknowledged before and after the cut, and each kept write's acknowledgement time (row key -> unix seconds)."""
    with contextlib.closing(_open_ro(path)) as src:
        rows = src.execute(f"SELECT {_COLUMNS} FROM writes WHERE row_key IS NOT NULL").fetchall()
    before = [r for r in rows if r[5] <= cut_at]
    out = os.path.join(directory, "ledger-before-cut.sqlite")
    if os.path.exists(out):
        os.unlink(out)
    with contextlib.closing(sqlite3.connect(out)) as dst:
        dst.executescript(LEDGER_SCHEMA)
        dst.executemany(f"INSERT INTO writes ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", before)
        dst.commit()
    return out, len(before), len(rows) - len(before), {r[2]: float(r[5]) for r in before}


def check(path: str, conn: PgConn, spec: LedgerSpec, *, batch: int = 1000) -> LedgerCheck:
    """Look every acknowledged write of the ledger up at the database `conn`."""
    from psycopg import sql

    acked = acknowledged(path)
    query = sql.SQL("SELECT {k}, {v}::text FROM {t} WHERE {k} = ANY(%s)").format(
        k=sql.Identifier(spec.key), v=sql.Identifier(spec.value), t=sql.Identifier(spec.table))
    missing: list[Any] = []
    mismatched: list[Any] = []
    with contextlib.closing(connect(conn, autocommit=True)) as db, db.cursor() as cur:
        for i in range(0, len(acked), batch):
            chunk = acked[i:i + batch]
            cur.execute(query, ([k for k, _ in chunk],))
            found = {k: hashlib.sha256((v or "").encode()).hexdigest() for k, v in cur.fetchall()}
            for key, digest in chunk:
                if key not in found:
                    missing.append(key)
                elif found[key] != digest:
                    mismatched.append(key)
    return LedgerCheck(acknowledged=len(acked), present=len(acked) - len(missing), missing=tuple(missing),
                       mismatched=tuple(mismatched))


def loss(path: str, conn: PgConn, spec: LedgerSpec) -> dict[str, Any]:
    """Acknowledged writes of the ledger missing (or different) at `conn`, and the span of writes they cover: from
    the last acknowledged write that survived before the first lost one, to the last lost one (0 when none was lost)."""
    res = check(path, conn, spec)
    missing = list(res.missing)
    first = last = last_present = last_ack = None
    with contextlib.closing(_open_ro(path)) as led:
        if missing:
            first, last = _ack_span(led, missing[:5000])
        row = led.execute("SELECT max(done_at) FROM writes WHERE row_key IS NOT NULL").fetchone()
        last_ack = row[0] if row else None
        if first is not None:
            lost = set(missing)
            rows = led.execute("SELECT row_key, done_at FROM writes WHERE row_key IS NOT NULL AND done_at < ?"
                               " ORDER BY done_at DESC", (first,)).fetchall()
            last_present = next((t for key, t in rows if key not in lost), None)
    window = 0.0
    if first is not None and last is not None:
        window = round(float(last) - float(last_present if last_present is not None else first), 3)
    return {"acknowledged": res.acknowledged, "present": res.present, "missing_count": len(missing),
            "mismatched_count": len(res.mismatched), "missing_first": missing[:20],
            "first_missing_ack_at": first, "last_missing_ack_at": last, "last_ack_at": last_ack,
            "window_s": window}


def _ack_span(led: sqlite3.Connection, keys: Sequence[Any]) -> tuple[Any, Any]:
    marks = ",".join("?" * len(keys))
    row = led.execute(f"SELECT min(done_at), max(done_at) FROM writes WHERE row_key IN ({marks})", keys).fetchone()
    return (row[0], row[1]) if row else (None, None)


def spec_for(database: Any, key: str) -> LedgerSpec:
    """The stack's `ledger:` of database `key`, or a usage error saying what to add."""
    led = database.ledger
    if led is None:
        raise UsageError(f"a write ledger was given but data.databases.{key} does not say where its writes land",
                         hint=f"add `ledger: {{table: ..., key: ..., value: ...}}` to data.databases.{key}")
    return LedgerSpec(table=led.table, key=led.key, value=led.value)
