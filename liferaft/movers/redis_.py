"""Redis: connect, replicate (`REPLICAOF`), freeze (`CLIENT PAUSE WRITE`), promote, and hash a keyspace.

Below the dataset kinds, so the kind, the standby keeping and the benchmark share it. Every call is bounded by a
socket timeout; a password reaches the server in the protocol (AUTH, CONFIG SET masterauth), never a command line.

The keyspace digest (`digests`) walks the whole database with SCAN and, per batch of keys, runs a read-only Lua
script (`#!lua flags=no-writes`: allowed on a read-only replica and while writes are paused) that returns, per key,
its type, whether it has a TTL, and the SHA-1 of a canonical serialization of its value: strings as they are, lists
in order, sets and hashes sorted (their order in memory depends on their history), sorted sets by score, streams
entry by entry (a key expiring within `SOON_MS` is marked `soon`: missing at the other end, it is not a difference).
Two servers holding the same data give the same per-key digests whatever their encodings
(listpack vs hashtable), which DUMP's bytes do not guarantee. Keys that expire between SCAN and the script are
skipped (type `none`) at both ends.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import CheckFailed, LiferaftError, RunFailed

Progress = Callable[[str, dict[str, Any]], None]
SCAN_COUNT = 1000
BATCH = 500
SOON_MS = 15_000  # a key expiring within this may be gone at one end when the other is read: not a difference

DIGEST_LUA = r"""#!lua flags=no-writes
local function enc(a)
  local parts = {}
  for i = 1, #a do parts[#parts + 1] = #a[i] .. ':' .. a[i] end
  return table.concat(parts, ',')
