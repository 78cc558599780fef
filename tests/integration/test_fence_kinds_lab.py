"""Fencing the old primary of a stack whose data is not PostgreSQL (issue 20 item 5, issues 21 and 22): a container
service, a MariaDB database, a Redis server, a folder and a SQLite file, in one lab of this module's own.

The journey: the stack's source on host a (MariaDB by mariadb.yml, Redis as redis.yml runs it, the files with a
writer running as their owner, the container pulled from the alternate's registry); `replicate --to alt-b` keeps a
standby of every dataset and mirrors the image; "aws" and host a are cut off; a cold failover into alt-b; a comes
back, as it was (everything still writable there); the next `health` fences it before any probe and says `fenced`
with what it did. Then a write is tried at a for each kind, the way its users write: an INSERT as the
application's MariaDB account, a SET at Redis, a file and a row written as the files' owner (uid 1234), and the
container is not running. The rollback of the cold failover then unfences a: each write goes through again and
every file has its mode back.

Then the failback (issue 22): a standby at alt-b again, a second cold failover with a cut off, a back with writes
made there after the cut (a row, a key, a file, a SQLite row: what a no-notice failover leaves behind), and
`replicate --to primary`: each kind's old copy at a is set aside first (a MariaDB dump, a Redis RDB, a copy of the
folder and a backup of the SQLite file), holding those writes by content hash, while the standby made at a matches
alt-b, the active site.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UPLOADS = "/srv/app/uploads"
NOTES = "/srv/app/data/notes.db"
WRITER_PID = "/run/fence-writer.pid"
WRITER = r"""
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[2], timeout=10)
i = 0
while True:
    i += 1
    db.execute("INSERT INTO notes(body) VALUES (?)", ("live note %d" % i,))
    db.commit()
    with open(os.path.join(sys.argv[1], "live-%06d.txt" % i), "w") as f:
        f.write("live file %d\n" % i)
    time.sleep(0.1)
"""
START = (f"start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile {WRITER_PID} "
         f"--chuid fenceapp:fenceapp --exec /usr/bin/python3 -- /srv/fence-writer.py {UPLOADS} {NOTES}")
STOP = f"start-stop-daemon --stop --quiet --oknodo --retry 5 --pidfile {WRITER_PID} --remove-pidfile"
AS_OWNER = "setpriv --reuid=1234 --regid=1234 --clear-groups"
MYSQL_ROOT = "mariadb --protocol=socket --socket=/run/mysqld/liferaft-3306.sock -u root -N -B"
ASIDE_REDIS_PORT = 6399  # a scratch server on host a, serving the set-aside RDB for the check


@dataclass
class Env:
    lab: Any
    stack: Path
    state: Path

    @property
    def info(self) -> Any:
        return self.lab.info

    def cli(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "liferaft", "--stack", str(self.stack), "--state-dir", str(self.state), *args]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**clean, **env}, stdin=subprocess.DEVNULL)

    def host(self, name: str) -> Any:
        return self.info.hosts[name]

    def sh(self, name: str, command: str, check: bool = True) -> Any:
        return self.host(name).run(command, check=check)


def _secret(info: Any, name: str) -> None:
    path = Path(info.secrets_dir) / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")


def write_stack(lab: Any) -> Path:
    """The lab's container variant (service web, the two registries) with a dataset of each kind beside it."""
    import yaml

    from liferaft.lab import mariadb as m
    from liferaft.lab import redis_ as lr
    from liferaft.lab.registries import container_stack

    info = lab.info
    _secret(info, "mysql_password")
    _secret(info, "redis_password")
    doc = yaml.safe_load(container_stack(info.stack_file.read_text(), lab.read_state()))
    writers = {"stop": STOP, "start": START}
    doc["name"] = "fencestack"
    doc["data"] = {
        "mysql": {m.KEY: {"name": m.DB, "user": m.USER, "password": "file:secrets/mysql_password", "port": m.PORT}},
        "redis": {"queue": {"port": lr.QUEUE_PORT, "password": "file:secrets/redis_password"}},
        "directories": {"uploads": {"path": UPLOADS, "writers": writers}},
        "sqlite": {"notes": {"path": NOTES, "writers": writers}},
    }
    out = Path(info.directory) / "liferaft-fence.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def seed_source(env: Env) -> dict[str, float]:
    """Host a as the stack's primary: MariaDB (mariadb.yml) with rows, Redis with keys, the files with their writer
    running as their owner (fenceapp, uid 1234)."""
    from liferaft.lab import mariadb as m
    from liferaft.lab import redis_ as lr

    t0 = time.monotonic()
    m.deploy_source(env.info, env.stack, rows=200, no_pk_table=False)
    t1 = time.monotonic()
    lr.start(env.info, env.stack, "a")
    lr.fill(lr.client(env.info, "a"), n=200)
    env.sh("a", f"""set -e
getent group fenceapp >/dev/null || groupadd -g 1234 fenceapp
id fenceapp >/dev/null 2>&1 || useradd -u 1234 -g 1234 -M -d /nonexistent -s /usr/sbin/nologin fenceapp
mkdir -p {UPLOADS}/img {os.path.dirname(NOTES)}
for i in $(seq 1 20); do head -c $((i * 97)) /dev/urandom > {UPLOADS}/img/p$i.bin; done
echo private > {UPLOADS}/private.txt && chmod 0640 {UPLOADS}/private.txt
ln -s img/p1.bin {UPLOADS}/latest
sqlite3 {NOTES} "PRAGMA journal_mode=WAL; CREATE TABLE notes(id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT);
  INSERT INTO notes(body) VALUES ('first'), ('second');" >/dev/null
chown -R 1234:1234 /srv/app && chmod 0750 {UPLOADS}/img
cat > /srv/fence-writer.py <<'EOF'
{WRITER}
EOF
{START}""")
    return {"mariadb_s": round(t1 - t0, 1), "rest_s": round(time.monotonic() - t1, 1)}


