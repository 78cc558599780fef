"""PostgreSQL logical replication with a sub-second cutover.

start():   refuse tables without a primary key (or set REPLICA IDENTITY FULL on them when asked: the stack key
           `replica_identity: full`), prepare the target, copy
           the schema (pg_dump --schema-only), CREATE PUBLICATION ... FOR ALL TABLES on the source and CREATE
           SUBSCRIPTION on the target, then wait for the initial copy.
lag():     bytes (source's current LSN minus the slot's confirmed position) and seconds (the walsender's replay lag).
cutover(): database read-only + client sessions ended (the write freeze starts), wait until the slot's confirmed
           position reaches the source's current LSN, setval every sequence on the target, drop the subscription
           (which drops the slot) and the publication. Returns the measured freeze.
undo_read_only(): ALTER DATABASE ... RESET from another database (a read-only database cannot un-set itself).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from liferaft.errors import CheckFailed, RunFailed, UsageError
from liferaft.movers.pg_conn import PgConn, Progress, connect, emit, give_to_owner, ident, require_superuser
from liferaft.movers.pg_dump import copy_schema, prepare_target, set_marker

NO_KEY_SQL = """
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relreplident <> 'f'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid
                  AND (i.indisprimary OR (c.relreplident = 'i' AND i.indisreplident)))
