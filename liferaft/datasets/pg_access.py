"""How liferaft reaches PostgreSQL servers: its migration role, PgConns, and the database variables of postgresql.yml.

Below the step library (the PostgreSQL dataset kind and the standby keeping use it as the steps do).

Logical replication and schema copies need a PostgreSQL superuser on both servers (PostgreSQL 15: CREATE
PUBLICATION FOR ALL TABLES and CREATE SUBSCRIPTION). The stack file names only the application's owner role, so
liferaft creates its own migration role (`liferaft_migrator`) on each server through SSH as the `postgres` OS user
(peer authentication). Its password is generated once per stack and kept owner-only in the state directory; it
reaches psql on stdin, never a command line, and is never journaled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.configure.remote import controller_address, ssh
from liferaft.datasets._util import state_secret

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn

MIGRATOR_ROLE = "liferaft_migrator"
PSQL = "/usr/lib/postgresql/{version}/bin/psql"


def migrator_password(ctx: RunContext) -> str:
    """The stack's migration-role password (generated once, 0600 in the state dir), registered as a secret."""
    return state_secret(ctx, "pg-migrator.secret")


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


def database_vars(ctx: RunContext, keys: list[str], address: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """postgresql.yml's variables for the databases `keys` at `address`, and its secret variables (passwords)."""
    stack = ctx.require_stack()
    dbs, secrets_ = [], {}
    for key in keys:
        d = stack.model.data.databases[key]
        dbs.append({"key": key, "engine": d.engine, "version": d.version, "name": d.name, "owner": d.owner,
                    "port": d.port, "host": address, "replication": True})
        secrets_[key] = {"password": ctx.secret(d.password)}
    return dbs, {"liferaft_secrets": {"databases": secrets_, "buckets": {}}}


def allowed_networks(address: str, source_address: str | None) -> list[str]:
    """Who may reach the databases at `address`: this controller, and the source host (replication, rollback)."""
    nets = [f"{controller_address(address)}/32"] + ([f"{source_address}/32"] if source_address else [])
    return sorted(set(nets))
