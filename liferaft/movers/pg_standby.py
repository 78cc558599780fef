"""PostgreSQL standby: lag of a logical subscription, periodic dump + atomic swap, and promotion without the source.

Lag (`source_lag`) is read at the source, bounded by the caller's short timeout: WAL bytes the standby has not
confirmed, and seconds (the walsender's replay lag; 0 when nothing is pending). `standby_status` reads what the
standby itself knows (last message received from the source, last confirmed position), which still answers when
the source is gone.

Promotion (`promote`) never contacts the source: DISABLE the subscription, SET (slot_name = NONE), DROP it (the
slot at the dead source is abandoned), then set every sequence past the max of the column it feeds (logical
replication does not copy sequences). Once the source answers again, `drop_source_side` drops the abandoned slot
and publication there (a rollback of the cold failover, a drill after its heal).

Dump mode (`dump_and_swap`): pg_dump/pg_restore into a staging database at the standby, then swap names, so the
standby database is never half-restored when a cut comes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from liferaft.errors import RunFailed
from liferaft.movers.pg_conn import PgConn, Progress, connect, ident

STAGING_SUFFIX = "_lr_next"
OLD_SUFFIX = "_lr_old"

_OWNED_SEQUENCES = """
SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname
FROM pg_class s
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE s.relkind = 'S'
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class SourceLag:
    bytes: int
    seconds: float
    source_lsn: str
    confirmed_lsn: str | None


@dataclass(frozen=True)
class Promotion:
    subscription_dropped: bool
    sequences_set: int
    last_received_at: float | None  # when the standby last heard from the source (unix time)
    remote_lsn: str | None  # the last source position the standby applied

    def to_dict(self) -> dict[str, Any]:
        return {"subscription_dropped": self.subscription_dropped, "sequences_set": self.sequences_set,
                "last_received_at": self.last_received_at, "remote_lsn": self.remote_lsn}


def source_lag(source: PgConn, name: str, timeout: float) -> SourceLag:
    """Bytes not yet confirmed by the standby's slot, and the replay lag in seconds, read at the source."""
    with connect(source, timeout=max(2.0, timeout)) as c:
        c.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        row = c.execute(
            "SELECT pg_current_wal_insert_lsn()::text, s.confirmed_flush_lsn::text,"
            " pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn),"
            " extract(epoch FROM r.replay_lag), extract(epoch FROM r.write_lag)"
            " FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid"
            " WHERE s.slot_name = %s", (name,)).fetchone()
    if row is None:
        from liferaft.errors import RunFailed

        raise RunFailed(f"replication slot {name} is missing at {source.describe()}",
                        hint="run `liferaft replicate` again: it recreates the subscription")
    pending = max(0, int(row[2] or 0))
    seconds = float(row[3] if row[3] is not None else (row[4] or 0.0)) if pending else 0.0
    return SourceLag(bytes=pending, seconds=seconds, source_lsn=str(row[0]), confirmed_lsn=row[1])


def standby_status(target: PgConn, name: str) -> dict[str, Any]:
    """What the standby knows about its subscription (no source involved)."""
    with connect(target, timeout=10.0) as c:
        row = c.execute(
            "SELECT s.subenabled, extract(epoch FROM st.last_msg_receipt_time),"
            " extract(epoch FROM st.latest_end_time), st.latest_end_lsn::text, st.pid IS NOT NULL,"
            " (SELECT o.remote_lsn::text FROM pg_replication_origin_status o"
            "   JOIN pg_replication_origin ro ON ro.roident = o.local_id WHERE ro.roname = 'pg_' || s.oid)"
            " FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL"
            " WHERE s.subname = %s", (name,)).fetchone()
    if row is None:
        return {"subscription": False}
    return {"subscription": True, "enabled": bool(row[0]),
            "last_received_at": float(row[1]) if row[1] is not None else None,
            "latest_end_at": float(row[2]) if row[2] is not None else None,
            "latest_end_lsn": row[3], "worker_running": bool(row[4]), "remote_lsn": row[5]}


def set_sequences_past_max(target: PgConn) -> int:
    """setval every sequence owned by a column to max(column) (next value max+1); untouched if the table is empty
    and the sequence is already ahead. Returns how many were set."""
    n = 0
    with connect(target) as c:
        for s_schema, s_name, t_schema, t_name, column in c.execute(_OWNED_SEQUENCES).fetchall():
            row = c.execute(f"SELECT max({ident(column)})::bigint FROM {ident(t_schema, t_name)}").fetchone()
            top = row[0] if row else None
            if top is None:
                continue
            cur = c.execute(f"SELECT last_value, is_called FROM {ident(s_schema, s_name)}").fetchone()
            if cur is not None and cur[1] and int(cur[0]) >= int(top):
                continue
            c.execute("SELECT setval(%s::regclass, %s, true)", (ident(s_schema, s_name), int(top)))
            n += 1
    return n


