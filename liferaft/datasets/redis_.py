"""The Redis dataset kind (stack file: `data.redis.<key>`): a Redis server moved by replication.

Live move, verification and drills here; keeping a standby and promoting it in `redis_standby`.

- plan: DBSIZE of the database and the server's dataset memory, read-only (INFO, DBSIZE); estimates from the
  benchmark (bench/bench_redis.py);
- target: `redis.yml` (Debian's redis-server where it is missing, one server per port, the same password);
- prepare: both servers answer with the stack's password, and the target's Redis is not older than the source's
  (an older Redis cannot load a newer replication stream): a clear stop naming the dataset and the fix;
- seed: the target replicates the source (`REPLICAOF`; the source must be reachable from the target host on its
  port), the initial sync waited for;
- freeze: `CLIENT PAUSE WRITE` at the source (writers wait), the target's replication offset waited for until it
  equals the source's, then the source made to refuse writes for good (`min-replicas-to-write` higher than it can
  have: clients get NOREPLICAS errors instead of hanging), the target promoted (`REPLICAOF NO ONE`), the pause
  lifted (`CLIENT UNPAUSE`); undo: the source accepts writes again;
- verify: key count and a per-key digest of the database over a full SCAN (type, value, TTL present or not),
  order-independent; names missing, changed and extra keys;
- cut (drills): the source's offset at the cut waited for at the target (bounded), the target promoted; the source
  never frozen;
- ephemeral (a cache): created empty at the target, never copied, never frozen, not compared;
- teardown: the Redis servers redis.yml made on the drill's target stopped and removed;
- set aside (a failback's `replicate --to` the old primary, before the standby's first sync replaces the data
  there): each server's snapshot (`SAVE`) copied to `/var/lib/liferaft/set_aside/<stack>/before_<run>/redis-<key>.rdb`
  (0400), outside the server's data dir, so no teardown removes it.

RPO: 0 in a live failover (the freeze waits for the offsets to match); in a cold failover, what the standby had not
received when the source was lost (its lag: the offset difference `replicate` reports).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import HostedKind, progress, source_host, target_host
from liferaft.datasets.base import Dataset, LedgerVerdict, Size, Verdict, Where
from liferaft.datasets.redis_standby import RedisStandby, check_versions, redis_conn, redis_vars
from liferaft.errors import LiferaftError, RunFailed

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext
    from liferaft.movers.redis_ import RedisConn
    from liferaft.stack import Stack

# From bench/bench_redis.py on a loaded 2-core machine (conservative): 1M keys / 141 MB synced in 3-16 s; the
# digest ~5,000-25,000 keys/s per end, both ends hashed side by side.
SYNC_BYTES_PER_S = 20e6
VERIFY_KEYS_PER_S = 10e3
SEED_TIMEOUT_S = 600.0
CATCH_UP_TIMEOUT_S = 30.0
PAUSE_MS = 60_000  # the pause's safety net: lifted by the freeze itself within its catch-up


def conns(ctx: RunContext, ds: Dataset) -> tuple[RedisConn, RedisConn]:
    return (redis_conn(ctx, ds, str(source_host(ctx).address), at_source=True),
            redis_conn(ctx, ds, str(target_host(ctx).address), at_source=False))


def removal_lines(ports: list[int]) -> list[str]:
    """Shell lines that stop and remove the Redis servers redis.yml made (drill teardown)."""
    lines = []
    for p in sorted({int(p) for p in ports}):
        lines += [f"if $sd; then systemctl disable --now liferaft-redis-{p}.service 2>/dev/null || true; fi",
                  (f"start-stop-daemon --stop --pidfile /run/liferaft-redis-{p}.pid --retry TERM/30/KILL/5 "
                  "--remove-pidfile --oknodo >/dev/null 2>&1 || true"),
                  (f"rm -rf /var/lib/liferaft/redis-{p} /etc/liferaft/redis-{p}.conf /var/log/liferaft/redis-{p}.log "
                  f"/etc/systemd/system/liferaft-redis-{p}.service")]
    return lines


def auth(conf: str) -> str:
    """Shell that exports REDISCLI_AUTH from the server's own config on the host (its `requirepass`, unquoted),
    never from the controller, never on a command line."""
    return (f"pw=$(sed -n -e 's/^requirepass \"\\(.*\\)\"$/\\1/p' -e t -e 's/^requirepass \\(.*\\)$/\\1/p' "
            f"{conf} 2>/dev/null | sed 's/\\\\\\(.\\)/\\1/g'); if [ -n \"$pw\" ]; then export REDISCLI_AUTH=\"$pw\"; fi")


def set_aside_lines(stack: str, datasets: list[Dataset], tag: str) -> list[str]:
    """Shell lines that keep each (fenced) Redis server's data of the old primary as an RDB file before a failback's
    standby replicates into it (its first full sync replaces the whole dataset): `SAVE` (a fenced server still
    saves: it refuses writes, not snapshots; a server that is down has its last snapshot on disk), then the
    snapshot copied to `<set_aside_dir>/redis-<key>.rdb`, 0400, under a temporary name renamed when complete. It
    lives outside the server's data dir, so a drill's teardown leaves it; `redis-server --dir <that folder>
    --dbfilename redis-<key>.rdb` on a spare port serves it. Idempotent. An ephemeral server (a cache) is not
    kept. Nothing is deleted."""
    from liferaft.datasets._util import set_aside_dir

    d = set_aside_dir(stack, tag)
    lines: list[str] = []
    for p in sorted({int(ds.spec.port) for ds in datasets if not ds.spec.ephemeral}):
        key = next(ds.key for ds in datasets if int(ds.spec.port) == p and not ds.spec.ephemeral)
        conf, f, what = f"/etc/liferaft/redis-{p}.conf", f"{d}/redis-{key}.rdb", f"redis {key} (port {p})"
        lines += [(
            f"if [ -s {f} ]; then echo 'liferaft-fence: done: {what} kept as {f} (an RDB snapshot, read-only)'; else "
            f"dir=$(sed -n 's/^dir  *//p' {conf} 2>/dev/null | tail -n 1); dir=${{dir:-/var/lib/liferaft/redis-{p}}}; "
            f"rdb=$(sed -n 's/^dbfilename  *//p' {conf} 2>/dev/null | tail -n 1); rdb=${{rdb:-dump.rdb}}; "
            f"out=$({auth(conf)}; redis-cli --no-auth-warning -h 127.0.0.1 -p {p} SAVE 2>&1); "
            "case \"$out\" in OK|*'Connection refused'*) "
            f"if [ ! -s \"$dir/$rdb\" ]; then echo 'liferaft-fence: done: {what}: no snapshot on disk, nothing to keep'; "
            f"elif (umask 077 && mkdir -p {d} && cp \"$dir/$rdb\" {f}.partial) && chmod 0400 {f}.partial && "
            f"mv -f {f}.partial {f}; then echo \"liferaft-fence: done: {what} kept as {f} (an RDB snapshot, "
            f"read-only, $(wc -c < {f}) bytes)\"; else rm -f {f}.partial; echo 'liferaft-fence: failed: {what}: its "
            f"snapshot could not be copied to {f}'; fi;; "
            f"*) echo 'liferaft-fence: failed: {what}: SAVE: '\"$(echo $out | head -c 200)\";; esac; fi")]
    return lines


def fence_lines(datasets: list[Dataset], *, undo: bool = False) -> list[str]:
    """Shell lines that make each Redis server of the datasets refuse every write (`undo`: accept them again), the
    same way the live freeze leaves a source: `min-replicas-to-write` higher than any server has replicas, so
    every write (commands, MULTI, scripts) gets a NOREPLICAS error at once; reads still work, and the server can
    still be made a replica of the active site later (a replica applies its master's stream regardless).
    Chosen over `REPLICAOF <nowhere>` (which would make it drop its data at the first sync) and over stopping it
    (a reboot or a watchdog starts it again). Set live with redis-cli through 127.0.0.1 (the password read from
    the server's own config on the host, never from the controller, never on a command line: REDISCLI_AUTH), and
    written into the config, so that a server that was down, or restarts, refuses writes from its start."""
    from liferaft.movers.redis_ import FREEZE_GUARD, FREEZE_GUARD_VALUE

    value = 0 if undo else FREEZE_GUARD_VALUE
    lines: list[str] = []
    for p in sorted({int(ds.spec.port) for ds in datasets}):
        keys = ", ".join(ds.key for ds in datasets if int(ds.spec.port) == p)
        conf, what = f"/etc/liferaft/redis-{p}.conf", f"redis {keys} (port {p})"
        guard = f"{FREEZE_GUARD} {FREEZE_GUARD_VALUE}"
        lines += [
            (f"if [ -f {conf} ]; then sed -i '/^{guard}$/d' {conf}; "
             + ("" if undo else f"echo '{guard}' >> {conf}; ") + "fi"),
            (f"out=$({auth(conf)}; "
             f"redis-cli --no-auth-warning -h 127.0.0.1 -p {p} CONFIG SET {FREEZE_GUARD} {value} 2>&1)"),
            (f"case \"$out\" in OK) echo 'liferaft-fence: done: {what} "
             f"{'accepts writes again' if undo else 'refuses writes'}';; "
             f"*'Connection refused'*) if [ -f {conf} ]; then echo 'liferaft-fence: done: {what} not running; "
             f"{'accepts' if undo else 'refuses'} writes when it starts'; else echo 'liferaft-fence: failed: {what} "
             "not running, no liferaft config'; fi;; "
             f"*) echo 'liferaft-fence: failed: {what}: '\"$(echo $out | head -c 200)\";; esac"),
        ]
    return lines


def _frozen_now(ctx: RunContext) -> None:
    if "writes_frozen_at" not in ctx.memo:
        ctx.remember(writes_frozen_at=time.time())


def _compare(ds: Dataset, src: RedisConn, tgt: RedisConn, report: Any) -> tuple[Any, Any]:
    from liferaft.movers import redis_ as r

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="liferaft-redis-digest") as pool:
        a = pool.submit(r.digests, src, key=ds.key, progress=report)
        b = pool.submit(r.digests, tgt, key=ds.key)
        return a.result(), b.result()


class Redis(RedisStandby, HostedKind):
    name: ClassVar[str] = "redis"
    noun: ClassVar[str] = "keyspace"
    group: ClassVar[str] = "redis"
    seed_verb: ClassVar[str] = "redis"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.redis.items())

    # ---- plan -----------------------------------------------------------------------------------------------
    def summary(self, ds: Dataset) -> Any:
        return "ephemeral" if ds.spec.ephemeral else "replicaof"

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        seed = (f"Redis {ds.key}: ephemeral (a cache), created empty at the target, not copied" if ds.spec.ephemeral
                else f"replicate Redis {ds.key} (port {ds.spec.port}, REPLICAOF from the source)")
        return {"seed": seed, "prepare": f"Redis {ds.key}: both servers answer, versions compatible"}

    def observe(self, where: Where, ds: Dataset) -> Size:
        """DBSIZE and INFO: read-only."""
        from liferaft.movers import redis_ as r
        from liferaft.movers.redis_ import RedisConn

        spec = ds.spec
        conn = RedisConn(host=str(spec.address or where.source_host.address), port=int(spec.port), db=int(spec.db),
                         password=where.stack.secret(spec.password) if spec.password else None,
                         label=f"redis dataset {ds.key!r} at the source")
        keys, memory, version = r.size(conn, key=ds.key)
        if spec.ephemeral:
            return Size(bytes=0, items=keys, detail=f"Redis {version}, ephemeral: not copied ({memory} bytes there)")
        return Size(bytes=memory, items=keys, detail=f"Redis {version}, db {spec.db}")

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        if ds.spec.ephemeral:
            return 0.0
        return size.bytes / SYNC_BYTES_PER_S + size.items / VERIFY_KEYS_PER_S

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return ["redis.yml"] if datasets else []

    def playbook_vars(self, ctx: RunContext, datasets: list[Dataset], address: str
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        return redis_vars(ctx, datasets)

    # ---- live move ------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        src, tgt = conns(ctx, ds)
        if ds.spec.ephemeral:
            return {"ephemeral": True, "target_version": r.version(tgt, key=ds.key)}
        return check_versions(src, tgt, ds.key)

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        src, tgt = conns(ctx, ds)
        if ds.spec.ephemeral:
            if tgt.host == src.host:
                raise RunFailed(f"redis {ds.key}: the target is the source ({tgt.host})")
            # A cache starts empty at the target (a server left there by an earlier move holds stale entries).
            dropped = r.call(tgt, lambda c: (c.dbsize(), c.flushdb())[0], key=ds.key)
            return {"method": "ephemeral", "note": "created empty at the target, not copied", "dropped": dropped}
        started = r.replicate(tgt, src, key=ds.key)
        seconds = r.wait_synced(tgt, src, SEED_TIMEOUT_S, key=ds.key, progress=progress(ctx))
        return {"method": "replicaof", "started": started, "initial_sync_s": round(seconds, 2)}

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def unseed(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            return
        try:
            _, tgt = conns(ctx, ds)
            r.promote(tgt, key=ds.key)  # stop replicating (the target is going away with the rollback)
        except (LiferaftError, KeyError):
            pass

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            if on_frozen is not None:
                on_frozen()
            return {"method": "ephemeral"}
        src, tgt = conns(ctx, ds)
        rep = r.replication(tgt, key=ds.key)
        if r.refuses_writes(src, key=ds.key) and rep.get("role") == "master":
            _frozen_now(ctx)
            if on_frozen is not None:
                on_frozen()
            return {"method": "replicaof", "note": "already cut over before an interruption"}
        if not r.replicates_from(rep, src):
            raise RunFailed(f"redis {ds.key}: the target no longer replicates the source and the source is still "
                            "writable: nothing guarantees the target is complete", hint="roll back and fail over again")
        t0 = time.monotonic()
        r.pause_writes(src, PAUSE_MS, key=ds.key)
        _frozen_now(ctx)
        if on_frozen is not None:
            on_frozen()
        try:
            offset = r.master_offset(src, key=ds.key)
            caught, got = r.wait_offset(tgt, offset, CATCH_UP_TIMEOUT_S, key=ds.key)
            if not caught:
                raise RunFailed(f"redis {ds.key}: the target did not catch up with the source within "
                                f"{CATCH_UP_TIMEOUT_S:g} s (offset {got} of {offset})",
                                hint="check the link between the hosts; `liferaft resume` tries again")
            catch_up = time.monotonic() - t0
            r.refuse_writes(src, key=ds.key)
            r.promote(tgt, key=ds.key)
        finally:
            r.unpause(src, key=ds.key)  # refused for good by now, or the freeze failed: writers do not hang
        return {"method": "replicaof", "offset": offset, "catch_up_s": round(catch_up, 3),
                "freeze_s": round(time.monotonic() - t0, 3)}

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            return
        src, _ = conns(ctx, ds)
        r.accept_writes(src, 0, key=ds.key)
        ctx.emit("redis.writable", f"redis {ds.key} at the source accepts writes again", dataset=ds.key)

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        from liferaft.movers import redis_ as r

        t0 = time.monotonic()
        label = f"redis {ds.key}"
        src, tgt = conns(ctx, ds)
        if ds.spec.ephemeral:
            role = r.replication(tgt, key=ds.key).get("role")
            problems = () if role == "master" else (f"{label}: the target replicates (role {role})",)
            return Verdict(checked={f"{label} (ephemeral, not compared)": 0}, problems=problems,
                           seconds=round(time.monotonic() - t0, 3))
        a, b = _compare(ds, src, tgt, progress(ctx))
        missing, differ, extra = r.compare(a, b)
        found = [f"{label}: {p}" for p in missing + differ + extra]
        figures: dict[str, Any] = {"keys_source": len(a.keys), "keys_target": len(b.keys),
                                   "digest_source": a.digest, "digest_target": b.digest}
        checked = {f"{label} keys": len(a.keys)}
        if len(a.keys) != len(b.keys):
            found.insert(0, f"{label}: {len(a.keys)} keys at the source, {len(b.keys)} at the target")
        if not as_of_cut:
            return Verdict(checked=checked, problems=tuple(found), seconds=round(time.monotonic() - t0, 3),
                           figures=figures)
        cut = prior or {}
        notes = tuple(f"{p} (the source kept taking writes after the cut)" for p in found)
        figures.update(caught_up=cut.get("caught_up"), lag_s_at_cut=cut.get("lag_s_at_cut"),
                       lag_bytes_at_cut=cut.get("lag_bytes_at_cut"), lag_s_left=cut.get("lag_s_left", 0.0))
        problems = () if cut.get("caught_up") is not False else (
            f"{label}: the target had not reached the source's offset at the cut",)
        return Verdict(checked=checked, problems=problems, notes=notes, seconds=round(time.monotonic() - t0, 3),
                       figures=figures)

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        raise RunFailed("a Redis dataset keeps no write ledger")

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        return {}

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        return None

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            return {"method": "ephemeral", "caught_up": True}
        src, tgt = conns(ctx, ds)
        rep = r.replication(tgt, key=ds.key)
        if not r.replicates_from(rep, src):
            return {"method": "replicaof", "note": "replication already stopped (the cut was interrupted and "
                    "resumed)", "caught_up": None}
        t0 = time.monotonic()
        offset = r.master_offset(src, key=ds.key)
        had = int(rep.get("slave_repl_offset") or 0)
        caught, got = r.wait_offset(tgt, offset, CATCH_UP_TIMEOUT_S, key=ds.key)
        catch_up = time.monotonic() - t0
        r.promote(tgt, key=ds.key)
        out = {"method": "replicaof", "cut_offset": offset, "caught_up": caught, "catch_up_s": round(catch_up, 3),
               "lag_bytes_at_cut": max(0, offset - had), "lag_s_at_cut": round(catch_up, 3),
               "lag_s_left": 0.0 if caught else None, "offset_left": max(0, offset - got)}
        ctx.emit("drill.cut", f"redis {ds.key}: cut at offset {offset}, caught up: {caught}", dataset=ds.key,
                 **{k: v for k, v in out.items() if k != "method"})
        return out

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return removal_lines([int(ds.spec.port) for ds in datasets])

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets)

    def unfence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets, undo=True)

    def set_aside_lines(self, stack: Stack, datasets: list[Dataset], tag: str) -> list[str]:
        return set_aside_lines(stack.model.name, datasets, tag)
