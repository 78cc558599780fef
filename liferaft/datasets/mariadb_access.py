"""How liferaft reaches MySQL/MariaDB servers: its migration account, MyConns, mariadb.yml's variables.

The dump (`--master-data` needs RELOAD and the binary log), replication (`CHANGE MASTER`, `REPLICATION SLAVE`) and
the freeze (`SET GLOBAL read_only`) need an administrative account at both ends; the stack file names only the
application's account. So, as for PostgreSQL, liferaft makes its own account (`liferaft_migrator`@'%') on each server
through SSH as root over the server's socket (Debian's MariaDB lets the OS root in by unix_socket authentication),
with binary logging off for that session (the account is no data to replicate). Its password is generated once per
stack (0600 in the state dir), reaches the server on stdin and is never journaled. `release` locks the account.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from liferaft.configure.remote import ssh
from liferaft.datasets._util import state_secret

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.movers.mysql import MyConn

MIGRATOR = "liferaft_migrator"


def migrator_password(ctx: RunContext) -> str:
    return state_secret(ctx, "mysql-migrator.secret")


def find_socket(port: int) -> str:
    """Shell that sets `$s` to the socket of the server on `port` (liferaft's instance first, then the
    distribution's), empty when there is none."""
    p = int(port)
    return (f"s=; for c in /run/mysqld/liferaft-{p}.sock /run/mysqld/mysqld.sock /var/run/mysqld/mysqld.sock "
            "/tmp/mysql.sock; do [ -S $c ] && { s=$c; break; }; done")


ROOT_CLIENT = ("$(command -v mariadb || command -v mysql) --protocol=socket --socket=$s -u root --batch "
               "--skip-column-names")  # after `find_socket`: root by unix_socket authentication


def root_sql(host: TargetHost, port: int, sql: str, what: str, timeout: float = 60.0) -> str:
    """Run `sql` as root over the socket of the server on `port` at `host` (liferaft's instance first, then the
    distribution's), binary logging off for the session."""
    p = int(port)
    cmd = (f"{find_socket(p)}; "
           f"[ -n \"$s\" ] || {{ echo 'no MySQL/MariaDB server socket on this host (port {p})' >&2; exit 3; }}; "
           f"exec {ROOT_CLIENT}")
    return ssh(host, cmd, stdin="SET sql_log_bin = 0;\n" + sql, timeout=timeout, what=what)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ensure_migrator(ctx: RunContext, host: TargetHost, port: int) -> None:
    pw = _quoted(migrator_password(ctx))
    root_sql(host, port, f"CREATE USER IF NOT EXISTS '{MIGRATOR}'@'%' IDENTIFIED BY {pw};\n"
                         f"ALTER USER '{MIGRATOR}'@'%' IDENTIFIED BY {pw} ACCOUNT UNLOCK;\n"
                         f"GRANT ALL PRIVILEGES ON *.* TO '{MIGRATOR}'@'%' WITH GRANT OPTION;\n",
             "create liferaft's MySQL migration account")


def lock_migrator(host: TargetHost, port: int) -> None:
    """The account kept (it may be named in grants) but locked: it can no longer log in."""
    root_sql(host, port, f"ALTER USER IF EXISTS '{MIGRATOR}'@'%' ACCOUNT LOCK;\n",
             "lock liferaft's MySQL migration account")


def admin_conn(ctx: RunContext, address: str, spec: Any) -> MyConn:
    from liferaft.movers.mysql import MyConn

    return MyConn(str(address), int(spec.port), MIGRATOR, migrator_password(ctx), spec.name)


def owner_conn(ctx: RunContext, address: str, spec: Any) -> MyConn:
    from liferaft.movers.mysql import MyConn

    return MyConn(str(address), int(spec.port), spec.user, ctx.secret(spec.password), spec.name)


def server_id(address: str) -> int:
    """A server_id per host, from its address (replication needs the two ends to differ)."""
    try:
        n = int(ipaddress.ip_address(address)) % 4294967295
    except ValueError:
        n = sum(address.encode()) * 7919 % 4294967295
    return n or 1


def mysql_vars(ctx: RunContext, keys: list[str], address: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """mariadb.yml's variables for the datasets `keys` at `address`, and its secret variables (passwords)."""
    stack = ctx.require_stack()
    dbs, secrets_ = [], {}
    for key in keys:
        d = stack.model.data.mysql[key]
        dbs.append({"key": key, "name": d.name, "user": d.user, "port": d.port})
        secrets_[key] = {"password": ctx.secret(d.password)}
    return ({"liferaft_mysql": dbs, "liferaft_mysql_server_id": server_id(address)},
            {"liferaft_secrets": {"mysql": secrets_, "databases": {}, "buckets": {}}})