def run_container_at_a(env: Env) -> None:
    """The container service at a, as its deploy runs it (pulled from the alternate's registry: the primary's asks
    for the "aws" login, which is not the point here)."""
    from liferaft.providers.registry_oci import Image, Registry

    state = env.lab.read_state()
    reg = Registry(state["registries"]["registry-b"]["url"], "registry-b")
    ref = reg.pull_ref(Image.parse(state["image"]["reference"]))
    tls = "" if reg.secure else " --tls-verify=false"
    env.sh("a", f"podman pull -q{tls} {ref} >/dev/null && podman rm -f -i liferaft-web >/dev/null && "
                f"podman run -d --name liferaft-web --network host --label liferaft.service=web {ref} >/dev/null")


def modes(env: Env, host: str) -> str:
    """Mode, owner and path of every file and folder of the stack's files at `host` (not the writer's own files,
    nor SQLite's -wal/-shm, which come and go with its connections)."""
    out = env.sh(host, f"find {UPLOADS} {NOTES} ! -type l -printf '%m %U:%G %p\\n' | "
                       "grep -v -e live- -e '-wal$' -e '-shm$'")
    return "".join(sorted(str(out.stdout).splitlines(keepends=True)))


def writable(listing: str) -> list[str]:
    return [line for line in listing.splitlines() if int(line.split()[0], 8) & 0o222]


def cold_failover_with_a_cut_off(env: Env) -> float:
    """The primary's provider and host a cut, a cold failover to alt-b; a back (healed) and not yet fenced, as the
    record says. Returns the failover's seconds."""
    env.lab.cut("aws", "down")
    env.lab.cut_host("a")
    try:
        t1 = time.monotonic()
        fo = env.cli("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json", "--source-timeout", "2")
        assert fo.returncode == 0, fo.stdout[-3000:] + fo.stderr[-4000:]
        failover_s = time.monotonic() - t1
        st = json.loads(env.cli("status", "--json").stdout)
        assert st["active_site"] == "alt-b" and st["fence"]["state"] == "pending"
    finally:
        env.lab.heal()
    return failover_s


def writer_alive(env: Env) -> bool:
    return env.sh("a", f"start-stop-daemon --status --pidfile {WRITER_PID}", check=False).returncode == 0


def container_running(env: Env, host: str) -> bool:
    return "liferaft-web" in env.sh(host, "podman ps --format '{{.Names}}'").stdout.split()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from tests.fixtures_lab import _require_lab_hosts

    _require_lab_hosts()
    from liferaft.lab.core import Lab

    lab = Lab(tmp_path_factory.mktemp("fence-lab"))
    try:
        t0 = time.monotonic()
        lab.up(timeout=120, example=False, die_with_caller=True)
        e = Env(lab, write_stack(lab), tmp_path_factory.mktemp("fence-state"))
        took = seed_source(e)
        print(f"\nlab up + source on a: {time.monotonic() - t0:.1f}s ({took})")
        yield e
    finally:
        lab.down()


