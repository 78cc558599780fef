"""Write ledgers are read by the product's own module, in a documented format; only an explicit option adds one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from liferaft.errors import CheckFailed, UsageError
from liferaft.movers import ledger
from liferaft.stack import load_stack
from tests.unit.test_failover_planner import copy_example, observed


def _ledger(path: Path, rows: list[tuple[object, float]]) -> str:
    """A ledger with one acknowledged write per (row key, done_at); row key None = never acknowledged."""
    with sqlite3.connect(path) as db:
        db.executescript(ledger.LEDGER_SCHEMA)
        db.executemany("INSERT INTO writes (run_id, row_key, value_sha256, sent_at, done_at, status, error) "
                       "VALUES ('r', ?, ?, ?, ?, 201, NULL)", [(k, "ab" * 32, t - 0.01, t) for k, t in rows])
    return str(path)


def test_copy_before_keeps_only_writes_acknowledged_by_the_cut(tmp_path: Path) -> None:
    """The before-cut copy holds what was acknowledged at or before the cut, keyed by row key, any key type."""
    path = _ledger(tmp_path / "l.sqlite", [(1, 10.0), (2, 20.0), ("k-3", 20.0), (None, 15.0), (4, 30.0)])
    out, before, after, acked_at = ledger.copy_before(path, 20.0, str(tmp_path))
    assert (before, after) == (3, 1)
    assert acked_at == {1: 10.0, 2: 20.0, "k-3": 20.0}
    assert [k for k, _ in ledger.acknowledged(out)] == [1, 2, "k-3"]  # SQLite orders numbers before text
    assert ledger.acknowledged_between(path, 10.0, 30.0) == 3


def test_a_missing_or_foreign_file_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="not found"):
        ledger.acknowledged(str(tmp_path / "nope.sqlite"))
    with sqlite3.connect(tmp_path / "other.sqlite") as db:
        db.execute("CREATE TABLE writes (post_id INTEGER, body_sha256 TEXT)")
    with pytest.raises(UsageError, match="is not a write ledger"):
        ledger.acknowledged(str(tmp_path / "other.sqlite"))


def test_the_stack_says_where_writes_land(tmp_path: Path) -> None:
    """The example names posts.id / posts.body; a database without `ledger:` gets a hint, not a guess."""
    stack = load_stack(copy_example(tmp_path))
    db = stack.model.data.databases["blog"]
    assert ledger.spec_for(db, "blog") == ledger.LedgerSpec(table="posts", key="id", value="body")
    bare = load_stack(copy_example(tmp_path, copy_example(tmp_path).read_text().replace(
        "      ledger: {table: posts, key: id, value: body}", "")))
    with pytest.raises(UsageError, match=r"data.databases.blog does not say where"):
        ledger.spec_for(bare.model.data.databases["blog"], "blog")


def test_only_the_explicit_option_adds_a_ledger_to_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment variable changes a plan: the old LIFERAFT_VERIFY_LEDGER is ignored; `ledger=` is not."""
    from liferaft.failover.planner import make_plan

    stack = load_stack(copy_example(tmp_path))
    monkeypatch.setenv("LIFERAFT_VERIFY_LEDGER", str(tmp_path / "l.sqlite"))
    assert make_plan(stack, "primary", "alt-b", "live", observed()).step("verify-data").params["ledger"] is None
    with_ledger = make_plan(stack, "primary", "alt-b", "live", observed(), ledger="/x/l.sqlite")
    assert with_ledger.step("verify-data").params["ledger"] == "/x/l.sqlite"
