"""PostgreSQL movers against real local PostgreSQL 15 clusters (tests/pg_fixtures.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import CheckFailed, Conflict, RunFailed
from liferaft.movers import postgres as pg
from liferaft.movers.pg_conn import connect
from tests.pg_fixtures import PgPair

pytestmark = pytest.mark.lab

SCHEMA = """
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE posts (id bigserial PRIMARY KEY, author_id int NOT NULL REFERENCES authors(id),
                    body text, created timestamptz NOT NULL DEFAULT now(), score numeric(6,2));
CREATE INDEX posts_author ON posts (author_id, created);
INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, 50) g;
INSERT INTO posts (author_id, body, score)
  SELECT 1 + g % 50, repeat(md5(g::text), 1 + g % 4), (g % 1000) / 10.0 FROM generate_series(1, 5000) g;
"""


def _load(conn: pg.PgConn, sql: str = SCHEMA) -> None:
    with connect(conn) as c:
        c.execute(sql)


def _events() -> tuple[list[tuple[str, dict[str, Any]]], pg.Progress]:
    seen: list[tuple[str, dict[str, Any]]] = []
    return seen, lambda e, d: seen.append((e, d))


def test_dump_restore_round_trip_is_verified_and_idempotent(pg_pair: PgPair) -> None:
    """pg_dump -Fd/pg_restore -j copies everything; verification passes; running it again is safe."""
    _load(pg_pair.source)
    seen, progress = _events()
    res = pg.dump_restore(pg_pair.source, pg_pair.target, jobs=2, progress=progress)
    assert res.dump_bytes > 0 and res.total_s > 0
    assert {"pg.dump.done", "pg.restore.done"} <= {e for e, _ in seen}
    report = pg.verify(pg_pair.source, pg_pair.target)
    assert report.ok
    counts = {t.table: t.target_count for t in report.tables}
    assert counts == {"public.authors": 50, "public.posts": 5000}
    assert {s.sequence: s.target_value for s in report.sequences}["public.posts_id_seq"] == 5000
    # again: the target carries liferaft's marker, so it is recreated rather than refused or doubled
    pg.dump_restore(pg_pair.source, pg_pair.target, jobs=2)
    assert pg.verify(pg_pair.source, pg_pair.target).ok


def test_prepare_target_refuses_foreign_data(pg_pair: PgPair) -> None:
    """A target database holding tables liferaft did not restore is never dropped silently."""
    _load(pg_pair.source)
    pg_pair.target_cluster.create_db(pg_pair.target.dbname)
    _load(pg_pair.target, "CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious VALUES (1);")
    with pytest.raises(Conflict, match="did not restore"):
        pg.dump_restore(pg_pair.source, pg_pair.target)
    with connect(pg_pair.target) as c:
        assert c.execute("SELECT count(*) FROM precious").fetchone() == (1,)


def test_verify_names_a_table_with_a_missing_row_and_one_with_a_changed_row(pg_pair: PgPair) -> None:
    """Count catches a deleted row; the order-independent hash catches a changed one; both tables named."""
    _load(pg_pair.source)
    pg.dump_restore(pg_pair.source, pg_pair.target)
    with connect(pg_pair.target) as c:
        c.execute("DELETE FROM posts WHERE id = 4242")
        c.execute("UPDATE authors SET name = 'someone else' WHERE id = 7")
    with pytest.raises(CheckFailed) as err:
        pg.verify(pg_pair.source, pg_pair.target)
    msg = str(err.value)
    assert "public.posts: 5000 rows at the source, 4999 at the target" in msg
    assert "public.authors: same row count (50) but the content hash differs" in msg
    report = pg.verify(pg_pair.source, pg_pair.target, raise_on_difference=False)
    assert report.differing_tables == ["public.authors", "public.posts"]


def test_verify_reports_schema_and_sequence_differences(pg_pair: PgPair) -> None:
    """A dropped index and a sequence behind the source are both reported."""
    _load(pg_pair.source)
    pg.dump_restore(pg_pair.source, pg_pair.target)
    with connect(pg_pair.target) as c:
        c.execute("DROP INDEX posts_author")
        c.execute("SELECT setval('posts_id_seq', 10)")
    report = pg.verify(pg_pair.source, pg_pair.target, raise_on_difference=False)
    problems = "\n".join(report.problems())
    assert "schema: index posts_author on public.posts missing at the target" in problems
    assert "sequence public.posts_id_seq: target last value 10 is behind the source's 5000" in problems


def test_logical_mode_refuses_tables_without_primary_key(pg_pair: PgPair) -> None:
    """Logical replication names the tables that have no primary key and refuses; FULL identity when asked."""
    _load(pg_pair.source)
    _load(pg_pair.source, "CREATE TABLE audit_log (at timestamptz, what text); CREATE TABLE raw_events (x int);"
                          "INSERT INTO audit_log VALUES (now(), 'x');")
    with pytest.raises(CheckFailed) as err:
        pg.start(pg_pair.source, pg_pair.target)
    assert "public.audit_log, public.raw_events" in str(err.value)
    assert "without a primary key" in str(err.value)
    rep = pg.start(pg_pair.source, pg_pair.target, replica_identity_full=True, timeout=120)
    try:
        with connect(pg_pair.source) as c:
            c.execute("UPDATE audit_log SET what = 'y'")
        result = pg.cutover(rep)
        assert result.freeze_s < 10
        pg.verify(pg_pair.source, pg_pair.target)
    finally:
        pg.undo_read_only(pg_pair.source)


def _writer(conn: pg.PgConn, stop: threading.Event, acked: list[int], errors: list[str]) -> None:
    """Insert rows one transaction at a time, recording every acknowledged id (a client-side ledger)."""
    while not stop.is_set():
        try:
            with connect(conn) as c:
                while not stop.is_set():
                    row = c.execute("INSERT INTO posts (author_id, body) VALUES (1, 'live') RETURNING id").fetchone()
                    assert row is not None
                    acked.append(int(row[0]))
                    c.execute("UPDATE authors SET name = name || '' WHERE id = 1")
        except Exception as e:  # noqa: BLE001 - the freeze ends our session or refuses writes: expected
            errors.append(type(e).__name__)
            time.sleep(0.01)


def test_logical_replication_cutover_under_writes_loses_nothing(pg_pair: PgPair) -> None:
    """Writes during replication all arrive; cutover freezes, catches up, sets sequences; verify passes; undo works."""
    _load(pg_pair.source)
    seen, progress = _events()
    rep = pg.start(pg_pair.source, pg_pair.target, timeout=120, progress=progress)
    assert "pg.logical.synced" in {e for e, _ in seen}
    stop, acked, errors = threading.Event(), [], []  # type: ignore[var-annotated]
    writer = threading.Thread(target=_writer, args=(pg_pair.source, stop, acked, errors), daemon=True)
    writer.start()
    try:
        time.sleep(1.5)
        lag = pg.lag(rep)
        assert lag.bytes >= 0 and lag.seconds >= 0
        assert len(acked) > 20
        result = pg.cutover(rep, progress=progress)
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join(10)
    try:
        assert result.freeze_s < 5.0, result
        assert result.sequences_set >= 2
        assert pg.is_read_only(pg_pair.source)
        report = pg.verify(pg_pair.source, pg_pair.target)
        assert report.ok
        # every acknowledged write of the ledger is on the target
        with connect(pg_pair.target) as c:
            present = {r[0] for r in c.execute("SELECT id FROM posts WHERE body = 'live'").fetchall()}
            assert set(acked) <= present
            # sequences were set: the next id on the target follows the source's last
            nxt = c.execute("INSERT INTO posts (author_id, body) VALUES (1, 'after') RETURNING id").fetchone()
            assert nxt is not None and nxt[0] > max(acked)
        with connect(pg_pair.source) as c:
            assert c.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)
            assert c.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    finally:
        pg.undo_read_only(pg_pair.source)
    assert not pg.is_read_only(pg_pair.source)
    with connect(pg_pair.source) as c:
        c.execute("INSERT INTO authors (name) VALUES ('writable again')")


def test_connection_description_never_shows_the_password(pg_pair: PgPair) -> None:
    """repr/describe omit the password; a failed login does not echo it."""
    conn = pg_pair.source
    assert conn.password and conn.password not in repr(conn) and conn.password not in conn.describe()
    from dataclasses import replace

    from liferaft.errors import Unreachable

    bad = replace(conn, password="wrong-" + conn.password)
    with pytest.raises(Unreachable) as err:
        connect(bad)
    assert conn.password not in str(err.value)


def test_dump_restore_at_a_host_streams_progress_keeps_the_password_off_argv_and_reruns_clean(
        pg_pair: PgPair) -> None:
    """dump_restore_at: the script a target host runs (here under a local shell standing in for the SSH session)
    gets the passwords on stdin only, reports tables as it goes, leaves no folder behind, and a second run after a
    session killed mid-way restores into a clean database."""
    import contextlib
    import subprocess

    from liferaft.movers.pg_dump import dump_restore_at, host_script

    _load(pg_pair.source)
    commands: list[str] = []

    @contextlib.contextmanager
    def session(command: str) -> Any:
        commands.append(command)
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    before = _host_dump_dirs()
    seen, progress = _events()
    res = dump_restore_at(session, "host-x", pg_pair.source, pg_pair.target, jobs=2, progress=progress)
    kinds = [e for e, _ in seen]
    assert {"pg.dump.remote", "pg.dump.table", "pg.dump.done", "pg.restore.table", "pg.restore.done"} <= set(kinds)
    assert res.dump_bytes > 0
    assert all(pg_pair.source.password not in c and pg_pair.target.password not in c  # type: ignore[operator]
               for c in commands)
    assert pg.verify(pg_pair.source, pg_pair.target).ok
    assert _host_dump_dirs() == before
    assert pg_pair.source.password not in host_script(pg_pair.source, pg_pair.target, 2)  # type: ignore[operator]

    # the session dies in the middle (its shell SIGKILLed at the first table): the run fails, the next is clean
    @contextlib.contextmanager
    def dies(command: str) -> Any:
        with session(command) as proc:
            yield _KillAtFirstTable(proc)

    with pytest.raises(RunFailed):
        dump_restore_at(dies, "host-x", pg_pair.source, pg_pair.target, jobs=2)
    dump_restore_at(session, "host-x", pg_pair.source, pg_pair.target, jobs=2)
    assert pg.verify(pg_pair.source, pg_pair.target).ok
    assert _host_dump_dirs() == before  # the killed run's folder went with the next run


def _host_dump_dirs() -> set[Path]:
    """The host script's dump folders in /tmp (those with its `pid` file): a controller-side dump of another test
    module, run beside this one by another pytest worker, makes /tmp/liferaft-dump-* folders too."""
    return {p for p in Path("/tmp").glob("liferaft-dump-*") if (p / "pid").exists()}


class _KillAtFirstTable:
    """A session whose shell is SIGKILLed when the first table is being dumped."""

    def __init__(self, proc: Any) -> None:
        self.proc, self.stdin, self.stderr = proc, proc.stdin, proc.stderr

    @property
    def stdout(self) -> Any:
        for line in self.proc.stdout:
            if b"dumping contents of table" in line:
                import os
                import signal

                os.killpg(self.proc.pid, signal.SIGKILL)  # the shell and its pg_dump, as `kill -9` of the session
                return
            yield line

    def wait(self) -> int:
        return int(self.proc.wait())