def test_cold_failover_then_the_old_primary_comes_back_fenced_for_every_kind(env: Env) -> None:
    """replicate, cold failover with a cut off, a back: `health` fences it first and says `fenced`, naming each
    part; then at a an INSERT (MariaDB), a SET (Redis), a file and a row written as the files' owner are refused, the
    writer and the container are stopped. The rollback unfences it: the same writes go through, modes as before."""
    import pymysql
    import redis

    from liferaft.lab import mariadb as m
    from liferaft.lab import redis_ as lr

    info, a = env.info, env.info.hosts["a"].address
    t0 = time.monotonic()
    rep = env.cli("replicate", "--to", "alt-b", "--json")
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-4000:]
    run_container_at_a(env)
    assert container_running(env, "a") and writer_alive(env)
    before = modes(env, "a")
    replicate_s = time.monotonic() - t0

    failover_s = cold_failover_with_a_cut_off(env)

    # a is back as it was: nobody fenced it yet, everything there still takes writes
    with pymysql.connect(host=a, port=m.PORT, user=m.USER, password=m.password(info), database=m.DB,
                         connect_timeout=10, autocommit=True) as c, c.cursor() as cur:
        cur.execute("INSERT INTO customers (name, created) VALUES ('before the fence', NOW(6))")
    r = lr.client(info, "a")
    assert r.set("before:fence", "1")
    assert container_running(env, "a") and writer_alive(env)

    t2 = time.monotonic()
    h = env.cli("health", timeout=180)
    fence_s = time.monotonic() - t2
    assert "fence.done" in h.stderr and "old site primary: fenced at" in h.stdout, h.stdout + h.stderr[-3000:]
    fence = json.loads(env.cli("status", "--json").stdout)["fence"]
    assert fence["state"] == "fenced", fence
    detail = "\n".join(fence["detail"])
    for part in ("container service web stopped", "MySQL server on port 3306 (databases shop) read-only",
                 f"redis queue (port {lr.QUEUE_PORT}) refuses writes", "writers of folder uploads stopped",
                 "folder uploads read-only", "sqlite file notes read-only"):
        assert part in detail, detail
        assert part in h.stdout  # health says what was done

    # every write at the old primary is refused, each the way its users write
    with pymysql.connect(host=a, port=m.PORT, user=m.USER, password=m.password(info), database=m.DB,
                         connect_timeout=10, autocommit=True) as c, c.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as refused:
            cur.execute("INSERT INTO customers (name, created) VALUES ('written at the old primary', NOW(6))")
        assert refused.value.args[0] == 1290, refused.value  # ER_OPTION_PREVENTS_STATEMENT: --read-only
    assert "read_only = 1" in env.sh("a", "cat /etc/mysql/liferaft-mariadb.cnf").stdout  # kept across a restart
    with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS"):
        r.set("after:fence", "written at the old primary")
    assert r.get("before:fence") == b"1"  # reads still work, data kept
    assert not writer_alive(env) and not container_running(env, "a")
    assert env.sh("a", "podman inspect -f '{{.HostConfig.RestartPolicy.Name}}' liferaft-web").stdout.strip() in ("", "no")
    wrote = env.sh("a", f"{AS_OWNER} sh -c 'echo x > {UPLOADS}/after-fence.txt'", check=False)
    assert wrote.returncode != 0 and "Permission denied" in wrote.stderr, wrote
    changed = env.sh("a", f"{AS_OWNER} sh -c 'echo y >> {UPLOADS}/img/p1.bin'", check=False)
    assert changed.returncode != 0
    row = env.sh("a", f"{AS_OWNER} sqlite3 {NOTES} \"INSERT INTO notes(body) VALUES ('after the fence')\"", check=False)
    assert row.returncode != 0 and "readonly" in (row.stdout + row.stderr), row
    assert writable(before) and not writable(modes(env, "a")), modes(env, "a")
    again = env.cli("health", "--json", timeout=180)
    assert "fence.started" not in again.stderr and json.loads(again.stdout)["fence"]["state"] == "fenced"

    # the rollback of the cold failover makes a the active site again: unfenced, every write goes through
    t3 = time.monotonic()
    back = env.cli("rollback", "last", "--yes", "--json")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-4000:]
    rollback_s = time.monotonic() - t3
    assert "fence.undone" in back.stderr, back.stderr[-3000:]
    with pymysql.connect(host=a, port=m.PORT, user=m.USER, password=m.password(info), database=m.DB,
                         connect_timeout=10, autocommit=True) as c, c.cursor() as cur:
        cur.execute("INSERT INTO customers (name, created) VALUES ('after the rollback', NOW(6))")
    assert r.set("after:rollback", "1")
    assert "liferaft-fence" not in env.sh("a", "cat /etc/mysql/liferaft-mariadb.cnf").stdout
    assert writer_alive(env) and container_running(env, "a")
    env.sh("a", STOP)  # the writer's files aside, every mode is the one it had before the fence
    assert modes(env, "a") == before
    env.sh("a", f"{AS_OWNER} sh -c 'echo x > {UPLOADS}/after-rollback.txt'")
    print(f"\nreplicate {replicate_s:.1f}s, cold failover {failover_s:.1f}s, health with the fence {fence_s:.1f}s, "
          f"rollback with the unfence {rollback_s:.1f}s")


