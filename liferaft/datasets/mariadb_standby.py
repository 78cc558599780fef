"""MySQL/MariaDB's half of the standby contract (`StandbyCopy`): install, keep, lag, promote, loss, stop.

- install: prepare.yml (when the set-up left it out) and mariadb.yml at the standby (skipped when MariaDB answers
  where a former set-up installed it), liferaft's migration account at the source and the standby;
- keep: once, a consistent dump into the standby and GTID replication from the source (as the live seed does); each
  round after, the replica checked (restarted when stopped, seeded again when it cannot run);
- lag: `Seconds_Behind_Master` and the source's binary log bytes the standby has not applied, the GTID positions of
  both, read under the source timeout;
- promote: the replica stopped and reset at the standby WITHOUT the source, the standby made writable;
  the source keeps nothing for a replica (no slot), so `clean_source` has nothing to drop;
- loss: the last GTID the standby applied and when it was last known caught up.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import HostedStandby, deploy_standby_server
from liferaft.datasets.mariadb_access import admin_conn, ensure_migrator, lock_migrator, mysql_vars
from liferaft.errors import CheckFailed
from liferaft.movers.bounded import bounded, tcp_answers

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.movers.mysql import MyConn
    from liferaft.stack import Stack



class MariadbStandby(HostedStandby):
    promote_step: ClassVar[tuple[str, str]] = ("standby.promote", "promote-mysql")

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return entry.get("method") == "replication" and bool(entry.get("seeded_at"))

    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        keys = ", ".join(ds.key for ds in datasets)
        return f"MariaDB for {keys} at the standby (mariadb.yml), liferaft's migration account at both ends"

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        host, source = sides.need_standby(), sides.need_source()
        port = int(datasets[0].spec.port)
        answers, _ = tcp_answers(host.address, port, 3.0)
        out: dict[str, Any] = {"deployed": False}
        if not (answers and installed_on == host.address):
            variables, secret_vars = mysql_vars(ctx, [ds.key for ds in datasets], host.address)
            out = deploy_standby_server(ctx, host, "mariadb.yml", variables, secret_vars, "MariaDB")
        for h in (source, host):
            ensure_migrator(ctx, h, port)
        return {**out, "migration_account": True}

    def _conns(self, ctx: RunContext, ds: Dataset, sides: StandbySides) -> tuple[MyConn, MyConn]:
        return (admin_conn(ctx, sides.need_source().address, ds.spec),
                admin_conn(ctx, sides.need_standby().address, ds.spec))

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.datasets.mariadb import replicating_from, seed_replica
        from liferaft.movers import mysql as my

        src, tgt = self._conns(ctx, ds, sides)
        out: dict[str, Any] = {"method": "replication", "name": ds.spec.name}
        with my.connect(tgt, database=False) as t:
            if replicating_from(t, src) and entry.get("seeded_at"):
                st = my.replica_status(t) or {}
                if st.get("Slave_IO_Running") == "Yes":
                    return out
                try:  # the IO thread stopped (the source went away and came back): start it again
                    my.query(t, "START SLAVE")
                    my.wait_running(t, timeout=10)
                    return {**out, "restarted_at": time.time()}
                except Exception as e:  # noqa: BLE001 - seeded again below, the reason reported
                    ctx.emit("replicate.mysql_reseed", f"mysql {ds.key}: the replica does not run ({e}); seeding "
                             "the standby again", database=ds.key)
        t0 = time.monotonic()

        def report(event: str, details: dict[str, Any]) -> None:
            ctx.emit(event, f"{event} {details}", **{k: v for k, v in details.items()
                                                      if isinstance(v, (int, float, str))})

        res = seed_replica(src, tgt, report)
        now = time.time()
        return {**out, **res, "seeded_at": now, "caught_up_at": now, "initial_sync_s": round(time.monotonic() - t0, 2)}

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import mysql as my

        src, tgt = self._conns(ctx, ds, sides)
        t = sides.source_timeout

        def measure() -> Any:
            with my.connect(src, database=False, timeout=t, read_timeout=t) as s, \
                    my.connect(tgt, database=False, timeout=t, read_timeout=t) as c:
                return my.lag(s, c)

        lag = bounded(measure, t, provider=sides.source, what=f"replication lag of {ds.key}")
        now = time.time()
        seconds = lag.seconds if lag.seconds is not None else now - float(entry.get("caught_up_at") or now)
        out = {"lag_bytes": lag.bytes, "lag_seconds": round(seconds, 3), "measured_at": now,
               "source_gtid": lag.source_pos, "standby_gtid": lag.replica_pos, "running": lag.running}
        if lag.running:
            out.update(caught_up_at=round(now - seconds, 3), last_sync_at=now)
        return out

    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        return f"promote the standby MySQL database {ds.spec.name} (replica stopped and reset without the source)"

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers import mysql as my

        tgt = admin_conn(ctx, sides.need_standby().address, ds.spec)
        t0 = time.monotonic()
        with my.connect(tgt, database=False) as t:
            st = my.replica_status(t)
            gtid = str(my.query(t, "SELECT @@gtid_slave_pos")[0][0] or "")
            if st is not None:
                # the relay log the standby already received is applied before the stop (bounded)
                my.query(t, "STOP SLAVE IO_THREAD")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    cur = my.replica_status(t) or {}
                    if cur.get("Slave_SQL_Running") != "Yes" or cur.get("Relay_Log_Space") is None or \
                            cur.get("Read_Master_Log_Pos") == cur.get("Exec_Master_Log_Pos"):
                        break
                    time.sleep(0.1)
                gtid = str(my.query(t, "SELECT @@gtid_slave_pos")[0][0] or "")
                my.reset_replica(t)
            my.set_read_only(t, False)
        out = {"replica_stopped": st is not None, "gtid": gtid, "seconds": round(time.monotonic() - t0, 3),
               "last_received_at": entry.get("caught_up_at")}
        ctx.emit("standby.promoted", f"mysql {ds.key}: "
                 + ("replica stopped and reset without the source" if st is not None else "no replica left "
                    "(already promoted)") + f"; applied up to GTID {gtid or '-'}", database=ds.key, **out)
        return out

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        return {f"mysql database {key} promoted": 1}, [f"mysql {key}: applied up to GTID {promoted.get('gtid') or '-'}"]

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        from liferaft.datasets.mariadb_access import owner_conn
        from liferaft.movers import mysql as my

        address = sides.need_standby().address
        with my.connect(admin_conn(ctx, address, ds.spec), database=False) as t:
            if my.replica_status(t) is not None:
                raise CheckFailed(f"mysql {ds.key}: the standby at {address} still replicates")
            if my.is_read_only(t):
                raise CheckFailed(f"mysql {ds.key}: the standby at {address} is read-only")
        with my.connect(owner_conn(ctx, address, ds.spec)) as c:
            my.query(c, "SELECT 1")

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        return {}  # a MariaDB source keeps nothing for its replicas (no slot): nothing to drop

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        from liferaft.errors import Unreachable
        from liferaft.movers import mysql as my

        _, tgt = self._conns(ctx, ds, sides)
        done: dict[str, Any] = {"replica_stopped": False}
        try:
            with my.connect(tgt, database=False) as t:
                done["replica_stopped"] = my.replica_status(t) is not None
                my.reset_replica(t)
        except Unreachable as e:
            ctx.emit("replicate.standby_unreachable", f"mysql {ds.key}: the standby does not answer ({e}); if it "
                     "comes back, run there: STOP SLAVE; RESET SLAVE ALL;", database=ds.key)
        ctx.emit("replicate.db_stopped", f"mysql {ds.key}: replica "
                 + ("stopped and reset" if done["replica_stopped"] else "not found at the standby"), database=ds.key,
                 **done)
        return done

    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        return {"method": entry.get("method"), "last_replicated_at": entry.get("caught_up_at"),
                "gtid": promoted.get("gtid") or entry.get("standby_gtid"), "last_lag_bytes": entry.get("lag_bytes"),
                "last_lag_seconds": entry.get("lag_seconds"), "last_measured_at": entry.get("measured_at")}

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return "lock liferaft's MySQL migration account at the promoted standby"

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        port = int(datasets[0].spec.port)
        if undo:
            ensure_migrator(ctx, host, port)
        else:
            lock_migrator(host, port)
        return True

