"""Redis's half of the standby contract (`StandbyCopy`): install, keep, lag, promote, loss, stop.

- install: redis.yml at the standby (skipped when every port answers where a former set-up installed it);
- keep: the standby replicates the source (`REPLICAOF`, the source's password as masterauth); the first round waits
  for the initial sync; an ephemeral server (a cache) is only installed, empty;
- lag: the source's replication offset (read first, bounded by the source timeout) minus the standby's offset; the
  standby is confirmed to hold the source's writes up to the instant the source's offset was read when it is 0;
- promote: `REPLICAOF NO ONE` at the standby, without the source (it keeps what it had received);
- nothing is left at a Redis source by a promotion (no slot): `clean_source` has nothing to do;
- stop: the standby stops replicating (`REPLICAOF NO ONE`): the copy stays.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import SETUP_TIMEOUT_S, HostedStandby, deploy_standby_server
from liferaft.errors import CheckFailed
from liferaft.movers.bounded import bounded, tcp_answers

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.movers.redis_ import RedisConn
    from liferaft.stack import Stack



def redis_conn(ctx: RunContext, ds: Dataset, address: str, *, at_source: bool) -> RedisConn:
    """The dataset's server at `address` (at the source, its `address` setting wins), its password resolved through
    the run (registered as a secret)."""
    from liferaft.movers.redis_ import RedisConn

    spec = ds.spec
    host = str(spec.address) if at_source and spec.address else address
    password = ctx.secret(spec.password) if spec.password else None
    where = "at the source" if at_source else "at the target"
    return RedisConn(host=host, port=int(spec.port), db=int(spec.db), password=password,
                     label=f"redis dataset {ds.key!r} {where}")


def redis_vars(ctx: RunContext, datasets: list[Dataset]) -> tuple[dict[str, Any], dict[str, Any]]:
    """redis.yml's variables and secret variables for these datasets."""
    servers = [{"key": ds.key, "port": int(ds.spec.port), "ephemeral": bool(ds.spec.ephemeral),
                "maxmemory": ds.spec.maxmemory} for ds in datasets]
    secret = {ds.key: {"password": ctx.secret(ds.spec.password) if ds.spec.password else ""} for ds in datasets}
    return {"liferaft_redis": servers}, {"liferaft_secrets": {"redis": secret}}


def check_versions(source: RedisConn, target: RedisConn, key: str) -> dict[str, str]:
    """Both servers answer with their passwords, and the target's Redis can take the source's data; else a stop
    naming the dataset and the fix."""
    from liferaft.movers import redis_ as r

    src_v, tgt_v = r.version(source, key=key), r.version(target, key=key)
    problem = r.version_problem(src_v, tgt_v)
    if problem:
        raise CheckFailed(f"redis dataset {key!r}: {problem}",
                          hint=f"install Redis {src_v.split('.')[0]} or newer at the target (redis.yml installs the "
                               "distribution's redis-server: use a target image whose Redis is not older than the "
                               "source's), or upgrade nothing and move this dataset with `ephemeral: true` if it "
                               "is only a cache")
    return {"source_version": src_v, "target_version": tgt_v}