end
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  local v = ''
  if t == 'string' then
    v = redis.call('GET', k)
  elseif t == 'list' then
    v = enc(redis.call('LRANGE', k, 0, -1))
  elseif t == 'set' then
    local a = redis.call('SMEMBERS', k); table.sort(a); v = enc(a)
  elseif t == 'zset' then
    v = enc(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'))
  elseif t == 'hash' then
    local a = redis.call('HGETALL', k)
    local pairs_ = {}
    for j = 1, #a, 2 do pairs_[#pairs_ + 1] = {a[j], a[j + 1]} end
    table.sort(pairs_, function(x, y) return x[1] < y[1] end)
    local flat = {}
    for _, p in ipairs(pairs_) do flat[#flat + 1] = p[1]; flat[#flat + 1] = p[2] end
    v = enc(flat)
  elseif t == 'stream' then
    local flat = {}
    for _, e in ipairs(redis.call('XRANGE', k, '-', '+')) do
      flat[#flat + 1] = e[1]
      flat[#flat + 1] = enc(e[2])
    end
    v = enc(flat)
  end
  local ttl = 'none'
  if t ~= 'none' then
    local ms = redis.call('PTTL', k)
    if ms >= 0 and ms < tonumber(ARGV[1]) then ttl = 'soon' elseif ms >= 0 then ttl = 'ttl' end
  end
  out[i] = t .. ' ' .. ttl .. ' ' .. redis.sha1hex(v)
end
return out
"""


@dataclass(frozen=True)
class RedisConn:
    """Where one Redis database is and how to log in (the password is never shown: repr=False)."""

    host: str
    port: int
    db: int = 0
    password: str | None = field(default=None, repr=False)
    label: str = ""  # what errors name: "redis dataset 'queue' at the source"

    @property
    def where(self) -> str:
        return f"{self.label + ' ' if self.label else ''}at {self.host}:{self.port}"


def client(conn: RedisConn, timeout: float = 10.0) -> Any:
    import redis

    return redis.Redis(host=conn.host, port=conn.port, db=conn.db, password=conn.password,
                       socket_timeout=timeout, socket_connect_timeout=min(timeout, 10.0), decode_responses=False)


def explain(conn: RedisConn, e: Exception, *, key: str | None = None) -> LiferaftError:
    """A Redis client error as a stop that names the dataset and the fix."""
    import redis

    field_ = f"data.redis.{key}" if key else "the stack file's data.redis entry"
    text = str(e).strip() or type(e).__name__
    if isinstance(e, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text \
            or "invalid password" in text.lower() or "without any password configured" in text:
        return CheckFailed(f"{conn.where}: the password was refused ({text})",
                           hint=f"check the secret {field_}.password refers to (it must be the server's requirepass)")
    if isinstance(e, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return CheckFailed(f"{conn.where}: no Redis answers ({text})",
                           hint=f"check {field_}.port / address and that redis-server runs there")
    return CheckFailed(f"{conn.where}: {text}")


def call(conn: RedisConn, fn: Callable[[Any], Any], *, key: str | None = None, timeout: float = 10.0) -> Any:
    """fn(client) with the connection's errors turned into stops that name the dataset and the fix."""
    import redis

    c = client(conn, timeout)
    try:
        return fn(c)
    except (redis.RedisError, OSError) as e:
        raise explain(conn, e, key=key) from None
    finally:
        c.close()


def info(conn: RedisConn, section: str = "all", *, key: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    return dict(call(conn, lambda c: c.info(section), key=key, timeout=timeout))


def version(conn: RedisConn, *, key: str | None = None) -> str:
    return str(info(conn, "server", key=key)["redis_version"])


def version_problem(source: str, target: str) -> str | None:
    """Why a replica at `target`'s version cannot take `source`'s data (an older Redis cannot load a newer RDB),
    else None."""
    def major_minor(v: str) -> tuple[int, int]:
        parts = (v.split(".") + ["0", "0"])[:2]
        return int(parts[0]), int(parts[1])

    if major_minor(target) < major_minor(source):
        return (f"the target runs Redis {target}, older than the source's {source}: an older Redis cannot load a "
                "newer one's replication stream (RDB format)")
    return None


# ------------------------------------------------------------------------------------------------ replication
def replication(conn: RedisConn, *, key: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    return info(conn, "replication", key=key, timeout=timeout)


def replicates_from(rep: dict[str, Any], master: RedisConn) -> bool:
    return (rep.get("role") == "slave" and str(rep.get("master_host")) == master.host
            and int(rep.get("master_port") or 0) == master.port)


def replicate(replica: RedisConn, master: RedisConn, *, key: str | None = None) -> bool:
    """Make `replica` replicate `master` (its password as masterauth, set over the protocol). Idempotent: False
    when it already did."""
    if replicates_from(replication(replica, key=key), master):
        return False

    def go(c: Any) -> None:
        c.config_set("masterauth", master.password or "")
        if config_value(c, "repl-diskless-load") == "disabled":
            # Load the master's RDB from the socket as it arrives instead of writing it to disk first and loading
            # it after: the transfer and the load overlap (1M keys here: 2.3-3.0 s instead of 3.5-5.1 s). Only
            # into an empty database ("completely safe" in Redis's words; else the server loads from disk as
            # before); `persist_after_sync` writes the RDB the disk path would have left. swapdb, if the operator
            # chose it, is kept.
            c.config_set("repl-diskless-load", "on-empty-db")
        c.replicaof(master.host, master.port)
    call(replica, go, key=key)
    return True


def config_value(c: Any, name: str) -> str:
    got = c.config_get(name)
    v = got.get(name.encode(), got.get(name, b""))
    return v.decode() if isinstance(v, bytes) else str(v)


def persist_after_sync(replica: RedisConn, *, key: str | None = None) -> bool:
    """Start a BGSAVE at a replica that persists (`save` points set) and holds changes not on disk: after a
    diskless load (`repl-diskless-load on-empty-db`) its data is in memory only, where a disk load leaves the
    received RDB as its dump file. Not waited for (a fork writes it while the replica serves and streams).
    True when one was started."""
    def go(c: Any) -> bool:
        if not config_value(c, "save").strip():
            return False
        p = c.info("persistence")
        if int(p.get("rdb_changes_since_last_save") or 0) == 0 or int(p.get("rdb_bgsave_in_progress") or 0):
            return False
        import redis

        try:
            c.bgsave()
        except redis.ResponseError as e:  # a save already running (an AOF rewrite): that one persists it
            if "in progress" not in str(e):
                raise
            return False
        return True
    return bool(call(replica, go, key=key))


def wait_synced(replica: RedisConn, master: RedisConn, timeout: float, *, key: str | None = None,
                progress: Progress | None = None) -> float:
    """Wait until the replica's link to its master is up and its full sync is over (then start the save a
    diskless load leaves to do: `persist_after_sync`); seconds waited."""
    t0 = time.monotonic()
    last = 0.0
    while True:
        rep = replication(replica, key=key)
        if not replicates_from(rep, master):
            raise RunFailed(f"{replica.where}: no longer replicates {master.host}:{master.port} (role "
                            f"{rep.get('role')})")
        if rep.get("master_link_status") == "up" and not int(rep.get("master_sync_in_progress") or 0):
            seconds = time.monotonic() - t0
            persist_after_sync(replica, key=key)
            return seconds
        if time.monotonic() - t0 > timeout:
            raise RunFailed(f"{replica.where}: the initial sync from {master.host}:{master.port} did not finish in "
                            f"{timeout:g} s (link {rep.get('master_link_status')}, last I/O "
                            f"{rep.get('master_last_io_seconds_ago')} s ago)",
                            hint="the source must be reachable from the target host on its Redis port; see the "
                                 "target's Redis log (/var/log/liferaft/redis-<port>.log)")
        if progress is not None and time.monotonic() - last > 1.0:
            last = time.monotonic()
            progress("redis.sync", {"link": str(rep.get("master_link_status")),
                                    "loaded": int(rep.get("master_sync_read_bytes") or 0),
                                    "total": int(rep.get("master_sync_total_bytes") or 0)})
        time.sleep(0.05)


def master_offset(master: RedisConn, *, key: str | None = None, timeout: float = 10.0) -> int:
    return int(replication(master, key=key, timeout=timeout)["master_repl_offset"])


def replica_offset(replica: RedisConn, *, key: str | None = None) -> int:
    rep = replication(replica, key=key)
    return int(rep.get("slave_repl_offset") or rep.get("master_repl_offset") or 0)


def wait_offset(replica: RedisConn, offset: int, timeout: float, *, key: str | None = None) -> tuple[bool, int]:
    """Wait until the replica processed the stream up to `offset`: (caught up?, its offset)."""
    deadline = time.monotonic() + timeout
    while True:
        got = replica_offset(replica, key=key)
        if got >= offset:
            return True, got
        if time.monotonic() > deadline:
            return False, got
        time.sleep(0.005)


def promote(replica: RedisConn, *, key: str | None = None) -> dict[str, Any]:
    """REPLICAOF NO ONE (the replica keeps its data and accepts writes). Idempotent."""
    rep = replication(replica, key=key)
    was = rep.get("role") == "slave"
    if was:
        call(replica, lambda c: c.replicaof("NO", "ONE"), key=key)
    return {"was_replica": was, "offset": int(rep.get("slave_repl_offset") or rep.get("master_repl_offset") or 0),
            "master_link_down_since_s": rep.get("master_link_down_since_seconds")}


# -------------------------------------------------------------------------------------------------- freezing
FREEZE_GUARD = "min-replicas-to-write"
FREEZE_GUARD_VALUE = 1000000  # more replicas than any server has: every write is refused with NOREPLICAS


def pause_writes(master: RedisConn, ms: int, *, key: str | None = None) -> None:
    call(master, lambda c: c.execute_command("CLIENT", "PAUSE", int(ms), "WRITE"), key=key)


def unpause(master: RedisConn, *, key: str | None = None) -> None:
    call(master, lambda c: c.execute_command("CLIENT", "UNPAUSE"), key=key)


def refuse_writes(master: RedisConn, *, key: str | None = None) -> int:
    """Make the server refuse every write from now on, beyond any pause (min-replicas-to-write higher than it can
    have): clients get NOREPLICAS errors instead of hanging. Returns the value it had (to restore)."""
    def go(c: Any) -> int:
        before = int(c.config_get(FREEZE_GUARD).get(FREEZE_GUARD.encode(), b"0") or 0)
        if before != FREEZE_GUARD_VALUE:
            c.config_set(FREEZE_GUARD, FREEZE_GUARD_VALUE)
        return before
    return int(call(master, go, key=key))


def accept_writes(master: RedisConn, value: int = 0, *, key: str | None = None) -> None:
    def go(c: Any) -> None:
        c.config_set(FREEZE_GUARD, 0 if value == FREEZE_GUARD_VALUE else value)
        c.execute_command("CLIENT", "UNPAUSE")
    call(master, go, key=key)


def refuses_writes(master: RedisConn, *, key: str | None = None) -> bool:
    got = call(master, lambda c: c.config_get(FREEZE_GUARD), key=key)
    return int(got.get(FREEZE_GUARD.encode(), b"0") or 0) == FREEZE_GUARD_VALUE


# ---------------------------------------------------------------------------------------------------- digests
@dataclass(frozen=True)
class Keyspace:
    """One database's keys -> "type ttl|none sha1(value)"."""

    keys: dict[bytes, str]
    seconds: float

    @property
    def digest(self) -> str:
        """Order-independent: the XOR of every key's SHA-256 over (key, its digest)."""
        acc = 0
        for k, v in self.keys.items():
            acc ^= int.from_bytes(hashlib.sha256(k + b"\0" + v.encode()).digest(), "big")
        return f"{acc:064x}"


def digests(conn: RedisConn, *, key: str | None = None, progress: Progress | None = None,
            timeout: float = 60.0) -> Keyspace:
    """Every key of the database by SCAN, each hashed server-side (see the module's docstring)."""
    import redis

    t0 = time.monotonic()
    c = client(conn, timeout)
    out: dict[bytes, str] = {}
    try:
        script = c.register_script(DIGEST_LUA)
        batch: list[bytes] = []

        def flush() -> None:
            if not batch:
                return
            for k, v in zip(batch, script(keys=batch, args=[SOON_MS]), strict=True):
                text = v.decode() if isinstance(v, bytes) else str(v)
                if not text.startswith("none "):
                    out[k] = text
            batch.clear()
            if progress is not None and len(out) % 50000 < BATCH:
                progress("redis.digest", {"keys": len(out)})

        for k in c.scan_iter(count=SCAN_COUNT):
            batch.append(k)
            if len(batch) >= BATCH:
                flush()
        flush()
    except (redis.RedisError, OSError) as e:
        raise explain(conn, e, key=key) from None
    finally:
        c.close()
    return Keyspace(out, time.monotonic() - t0)


def compare(source: Keyspace, target: Keyspace, limit: int = 10) -> tuple[list[str], list[str], list[str]]:
    """(missing at the target, differing, only at the target) key names, each at most `limit`, as text."""
    def show(k: bytes) -> str:
        return repr(k.decode(errors="backslashreplace"))

    def same(a: str, b: str) -> bool:
        return a.replace(" soon ", " ttl ") == b.replace(" soon ", " ttl ")

    missing = [k for k, v in source.keys.items() if k not in target.keys and " soon " not in v]
    differ = [k for k, v in source.keys.items() if k in target.keys and not same(target.keys[k], v)]
    extra = [k for k, v in target.keys.items() if k not in source.keys and " soon " not in v]

    def named(ks: list[bytes], what: Callable[[bytes], str]) -> list[str]:
        shown = [what(k) for k in sorted(ks)[:limit]]
        return shown + ([f"... and {len(ks) - limit} more"] if len(ks) > limit else [])

    def why(k: bytes) -> str:
        a, b = source.keys[k].split(" "), target.keys[k].split(" ")
        if a[0] != b[0]:
            return f"key {show(k)}: type {a[0]} at the source, {b[0]} at the target"
        if (a[1] == "none") != (b[1] == "none"):
            return f"key {show(k)}: TTL {'none' if a[1] == 'none' else 'set'} at the source, " \
                   f"{'none' if b[1] == 'none' else 'set'} at the target"
        return f"key {show(k)}: value differs ({a[0]})"

    return (named(missing, lambda k: f"key {show(k)} missing at the target"), named(differ, why),
            named(extra, lambda k: f"key {show(k)} only at the target"))


def size(conn: RedisConn, *, key: str | None = None) -> tuple[int, int, str]:
    """(keys in the database, used memory of the server, version), read-only."""
    def go(c: Any) -> tuple[int, int, str]:
        i = c.info()
        return int(c.dbsize()), int(i.get("used_memory_dataset") or i.get("used_memory") or 0), str(i["redis_version"])
    out: tuple[int, int, str] = call(conn, go, key=key)
    return out
