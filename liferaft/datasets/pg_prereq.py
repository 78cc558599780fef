"""PostgreSQL's prerequisites for a move: what the plan checks at the source before anything is created, and what
the move does about them (the stack key `replica_identity: full`).

Below the step library (the PostgreSQL dataset kind and its standby half use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liferaft.datasets.base import Dataset
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn


def replica_identity_full(ctx: RunContext, ds: Dataset, src: PgConn) -> list[str]:
    """With the stack key `replica_identity: full`: the source's tables without a primary key, which the logical
    migration is about to give REPLICA IDENTITY FULL (said in an event, and in the seed's result); else []."""
    from liferaft.movers.pg_logical import tables_without_key

    if ds.spec.replica_identity != "full":
        return []
    tables = tables_without_key(src)
    if tables:
        ctx.emit("pg.replica_identity_full", f"database {ds.key}: REPLICA IDENTITY FULL set at the source on "
                 f"{len(tables)} table(s) without a primary key ({', '.join(tables[:10])}"
                 f"{' ...' if len(tables) > 10 else ''}), as `replica_identity: full` asks", database=ds.key,
                 tables=tables)
    return tables
