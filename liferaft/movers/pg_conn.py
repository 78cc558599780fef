"""PostgreSQL connection descriptions and the plumbing shared by dump/restore, replication and verification.

The password never appears in a DSN string that could be logged, nor on a command line: psycopg receives it as a
keyword argument, and child tools (pg_dump, pg_restore) read it from a 0600 PGPASSFILE given in their environment.
psycopg is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from liferaft.errors import RunFailed, ToolMissing, Unreachable, UsageError

# A progress observer: a callable (event name, details), or a liferaft.events.Events fan-out (anything with
# `.emit(kind, message, **data)`). Observers must never break a run: see `emit`.
Progress = Callable[[str, dict[str, Any]], None] | Any

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/14/bin")


@dataclass(frozen=True)
class PgConn:
    """Where a database lives and how to log in. `repr` hides the password."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)

    def with_db(self, dbname: str) -> PgConn:
        return replace(self, dbname=dbname)

    def describe(self) -> str:
        """A loggable description: never the password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def libpq_conninfo(self) -> str:
        """Full conninfo INCLUDING the password, for CREATE SUBSCRIPTION only. Never log or show it."""
        parts = {"host": self.host, "port": str(self.port), "dbname": self.dbname, "user": self.user}
        if self.password is not None:
            parts["password"] = self.password
        return " ".join(f"{k}={_conninfo_quote(v)}" for k, v in parts.items())


def _conninfo_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def emit(progress: Progress | None, event: str, **details: Any) -> None:
    """Send an event to the observer; an observer that fails never breaks the operation."""
    if progress is None:
        return
    with contextlib.suppress(Exception):
        if hasattr(progress, "emit"):
            progress.emit(event, _message(event, details), **details)
        else:
            progress(event, details)


def _message(event: str, details: dict[str, Any]) -> str:
    return event.split(".", 1)[-1].replace(".", " ") + "".join(f" {k}={v}" for k, v in details.items())


def connect(conn: PgConn, *, autocommit: bool = True, timeout: float = 10.0) -> Any:
    """Open a psycopg 3 connection. Connection failures become `Unreachable` without the password in them."""
    import psycopg

    try:
        return psycopg.connect(host=conn.host, port=conn.port, dbname=conn.dbname, user=conn.user,
                               password=conn.password, autocommit=autocommit, connect_timeout=int(timeout),
                               application_name="liferaft")
    except psycopg.OperationalError as e:
        detail = _scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, conn)
        raise Unreachable("postgresql", f"connect to {conn.describe()}", detail) from None


def _scrub(text: str, conn: PgConn) -> str:
    if conn.password:
        text = text.replace(conn.password, "***")
    return text


def ident(*parts: str) -> str:
    """Quote a (possibly schema-qualified) identifier for SQL text."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def pg_tool(name: str) -> str:
    """Path of a PostgreSQL client program (pg_dump, pg_restore, ...), preferring the server's version."""
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing(f"{name} is not installed", hint="install the postgresql-client package (version 15)")


@contextlib.contextmanager
def tool_env(*conns: PgConn) -> Iterator[dict[str, str]]:
    """An environment for pg_dump/pg_restore with a 0600 PGPASSFILE holding the passwords; removed afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    fd, path = tempfile.mkstemp(prefix="liferaft-pgpass-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            for c in conns:
                if c.password is not None:
                    fields = [c.host, str(c.port), "*", c.user, c.password]
                    f.write(":".join(x.replace("\\", "\\\\").replace(":", "\\:") for x in fields) + "\n")
        env["PGPASSFILE"] = path
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def conn_args(conn: PgConn) -> list[str]:
    """Command-line arguments naming a database: host, port, user, dbname. Never the password."""
    return ["-h", conn.host, "-p", str(conn.port), "-U", conn.user, "-d", conn.dbname, "-w"]


def run_tool(argv: Sequence[str], env: dict[str, str], *, what: str, conns: Sequence[PgConn] = ()) -> float:
    """Run a PostgreSQL tool; raise RunFailed with its (scrubbed) stderr on failure. Returns seconds taken."""
    t0 = time.monotonic()
    proc = subprocess.run(list(argv), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        for c in conns:
            err = _scrub(err, c)
        tail = "\n    ".join(err.splitlines()[-15:])
        raise RunFailed(f"{what} failed (exit {proc.returncode}): {Path(argv[0]).name}\n    {tail}")
    return time.monotonic() - t0


def require_superuser(cur: Any, conn: PgConn, why: str) -> None:
    row = cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        raise UsageError(f"{why} needs a superuser on {conn.describe()}",
                         hint="use the cluster's superuser for the migration, or grant it for the move")


def give_to_owner(conn: PgConn, owner: str) -> int:
    """Objects restored by the migration role (pg_restore --no-owner) go back to the application's owner role."""
    with connect(conn) as c:
        rows = c.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r','p','S','v','m') AND pg_get_userbyid(c.relowner) = current_user"
            " AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
            " AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid"
            "   AND d.deptype IN ('a','i') AND d.classid = 'pg_class'::regclass))").fetchall()
        for schema, name, kind in rows:
            word = {"S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}.get(kind, "TABLE")
            c.execute(f"ALTER {word} {ident(schema, name)} OWNER TO {ident(owner)}")
    with connect(conn.with_db("postgres")) as c:
        c.execute(f"ALTER DATABASE {ident(conn.dbname)} OWNER TO {ident(owner)}")
    return len(rows)
