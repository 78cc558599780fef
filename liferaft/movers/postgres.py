"""PostgreSQL migration: dump/restore, logical replication with cutover, and verification.

This module gathers the public surface; the work lives in pg_conn (connections, tools, secrets), pg_dump,
pg_logical and pg_verify. psycopg is imported only inside functions.
"""

from __future__ import annotations

from liferaft.movers.pg_conn import PgConn, Progress
from liferaft.movers.pg_dump import DumpRestoreResult, copy_schema, dump_restore, prepare_target
from liferaft.movers.pg_logical import (
    CutoverResult,
    Lag,
    Replication,
    cutover,
    is_read_only,
    lag,
    start,
    stop,
    tables_without_key,
    undo_read_only,
    wait_initial_sync,
)
from liferaft.movers.pg_verify import SequenceCheck, TableCheck, VerifyReport, verify

__all__ = [
    "CutoverResult", "DumpRestoreResult", "Lag", "PgConn", "Progress", "Replication", "SequenceCheck",
    "TableCheck", "VerifyReport", "copy_schema", "cutover", "dump_restore", "is_read_only", "lag",
    "prepare_target", "start", "stop", "tables_without_key", "undo_read_only", "verify", "wait_initial_sync",
]
