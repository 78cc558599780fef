"""PostgreSQL dump/restore: pg_dump -Fd -j N into a private temp dir, then pg_restore -j N into the target.

The target database is prepared idempotently: created when missing, kept when empty, and recreated only when it
carries liferaft's marker (a previous, possibly interrupted, restore of ours) or when the caller says `replace`.
A target holding someone else's data is never dropped silently.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from liferaft.errors import Conflict, RunFailed
from liferaft.movers.pg_conn import (
    PgConn,
    Progress,
    conn_args,
    connect,
    emit,
    ident,
    pg_tool,
    run_tool,
    tool_env,
)

MARKER_PREFIX = "liferaft-target"


@dataclass(frozen=True)
class DumpRestoreResult:
    dump_s: float
    restore_s: float
    total_s: float
    dump_bytes: int
    jobs: int


def _marker(source: PgConn, state: str) -> str:
    return f"{MARKER_PREFIX}: {state} from {source.describe()}"


def database_exists(conn: PgConn) -> bool:
    with connect(conn.with_db("postgres")) as c:
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (conn.dbname,)).fetchone() is not None


def _user_relation_count(conn: PgConn) -> int:
    with connect(conn) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r','p','S','v','m') AND n.nspname NOT IN ('pg_catalog','information_schema')"
            " AND n.nspname NOT LIKE 'pg_toast%%'").fetchone()
        return int(row[0]) if row else 0


def _comment(conn: PgConn) -> str | None:
    with connect(conn.with_db("postgres")) as c:
        row = c.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                        (conn.dbname,)).fetchone()
        return row[0] if row else None


def set_marker(target: PgConn, source: PgConn, state: str) -> None:
    with connect(target.with_db("postgres")) as c:
        c.execute(f"COMMENT ON DATABASE {ident(target.dbname)} IS {_literal(_marker(source, state))}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def prepare_target(target: PgConn, source: PgConn, *, replace: bool = False,
                   progress: Progress | None = None) -> None:
    """Make `target` an empty database marked as liferaft's restore target. Safe to run again after a crash."""
    admin = target.with_db("postgres")
    if database_exists(target):
        comment = _comment(target) or ""
        ours = comment.startswith(MARKER_PREFIX)
        if _user_relation_count(target) == 0 and not ours:
            set_marker(target, source, "in progress")
            emit(progress, "pg.target.kept", database=target.dbname)
            return
        if not (ours or replace):
            raise Conflict("postgresql", f"prepare target {target.describe()}",
                           "the target database exists and holds tables liferaft did not restore",
                           hint="drop it yourself, choose another database name, or pass replace=True (--replace)")
        with connect(admin) as c:
            c.execute(f"ALTER DATABASE {ident(target.dbname)} RESET ALL")
            c.execute(f"DROP DATABASE {ident(target.dbname)} WITH (FORCE)")
        emit(progress, "pg.target.dropped", database=target.dbname)
    with connect(admin) as c:
        c.execute(f"CREATE DATABASE {ident(target.dbname)} OWNER {ident(target.user)} TEMPLATE template0"
                  " ENCODING 'UTF8'")
    set_marker(target, source, "in progress")
    emit(progress, "pg.target.created", database=target.dbname)


