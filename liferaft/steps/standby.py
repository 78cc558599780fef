"""Step kinds of a cold failover, registered in the engine's step-kind registry.

- `standby.promote`  the standby database becomes the primary, without any call to the source; its undo (a
                     rollback, the source answering again) drops the slot and publication abandoned there;
- `standby.objects`  the standby bucket is used as is, after reading back (sha256) every object the sync manifest
                     says was copied (a gate: a difference stops the run before DNS);
- `standby.loss`     the data-loss report: acknowledged writes of the example's ledger missing at the target, or
                     the last replicated position and time per dataset; recorded in the run's summary;
- `standby.release`  liferaft's migration role disabled at the promoted standby once the service answers.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.engine.standby_state import load_standby
from liferaft.errors import CheckFailed, ProviderError, RunFailed, Unreachable
from liferaft.movers.pg_conn import give_to_owner
from liferaft.steps.access import admin_conn, drop_migrator, ensure_migrator, owner_conn
from liferaft.steps.hosts import target_host


def _recorded_source(ctx: RunContext) -> str | None:
    """The source host's address from the standby record (plans made before it was a step parameter)."""
    plan = ctx.plan
    rec = load_standby(ctx.state_dir, plan.stack, plan.target)
    return rec.source_address if rec is not None else None


def _target_db(ctx: RunContext, key: str) -> Any:
    db = ctx.require_stack().model.data.databases[key]
    return admin_conn(ctx, target_host(ctx).address, db)


@register
class PromoteStandby(StepKind):
    name = "standby.promote"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_logical import Replication

        key = step.params["database"]
        tgt = _target_db(ctx, key)
        name = step.params.get("subscription") or Replication.for_databases(tgt, tgt).name
        t0 = time.monotonic()
        res = pgstandby.promote(tgt, name)
        owner = ctx.require_stack().model.data.databases[key].owner
        moved = give_to_owner(tgt, owner)
        out = {**res.to_dict(), "owner_fixed": moved, "seconds": round(time.monotonic() - t0, 3)}
        if res.subscription_dropped:
            # The slot at the source was abandoned on purpose (the source was not contacted); if that server ever
            # comes back it keeps WAL for the slot until someone drops it there.
            out["source_cleanup"] = f"SELECT pg_drop_replication_slot('{name}'); DROP PUBLICATION {name};"
            ctx.emit("standby.promoted", f"database {key}: subscription {name} dropped without the source, "
                     f"{res.sequences_set} sequence(s) set past their columns' max; if the old source returns, "
                     f"run there: {out['source_cleanup']}", **out)
        else:
            ctx.emit("standby.promoted", f"database {key}: no subscription left (already promoted or dump copy); "
                     f"{res.sequences_set} sequence(s) set", **out)
        return out

    def undo(self, ctx: RunContext, step: Step) -> None:
        """A promotion itself cannot be undone: the standby took writes as the primary. What a rollback needs is the
        source fit to be the primary again: the replication slot and publication the promotion abandoned there are
        dropped (a slot nobody reads keeps WAL at the source forever, and its name would stop `replicate` from
        setting a standby up again). A standby still subscribed (the promotion never happened) keeps its slot. Needs
        the source to answer, as the rollback's DNS change points the service back at it."""
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_logical import Replication

        if step.params.get("method") != "logical":
            return
        key = step.params["database"]
        tgt = _target_db(ctx, key)
        name = step.params.get("subscription") or Replication.for_databases(tgt, tgt).name
        if pgstandby.has_subscription(tgt, name):
            ctx.emit("standby.source_kept", f"database {key}: the standby still subscribes ({name}); its slot at "
                     "the source stays", database=key, slot=name)
            return
        address = step.params.get("source_address") or _recorded_source(ctx)
        if not address:
            ctx.emit("standby.source_unknown", f"database {key}: no source host recorded; if slot {name} is left "
                     f"at the source, drop it there: SELECT pg_drop_replication_slot('{name}');", database=key)
            return
        db = ctx.require_stack().model.data.databases[key]
        try:
            dropped = pgstandby.drop_source_side(admin_conn(ctx, address, db), name)
        except (Unreachable, ProviderError) as e:
            raise RunFailed(f"database {key}: the source at {address} does not answer, so the replication slot "
                            f"{name} the promotion abandoned there cannot be dropped ({e})",
                            hint="roll back once the source answers (the stack's DNS now points at it), or drop it "
                                 f"there yourself: SELECT pg_drop_replication_slot('{name}'); DROP PUBLICATION "
                                 f"{name};") from None
        ctx.emit("standby.source_cleaned", f"database {key}: "
                 + (f"dropped the slot and publication {name} the promotion abandoned at the source"
                    if dropped else f"no slot {name} left at the source"), database=key, slot=name, dropped=dropped)

    def verify(self, ctx: RunContext, step: Step) -> None:
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_conn import connect
        from liferaft.movers.pg_logical import Replication

        key = step.params["database"]
        tgt = _target_db(ctx, key)
        name = step.params.get("subscription") or Replication.for_databases(tgt, tgt).name
        if pgstandby.has_subscription(tgt, name):
            raise CheckFailed(f"database {key}: subscription {name} still exists at the target")
        db = ctx.require_stack().model.data.databases[key]
        with connect(owner_conn(ctx, tgt.host, db)) as c:
            row = c.execute("SELECT current_setting('transaction_read_only'), pg_is_in_recovery()").fetchone()
        if row is None or row[0] != "off" or row[1]:
            raise CheckFailed(f"database {key} at {tgt.host} is not writable for {db.owner} (read-only={row})")