ORDER BY 1
"""


@dataclass(frozen=True)
class Replication:
    """A running replication from `source` to `target`, named so that it can be found again after a crash."""

    source: PgConn
    target: PgConn
    name: str  # publication, subscription and slot name

    @classmethod
    def for_databases(cls, source: PgConn, target: PgConn) -> Replication:
        return cls(source, target, replication_name(source.dbname))


def replication_name(dbname: str) -> str:
    """The publication, subscription and slot name liferaft uses for database `dbname`."""
    return re.sub(r"[^a-z0-9_]", "_", f"liferaft_{dbname}".lower())[:50]


@dataclass(frozen=True)
class Lag:
    bytes: int
    seconds: float


@dataclass(frozen=True)
class CutoverResult:
    freeze_s: float  # from read-only until the target is ready for writes (sequences set, subscription gone)
    catch_up_s: float  # of which: waiting for the confirmed position
    final_lsn: str
    sequences_set: int
    sessions_ended: int


def tables_without_key(source: PgConn) -> list[str]:
    with connect(source) as c:
        return [r[0] for r in c.execute(NO_KEY_SQL).fetchall()]


def start(source: PgConn, target: PgConn, *, replica_identity_full: bool = False, replace: bool = False,
          wait: bool = True, timeout: float = 3600.0, progress: Progress | None = None,
          owner: str | None = None) -> Replication:
    """Set up publication + subscription; with `wait`, return once the initial copy is done. Idempotent by name.
    `owner`: the copied schema is given to that role before the subscription starts copying (ALTER ... OWNER
    waits for a table's copy to end: done after, it held the caller until the whole initial copy was over, with no
    progress shown meanwhile)."""
    rep = Replication.for_databases(source, target)
    missing = tables_without_key(source)
    if missing and not replica_identity_full:
        raise CheckFailed(
            f"logical replication cannot carry UPDATE/DELETE for {len(missing)} table(s) without a primary key: "
            + ", ".join(missing),
            hint="add a primary key, or set `replica_identity: full` on the database in the stack file "
                 "(data.databases.<key>: REPLICA IDENTITY FULL on those tables at the source; slower on the "
                 "target), or `migrate: dump`")
    with connect(source) as c:
        require_superuser(c, source, "logical replication (CREATE PUBLICATION FOR ALL TABLES)")
        level = c.execute("SHOW wal_level").fetchone()
        if not level or level[0] != "logical":
            raise UsageError(f"the source has wal_level={level[0] if level else '?'}; logical replication needs "
                             "wal_level=logical", hint="set wal_level = logical and restart the source server")
        for table in missing:
            schema, _, name = table.partition(".")
            c.execute(f"ALTER TABLE {ident(schema, name)} REPLICA IDENTITY FULL")
            emit(progress, "pg.logical.replica_identity_full", table=table)
    existing = _subscription_exists(target, rep.name)
    if not existing:
        prepare_target(target, source, replace=replace, progress=progress)
        copy_schema(source, target, progress=progress)
        if owner:
            give_to_owner(target, owner)
        with connect(source) as c:
            if c.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (rep.name,)).fetchone() is None:
                c.execute(f"CREATE PUBLICATION {ident(rep.name)} FOR ALL TABLES")
        with connect(target) as c:
            require_superuser(c, target, "CREATE SUBSCRIPTION")
            # The connection string (with the password) goes to the target server in SQL, never on a command line
            # and never into a log or an error message of ours.
            info = source.libpq_conninfo().replace("'", "''")
            c.execute(f"CREATE SUBSCRIPTION {ident(rep.name)} CONNECTION '{info}' PUBLICATION {ident(rep.name)}"
                      f" WITH (slot_name = {ident(rep.name)}, create_slot = true, copy_data = true)")
        emit(progress, "pg.logical.started", name=rep.name)
    if wait:
        wait_initial_sync(rep, timeout=timeout, progress=progress)
    return rep


def subscription_exists(target: PgConn, name: str) -> bool:
    """Does the target database exist and hold the subscription `name`?"""
    return _subscription_exists(target, name)


def _subscription_exists(target: PgConn, name: str) -> bool:
    from liferaft.movers.pg_dump import database_exists

    if not database_exists(target):
        return False
    with connect(target) as c:
        return c.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone() is not None


def wait_initial_sync(rep: Replication, *, timeout: float = 3600.0, progress: Progress | None = None) -> float:
    """Wait until every table's initial copy is done (state ready or synchronised). Returns seconds waited."""
    t0 = time.monotonic()
    last_emit = 0.0
    with connect(rep.target) as c:
        while True:
            rows = c.execute("SELECT r.srsubstate, count(*) FROM pg_subscription_rel r JOIN pg_subscription s"
                             " ON s.oid = r.srsubid WHERE s.subname = %s GROUP BY 1", (rep.name,)).fetchall()
            states = {str(s): int(n) for s, n in rows}
            pending = sum(n for s, n in states.items() if s not in ("r", "s"))
            if pending == 0:
                emit(progress, "pg.logical.synced", seconds=round(time.monotonic() - t0, 3), tables=sum(states.values()))
                return time.monotonic() - t0
            now = time.monotonic()
            if now - t0 > timeout:
                raise RunFailed(f"initial copy of {rep.name} not finished after {timeout:.0f} s ({pending} tables left)")
            if now - last_emit > 1.0:
                emit(progress, "pg.logical.syncing", tables_pending=pending, tables=sum(states.values()))
                last_emit = now
            time.sleep(0.2)


def lag(rep: Replication) -> Lag:
    """Replication lag now: WAL bytes not yet confirmed by the subscriber, and the walsender's replay lag."""
    with connect(rep.source) as c:
        row = c.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn),"
            " extract(epoch FROM r.replay_lag) FROM pg_replication_slots s"
            " LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = %s",
            (rep.name,)).fetchone()
    if row is None:
        raise RunFailed(f"replication slot {rep.name} is missing on {rep.source.describe()}")
    return Lag(bytes=max(0, int(row[0] or 0)), seconds=float(row[1] or 0.0))


def _end_sessions(c: Any, dbname: str, keep_pid: int) -> int:
    rows = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                     " AND pid <> pg_backend_pid() AND pid <> %s AND backend_type = 'client backend'",
                     (dbname, keep_pid)).fetchall()
    return len(rows)


