"""Prove a PostgreSQL copy is complete: per-table count and order-independent hash, sequences, schema diff.

The table hash is `sum(('x'||substr(md5(t::text),1,15))::bit(60)::bigint)` over every row: equal for equal row
multisets whatever the physical order, different (with overwhelming probability) when any row differs.
Source and target are read concurrently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import CheckFailed
from liferaft.movers.pg_conn import PgConn, Progress, connect, emit, ident

_USER_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""

_COLUMNS = """
SELECT n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
"""

_CONSTRAINTS = """
SELECT n.nspname || '.' || c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""

_INDEXES = """
SELECT schemaname || '.' || tablename, indexname, indexdef FROM pg_indexes
WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
"""

_SEQUENCES = "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"


@dataclass(frozen=True)
class TableCheck:
    table: str  # schema.name
    source_count: int | None
    target_count: int | None
    source_hash: str | None
    target_hash: str | None

    @property
    def ok(self) -> bool:
        return self.source_count == self.target_count and self.source_hash == self.target_hash

    def problem(self) -> str:
        if self.target_count is None:
            return f"table {self.table} missing at the target"
        if self.source_count is None:
            return f"table {self.table} exists only at the target"
        if self.source_count != self.target_count:
            return f"table {self.table}: {self.source_count} rows at the source, {self.target_count} at the target"
        return f"table {self.table}: same row count ({self.source_count}) but the content hash differs"


@dataclass(frozen=True)
class SequenceCheck:
    sequence: str
    source_value: int | None
    target_value: int | None

    @property
    def ok(self) -> bool:
        if self.source_value is None:
            return True
        return self.target_value is not None and self.target_value >= self.source_value

    def problem(self) -> str:
        return (f"sequence {self.sequence}: target last value {self.target_value} is behind the source's "
                f"{self.source_value}")


@dataclass(frozen=True)
class VerifyReport:
    source: str
    target: str
    tables: tuple[TableCheck, ...]
    sequences: tuple[SequenceCheck, ...]
    schema_differences: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems()

    @property
    def differing_tables(self) -> list[str]:
        return [t.table for t in self.tables if not t.ok]

    def problems(self) -> list[str]:
        out = [t.problem() for t in self.tables if not t.ok]
        out += [s.problem() for s in self.sequences if not s.ok]
        out += list(self.schema_differences)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "target": self.target, "ok": self.ok,
            "differing_tables": self.differing_tables,
            "problems": self.problems(),
            "tables": [{"table": t.table, "source_count": t.source_count, "target_count": t.target_count,
                        "source_hash": t.source_hash, "target_hash": t.target_hash, "ok": t.ok}
                       for t in self.tables],
            "sequences": [{"sequence": s.sequence, "source": s.source_value, "target": s.target_value,
                           "ok": s.ok} for s in self.sequences],
            "schema_differences": list(self.schema_differences),
        }


def _table_stats(conn: PgConn, progress: Progress | None, side: str) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    with connect(conn) as c:
        # row text must not depend on per-cluster settings
        for setting in ("default_transaction_read_only = on", "TimeZone = 'UTC'", "DateStyle = 'ISO, MDY'",
                        "IntervalStyle = 'postgres'", "extra_float_digits = 1", "bytea_output = 'hex'"):
            c.execute(f"SET {setting}")
        tables = c.execute(_USER_TABLES).fetchall()
        for schema, name in tables:
            row = c.execute(
                f"SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0)"
                f" FROM {ident(schema, name)} t").fetchone()
            assert row is not None
            out[f"{schema}.{name}"] = (int(row[0]), str(row[1]))
            emit(progress, "pg.verify.table", side=side, table=f"{schema}.{name}", rows=int(row[0]))
    return out


def _sequences(conn: PgConn) -> dict[str, int | None]:
    with connect(conn) as c:
        return {f"{s}.{n}": (int(v) if v is not None else None) for s, n, v in c.execute(_SEQUENCES).fetchall()}


def _schema(conn: PgConn) -> dict[str, set[tuple[Any, ...]]]:
    with connect(conn) as c:
        return {
            "column": {tuple(r) for r in c.execute(_COLUMNS).fetchall()},
            "constraint": {tuple(r) for r in c.execute(_CONSTRAINTS).fetchall()},
            "index": {tuple(r) for r in c.execute(_INDEXES).fetchall()},
        }


def schema_diff(src: dict[str, set[tuple[Any, ...]]], tgt: dict[str, set[tuple[Any, ...]]]) -> list[str]:
    """Human-readable differences: '<kind> <table>.<name> missing at the target / only at the target / differs'."""
    out: list[str] = []
    for kind in ("column", "constraint", "index"):
        s = {(r[0], r[1]): r[2:] for r in src[kind]}
        t = {(r[0], r[1]): r[2:] for r in tgt[kind]}
        for key in sorted(s.keys() | t.keys()):
            name = f"{key[0]}.{key[1]}" if kind == "column" else f"{key[1]} on {key[0]}"
            if key not in t:
                out.append(f"schema: {kind} {name} missing at the target")
            elif key not in s:
                out.append(f"schema: {kind} {name} exists only at the target")
            elif s[key] != t[key]:
                out.append(f"schema: {kind} {name} differs: source {s[key]!r}, target {t[key]!r}")
    return out


def verify(source: PgConn, target: PgConn, *, raise_on_difference: bool = True,
           progress: Progress | None = None) -> VerifyReport:
    """Compare source and target; raise CheckFailed naming what differs (first differing tables first)."""
    emit(progress, "pg.verify.start", source=source.describe(), target=target.describe())
    with ThreadPoolExecutor(max_workers=2) as pool:
        fs = pool.submit(_table_stats, source, progress, "source")
        ft = pool.submit(_table_stats, target, progress, "target")
        src_stats, tgt_stats = fs.result(), ft.result()
        src_seq, tgt_seq = _sequences(source), _sequences(target)
        src_schema, tgt_schema = _schema(source), _schema(target)
    tables = tuple(
        TableCheck(name, src_stats.get(name, (None, None))[0], tgt_stats.get(name, (None, None))[0],
                   src_stats.get(name, (None, None))[1], tgt_stats.get(name, (None, None))[1])
        for name in sorted(src_stats.keys() | tgt_stats.keys()))
    sequences = tuple(SequenceCheck(name, src_seq.get(name), tgt_seq.get(name))
                      for name in sorted(src_seq.keys() | tgt_seq.keys()))
    report = VerifyReport(source.describe(), target.describe(), tables, sequences,
                          tuple(schema_diff(src_schema, tgt_schema)))
    emit(progress, "pg.verify.done", ok=report.ok, tables=len(tables), differing=report.differing_tables)
    if raise_on_difference and not report.ok:
        problems = report.problems()
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckFailed(f"database copy differs from {source.describe()}:\n  " + "\n  ".join(problems[:10]) + more,
                          hint="the target is not a complete copy; do not cut over")
    return report