def _cluster(ctx: RunContext, keys: list[str]) -> tuple[int, int]:
    db = ctx.require_stack().model.data.databases[keys[0]]
    return int(db.version), int(db.port)


@register
class ReleaseStandby(StepKind):
    """After the move: liferaft's migration role can no longer log in at the promoted standby (the source is gone,
    so unlike the live `db.release` nothing is sent there). Undo re-enables it, for a rollback."""

    name = "standby.release"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        version, port = _cluster(ctx, step.params["databases"])
        drop_migrator(target_host(ctx), version, port)
        return {"role": "liferaft_migrator", "login": False}

    def undo(self, ctx: RunContext, step: Step) -> None:
        version, port = _cluster(ctx, step.params["databases"])
        ensure_migrator(ctx, target_host(ctx), version, port)


def _sha256(objects: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    for chunk in objects.get_object(bucket, key):
        h.update(chunk)
    return h.hexdigest()


@register
class StandbyObjects(StepKind):
    """The standby bucket as is: every object the manifest says was copied must be there with the same sha256."""

    name = "standby.objects"
    gate = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.engine.journal import stack_dir
        from liferaft.movers.manifest import Manifest
        from liferaft.movers.objects import MANIFEST_FILE, Endpoint, pair_id

        stack = ctx.require_stack()
        bucket = stack.model.data.buckets[step.params["bucket"]].name
        tgt_objects = ctx.provider(step.params["target"]).require("objects")
        # The manifest's pair identity names both sides; the source side is only a label here, never contacted.
        src_ep = Endpoint(step.params["source"], tgt_objects, bucket)
        tgt_ep = Endpoint(step.params["target"], tgt_objects, bucket)
        with Manifest(stack_dir(ctx.state_dir, ctx.plan.stack) / MANIFEST_FILE, pair_id(src_ep, tgt_ep)) as man:
            entries = man.load()
        if not entries:
            raise CheckFailed(f"bucket {bucket}: the sync manifest records no object copied to "
                              f"{step.params['target']}; the standby bucket cannot be trusted",
                              hint=f"run `liferaft replicate --to {ctx.plan.target}` while the source answers")
        listed = {o.key: o for o in tgt_objects.list_objects(bucket)}
        problems = [f"missing at the standby: {k}" for k in sorted(set(entries) - set(listed))]
        problems += [f"size differs ({listed[k].size} != {e.size}): {k}" for k, e in sorted(entries.items())
                     if k in listed and listed[k].size != e.size]
        ok_keys = [k for k in sorted(entries) if k in listed and listed[k].size == entries[k].size]

        def make() -> Any:
            from liferaft.engine.observe import open_provider

            return open_provider(stack, step.params["target"], ctx.state_dir).require("objects")

        reader = Endpoint(step.params["target"], tgt_objects, bucket, factory=make)

        def check(k: str) -> str | None:
            got = _sha256(reader.client(), bucket, k)
            return None if got == entries[k].tgt_sha256 else f"sha256 differs from the manifest: {k}"

        with ThreadPoolExecutor(max_workers=8) as pool:
            problems += [p for p in pool.map(check, ok_keys) if p]
        if problems:
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise CheckFailed(f"bucket {bucket} at {step.params['target']} is not what replicate copied; DNS was "
                              "not touched:\n  " + "\n  ".join(problems[:10]) + more)
        last = max(e.copied_at for e in entries.values())
        out = {"bucket": bucket, "manifest_objects": len(entries), "verified": len(ok_keys),
               "extra_at_standby": len(set(listed) - set(entries)), "last_copied_at": last}
        ctx.emit("standby.objects", f"bucket {bucket}: {len(ok_keys)} objects verified by sha256 against the "
                 "manifest", **out)
        return out


@register
class DataLoss(StepKind):
    """What the cut cost: from the write ledger when given, else from the last replicated positions."""

    name = "standby.loss"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        stack = ctx.require_stack()
        rec = load_standby(ctx.state_dir, stack.model.name, step.params["target"])
        promoted = ctx.outputs_of_kind("standby.promote")
        datasets: dict[str, Any] = {}
        for key in step.params["databases"]:
            d = rec.database(key) if rec else {}
            p = promoted.get(f"promote-{key}", {})
            datasets[f"database {key}"] = {
                "method": d.get("method"),
                "last_replicated_at": p.get("last_received_at") or d.get("caught_up_at"),
                "remote_lsn": p.get("remote_lsn"), "last_lag_bytes": d.get("lag_bytes"),
                "last_lag_seconds": d.get("lag_seconds"), "last_measured_at": d.get("measured_at")}
        for key in step.params["buckets"]:
            b = rec.bucket(key) if rec else {}
            datasets[f"bucket {key}"] = {"last_replicated_at": b.get("last_sync_started_at"),
                                         "last_lag_bytes": b.get("lag_bytes"),
                                         "last_lag_seconds": b.get("lag_seconds")}
        times = [float(v["last_replicated_at"]) for v in datasets.values() if v.get("last_replicated_at")]
        out: dict[str, Any] = {"datasets": datasets,
                               "oldest_replicated_at": min(times) if times else None,
                               "recorded_rpo_exposure_s": rec.rpo_exposure_s if rec else None}
        summary: dict[str, Any] = {"recorded_rpo_exposure_s": out["recorded_rpo_exposure_s"]}
        if step.params.get("ledger") and step.params["databases"]:
            led = self._ledger(ctx, step)
            out["ledger"] = led
            summary.update(lost_writes=led["missing_count"], lost_window_s=led["window_s"])
            msg = (f"data loss: {led['missing_count']} of {led['acknowledged']} acknowledged writes missing at the "
                   f"target, spanning {led['window_s']} s of writes")
        else:
            msg = "data loss: everything written after " + ", ".join(
                f"{k} {time.strftime('%H:%M:%S', time.gmtime(v['last_replicated_at']))}Z"
                for k, v in datasets.items() if v.get("last_replicated_at"))
        ctx.summarise(data_loss=summary)
        ctx.emit("failover.data_loss", msg, **summary)
        return out

    def _ledger(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.movers import ledger

        stack = ctx.require_stack()
        key = step.params["databases"][0]
        db = stack.model.data.databases[key]
        return ledger.loss(step.params["ledger"], owner_conn(ctx, target_host(ctx).address, db),
                           ledger.spec_for(db, key))
