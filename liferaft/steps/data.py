"""Step kinds that move data: migration access, database migration, bucket sync, and the write freeze."""

from __future__ import annotations

import threading
import time
from typing import Any

from liferaft.configure import host_from_dict
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import RunFailed
from liferaft.movers.pg_conn import give_to_owner
from liferaft.steps.access import admin_conn, drop_migrator, ensure_migrator
from liferaft.steps.hosts import target_host


def progress(ctx: RunContext) -> Any:
    return lambda event, details: ctx.emit(event, f"{event} {_short(details)}", **details)


def _short(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if isinstance(v, (int, float, str)))[:160]


def conns(ctx: RunContext, step: Step, key: str) -> tuple[Any, Any]:
    """Migration-role connections to database `key` at the source and the target."""
    db = ctx.require_stack().model.data.databases[key]
    return (admin_conn(ctx, step.params["source_host"]["address"], db),
            admin_conn(ctx, target_host(ctx).address, db))


def endpoints(ctx: RunContext, step: Step, key: str, *, per_thread: bool = True) -> tuple[Any, Any]:
    """Both sides of bucket `key`. `per_thread`: one Objects client per worker thread (SDK clients are not all
    thread-safe); without it, the run's clients are shared and must be used one thread per side (no set-up cost:
    what the write freeze wants)."""
    from liferaft.engine.observe import open_provider
    from liferaft.movers.objects import Endpoint

    stack = ctx.require_stack()
    bucket = stack.model.data.buckets[key].name

    def side(provider: str) -> Any:
        def make() -> Any:
            return open_provider(stack, provider, ctx.state_dir, resolve=ctx.secret).require("objects")
        return Endpoint(provider, ctx.provider(provider).require("objects"), bucket,
                        factory=make if per_thread else None)

    return side(step.params["source"]), side(step.params["target"])


DELTA_KEYS_MAX = 1000  # a final delta larger than this is verified in full at the gate


def sync_bucket(ctx: RunContext, step: Step, key: str, *, final_delta: bool = False) -> dict[str, Any]:
    """Bulk copy (many threads), or the final delta inside the freeze (one thread, warm clients, usually tiny)."""
    from liferaft.movers.objects import SyncOptions, sync

    src, tgt = endpoints(ctx, step, key, per_thread=not final_delta)
    if not final_delta:
        tgt.objects.create_bucket(tgt.bucket)
    from liferaft.engine.journal import stack_dir

    # The manifest is per stack (not per run): a later failover or a retry copies only what changed.
    options = SyncOptions(progress_interval=0.2, workers=1 if final_delta else SyncOptions.workers)
    res = sync(src, tgt, stack_dir(ctx.state_dir, ctx.plan.stack), options, events=ctx.events)
    d = res.to_dict()
    out = {k: d[k] for k in ("listed", "copied", "skipped", "bytes_copied", "seconds", "objects_per_s")}
    out["copied_keys"] = list(res.copied_keys) if len(res.copied_keys) <= DELTA_KEYS_MAX else None
    return out


def _cluster(ctx: RunContext, keys: list[str]) -> tuple[int, int]:
    db = ctx.require_stack().model.data.databases[keys[0]]
    return int(db.version), int(db.port)


@register
class DbAccess(StepKind):
    name = "db.access"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        version, port = _cluster(ctx, step.params["databases"])
        for host in (host_from_dict(step.params["source_host"]), target_host(ctx)):
            ensure_migrator(ctx, host, version, port)
        return {"role": "liferaft_migrator"}

    def undo(self, ctx: RunContext, step: Step) -> None:
        version, port = _cluster(ctx, step.params["databases"])
        hosts = [host_from_dict(step.params["source_host"])]
        try:
            hosts.append(target_host(ctx))
        except RunFailed:
            pass
        for host in hosts:
            drop_migrator(host, version, port)


@register
class DbRelease(StepKind):
    """After the move: liferaft's migration role can no longer log in anywhere (undo re-enables it for rollback)."""

    name = "db.release"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        version, port = _cluster(ctx, step.params["databases"])
        for host in (host_from_dict(step.params["source_host"]), target_host(ctx)):
            drop_migrator(host, version, port)
        return {"role": "liferaft_migrator", "login": False}

    def undo(self, ctx: RunContext, step: Step) -> None:
        version, port = _cluster(ctx, step.params["databases"])
        for host in (host_from_dict(step.params["source_host"]), target_host(ctx)):
            ensure_migrator(ctx, host, version, port)


@register
class DbMigrate(StepKind):
    name = "db.migrate"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.movers import postgres as pg

        if step.params["method"] == "dump":
            return {"method": "dump", "note": "copied inside the write freeze"}
        key = step.params["database"]
        src, tgt = conns(ctx, step, key)
        t0 = time.monotonic()
        rep = pg.start(src, tgt, wait=True, progress=progress(ctx))
        owner = ctx.require_stack().model.data.databases[key].owner
        moved = give_to_owner(tgt, owner)
        return {"method": "logical", "replication": rep.name, "initial_sync_s": round(time.monotonic() - t0, 2),
                "owner_fixed": moved}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.movers import postgres as pg

        if step.params["method"] == "logical":
            src, tgt = conns(ctx, step, step.params["database"])
            pg.stop(pg.Replication.for_databases(src, tgt))


