"""The journal: every run and every step recorded in SQLite before and after it acts.

One database per stack (`<state_dir>/<stack>/journal.db`), WAL mode with `synchronous=FULL` so each commit is on
disk (fsync) before the action it announces starts. Each state change is one transaction: the step's row and an
append-only log entry change together or not at all. `pending()` and `applied()` only read.
One Journal may be used from several threads (the runner's step threads): every transaction and every read holds the
journal's lock, so statements of two threads never interleave inside one transaction.
The directory is 0700 and the files 0600. A journal that is not SQLite, truncated or otherwise damaged is reported
as `JournalCorrupt` (exit 2) naming the file, never as a traceback. Nothing secret is ever written: every JSON
payload is checked against the secret values the run resolved.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from liferaft.engine.plan import Plan
from liferaft.errors import LiferaftError, RunFailed, UsageError
from liferaft.statedir import owner_only_dir

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

RUN_STATES = ("running", "stopped", "failed", "done", "rolling-back", "rolled-back")
STEP_STATES = ("pending", "running", "done", "failed", "undoing", "undone")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, stack TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, mode TEXT NOT NULL,
    plan_json TEXT NOT NULL, plan_hash TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, pid INTEGER, error TEXT, summary_json TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id), step_id TEXT NOT NULL, position INTEGER NOT NULL,
    kind TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, started REAL, finished REAL,
    result_json TEXT NOT NULL DEFAULT '{}', memo_json TEXT NOT NULL DEFAULT '{}', error TEXT,
    PRIMARY KEY (run_id, step_id));
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL, step_id TEXT,
    action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""


class JournalCorrupt(UsageError):
    """The journal file cannot be read as a liferaft journal."""


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    step_id: str
    position: int
    kind: str
    status: str
    attempts: int
    started: float | None
    finished: float | None
    result: dict[str, Any]
    memo: dict[str, Any]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step_id, "kind": self.kind, "status": self.status, "attempts": self.attempts,
                "started": self.started, "finished": self.finished,
                "duration_s": round(self.finished - self.started, 3) if self.started and self.finished else None,
                "result": self.result, "error": self.error}


@dataclass(frozen=True)
class RunRecord:
    id: str
    stack: str
    source: str
    target: str
    mode: str
    plan: Plan
    status: str
    created: float
    updated: float
    pid: int | None
    error: str | None
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.id, "stack": self.stack, "source": self.source, "target": self.target,
                "mode": self.mode, "status": self.status, "created": self.created, "updated": self.updated,
                "plan_hash": self.plan.hash, "error": self.error, "summary": self.summary}


def _stack_path(state_dir: Path, stack: str) -> Path:
    return Path(state_dir) / "stacks" / stack


def stack_dir(state_dir: Path, stack: str) -> Path:
    """The stack's private folder in the state dir (0700)."""
    return owner_only_dir(_stack_path(state_dir, stack), parents_from=Path(state_dir).parent)


def journal_path(state_dir: Path, stack: str) -> Path:
    return stack_dir(state_dir, stack) / "journal.db"


def journal_file(state_dir: Path, stack: str) -> Path:
    """Where the stack's journal is, creating nothing (for readers: `runs`, `show`)."""
    return _stack_path(state_dir, stack) / "journal.db"


