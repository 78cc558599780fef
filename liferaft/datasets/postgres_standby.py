"""PostgreSQL's half of the standby contract (`StandbyCopy`): install, keep, lag, promote, loss, stop.

- install: prepare.yml has run; postgresql.yml with the stack's databases at the standby (skipped when PostgreSQL
  answers where a former set-up installed it), and liferaft's migration role at the source and the standby;
- keep, `migrate: logical`: the movers' `start` when the standby has no subscription (schema first, then publication
  and subscription, named as the live failover names them, so a live failover continues from this standby), objects
  handed to the owner role; `migrate: dump`: `dump_and_swap` when the last dump is older than the keeping period;
- lag, logical: the slot's unconfirmed WAL and the replay lag, read at the source under the source timeout; dump:
  the WAL written since the last dump started, and the time since then;
- promote: the subscription dropped WITHOUT the source, sequences set past their columns' max (`pg_standby`);
  `clean_source` drops the slot and publication the promotion abandoned at the source, once it answers again;
- loss: the last replicated position and time, and the acknowledged writes of a write ledger missing at the target.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import HostedStandby, deploy_standby_server
from liferaft.datasets.pg_access import (
    admin_conn,
    allowed_networks,
    database_vars,
    drop_migrator,
    ensure_migrator,
    owner_conn,
)
from liferaft.datasets.pg_prereq import replica_identity_full
from liferaft.errors import CheckFailed, ProviderError, RunFailed, Unreachable
from liferaft.movers.bounded import bounded, tcp_answers

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn
    from liferaft.stack import Stack

SETUP_TIMEOUT_S = 600.0  # the initial copy of a new subscription


def _rep_name(conn: PgConn) -> str:
    from liferaft.movers.pg_logical import Replication

    return Replication.for_databases(conn, conn).name


class PostgresStandby(HostedStandby):
    promote_step: ClassVar[tuple[str, str]] = ("standby.promote", "promote")

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return bool(entry.get("method"))

    # ------------------------------------------------------------------------------------------- the standby host
    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        keys = ", ".join(ds.key for ds in datasets)
        return (f"PostgreSQL for {keys} at the standby (postgresql.yml), liferaft's migration role at the source "
                "and the standby")

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        host, source = sides.need_standby(), sides.need_source()
        first = datasets[0].spec
        version, port = int(first.version), int(first.port)
        answers, _ = tcp_answers(host.address, port, 3.0)
        out: dict[str, Any] = {"deployed": False}
        if not (answers and installed_on == host.address):
            dbs, secret_vars = database_vars(ctx, [ds.key for ds in datasets], host.address)
            out = deploy_standby_server(ctx, host, "postgresql.yml", {
                "liferaft_databases": dbs, "liferaft_allowed_networks": allowed_networks(host.address, source.address)},
                secret_vars, "PostgreSQL")
        for h in (source, host):
            ensure_migrator(ctx, h, version, port)
        return {**out, "migration_role": True}

    # ------------------------------------------------------------------------------------------------- keeping
    def _conns(self, ctx: RunContext, ds: Dataset, sides: StandbySides) -> tuple[PgConn, PgConn]:
        return (admin_conn(ctx, sides.need_source().address, ds.spec),
                admin_conn(ctx, sides.need_standby().address, ds.spec))

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_dump import database_exists

        db = ds.spec
        out: dict[str, Any] = {"method": db.migrate, "name": db.name}
        src, tgt = self._conns(ctx, ds, sides)
        if db.migrate == "logical":
            name = entry.get("subscription")
            if name and database_exists(tgt) and pgstandby.has_subscription(tgt, str(name)):
                return out
            return {**out, **self._subscribe(ctx, ds, src, tgt)}
        last = float(entry.get("last_sync_started_at") or 0.0)
        if time.time() - last < sides.interval and entry.get("ok"):
            return out  # the last dump is recent enough
        t = sides.source_timeout
        lsn = bounded(lambda: pgstandby.source_lsn(src, t), t, provider=sides.source, what=f"position of {ds.key}")
        res = pgstandby.dump_and_swap(src, tgt, db.owner)
        return {**out, "last_sync_started_at": res["dump_started_at"], "last_sync_at": time.time(), "dump_lsn": lsn,
                "dump_seconds": res["seconds"], "dump_bytes": res["dump_bytes"],
                "caught_up_at": res["dump_started_at"]}

    def _subscribe(self, ctx: RunContext, ds: Dataset, src: PgConn, tgt: PgConn) -> dict[str, Any]:
        from liferaft.movers import postgres as pg
        from liferaft.movers.pg_conn import give_to_owner

        t0 = time.monotonic()

        def progress(event: str, details: dict[str, Any]) -> None:
            flat = {k: v for k, v in details.items() if isinstance(v, (int, float, str))}
            ctx.emit(event, " ".join(f"{k}={v}" for k, v in flat.items()), **flat)

        full = replica_identity_full(ctx, ds, src)
        rep = pg.start(src, tgt, wait=True, timeout=SETUP_TIMEOUT_S, replica_identity_full=bool(full),
                       progress=progress, owner=ds.spec.owner)
        give_to_owner(tgt, ds.spec.owner)
        return {"subscription": rep.name, "subscribed_at": time.time(),
                "initial_sync_s": round(time.monotonic() - t0, 2), **({"replica_identity_full": full} if full else {})}

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import pg_standby as pgstandby

        src, tgt = self._conns(ctx, ds, sides)
        t = sides.source_timeout
        if ds.spec.migrate == "logical":
            name = str(entry.get("subscription") or _rep_name(src))
            lag = bounded(lambda: pgstandby.source_lag(src, name, t), t, provider=sides.source,
                          what=f"replication lag of {ds.key}")
            now = time.time()
            status = pgstandby.standby_status(tgt, name)
            return {"lag_bytes": lag.bytes, "lag_seconds": round(lag.seconds, 3), "measured_at": now,
                    "source_lsn": lag.source_lsn, "confirmed_lsn": lag.confirmed_lsn,
                    "last_received_at": status.get("last_received_at"), "last_sync_at": now,
                    # the standby holds what the source committed up to `replay lag` ago
                    "caught_up_at": round(now - lag.seconds, 3)}
        since = float(entry["last_sync_started_at"])
        lag_bytes = bounded(lambda: pgstandby.wal_bytes_since(src, str(entry["dump_lsn"]), t), t,
                            provider=sides.source, what=f"WAL since the last dump of {ds.key}")
        now = time.time()
        return {"lag_bytes": lag_bytes, "lag_seconds": round(now - since, 3), "measured_at": now}

    # ------------------------------------------------------------------------------------------------ promotion
    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        how = ("drop the subscription without the source, sequences past their columns' max"
               if entry.get("method") == "logical" else "the last periodic dump, sequences checked")
        return f"promote the standby database {ds.spec.name} ({how})"

    def _standby(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> tuple[Any, str]:
        tgt = admin_conn(ctx, sides.need_standby().address, ds.spec)
        return tgt, str(entry.get("subscription") or _rep_name(tgt))

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_conn import give_to_owner

        tgt, name = self._standby(ctx, ds, sides, entry)
        t0 = time.monotonic()
        res = pgstandby.promote(tgt, name)
        moved = give_to_owner(tgt, ds.spec.owner)
        out = {**res.to_dict(), "owner_fixed": moved, "seconds": round(time.monotonic() - t0, 3)}
        if res.subscription_dropped:
            # The slot at the source was abandoned on purpose (the source was not contacted); if that server ever
            # comes back it keeps WAL for the slot until someone drops it there.
            out["source_cleanup"] = f"SELECT pg_drop_replication_slot('{name}'); DROP PUBLICATION {name};"
            ctx.emit("standby.promoted", f"database {ds.key}: subscription {name} dropped without the source, "
                     f"{res.sequences_set} sequence(s) set past their columns' max; if the old source returns, "
                     f"run there: {out['source_cleanup']}", **out)
        else:
            ctx.emit("standby.promoted", f"database {ds.key}: no subscription left (already promoted or dump "
                     f"copy); {res.sequences_set} sequence(s) set", **out)
        return out

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        notes = ([f"database {key}: {promoted['sequences_set']} sequence(s) set past their columns' max"]
                 if promoted.get("sequences_set") is not None else [])
        return {f"database {key} promoted": 1}, notes

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        from liferaft.movers import pg_standby as pgstandby
        from liferaft.movers.pg_conn import connect

        tgt, name = self._standby(ctx, ds, sides, entry)
        if pgstandby.has_subscription(tgt, name):
            raise CheckFailed(f"database {ds.key}: subscription {name} still exists at the target")
        db = ds.spec
        with connect(owner_conn(ctx, tgt.host, db)) as c:
            row = c.execute("SELECT current_setting('transaction_read_only'), pg_is_in_recovery()").fetchone()
        if row is None or row[0] != "off" or row[1]:
            raise CheckFailed(f"database {ds.key} at {tgt.host} is not writable for {db.owner} (read-only={row})")

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """A promotion itself cannot be undone: the standby took writes as the primary. What a rollback (or a
        drill's heal) needs is the source fit to be the primary again: the replication slot and publication the
        promotion abandoned there are dropped (a slot nobody reads keeps WAL at the source forever, and its name
        would stop `replicate` from setting a standby up again). A standby still subscribed (the promotion never
        happened) keeps its slot. Needs the source to answer."""
        from liferaft.movers import pg_standby as pgstandby

        if entry.get("method") != "logical":
            return {}
        name = str(entry.get("subscription") or "")
        if sides.standby_host is not None:
            tgt, name = self._standby(ctx, ds, sides, entry)
            if pgstandby.has_subscription(tgt, name):
                ctx.emit("standby.source_kept", f"database {ds.key}: the standby still subscribes ({name}); its "
                         "slot at the source stays", database=ds.key, slot=name)
                return {"kept": name}
        if sides.source_host is None:
            ctx.emit("standby.source_unknown", f"database {ds.key}: no source host recorded; if slot {name} is "
                     f"left at the source, drop it there: SELECT pg_drop_replication_slot('{name}');", database=ds.key)
            return {}
        address = sides.source_host.address
        try:
            dropped = pgstandby.drop_source_side(admin_conn(ctx, address, ds.spec), name)
        except (Unreachable, ProviderError) as e:
            raise RunFailed(f"database {ds.key}: the source at {address} does not answer, so the replication slot "
                            f"{name} the promotion abandoned there cannot be dropped ({e})",
                            hint="roll back once the source answers (the stack's DNS now points at it), or drop it "
                                 f"there yourself: SELECT pg_drop_replication_slot('{name}'); DROP PUBLICATION "
                                 f"{name};") from None
        ctx.emit("standby.source_cleaned", f"database {ds.key}: "
                 + (f"dropped the slot and publication {name} the promotion abandoned at the source"
                    if dropped else f"no slot {name} left at the source"), database=ds.key, slot=name, dropped=dropped)
        return {"slot": name, "dropped": dropped}

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        """The subscription at the standby dropped (without asking the source to drop its slot, so a standby that
        is gone does not block this), then the slot and the publication at the source."""
        from liferaft.movers.pg_standby import detach_subscription, drop_source_side

        if entry.get("method") != "logical":
            return None
        src, tgt = self._conns(ctx, ds, sides)
        name = str(entry.get("subscription") or _rep_name(src))
        done: dict[str, Any] = {"subscription": name, "subscription_dropped": False}
        try:
            done["subscription_dropped"] = detach_subscription(tgt, name)
        except Unreachable as e:
            done["standby_error"] = str(e)
            ctx.emit("replicate.standby_unreachable", f"database {ds.key}: the standby does not answer ({e}); if it "
                     f"comes back, drop its subscription there: DROP SUBSCRIPTION {name};", database=ds.key)
        done["slot_dropped"] = drop_source_side(src, name)
        ctx.emit("replicate.db_stopped", f"database {ds.key}: subscription {name} "
                 + ("dropped" if done["subscription_dropped"] else "not found at the standby")
                 + "; slot and publication at the source " + ("dropped" if done["slot_dropped"] else "gone"),
                 database=ds.key, **{k: v for k, v in done.items() if k != "standby_error"})
        return done

    # -------------------------------------------------------------------------------------------- after the cut
    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": entry.get("method"),
            "last_replicated_at": promoted.get("last_received_at") or entry.get("caught_up_at"),
            "remote_lsn": promoted.get("remote_lsn"), "last_lag_bytes": entry.get("lag_bytes"),
            "last_lag_seconds": entry.get("lag_seconds"), "last_measured_at": entry.get("measured_at")}
        if ledger and host is not None and ds.spec.ledger is not None:
            from liferaft.movers import ledger as led

            out["ledger"] = led.loss(ledger, owner_conn(ctx, host.address, ds.spec), led.spec_for(ds.spec, ds.key))
        return out

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return "disable liferaft's migration role at the promoted standby"

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        first = datasets[0].spec
        if undo:
            ensure_migrator(ctx, host, int(first.version), int(first.port))
        else:
            drop_migrator(host, int(first.version), int(first.port))
        return True