def cutover(rep: Replication, *, timeout: float = 60.0, progress: Progress | None = None) -> CutoverResult:
    """Freeze writes at the source, let the target catch up, set sequences, drop the replication. RPO 0."""
    src, tgt = rep.source, rep.target
    admin = connect(src.with_db("postgres"))
    s = connect(src)
    t = connect(tgt)
    try:
        t.execute("SET synchronous_commit = on")
        # --- the write freeze starts here
        t_freeze = time.monotonic()
        admin.execute(f"ALTER DATABASE {ident(src.dbname)} SET default_transaction_read_only = on")
        ended = _end_sessions(admin, src.dbname, s.info.backend_pid)
        emit(progress, "pg.cutover.frozen", sessions_ended=ended)
        row = s.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        final_lsn = str(row[0])
        t_wait = time.monotonic()
        while True:
            r = s.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (final_lsn, rep.name)).fetchone()
            if r is None:
                raise RunFailed(f"replication slot {rep.name} vanished during cutover; the source stays read-only",
                                hint="undo the freeze with undo_read_only, then start the replication again")
            if r[0]:
                break
            if time.monotonic() - t_wait > timeout:
                raise RunFailed(f"target did not confirm {final_lsn} within {timeout:.0f} s; the source stays "
                                "read-only", hint="check the subscription worker's log, or undo the freeze")
            # The apply worker commits asynchronously and reports a position as confirmed only once its own WAL
            # is flushed; a synchronous commit here flushes the target's WAL now instead of at the next
            # wal_writer_delay, so the confirmation arrives sooner. It writes no data.
            t.execute("SELECT txid_current()")
            time.sleep(0.005)
        catch_up = time.monotonic() - t_wait
        seqs = s.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences"
                         " WHERE last_value IS NOT NULL").fetchall()
        with t.transaction():
            for schema, name, value in seqs:
                t.execute("SELECT setval(%s::regclass, %s, true)", (ident(schema, name), value))
        t.execute(f"DROP SUBSCRIPTION {ident(rep.name)}")  # also drops the slot at the source
        freeze = time.monotonic() - t_freeze
        # --- the target is complete and writable: the freeze ends here
        s.execute(f"DROP PUBLICATION IF EXISTS {ident(rep.name)}")
        emit(progress, "pg.cutover.done", freeze_s=round(freeze, 3), catch_up_s=round(catch_up, 3),
             final_lsn=final_lsn, sequences=len(seqs))
    finally:
        for c in (t, s, admin):
            c.close()
    set_marker(tgt, src, "replicated and cut over")
    return CutoverResult(freeze_s=freeze, catch_up_s=catch_up, final_lsn=final_lsn, sequences_set=len(seqs),
                         sessions_ended=ended)


def stop(rep: Replication) -> None:
    """Abandon a replication without cutting over: drop the subscription, slot and publication. Idempotent."""
    from liferaft.movers.pg_dump import database_exists

    if database_exists(rep.target):
        with connect(rep.target) as c:
            if c.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (rep.name,)).fetchone():
                c.execute(f"DROP SUBSCRIPTION {ident(rep.name)}")
    with connect(rep.source) as c:
        c.execute(f"DROP PUBLICATION IF EXISTS {ident(rep.name)}")
        c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                  " WHERE slot_name = %s AND NOT active", (rep.name,))


def undo_read_only(source: PgConn) -> None:
    """Let the source accept writes again. Runs from the 'postgres' database: a read-only database cannot."""
    with connect(source.with_db("postgres")) as c:
        c.execute(f"ALTER DATABASE {ident(source.dbname)} RESET default_transaction_read_only")


def is_read_only(source: PgConn) -> bool:
    with connect(source.with_db("postgres")) as c:
        row = c.execute(
            "SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            " WHERE d.datname = %s AND s.setrole = 0 AND 'default_transaction_read_only=on' = ANY(s.setconfig)",
            (source.dbname,)).fetchone()
        return row is not None