def mysql_digest(env: Env, host: str, db: str) -> str:
    """Every row of the shop's tables in `db` at `host`, read as root over the socket, hashed (order by key)."""
    out = env.sh(host, f"for t in customers orders; do echo \"SELECT * FROM $t ORDER BY id\" | {MYSQL_ROOT} {db} | "
                       "sha256sum; done")
    return str(out.stdout)


def tree_digest(env: Env, host: str, path: str) -> str:
    """Every file of the tree by path and sha256, every symlink and its target."""
    return str(env.sh(host, f"cd {path} && find . -type f -print0 | sort -z | xargs -0 sha256sum && "
                            "find . -type l -printf '%p -> %l\\n' | sort").stdout)


def sqlite_digest(env: Env, host: str, path: str) -> dict[str, Any]:
    from liferaft.datasets._files import shell
    from liferaft.lab.example import lab_target_host
    from liferaft.movers.files import sqlite_digest as digest

    d = digest(shell(lab_target_host(env.info, host)), path)
    return {"schema": d["schema"], "tables": d["tables"]}


def redis_digest(address: str, port: int, password: str | None) -> Any:
    from liferaft.movers.redis_ import RedisConn, digests

    return digests(RedisConn(address, port, 0, password))


def test_the_failback_sets_the_old_primarys_copy_of_every_kind_aside_with_its_divergent_writes(env: Env) -> None:
    """replicate --to alt-b, a cold failover with a cut off, a back: a row, a key, a file and a SQLite row written at
    a after the cut. `replicate --to primary` (the failback's standby) fences a, then sets each kind's copy aside
    before the standby's copy is made over it, and names each; every set-aside copy holds what a held (its rows,
    keys, files by content hash, the writes after the cut among them), 0400/read-only; the standby at a then matches
    alt-b (those writes gone from it); `status` names the copies."""
    import pymysql
    import redis

    from liferaft.datasets._util import set_aside_name
    from liferaft.lab import mariadb as m
    from liferaft.lab import redis_ as lr

    info, a, b = env.info, env.info.hosts["a"].address, env.info.hosts["b"].address
    t0 = time.monotonic()
    rep = env.cli("replicate", "--to", "alt-b", "--json")
    assert rep.returncode == 0, rep.stdout[-2000:] + rep.stderr[-4000:]
    replicate_s = time.monotonic() - t0
    failover_s = cold_failover_with_a_cut_off(env)

    # a is back, not fenced yet: writes land there that alt-b never gets (the divergent writes of a no-notice day)
    env.sh("a", STOP)
    with pymysql.connect(host=a, port=m.PORT, user=m.USER, password=m.password(info), database=m.DB,
                         connect_timeout=10, autocommit=True) as c, c.cursor() as cur:
        cur.execute("INSERT INTO customers (name, created) VALUES ('divergent at the old primary', NOW(6))")
    assert lr.client(info, "a").set("divergent:key", b"written at a after the cut \x00\xff")
    env.sh("a", f"{AS_OWNER} sh -c 'echo divergent > {UPLOADS}/divergent.txt' && "
                f"{AS_OWNER} sqlite3 {NOTES} \"INSERT INTO notes(body) VALUES ('divergent note')\"")
    held = {"mysql": mysql_digest(env, "a", m.DB), "redis": redis_digest(a, lr.QUEUE_PORT, info.secret("redis_password")),
            "folder": tree_digest(env, "a", UPLOADS), "sqlite": sqlite_digest(env, "a", NOTES)}
    assert "divergent.txt" in held["folder"] and b"divergent:key" in held["redis"].keys

    t2 = time.monotonic()
    back = env.cli("replicate", "--to", "primary", "--json", timeout=900)
    t3 = time.monotonic()
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-5000:]
    failback_s = t3 - t2
    assert "fence.done" in back.stderr and "fence.set_aside" in back.stderr, back.stderr[-3000:]
    st = json.loads(env.cli("status", "--json").stdout)
    fence, tag = st["fence"], set_aside_name("before_" + str(st["run"]))
    folder = f"/var/lib/liferaft/set_aside/fencestack/{tag}"
    dump, rdb = f"{folder}/mysql-{m.KEY}.sql", f"{folder}/redis-queue.rdb"
    kept_tree, kept_db = f"{UPLOADS}.{tag}", f"{NOTES}.{tag}"
    kept = "\n".join(fence["set_aside"])
    for part in (f"mysql database {m.DB} ({m.KEY}) kept as {dump}", f"redis queue (port {lr.QUEUE_PORT}) kept as {rdb}",
                 f"folder uploads kept as {kept_tree}", f"sqlite file notes kept as {kept_db}"):
        assert part in kept, kept
    text = env.cli("status").stdout
    assert "set aside there by the failback" in text and dump in text and kept_tree in text, text

    # every set-aside copy holds what a held, the writes after the cut included, by content
    assert env.sh("a", f"stat -c %a {dump} {rdb}").stdout.split() == ["400", "400"]
    env.sh("a", f"echo 'SET sql_log_bin = 0; CREATE DATABASE aside_check' | {MYSQL_ROOT} && "
                f"{{ echo 'SET sql_log_bin = 0;'; cat {dump}; }} | {MYSQL_ROOT} aside_check")
    try:
        assert mysql_digest(env, "a", "aside_check") == held["mysql"]
        assert "divergent at the old primary" in env.sh(
            "a", f"echo 'SELECT name FROM customers' | {MYSQL_ROOT} aside_check").stdout
    finally:
        env.sh("a", f"echo 'SET sql_log_bin = 0; DROP DATABASE aside_check' | {MYSQL_ROOT}")
    env.sh("a", f"rm -rf /tmp/aside-check && mkdir /tmp/aside-check && cp {rdb} /tmp/aside-check/dump.rdb && "
                f"chown -R redis:redis /tmp/aside-check && runuser -u redis -- redis-server --port {ASIDE_REDIS_PORT} "
                f"--bind {a} --protected-mode no --dir /tmp/aside-check --save '' --appendonly no --daemonize yes")
    try:
        r = redis.Redis(host=a, port=ASIDE_REDIS_PORT, socket_timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                if r.ping():
                    break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
        aside_keys = redis_digest(a, ASIDE_REDIS_PORT, None)
        assert aside_keys.digest == held["redis"].digest and len(aside_keys.keys) == len(held["redis"].keys)
        assert r.get("divergent:key") == b"written at a after the cut \x00\xff"
    finally:
        env.sh("a", f"redis-cli -h {a} -p {ASIDE_REDIS_PORT} shutdown nosave; rm -rf /tmp/aside-check", check=False)
    assert tree_digest(env, "a", kept_tree) == held["folder"]
    assert not env.sh("a", f"find {kept_tree} {kept_db} ! -type l -perm /222").stdout.strip()  # read-only
    assert sqlite_digest(env, "a", kept_db) == held["sqlite"]
    assert "divergent note" in env.sh("a", f"sqlite3 'file:{kept_db}?immutable=1' 'SELECT body FROM notes'").stdout

    # the standby at a is alt-b's copy: the writes after the cut are not in it
    deadline = time.monotonic() + 60
    while mysql_digest(env, "a", m.DB) != mysql_digest(env, "b", m.DB) and time.monotonic() < deadline:
        time.sleep(1)
    assert mysql_digest(env, "a", m.DB) == mysql_digest(env, "b", m.DB) != held["mysql"]
    pw = info.secret("redis_password")
    while redis_digest(a, lr.QUEUE_PORT, pw).digest != redis_digest(b, lr.QUEUE_PORT, pw).digest \
            and time.monotonic() < deadline:
        time.sleep(1)
    at_a = redis_digest(a, lr.QUEUE_PORT, pw)
    assert at_a.digest == redis_digest(b, lr.QUEUE_PORT, pw).digest and b"divergent:key" not in at_a.keys
    assert tree_digest(env, "a", UPLOADS) == tree_digest(env, "b", UPLOADS) and "divergent.txt" not in \
        tree_digest(env, "a", UPLOADS)
    assert sqlite_digest(env, "a", NOTES) == sqlite_digest(env, "b", NOTES) != held["sqlite"]
    ts = {e["kind"]: e["ts"] for e in map(json.loads, (ln for ln in back.stderr.splitlines() if ln.startswith("{")))
          if e["kind"] in ("fence.started", "fence.done", "fence.set_aside")}
    print(f"\nreplicate {replicate_s:.1f}s, cold failover {failover_s:.1f}s, failback replicate {failback_s:.1f}s "
          f"(fence {ts['fence.done'] - ts['fence.started']:.1f}s, set aside "
          f"{ts['fence.set_aside'] - ts['fence.done']:.1f}s, then the standby), checks {time.monotonic() - t2 - failback_s:.1f}s")
