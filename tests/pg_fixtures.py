"""Pytest plugin: real local PostgreSQL 15 clusters for the movers' tests (and the benchmarks).

Each cluster is initdb'ed as the `postgres` OS user in its own temp dir, listens on 127.0.0.1 on a free port with
wal_level=logical and password (SCRAM) authentication, and is stopped and removed at the end of the session.
Tests get fresh databases per test (`pg_pair`), so the clusters are shared cheaply.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liferaft.movers.pg_conn import PgConn, connect, ident, pg_tool

SUPERUSER = "liferaft_su"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv],
                          check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


@dataclass
class PgCluster:
    """One running PostgreSQL cluster owned by this process."""

    name: str
    root: Path
    port: int
    password: str

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def conn(self, dbname: str = "postgres") -> PgConn:
        return PgConn(host="127.0.0.1", port=self.port, dbname=dbname, user=SUPERUSER, password=self.password)

    @classmethod
    def start(cls, name: str, *, settings: dict[str, str] | None = None) -> PgCluster:
        pw = pwd.getpwnam("postgres")
        root = Path(tempfile.mkdtemp(prefix=f"liferaft-pg-{name}-{os.getpid()}-"))
        os.chown(root, pw.pw_uid, pw.pw_gid)
        password = secrets.token_urlsafe(18)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        _as_postgres([pg_tool("initdb"), "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth-host=scram-sha-256", "--auth-local=peer", "-E", "UTF8", "--no-sync"])
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "wal_level": "logical",
            "max_wal_senders": "20",
            "max_replication_slots": "20",
            "max_logical_replication_workers": "16",
            "max_worker_processes": "24",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "128MB",
            "max_connections": "100",
            "log_min_messages": "warning",
        }
        conf.update(settings or {})
        with open(root / "data" / "postgresql.auto.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        last: Exception | None = None
        for _ in range(5):
            port = _free_port()
            try:
                _as_postgres([pg_tool("pg_ctl"), "-D", str(root / "data"), "-w", "-t", "30", "-l",
                              str(root / "log"), "-o", f"-p {port}", "start"])
                return cls(name=name, root=root, port=port, password=password)
            except subprocess.CalledProcessError as e:  # port taken between pick and bind: try another
                last = e
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL cluster {name}: {last}")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres([pg_tool("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def create_db(self, dbname: str) -> PgConn:
        with connect(self.conn()) as c:
            c.execute(f"CREATE DATABASE {ident(dbname)}")
        return self.conn(dbname)

    def drop_db(self, dbname: str) -> None:
        with connect(self.conn()) as c:
            c.execute(f"ALTER DATABASE {ident(dbname)} RESET ALL")
            for (sub,) in c.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
                                    " WHERE d.datname = %s", (dbname,)).fetchall():
                with connect(self.conn(dbname)) as d:
                    d.execute(f"ALTER SUBSCRIPTION {ident(sub)} DISABLE")
                    d.execute(f"ALTER SUBSCRIPTION {ident(sub)} SET (slot_name = NONE)")
                    d.execute(f"DROP SUBSCRIPTION {ident(sub)}")
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                      " WHERE database = %s AND NOT active", (dbname,))
            c.execute(f"DROP DATABASE IF EXISTS {ident(dbname)} WITH (FORCE)")


@dataclass(frozen=True)
class PgPair:
    """A fresh source database and the name of a (not yet created) target database."""

    source_cluster: PgCluster
    target_cluster: PgCluster
    source: PgConn
    target: PgConn


@pytest.fixture(scope="session")
def pg_source_cluster() -> Iterator[PgCluster]:
    c = PgCluster.start("src")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def pg_target_cluster() -> Iterator[PgCluster]:
    c = PgCluster.start("tgt")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pg_pair(pg_source_cluster: PgCluster, pg_target_cluster: PgCluster) -> Iterator[PgPair]:
    """A fresh source database (empty) and a target connection whose database does not exist yet."""
    name = "t_" + uuid.uuid4().hex[:10]
    src = pg_source_cluster.create_db(name)
    tgt = pg_target_cluster.conn(name)
    try:
        yield PgPair(pg_source_cluster, pg_target_cluster, src, tgt)
    finally:
        with contextlib.suppress(Exception):
            pg_target_cluster.drop_db(name)
        with contextlib.suppress(Exception):
            pg_source_cluster.drop_db(name)