def promote(target: PgConn, name: str) -> Promotion:
    """Make the standby the primary without contacting the source: subscription dropped locally, sequences set."""
    status = standby_status(target, name)
    dropped = detach_subscription(target, name)
    with connect(target.with_db("postgres")) as c:  # a standby database must never stay read-only
        c.execute(f"ALTER DATABASE {ident(target.dbname)} RESET default_transaction_read_only")
    seqs = set_sequences_past_max(target)
    return Promotion(subscription_dropped=dropped, sequences_set=seqs,
                     last_received_at=status.get("last_received_at"), remote_lsn=status.get("remote_lsn"))


def detach_subscription(target: PgConn, name: str) -> bool:
    """Drop the subscription `name` at the standby without contacting its source (DISABLE, SET (slot_name = NONE),
    DROP): the slot and publication stay at the source, for `drop_source_side`. False if there was none."""
    with connect(target) as c:
        if c.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone() is None:
            return False
        c.execute(f"ALTER SUBSCRIPTION {ident(name)} DISABLE")
        c.execute(f"ALTER SUBSCRIPTION {ident(name)} SET (slot_name = NONE)")
        c.execute(f"DROP SUBSCRIPTION {ident(name)}")
    return True


def drop_source_side(source: PgConn, name: str, *, wait: float = 15.0) -> bool:
    """At the source: drop the replication slot and the publication named `name` that a promoted standby's
    subscription used. Promotion dropped the subscription without the source, so both stayed there, and a slot
    nobody reads keeps WAL forever (and its name blocks a new standby's subscription). A walsender still serving the
    slot -- the subscriber's end vanished with the cut, which it notices only after wal_sender_timeout -- is ended:
    nobody will read this slot again. Call it only once the subscription is gone. Idempotent; returns whether a
    slot was dropped."""
    with connect(source) as c:
        deadline = time.monotonic() + wait
        while True:
            held = c.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active",
                             (name,)).fetchone()
            if held is None or time.monotonic() > deadline:
                break
            c.execute("SELECT pg_terminate_backend(%s)", (held[0],))
            time.sleep(0.2)
        row = c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND NOT active", (name,)).fetchone()
        c.execute(f"DROP PUBLICATION IF EXISTS {ident(name)}")
        if c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone():
            raise RunFailed(f"replication slot {name} is still in use at the source; drop it there once free: "
                            f"SELECT pg_drop_replication_slot('{name}');")
    return row is not None


def has_subscription(target: PgConn, name: str) -> bool:
    return bool(standby_status(target, name).get("subscription"))


def source_lsn(source: PgConn, timeout: float) -> str:
    with connect(source, timeout=max(2.0, timeout)) as c:
        row = c.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def wal_bytes_since(source: PgConn, lsn: str, timeout: float) -> int:
    with connect(source, timeout=max(2.0, timeout)) as c:
        c.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        row = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (lsn,)).fetchone()
    return max(0, int(row[0] or 0)) if row else 0


def dump_and_swap(source: PgConn, target: PgConn, owner: str, *, progress: Progress | None = None) -> dict[str, Any]:
    """pg_dump the source into `<db>_lr_next` at the standby, then swap it in under the database's name."""
    from liferaft.movers.pg_conn import give_to_owner
    from liferaft.movers.pg_dump import dump_restore

    staging = target.with_db(target.dbname + STAGING_SUFFIX)
    t0 = time.time()
    res = dump_restore(source, staging, replace=True, progress=progress)
    give_to_owner(staging, owner)
    old = target.dbname + OLD_SUFFIX
    with connect(target.with_db("postgres")) as c:
        c.execute(f"DROP DATABASE IF EXISTS {ident(old)} WITH (FORCE)")
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.dbname,)).fetchone()
        for db in ([target.dbname] if exists else []) + [staging.dbname]:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                      " AND pid <> pg_backend_pid()", (db,))
        if exists:
            c.execute(f"ALTER DATABASE {ident(target.dbname)} RENAME TO {ident(old)}")
        c.execute(f"ALTER DATABASE {ident(staging.dbname)} RENAME TO {ident(target.dbname)}")
        c.execute(f"DROP DATABASE IF EXISTS {ident(old)} WITH (FORCE)")
    return {"dump_started_at": t0, "dump_bytes": res.dump_bytes, "seconds": round(time.time() - t0, 3)}