def _dir_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def dump_restore(source: PgConn, target: PgConn, *, jobs: int = 2, replace: bool = False,
                 workdir: str | None = None, progress: Progress | None = None) -> DumpRestoreResult:
    """Copy the source database into the target with pg_dump -Fd -j and pg_restore -j. Idempotent."""
    t0 = time.monotonic()
    prepare_target(target, source, replace=replace, progress=progress)
    tmp = tempfile.mkdtemp(prefix="liferaft-dump-", dir=workdir)
    os.chmod(tmp, 0o700)
    out = os.path.join(tmp, "dump")
    try:
        with tool_env(source, target) as env:
            emit(progress, "pg.dump.start", source=source.describe(), jobs=jobs)
            dump_s = run_tool([pg_tool("pg_dump"), *conn_args(source), "-Fd", "-j", str(jobs), "-Z", "0",
                               "--no-sync", "-f", out], env, what="pg_dump", conns=(source,))
            size = _dir_size(out)
            emit(progress, "pg.dump.done", seconds=round(dump_s, 3), bytes=size)
            emit(progress, "pg.restore.start", target=target.describe(), jobs=jobs)
            restore_s = run_tool([pg_tool("pg_restore"), *conn_args(target), "-j", str(jobs), "--no-owner",
                                  "--no-acl", "--exit-on-error", out], env, what="pg_restore", conns=(target,))
            emit(progress, "pg.restore.done", seconds=round(restore_s, 3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    set_marker(target, source, "restored")
    total = time.monotonic() - t0
    return DumpRestoreResult(dump_s=dump_s, restore_s=restore_s, total_s=total, dump_bytes=size, jobs=jobs)


def copy_schema(source: PgConn, target: PgConn, *, progress: Progress | None = None) -> float:
    """Copy the schema only (tables, sequences, constraints, indexes) from source into an already prepared target."""
    with tool_env(source, target) as env:
        tmp = tempfile.mkdtemp(prefix="liferaft-schema-")
        os.chmod(tmp, 0o700)
        try:
            path = os.path.join(tmp, "schema.dump")
            t = run_tool([pg_tool("pg_dump"), *conn_args(source), "--schema-only", "-Fc", "-f", path], env,
                         what="pg_dump --schema-only", conns=(source,))
            t += run_tool([pg_tool("pg_restore"), *conn_args(target), "--no-owner", "--no-acl", "--exit-on-error",
                           path], env, what="pg_restore (schema)", conns=(target,))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    emit(progress, "pg.schema.copied", seconds=round(t, 3))
    return t


# ------------------------------------------------------------------------------------- at a host of the target site
# Run by `sh -s`-less `sh -c` on the target host: the passwords arrive on stdin into a 0600 PGPASSFILE in a private
# folder (never on a command line), pg_dump -Fd -j writes the dump to the host's own disk, pg_restore -j reads it,
# and the folder goes when the script ends (a folder of a killed run is removed by the next one). Both tools run
# with -v: their "dumping contents of table" / "processing data for table" lines stream back as progress.
DUMP_AT_HOST = r"""
set -e
umask 077
PATH=/usr/lib/postgresql/15/bin:/usr/lib/postgresql/16/bin:/usr/lib/postgresql/14/bin:$PATH
for old in /tmp/liferaft-dump-*; do
  [ -f "$old/pid" ] || continue
  # its run is over when its shell is gone or a zombie (a killed session's shell, orphaned, may wait to be reaped)
  st=$(sed 's/.*) //' "/proc/$(cat "$old/pid")/stat" 2>/dev/null | cut -c1)
  case "$st" in ''|Z|X) rm -rf "$old" ;; esac
done
d=$(mktemp -d /tmp/liferaft-dump-XXXXXX)
trap 'rm -rf "$d"' EXIT
trap 'exit 1' HUP INT TERM PIPE
echo $$ > "$d/pid"
cat > "$d/pgpass"
export PGPASSFILE="$d/pgpass"
echo "@@hello $$"
pg_dump "$@" -Fd -j "$LIFERAFT_JOBS" -Z 0 --no-sync -v -f "$d/dump" 2>&1
echo "@@dumped $(du -sb "$d/dump" | cut -f1)"
"""
RESTORE_AT_HOST = r"""
pg_restore -h "$T_HOST" -p "$T_PORT" -U "$T_USER" -d "$T_DB" -w -j "$LIFERAFT_JOBS" --no-owner --no-acl \
  --exit-on-error -v "$d/dump" 2>&1
rm -f "$d/pgpass"
echo "@@restored"
"""


def host_script(source: PgConn, target: PgConn, jobs: int) -> str:
    """The command line the target host runs: connection names and the job count only, never a password."""
    import shlex

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (
        ("LIFERAFT_JOBS", str(jobs)), ("T_HOST", target.host), ("T_PORT", str(target.port)),
        ("T_USER", target.user), ("T_DB", target.dbname)))
    args = " ".join(shlex.quote(a) for a in conn_args(source))
    return f"{env} sh -c {shlex.quote(DUMP_AT_HOST + RESTORE_AT_HOST)} liferaft-dump {args}"


def pgpass_text(*conns: PgConn) -> str:
    lines = []
    for c in conns:
        if c.password is not None:
            fields = [c.host, str(c.port), "*", c.user, c.password]
            lines.append(":".join(x.replace("\\", "\\\\").replace(":", "\\:") for x in fields) + "\n")
    return "".join(lines)


def dump_restore_at(launch: Callable[[str], Any], host: str, source: PgConn, target: PgConn, *, jobs: int = 2,
                    replace: bool = False, progress: Progress | None = None) -> DumpRestoreResult:
    """dump_restore, with pg_dump and pg_restore running on a host of the target site (`launch(command)` opens a
    session there: SSH with the host's pinned key); the dump goes from the source to that host's disk and into
    the target, never through this controller. Idempotent like dump_restore: the target is recreated clean first
    (liferaft's marker), so a run killed on either side is simply run again."""
    import threading

    t0 = time.monotonic()
    prepare_target(target, source, replace=replace, progress=progress)
    emit(progress, "pg.dump.start", source=source.describe(), jobs=jobs, at=host)
    tables = restored = 0
    size = 0
    dump_s = 0.0
    tail: list[str] = []
    secret = pgpass_text(source, target)
    with launch(host_script(source, target, jobs)) as proc:
        def send() -> None:
            try:
                proc.stdin.write(secret.encode())
                proc.stdin.close()
            except OSError:
                pass
        threading.Thread(target=send, daemon=True).start()
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail = (tail + [line])[-15:]
            if line.startswith("@@hello "):
                emit(progress, "pg.dump.remote", host=host, pid=int(line.split()[1]))
            elif "dumping contents of table" in line:
                tables += 1
                emit(progress, "pg.dump.table", tables=tables, at=host)
            elif line.startswith("@@dumped "):
                size = int(line.split()[1])
                dump_s = time.monotonic() - t0
                emit(progress, "pg.dump.done", seconds=round(dump_s, 3), bytes=size, at=host)
                emit(progress, "pg.restore.start", target=target.describe(), jobs=jobs, at=host)
            elif "processing data for table" in line:
                restored += 1
                emit(progress, "pg.restore.table", tables=restored, of=tables, at=host)
        rc = proc.wait()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if rc != 0 or not any(x == "@@restored" for x in tail):
        text = "\n".join(tail + err.strip().splitlines()[-5:])
        for c in (source, target):
            if c.password:
                text = text.replace(c.password, "***")
        raise RunFailed(f"pg_dump | pg_restore on {host} failed (exit {rc}):\n    " + "\n    ".join(
            text.splitlines()[-15:]), hint="run again: the target database is recreated clean first")
    restore_s = time.monotonic() - t0 - dump_s
    emit(progress, "pg.restore.done", seconds=round(restore_s, 3), at=host)
    set_marker(target, source, "restored")
    return DumpRestoreResult(dump_s=dump_s, restore_s=restore_s, total_s=time.monotonic() - t0, dump_bytes=size,
                             jobs=jobs)
