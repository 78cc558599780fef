"""How the failover steps reach hosts and databases: host-key-checked SSH, liferaft's migration role, PgConns.

Logical replication and schema copies need a PostgreSQL superuser on both servers (PostgreSQL 15: CREATE
PUBLICATION FOR ALL TABLES and CREATE SUBSCRIPTION). The stack file names only the application's owner role, so
liferaft creates its own migration role (`liferaft_migrator`) on each server through SSH as the `postgres` OS user
(peer authentication). Its password is generated once per stack and kept owner-only in the state directory; it
reaches psql on stdin, never a command line, and is never journaled.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.errors import AuthRejected, ProviderError, RunFailed, ToolMissing, Unreachable

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn

MIGRATOR_ROLE = "liferaft_migrator"
PSQL = "/usr/lib/postgresql/{version}/bin/psql"


def ssh(host: TargetHost, command: str, *, stdin: str | None = None, timeout: float = 60.0,
        what: str = "ssh") -> str:
    """Run `command` on `host` with its pinned host key (StrictHostKeyChecking=yes); `stdin` carries secrets."""
    exe = shutil.which("ssh")
    if exe is None:
        raise ToolMissing("the ssh client is not installed", hint="install openssh-client")
    with tempfile.TemporaryDirectory(prefix="liferaft-ssh-") as d:
        known = Path(d) / "known_hosts"
        known.write_text("".join(line + "\n" for line in host.known_hosts_lines()))
        argv = [exe, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-p", str(host.port)]
        if host.private_key_file:
            argv += ["-o", "IdentitiesOnly=yes", "-i", host.private_key_file]
        argv += [f"{host.user}@{host.address}", command]
        try:
            r = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Unreachable(host.name, what, f"no answer within {timeout:.0f}s") from None
    if r.returncode == 255:
        err = r.stderr.lower()
        if "host key" in err:
            raise AuthRejected(host.name, what, f"the host key of {host.address} does not match the pinned one",
                               hint="check the host's key out of band before changing the stack file")
        raise Unreachable(host.name, what, r.stderr.strip()[-300:] or "ssh failed")
    if r.returncode != 0:
        raise ProviderError(host.name, what, f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def migrator_password(ctx: RunContext) -> str:
    """The stack's migration-role password (generated once, 0600 in the state dir), registered as a secret."""
    from liferaft.engine.journal import stack_dir

    path = stack_dir(ctx.state_dir, ctx.plan.stack) / "pg-migrator.secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    value = path.read_text().strip()
    add = getattr(ctx, "add_secret", None)  # duck-typed contexts (replicate's EngineContext) keep a plain set
    if add is not None:
        add(value)
    else:
        ctx._secret_values.add(value)
    return value


def ensure_migrator(ctx: RunContext, host: TargetHost, version: int, port: int) -> None:
    """Create or update liferaft's migration role on the PostgreSQL server of `host` (idempotent)."""
    password = migrator_password(ctx)
    sql = (f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MIGRATOR_ROLE}') THEN "
           f"CREATE ROLE {MIGRATOR_ROLE}; END IF; END$$;\n"
           f"ALTER ROLE {MIGRATOR_ROLE} LOGIN SUPERUSER REPLICATION PASSWORD '{password}';\n")
    _psql_as_postgres(host, version, port, sql, "create liferaft's migration role")


def drop_migrator(host: TargetHost, version: int, port: int) -> None:
    """Disable the migration role (kept, because it may own leftovers; it can no longer log in)."""
    sql = (f"DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MIGRATOR_ROLE}') THEN "
           f"ALTER ROLE {MIGRATOR_ROLE} NOLOGIN NOSUPERUSER PASSWORD NULL; END IF; END$$;\n")
    _psql_as_postgres(host, version, port, sql, "disable liferaft's migration role")


def _psql_as_postgres(host: TargetHost, version: int, port: int, sql: str, what: str) -> None:
    psql = PSQL.format(version=int(version))
    ssh(host, f"su postgres -s /bin/sh -c '{psql} -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql "
              f"-p {int(port)} -d postgres'", stdin=sql, what=what)


def admin_conn(ctx: RunContext, address: str, db: Any) -> PgConn:
    from liferaft.movers.pg_conn import PgConn

    return PgConn(host=address, port=int(db.port), dbname=db.name, user=MIGRATOR_ROLE,
                  password=migrator_password(ctx))


def owner_conn(ctx: RunContext, address: str, db: Any) -> PgConn:
    from liferaft.movers.pg_conn import PgConn

    return PgConn(host=address, port=int(db.port), dbname=db.name, user=db.owner, password=ctx.secret(db.password))


def controller_address(toward: str) -> str:
    """The local address this machine uses to reach `toward` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((toward, 9))
            return str(s.getsockname()[0])
        except OSError as e:
            raise RunFailed(f"no route to {toward}: {e.strerror}") from None
