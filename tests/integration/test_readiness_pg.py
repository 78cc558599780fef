"""The PostgreSQL standby against real local PostgreSQL 15 clusters (tests/pg_fixtures.py): lag, promotion without
the source, sequences, and dump + swap."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from pathlib import Path

import pytest

from liferaft.movers import pg_standby as pgstandby
from liferaft.movers import postgres as pg
from liferaft.movers.pg_conn import PgConn, connect, ident
from tests.pg_fixtures import PgPair

pytestmark = pytest.mark.lab

SCHEMA = """
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE posts (id bigserial PRIMARY KEY, author_id int NOT NULL REFERENCES authors(id), body text);
INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, 20) g;
INSERT INTO posts (author_id, body) SELECT 1 + g % 20, md5(g::text) FROM generate_series(1, 2000) g;
"""


def _count(conn: PgConn, table: str = "posts") -> int:
    with connect(conn) as c:
        row = c.execute(f"SELECT count(*) FROM {ident(table)}").fetchone()
    return int(row[0]) if row else -1


@contextlib.contextmanager
def _replication_role(pair: PgPair) -> PgConn:  # type: ignore[misc]
    """A superuser of the source used only by the subscription, so the test can lock the standby out."""
    role = "rep_" + uuid.uuid4().hex[:8]
    password = secrets.token_hex(16)
    with connect(pair.source_cluster.conn()) as c:
        c.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    src = PgConn(host=pair.source.host, port=pair.source.port, dbname=pair.source.dbname, user=role,
                 password=password)
    try:
        yield src
    finally:
        with connect(pair.source_cluster.conn()) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        with connect(pair.source) as c:
            for (pub,) in c.execute("SELECT pubname FROM pg_publication").fetchall():
                c.execute(f"DROP PUBLICATION {ident(pub)}")
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                      " WHERE database = current_database() AND NOT active")
        with connect(pair.source_cluster.conn()) as c:
            c.execute(f"DROP ROLE IF EXISTS {role}")


def test_lag_then_promotion_without_the_source(pg_pair: PgPair) -> None:
    """Lag is measured at the source; once the source refuses the standby, promotion still drops the subscription
    (leaving the source's slot alone), and sequences move past their columns' max so new writes do not collide."""
    with connect(pg_pair.source) as c:
        c.execute(SCHEMA)
    with _replication_role(pg_pair) as src:
        rep = pg.start(src, pg_pair.target, wait=True, timeout=120)
        with connect(pg_pair.source) as c:
            c.execute("INSERT INTO posts (author_id, body) SELECT 1, md5(g::text) FROM generate_series(1, 500) g")
        lag = pgstandby.source_lag(src, rep.name, 5.0)
        assert lag.bytes >= 0 and lag.seconds >= 0 and lag.source_lsn
        deadline = time.monotonic() + 30
        while _count(pg_pair.target) != 2500 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(pg_pair.target) == 2500
        while pgstandby.source_lag(src, rep.name, 5.0).bytes > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pgstandby.source_lag(src, rep.name, 5.0).bytes == 0
        status = pgstandby.standby_status(pg_pair.target, rep.name)
        assert status["subscription"] and status["enabled"]

        # the cut: the source no longer lets the standby (or anyone using its role) in
        with connect(pg_pair.source_cluster.conn()) as c:
            c.execute(f"ALTER ROLE {src.user} NOLOGIN")
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (src.user,))
        t0 = time.monotonic()
        res = pgstandby.promote(pg_pair.target, rep.name)
        assert time.monotonic() - t0 < 10
        assert res.subscription_dropped and res.sequences_set == 2
        assert not pgstandby.has_subscription(pg_pair.target, rep.name)
        with connect(pg_pair.source) as c:  # untouched at the source: promotion never talked to it
            assert c.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (rep.name,)).fetchone()
        with connect(pg_pair.target) as c:
            new_id = c.execute("INSERT INTO posts (author_id, body) VALUES (1, 'after') RETURNING id").fetchone()
            author = c.execute("INSERT INTO authors (name) VALUES ('new') RETURNING id").fetchone()
        assert new_id is not None and new_id[0] == 2501
        assert author is not None and author[0] == 21
        assert pgstandby.promote(pg_pair.target, rep.name).subscription_dropped is False  # idempotent


def test_dump_and_swap_replaces_the_standby_whole(pg_pair: PgPair) -> None:
    """Dump mode: each copy lands in a staging database and is swapped in under the real name; verified equal."""
    with connect(pg_pair.source) as c:
        c.execute(SCHEMA)
    owner = pg_pair.target.user
    first = pgstandby.dump_and_swap(pg_pair.source, pg_pair.target, owner)
    assert first["dump_bytes"] > 0 and _count(pg_pair.target) == 2000
    with connect(pg_pair.source) as c:
        c.execute("INSERT INTO posts (author_id, body) SELECT 2, 'more' FROM generate_series(1, 300)")
    pgstandby.dump_and_swap(pg_pair.source, pg_pair.target, owner)
    assert _count(pg_pair.target) == 2300
    report = pg.verify(pg_pair.source, pg_pair.target, raise_on_difference=False)
    assert report.ok, report.problems()
    with connect(pg_pair.target.with_db("postgres")) as c:
        names = {r[0] for r in c.execute("SELECT datname FROM pg_database").fetchall()}
    base = pg_pair.target.dbname
    assert base in names and base + pgstandby.STAGING_SUFFIX not in names and base + pgstandby.OLD_SUFFIX not in names
    lsn = pgstandby.source_lsn(pg_pair.source, 5.0)
    with connect(pg_pair.source) as c:
        c.execute("INSERT INTO posts (author_id, body) SELECT 3, repeat('x', 100) FROM generate_series(1, 200)")
    assert pgstandby.wal_bytes_since(pg_pair.source, lsn, 5.0) > 200 * 100


def test_ledger_loss_counts_lost_writes_and_their_span(pg_pair: PgPair, tmp_path: Path) -> None:
    """The data-loss report from a real write ledger against a real database: missing and altered writes, and
    the span from the last surviving write before the loss to the last lost one."""
    import hashlib
    import sqlite3

    from liferaft.movers.ledger import LEDGER_SCHEMA, LedgerSpec
    from liferaft.movers.ledger import loss as ledger_loss

    ledger_path = tmp_path / "ledger.sqlite"
    t0 = 1_800_000_000.0
    bodies = {i: f"write {i}" for i in range(1, 101)}
    rows = [("run1", i, hashlib.sha256(body.encode()).hexdigest(), t0 + i * 0.05, t0 + i * 0.05 + 0.01, 201, None)
            for i, body in bodies.items()]
    rows.append(("run1", None, "0" * 64, t0 + 6, t0 + 6.5, None, "URLError"))  # never acknowledged: not lost
    with sqlite3.connect(ledger_path) as led:
        led.executescript(LEDGER_SCHEMA)
        led.executemany("INSERT INTO writes (run_id, row_key, value_sha256, sent_at, done_at, status, error) "
                        "VALUES (?,?,?,?,?,?,?)", rows)
    spec = LedgerSpec(table="posts", key="id", value="body")
    with connect(pg_pair.source) as c:
        c.execute("CREATE TABLE posts (id bigint PRIMARY KEY, body text)")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO posts VALUES (%s, %s)",
                            [(i, "altered" if i == 50 else b) for i, b in bodies.items() if i <= 90])
    loss = ledger_loss(str(ledger_path), pg_pair.source, spec)
    assert loss["acknowledged"] == 100 and loss["missing_count"] == 10 and loss["mismatched_count"] == 1
    assert loss["missing_first"][:3] == [91, 92, 93]
    assert loss["window_s"] == pytest.approx(0.5, abs=0.001)  # write 90 survived, writes 91..100 were lost
    with connect(pg_pair.source) as c:
        c.execute("INSERT INTO posts SELECT g, 'write ' || g FROM generate_series(91, 100) g")
    assert ledger_loss(str(ledger_path), pg_pair.source, spec)["missing_count"] == 0
    assert ledger_loss(str(ledger_path), pg_pair.source, spec)["window_s"] == 0.0