class Journal:
    """Runs and their steps for one stack. Use as a context manager or call close()."""

    def __init__(self, path: Path, *, secrets: Callable[[], set[str]] | None = None, create: bool = True) -> None:
        """create=False (readers): a journal that does not exist is read as an empty one, held in memory, so
        `runs`, `show` and a `resume` of nothing leave no file behind."""
        self.path = Path(path)
        self._secrets = secrets or (lambda: set())
        # Held by each transaction and each read: the connection is shared by the runner's step threads.
        self._lock = threading.RLock()
        self._check_file()
        try:
            if create or os.path.lexists(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                os.chmod(self.path, 0o600)
                self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0,
                                           check_same_thread=False)
            else:
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        except OSError as e:
            raise UsageError(f"cannot open the journal {self.path}: {e.strerror}") from None
        with self._guard():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            ok = self._db.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {ok[0] if ok else 'no answer'}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"journal schema {version} is newer than this liferaft ({SCHEMA_VERSION})")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    def _check_file(self) -> None:
        if not self.path.exists():
            return
        if self.path.is_symlink() or not self.path.is_file():
            raise JournalCorrupt(f"journal {self.path} is not a regular file", hint="move it aside")
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head != SQLITE_MAGIC:
            raise JournalCorrupt(f"journal {self.path} is not a liferaft journal (not an SQLite file)",
                                 hint="restore it from a backup or move it aside; its runs cannot be resumed")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the journal's lock (one thread at a time on the connection) and translate SQLite's errors."""
        try:
            with self._lock:
                yield
        except (sqlite3.DatabaseError, OSError, UnicodeDecodeError) as e:
            # UnicodeDecodeError: SQLite's error text about a damaged page need not be UTF-8 (a flipped byte).
            if _disk_full(e):
                # The transaction was rolled back: the journal is intact and the run can go on once there is room.
                raise RunFailed(f"the state directory is full ({self.path.parent}): the journal could not be written",
                                hint="free space there, then `liferaft resume RUN`; the journal is intact") from None
            if isinstance(e, OSError):
                raise
            raise JournalCorrupt(f"journal {self.path} is damaged: {e}",
                                 hint="restore it from a backup or move it aside; its runs cannot be resumed") \
                from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable transaction (committed with fsync before this returns)."""
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back itself after SQLITE_FULL / I/O errors
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------- writing
    def _dumps(self, value: Any, what: str) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        for secret in self._secrets():
            if len(secret) >= 4 and (secret in text or json.dumps(secret)[1:-1] in text):
                raise RunFailed(f"refusing to journal {what}: it contains a secret value",
                                hint="this is a bug in a step kind; the value was not written anywhere")
        return text

    def _log(self, db: sqlite3.Connection, run_id: str, step_id: str | None, action: str, detail: str = "") -> None:
        db.execute("INSERT INTO log (run_id, ts, step_id, action, detail) VALUES (?,?,?,?,?)",
                   (run_id, time.time(), step_id, action, detail[:2000]))

    def create_run(self, run_id: str, plan: Plan) -> None:
        now = time.time()
        plan_json = self._dumps(plan.to_dict(), "the plan")
        with self._tx() as db:
            db.execute("INSERT INTO runs (id, stack, source, target, mode, plan_json, plan_hash, status, created,"
                       " updated, pid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (run_id, plan.stack, plan.source, plan.target, plan.mode, plan_json, plan.hash, "running",
                        now, now, os.getpid()))
            for i, s in enumerate(plan.steps):
                db.execute("INSERT INTO steps (run_id, step_id, position, kind, status) VALUES (?,?,?,?,?)",
                           (run_id, s.id, i, s.kind, "pending"))
            self._log(db, run_id, None, "run.created", plan.hash)

    def set_run_status(self, run_id: str, status: str, error: str | None = None) -> None:
        assert status in RUN_STATES, status
        with self._tx() as db:
            db.execute("UPDATE runs SET status=?, error=?, updated=?, pid=? WHERE id=?",
                       (status, error, time.time(), os.getpid(), run_id))
            self._log(db, run_id, None, f"run.{status}", error or "")

    def update_summary(self, run_id: str, **values: Any) -> None:
        with self._tx() as db:
            row = db.execute("SELECT summary_json FROM runs WHERE id=?", (run_id,)).fetchone()
            summary = _loads(row[0] if row else "{}", self.path)
            summary.update(values)
            db.execute("UPDATE runs SET summary_json=?, updated=? WHERE id=?",
                       (self._dumps(summary, "the run summary"), time.time(), run_id))

    def begin_step(self, run_id: str, step_id: str) -> None:
        """Recorded BEFORE the step acts."""
        with self._tx() as db:
            db.execute("UPDATE steps SET status='running', attempts=attempts+1, started=?, finished=NULL, error=NULL"
                       " WHERE run_id=? AND step_id=?", (time.time(), run_id, step_id))
            self._log(db, run_id, step_id, "step.started")

    def remember(self, run_id: str, step_id: str, memo: dict[str, Any]) -> None:
        """Merge `memo` into the step's durable notes now (e.g. the DNS values a step is about to replace)."""
        with self._tx() as db:
            row = db.execute("SELECT memo_json FROM steps WHERE run_id=? AND step_id=?", (run_id, step_id)).fetchone()
            current = _loads(row[0] if row else "{}", self.path)
            current.update(memo)
            db.execute("UPDATE steps SET memo_json=? WHERE run_id=? AND step_id=?",
                       (self._dumps(current, f"step {step_id}'s notes"), run_id, step_id))
            self._log(db, run_id, step_id, "step.memo", ",".join(sorted(memo)))

    def finish_step(self, run_id: str, step_id: str, result: dict[str, Any] | None) -> None:
        """Recorded AFTER the step acted and verified."""
        text = self._dumps(result or {}, f"step {step_id}'s result")
        with self._tx() as db:
            db.execute("UPDATE steps SET status='done', finished=?, result_json=?, error=NULL"
                       " WHERE run_id=? AND step_id=?", (time.time(), text, run_id, step_id))
            self._log(db, run_id, step_id, "step.done")

    def fail_step(self, run_id: str, step_id: str, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE steps SET status='failed', finished=?, error=? WHERE run_id=? AND step_id=?",
                       (time.time(), error, run_id, step_id))
            self._log(db, run_id, step_id, "step.failed", error)

    def mark_step(self, run_id: str, step_id: str, status: str, error: str | None = None) -> None:
        assert status in STEP_STATES, status
        with self._tx() as db:
            db.execute("UPDATE steps SET status=?, error=? WHERE run_id=? AND step_id=?",
                       (status, error, run_id, step_id))
            self._log(db, run_id, step_id, f"step.{status}", error or "")

    # ------------------------------------------------------------------------------------------------- reading
    def runs(self) -> list[RunRecord]:
        with self._guard():
            rows = self._db.execute("SELECT id FROM runs ORDER BY created DESC").fetchall()
        return [self.run(r[0]) for r in rows]

    def find_run(self, ref: str) -> RunRecord:
        """A run by id or unique id prefix; 'last' is the newest."""
        with self._guard():
            if ref == "last":
                rows = self._db.execute("SELECT id FROM runs ORDER BY created DESC LIMIT 1").fetchall()
            else:
                rows = self._db.execute("SELECT id FROM runs WHERE id=? OR id LIKE ? ORDER BY created DESC",
                                        (ref, ref.replace("%", "").replace("_", "\\_") + "%")).fetchall()
        ids = sorted({r[0] for r in rows})
        if ref in ids:
            return self.run(ref)
        if not ids:
            raise UsageError(f"no run {ref!r} in {self.path}", hint="`liferaft runs` lists them")
        if len(ids) > 1:
            raise UsageError(f"run {ref!r} is ambiguous: {', '.join(ids[:5])}")
        return self.run(ids[0])

    def run(self, run_id: str) -> RunRecord:
        with self._guard():
            row = self._db.execute("SELECT id, stack, source, target, mode, plan_json, status, created, updated,"
                                   " pid, error, summary_json FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path}")
        try:
            plan = Plan.from_dict(_loads(row[5], self.path), source_name=f"{self.path} run {run_id}")
        except LiferaftError as e:
            raise JournalCorrupt(f"journal {self.path}: run {run_id}'s plan is damaged: {e.message}") from None
        return RunRecord(id=row[0], stack=row[1], source=row[2], target=row[3], mode=row[4], plan=plan,
                         status=row[6], created=row[7], updated=row[8], pid=row[9], error=row[10],
                         summary=_loads(row[11], self.path))

    def steps(self, run_id: str) -> list[StepRecord]:
        with self._guard():
            rows = self._db.execute("SELECT run_id, step_id, position, kind, status, attempts, started, finished,"
                                    " result_json, memo_json, error FROM steps WHERE run_id=? ORDER BY position",
                                    (run_id,)).fetchall()
        return [StepRecord(run_id=r[0], step_id=r[1], position=r[2], kind=r[3], status=r[4], attempts=r[5],
                           started=r[6], finished=r[7], result=_loads(r[8], self.path), memo=_loads(r[9], self.path),
                           error=r[10]) for r in rows]

    def step(self, run_id: str, step_id: str) -> StepRecord:
        for rec in self.steps(run_id):
            if rec.step_id == step_id:
                return rec
        raise UsageError(f"run {run_id} has no step {step_id!r}")

    def applied(self, run_id: str) -> list[StepRecord]:
        """Steps done, in plan order (read-only)."""
        return [s for s in self.steps(run_id) if s.status == "done"]

    def pending(self, run_id: str) -> list[StepRecord]:
        """Steps still to do, in plan order, including an interrupted or failed one (read-only)."""
        return [s for s in self.steps(run_id) if s.status in ("pending", "running", "failed")]

    def log(self, run_id: str) -> list[dict[str, Any]]:
        with self._guard():
            rows = self._db.execute("SELECT ts, step_id, action, detail FROM log WHERE run_id=? ORDER BY id",
                                    (run_id,)).fetchall()
        return [{"ts": r[0], "step": r[1], "action": r[2], "detail": r[3]} for r in rows]


def _loads(text: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise JournalCorrupt(f"journal {path} holds a damaged record (not JSON)") from None
    if not isinstance(value, dict):
        raise JournalCorrupt(f"journal {path} holds a damaged record (not a JSON object)")
    return value


def _disk_full(e: BaseException) -> bool:
    """SQLITE_FULL, SQLITE_IOERR* (what a full disk gives under WAL) or ENOSPC/EDQUOT."""
    import errno

    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_FULL", "SQLITE_IOERR")):
        return True
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()
    return "database or disk is full" in text or "disk i/o error" in text
