"""Redis in the lab: a stack variant with `data.redis` entries, its servers on a lab host, data to move.

The lab's own stack stays the example's; `redis_stack(info)` writes a variant beside it (so its `file:secrets/...`
references resolve) with two Redis datasets: `queue` (port 6390, a password, replicated) and `cache` (port 6391, no
password, `ephemeral: true`). `deploy(info, stack_file)` runs the same redis.yml a failover runs at the target on
lab host a (the primary site), as PostgreSQL gets there; `start` starts the same servers there without Ansible (a
second instead of ten or more, for tests); `fill` writes every type Redis has, some keys with TTLs.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

QUEUE_PORT = 6390
CACHE_PORT = 6391


def redis_stack(info: Any, name: str = "liferaft-redis.yaml", *, queue_port: int = QUEUE_PORT,
                password_ref: str = "file:secrets/redis_password", cache: bool = True, only_redis: bool = True) -> Path:
    """The lab's stack with `data.redis` (queue, cache), written beside the lab's stack file. `only_redis`: a stack
    of its own (`redisdemo`) whose only data is Redis: no service, no database, bucket or folder, no DNS (moving it
    leaves the example's app, data and DNS alone, and takes seconds, not minutes)."""
    from ruamel.yaml import YAML

    pw = info.secrets_dir / "redis_password"
    if not pw.exists():
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    yaml = YAML()
    doc = yaml.load(info.stack_file.read_text())
    doc["data"]["redis"] = {"queue": {"port": queue_port, "password": password_ref}}
    if cache:
        doc["data"]["redis"]["cache"] = {"port": CACHE_PORT, "ephemeral": True}
    if only_redis:
        doc["name"] = "redisdemo"
        doc["services"] = {}
        doc["data"]["databases"] = {}
        doc["data"]["buckets"] = {}
        doc["data"].pop("directories", None)  # the example worker's folder
        del doc["dns"]  # no record to move (a drill would check its drill record against a service)
    path: Path = info.stack_file.with_name(name)
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return path


def deploy(info: Any, stack_file: Path, host: str = "a") -> float:
    """redis.yml on lab host `host` for the stack's `data.redis`; seconds taken."""
    from liferaft.configure import run_playbook
    from liferaft.lab.example import lab_target_host
    from liferaft.stack import load_stack

    stack = load_stack(stack_file)
    target = lab_target_host(info, host)
    entries = stack.model.data.redis
    servers = [{"key": k, "port": e.port, "ephemeral": e.ephemeral, "maxmemory": e.maxmemory}
               for k, e in sorted(entries.items())]
    secret = {k: {"password": stack.secret(e.password) if e.password else ""} for k, e in entries.items()}
    t0 = time.monotonic()
    run_playbook("redis.yml", [target], variables={"liferaft_listen_address": target.address,
                                                   "liferaft_redis": servers},
                 secret_variables={"liferaft_secrets": {"redis": secret}}, state_dir=info.directory, timeout=300)
    return time.monotonic() - t0


def start(info: Any, stack_file: Path, host: str = "a") -> float:
    """Start the stack's Redis servers on lab host `host` directly (a config written over SSH's stdin, then
    start-stop-daemon as redis.yml does, at the same paths): a second, where the playbook takes ten or more.
    Idempotent (a running server is left as it is). Seconds taken."""
    from liferaft.configure.remote import ssh
    from liferaft.lab.example import lab_target_host
    from liferaft.stack import load_stack

    stack = load_stack(stack_file)
    target = lab_target_host(info, host)
    lines = ["set -e"]
    for key, e in sorted(stack.model.data.redis.items()):
        p = int(e.port)
        conf = [f"bind {target.address} 127.0.0.1", f"port {p}", "daemonize no", f"dir /var/lib/liferaft/redis-{p}",
                f"logfile /var/log/liferaft/redis-{p}.log", "repl-diskless-sync-delay 0", "save \"\""]
        if e.password:
            conf.append(f"requirepass {stack.secret(e.password)}")
        else:
            conf.append("protected-mode no")
        lines += [f"install -d -o redis -g redis -m 0750 /var/lib/liferaft/redis-{p} /var/log/liferaft",
                  f"touch /var/log/liferaft/redis-{p}.log && chown redis:redis /var/log/liferaft/redis-{p}.log",
                  f"umask 077; cat > /etc/liferaft/redis-{p}.conf <<'LIFERAFT_EOF'", *conf, "LIFERAFT_EOF",
                  f"chown redis:redis /etc/liferaft/redis-{p}.conf",
                  (f"start-stop-daemon --status --pidfile /run/liferaft-redis-{p}.pid || start-stop-daemon --start "
                  f"--background --make-pidfile --pidfile /run/liferaft-redis-{p}.pid --chuid redis:redis "
                  f"--exec /usr/bin/redis-server -- /etc/liferaft/redis-{p}.conf"),
                  f"for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/{p}) 2>/dev/null && break; sleep 0.1; done"]
    t0 = time.monotonic()
    ssh(target, "mkdir -p /etc/liferaft && bash -s", stdin="\n".join(lines) + "\n", what=f"start Redis on {host}")
    return time.monotonic() - t0


def client(info: Any, host: str, port: int = QUEUE_PORT, *, password: bool = True, db: int = 0) -> Any:
    import redis

    pw = info.secret("redis_password") if password else None
    return redis.Redis(host=info.hosts[host].address, port=port, password=pw, db=db, socket_timeout=30,
                       socket_connect_timeout=5)


def fill(r: Any, n: int = 2000, prefix: str = "k") -> int:
    """Write `n` strings (every tenth with a TTL of an hour, one binary value) and a few keys of every other type;
    returns the keys written."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{prefix}:s:{i:06d}", f"value {i} " * (i % 7 + 1), ex=3600 if i % 10 == 0 else None)
    pipe.set(f"{prefix}:bin", bytes(range(256)))
    for i in range(20):
        pipe.hset(f"{prefix}:h:{i}", mapping={f"f{j}": f"v{i}.{j}" for j in range(i + 1)})
        pipe.rpush(f"{prefix}:l:{i}", *[f"item{j}" for j in range(i + 1)])
        pipe.sadd(f"{prefix}:set:{i}", *[f"m{j}" for j in range(i + 1)])
        pipe.zadd(f"{prefix}:z:{i}", {f"m{j}": j * 1.5 for j in range(i + 1)})
    pipe.hset(f"{prefix}:h:big", mapping={f"f{j}": "x" * 10 for j in range(600)})  # a hashtable, not a listpack
    for j in range(595):
        pipe.hdel(f"{prefix}:h:big", f"f{j}")  # ... shrunk back: the replica may hold it as a listpack
    for j in range(5):
        pipe.xadd(f"{prefix}:stream", {"n": str(j)})
    pipe.expire(f"{prefix}:h:3", 3600)
    pipe.execute()
    return n + 1 + 20 * 4 + 2


class Writer:
    """Writes `w:<n>` keys at a fixed rate in a thread; the keys the server acknowledged are in `acked`."""

    def __init__(self, r: Any, rate: float = 50.0) -> None:
        self.r, self.rate = r, rate
        self.acked: list[str] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lab-redis-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"w:{i:07d}"
            i += 1
            try:
                self.r.set(key, f"acknowledged {i}")
                self.acked.append(key)
            except Exception:  # noqa: BLE001 - refused (frozen) or gone: not acknowledged
                self.failed += 1
            time.sleep(1.0 / self.rate)

    def finish(self) -> Writer:
        self.stop.set()
        self.thread.join(60)
        return self


def stop_lines(ports: list[int]) -> str:
    """The shell that stops and removes the lab's Redis servers on a host (the drill teardown's lines)."""
    from liferaft.datasets.redis_ import removal_lines

    return "\n".join(["sd=false", *removal_lines(ports)]) + "\n"