class RedisStandby(HostedStandby):
    promote_step: ClassVar[tuple[str, str]] = ("standby.promote", "promote")

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return entry.get("method") in ("replicaof", "ephemeral")

    def source_ports(self, ds: Dataset) -> list[int]:
        return [] if ds.spec.ephemeral or ds.spec.address else [int(ds.spec.port)]

    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return f"Redis for {', '.join(ds.key for ds in datasets)} at the standby (redis.yml)"

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        host = sides.need_standby()
        answers = all(tcp_answers(host.address, int(ds.spec.port), 3.0)[0] for ds in datasets)
        out: dict[str, Any] = {"deployed": False}
        if not (answers and installed_on == host.address):
            variables, secret_vars = redis_vars(ctx, datasets)
            out = deploy_standby_server(ctx, host, "redis.yml", variables, secret_vars, "Redis")
        source = sides.need_source()
        for ds in datasets:
            if not ds.spec.ephemeral:
                out[ds.key] = check_versions(redis_conn(ctx, ds, source.address, at_source=True),
                                             redis_conn(ctx, ds, host.address, at_source=False), ds.key)
        return out

    # ------------------------------------------------------------------------------------------------- keeping
    def _conns(self, ctx: RunContext, ds: Dataset, sides: StandbySides) -> tuple[RedisConn, RedisConn]:
        return (redis_conn(ctx, ds, sides.need_source().address, at_source=True),
                redis_conn(ctx, ds, sides.need_standby().address, at_source=False))

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            return {"method": "ephemeral"}
        src, tgt = self._conns(ctx, ds, sides)
        out: dict[str, Any] = {"method": "replicaof", "master": f"{src.host}:{src.port}"}
        if r.replicates_from(r.replication(tgt, key=ds.key), src) and entry.get("method") == "replicaof":
            return out
        r.replicate(tgt, src, key=ds.key)
        seconds = r.wait_synced(tgt, src, SETUP_TIMEOUT_S, key=ds.key,
                                progress=lambda e, d: ctx.emit(e, f"{e} {d}", dataset=ds.key, **d))
        return {**out, "replicating_since": time.time(), "initial_sync_s": round(seconds, 2)}

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        now = time.time()
        if ds.spec.ephemeral:
            return {"lag_bytes": 0, "lag_seconds": 0.0, "measured_at": now, "caught_up_at": now}
        src, tgt = self._conns(ctx, ds, sides)
        t = sides.source_timeout
        master = bounded(lambda: r.master_offset(src, key=ds.key, timeout=t), t, provider=sides.source,
                         what=f"replication offset of {ds.key}")
        read_at = time.time()
        rep = r.replication(tgt, key=ds.key)
        got = int(rep.get("slave_repl_offset") or 0)
        lag_bytes = max(0, master - got)
        link_up = rep.get("master_link_status") == "up"
        # Confirmed up to the instant the source's offset was read when the standby had reached it; else the
        # last confirmed instant (or the start of the replication) stands.
        caught_up_at = read_at if lag_bytes == 0 and link_up else float(
            entry.get("caught_up_at") or entry.get("replicating_since") or read_at)
        return {"lag_bytes": lag_bytes, "lag_seconds": round(max(0.0, time.time() - caught_up_at), 3),
                "measured_at": time.time(), "caught_up_at": caught_up_at,
                "source_offset": master, "standby_offset": got, "link": rep.get("master_link_status"),
                "last_sync_at": read_at}

    # ------------------------------------------------------------------------------------------------ promotion
    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        if ds.spec.ephemeral:
            return f"Redis {ds.key} at the standby: ephemeral (a cache), used empty"
        return f"promote the standby Redis {ds.key} (REPLICAOF NO ONE, without the source)"

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import redis_ as r

        tgt = redis_conn(ctx, ds, sides.need_standby().address, at_source=False)
        t0 = time.monotonic()
        out = r.promote(tgt, key=ds.key)
        out["seconds"] = round(time.monotonic() - t0, 3)
        ctx.emit("standby.promoted", f"redis {ds.key}: " + ("replication stopped without the source, the standby "
                 f"keeps what it received (offset {out['offset']})" if out["was_replica"] else
                 "already independent (promoted before, or ephemeral)"), dataset=ds.key, **out)
        return out

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        notes = ([f"keyspace {key}: replication stopped at offset {promoted.get('offset')}"]
                 if promoted.get("was_replica") else [])
        return {f"keyspace {key} promoted": 1}, notes

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        from liferaft.movers import redis_ as r

        tgt = redis_conn(ctx, ds, sides.need_standby().address, at_source=False)
        role = r.replication(tgt, key=ds.key).get("role")
        if role != "master":
            raise CheckFailed(f"redis {ds.key} at {tgt.host}:{tgt.port} still replicates (role {role})")
        if r.refuses_writes(tgt, key=ds.key):
            raise CheckFailed(f"redis {ds.key} at {tgt.host}:{tgt.port} refuses writes (min-replicas-to-write)")

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        return {}  # a Redis master keeps nothing for a replica that left

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        from liferaft.errors import LiferaftError
        from liferaft.movers import redis_ as r

        if ds.spec.ephemeral:
            return None
        tgt = redis_conn(ctx, ds, sides.need_standby().address, at_source=False)
        try:
            done = r.promote(tgt, key=ds.key)
        except LiferaftError as e:
            ctx.emit("replicate.standby_unreachable", f"redis {ds.key}: the standby does not answer ({e}); if it "
                     "comes back, run REPLICAOF NO ONE there", dataset=ds.key)
            return {"replication_stopped": False}
        ctx.emit("replicate.redis_stopped", f"redis {ds.key}: the standby stopped replicating; its copy stays",
                 dataset=ds.key)
        return {"replication_stopped": bool(done["was_replica"])}

    # -------------------------------------------------------------------------------------------- after the cut
    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        return {"method": entry.get("method"), "last_replicated_at": entry.get("caught_up_at"),
                "standby_offset": promoted.get("offset", entry.get("standby_offset")),
                "last_lag_bytes": entry.get("lag_bytes"), "last_lag_seconds": entry.get("lag_seconds"),
                "last_measured_at": entry.get("measured_at")}

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return None

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        return False


__all__ = ["RedisStandby", "check_versions", "redis_conn", "redis_vars"]