def freeze_and_dump(ctx: RunContext, src: Any, tgt: Any, owner: str, on_frozen: Any = None) -> dict[str, Any]:
    """Dump mode: make the source read-only, end its sessions, then copy it whole (the freeze lasts the copy)."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import connect, ident

    t0 = time.monotonic()
    with connect(src.with_db("postgres")) as c:
        if "writes_frozen_at" not in ctx.memo:
            ctx.remember(writes_frozen_at=time.time())
        c.execute(f"ALTER DATABASE {ident(src.dbname)} SET default_transaction_read_only = on")
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                  " AND pid <> pg_backend_pid() AND backend_type = 'client backend'", (src.dbname,))
    if on_frozen is not None:
        on_frozen()
    res = pg.dump_restore(src, tgt, replace=True, progress=progress(ctx))
    give_to_owner(tgt, owner)
    return {"method": "dump", "freeze_s": round(time.monotonic() - t0, 3), "dump_bytes": res.dump_bytes}


def cut_over_logical(ctx: RunContext, src: Any, tgt: Any, on_frozen: Any = None) -> dict[str, Any]:
    """Logical mode: the movers' cutover; after a crash inside it, tell 'already cut over' from 'broken'."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import connect

    rep = pg.Replication.for_databases(src, tgt)
    with connect(tgt) as c:
        active = c.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (rep.name,)).fetchone()
    if active:
        report = progress(ctx)

        def observe(event: str, details: dict[str, Any]) -> None:
            if event == "pg.cutover.frozen":
                if "writes_frozen_at" not in ctx.memo:
                    ctx.remember(writes_frozen_at=time.time())  # the source just became read-only
                if on_frozen is not None:
                    on_frozen()
            report(event, details)

        res = pg.cutover(rep, progress=observe)
        return {"method": "logical", "freeze_s": round(res.freeze_s, 3), "catch_up_s": round(res.catch_up_s, 3),
                "sequences": res.sequences_set, "sessions_ended": res.sessions_ended}
    if pg.is_read_only(src):
        return {"method": "logical", "note": "already cut over before an interruption"}
    raise RunFailed(f"the replication {rep.name} is gone and the source is still writable: nothing guarantees "
                    "the target is complete", hint="roll back and fail over again")


class _Delta:
    """The final object delta of every bucket, on its own thread (it never touches the journal)."""

    def __init__(self, ctx: RunContext, step: Step) -> None:
        self.ctx, self.step = ctx, step
        self.thread: threading.Thread | None = None
        self.out: dict[str, Any] = {}
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            for key in self.step.params["buckets"]:
                self.out[key] = sync_bucket(self.ctx, self.step, key, final_delta=True)
        except BaseException as e:  # noqa: BLE001 (re-raised on the runner's thread)
            self.error = e

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="liferaft-final-delta", daemon=True)
            self.thread.start()

    def result(self) -> dict[str, Any]:
        self.start()
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.out


@register
class Freeze(StepKind):
    """The write freeze: source databases read-only, final catch-up, sequences set, final object delta."""

    name = "cutover.freeze"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        for key in step.params["buckets"]:  # open the object clients now, not inside the freeze
            for side in endpoints(ctx, step, key, per_thread=False):
                side.objects.bucket_exists(side.bucket)
        if "freeze_started" not in ctx.memo:  # a resumed freeze keeps its first start: the window is honest
            ctx.remember(freeze_started=time.time())
        started = float(ctx.memo["freeze_started"])
        stack = ctx.require_stack()
        dbs: dict[str, Any] = {}
        # The final object delta starts once every database is read-only (every object an acknowledged write
        # refers to exists by then) and runs while the databases catch up.
        delta = _Delta(ctx, step)
        databases = step.params["databases"]
        frozen = [0]

        def on_frozen() -> None:
            frozen[0] += 1
            if frozen[0] == len(databases):
                delta.start()

        for key, method in databases.items():
            src, tgt = conns(ctx, step, key)
            owner = stack.model.data.databases[key].owner
            dbs[key] = (cut_over_logical(ctx, src, tgt, on_frozen) if method == "logical"
                        else freeze_and_dump(ctx, src, tgt, owner, on_frozen))
        delta.start()  # no-op when already running
        objects = delta.result()
        return {"freeze_started": started, "writes_frozen_at": ctx.memo.get("writes_frozen_at", started),
                "databases": dbs, "objects": objects,
                "catch_up_s": round(time.time() - started, 3)}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.movers import postgres as pg
        from liferaft.movers.pg_conn import connect

        for key in step.params["databases"]:
            src, _ = conns(ctx, step, key)
            pg.undo_read_only(src)
            # Sessions opened during the freeze stay read-only: end them so clients reconnect writable.
            with connect(src.with_db("postgres")) as c:
                ended = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                  " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                                  (src.dbname,)).fetchall()
            ctx.emit("db.writable", f"{src.dbname} at the source accepts writes again ({len(ended)} read-only "
                     "sessions ended)", database=key)


@register
class SyncObjects(StepKind):
    name = "objects.sync"

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        src, _ = endpoints(ctx, step, step.params["bucket"])
        infos = list(src.objects.list_objects(src.bucket))
        return {"objects": len(infos), "bytes": sum(i.size for i in infos)}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        out = sync_bucket(ctx, step, step.params["bucket"])
        out.pop("copied_keys", None)
        return out

    def verify(self, ctx: RunContext, step: Step) -> None:
        """Every object read back on both sides and compared by sha256 (before the freeze: the gate after it
        then re-reads only what the final delta copied)."""
        from liferaft.movers.objects import verify_sync

        src, tgt = endpoints(ctx, step, step.params["bucket"])
        verify_sync(src, tgt, allow_extra=True, events=ctx.events)
