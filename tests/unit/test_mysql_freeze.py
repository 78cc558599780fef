"""The MySQL/MariaDB cutover (`liferaft.movers.mysql.freeze`, what the dataset kind's freeze runs) against two local
MariaDB servers (Debian's, installed by scripts/setup.sh; started by bench/bench_mariadb.py's `Server`), one
replicating from the other by GTID, with an application writer at the source.

The replica is stalled on purpose: a transaction at the target holds the row lock a replicated UPDATE needs, so the
replica's SQL thread waits (running, not failed) until the lock is released. The freeze must absorb such a lag in its
catch-up before the source becomes read-only, so the write freeze is the short final wait only; a replica that never
gets close is frozen anyway and still waited for (RPO 0); a replica that cannot apply anything fails the catch-up
before the source is frozen."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import RunFailed
from liferaft.movers import mysql as my


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Any, Any]]:
    if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
        pytest.fail("mariadb-server is missing: scripts/setup.sh installs it")
    from bench.bench_mariadb import Server

    root = Path(tempfile.mkdtemp(prefix="liferaft-test-mysql-freeze-"))
    os.chmod(root, 0o755)
    src, tgt = Server(root, "src", 1), Server(root, "tgt", 2)
    try:
        starts = [threading.Thread(target=srv.start) for srv in (src, tgt)]
        for th in starts:
            th.start()
        for th in starts:
            th.join(120)
        with my.connect(src.conn()) as c:
            my.query(c, "CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer INT, amount "
                        "DECIMAL(10,2), payload VARBINARY(64))")
            my.query(c, "CREATE TABLE hot (id INT PRIMARY KEY, v INT)")
            my.query(c, "INSERT INTO hot VALUES (1, 0)")
        yield src, tgt
    finally:
        src.stop()
        tgt.stop()
        shutil.rmtree(root, ignore_errors=True)


def _replicate(src: Any, tgt: Any) -> None:
    """The target (re)seeded from the source and replicating, the source writable."""
    from liferaft.datasets.mariadb import seed_replica

    with my.connect(src.conn(), database=False) as s:
        my.set_read_only(s, False)
    seed_replica(src.conn(), tgt.conn())


def _stall(src: Any, tgt: Any, hold_s: float, released: list[float] | None = None) -> threading.Thread:
    """The replica's SQL thread blocked for `hold_s` on a row lock held at the target (it stays 'running');
    `released` gets the monotonic time the lock went."""
    locked = threading.Event()

    def hold() -> None:
        with my.connect(tgt.conn()) as t:
            my.query(t, "BEGIN")
            my.query(t, "SELECT v FROM hot WHERE id = 1 FOR UPDATE")
            locked.set()
            time.sleep(hold_s)
            if released is not None:
                released.append(time.monotonic())
            my.query(t, "COMMIT")

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    assert locked.wait(10)
    with my.connect(src.conn()) as s:
        my.query(s, "UPDATE hot SET v = v + 1 WHERE id = 1")  # replicated: waits for the lock at the target
    return th


def _check_complete(src: Any, tgt: Any, acked: list[int]) -> None:
    with my.connect(tgt.conn()) as t:
        ids = {int(r[0]) for r in my.query(t, "SELECT id FROM orders")}
        assert set(acked) <= ids, sorted(set(acked) - ids)[:10]
        assert my.replica_status(t) is None and not my.is_read_only(t)
    with my.connect(src.conn()) as s, my.connect(tgt.conn()) as t:
        assert my.query(s, "SELECT COUNT(*) FROM orders") == my.query(t, "SELECT COUNT(*) FROM orders")
        assert my.query(s, "SELECT v FROM hot") == my.query(t, "SELECT v FROM hot")
        assert my.is_read_only(s)


def _app(srv: Any) -> Any:
    return srv.app_conn()


def test_a_lagging_replica_is_caught_up_before_the_freeze_so_the_freeze_is_the_final_wait_only(
        pair: tuple[Any, Any]) -> None:
    """The replica stalled 1.5 s under 100 inserts/s: the first catch-up round waits it out while the source still
    takes writes, a later round is short, then the freeze (read_only -> final wait -> replica reset) comes after the
    stall is over; every acknowledged insert is at the target. Freezing at once (the old way) would last the stall."""
    from liferaft.lab.mariadb import Writer

    src, tgt = pair
    _replicate(src, tgt)
    writer = Writer(_app(src), rate=100)
    frozen_at: list[float] = []
    released: list[float] = []
    try:
        time.sleep(0.5)
        holder = _stall(src, tgt, 1.5, released)
        with my.connect(src.conn(), database=False) as s, my.connect(tgt.conn(), database=False) as t:
            res = my.freeze(s, t, close_s=0.25, pre_timeout=20, timeout=30,
                            on_frozen=lambda: frozen_at.append(time.monotonic()))
        time.sleep(0.3)
    finally:
        writer.finish()
    holder.join(10)
    print(f"\nfreeze {res.freeze_s:.3f} s (final wait {res.catch_up_s:.3f} s); catch-up before it "
          f"{res.pre.seconds:.2f} s, rounds {[round(x, 3) for x in res.pre.rounds_s]}; acked {len(writer.acked)}, "
          f"refused {writer.failed}")
    assert res.pre.close and res.pre.rounds >= 2, res.pre
    assert res.pre.last_round_s < 0.25 and abs(sum(res.pre.rounds_s) - res.pre.seconds) < 0.5
    # the source was made read-only only after the stall was over: it took writes all through it
    assert frozen_at and released and frozen_at[0] > released[0], (frozen_at, released)
    # (how short the freeze is, is the benchmark's to say: bench_mariadb --compare-old; no timing bound here)
    assert res.catch_up_s <= res.freeze_s, res
    assert writer.failed > 0 and len(writer.acked) > 100  # writes went on until read_only refused them
    _check_complete(src, tgt, writer.acked)


def test_a_replica_that_never_gets_close_is_frozen_anyway_and_waited_for(pair: tuple[Any, Any]) -> None:
    """The stall outlasts the catch-up's bound: the freeze happens anyway (close False, said in the result), and
    its final wait still makes the target complete (RPO 0)."""
    from liferaft.lab.mariadb import Writer

    src, tgt = pair
    _replicate(src, tgt)
    writer = Writer(_app(src), rate=50)
    frozen_at: list[float] = []
    released: list[float] = []
    try:
        time.sleep(0.3)
        holder = _stall(src, tgt, 2.5, released)
        with my.connect(src.conn(), database=False) as s, my.connect(tgt.conn(), database=False) as t:
            res = my.freeze(s, t, close_s=0.25, pre_timeout=1.0, timeout=30,
                            on_frozen=lambda: frozen_at.append(time.monotonic()))
        time.sleep(0.2)
    finally:
        writer.finish()
    holder.join(10)
    assert not res.pre.close and res.pre.rounds == 1 and 0.9 <= res.pre.seconds < 10.0, res.pre
    # frozen while the replica was still stalled: the final wait covered the rest of the stall, read-only
    assert frozen_at and released and frozen_at[0] < released[0], (frozen_at, released)
    assert res.catch_up_s <= res.freeze_s, res
    _check_complete(src, tgt, writer.acked)


def test_a_replica_that_cannot_apply_fails_the_catch_up_before_anything_froze(pair: tuple[Any, Any]) -> None:
    """The replica's SQL thread stopped: the catch-up says so within about a second, and the source was never made
    read-only (its writers never noticed)."""
    from liferaft.lab.mariadb import Writer

    src, tgt = pair
    _replicate(src, tgt)
    with my.connect(tgt.conn(), database=False) as t:
        my.query(t, "STOP SLAVE SQL_THREAD")
    writer = Writer(_app(src), rate=50)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        with my.connect(src.conn(), database=False) as s, my.connect(tgt.conn(), database=False) as t:
            with pytest.raises(RunFailed, match="SQL thread stopped") as e:
                my.freeze(s, t, pre_timeout=20, timeout=30, on_frozen=lambda: pytest.fail("froze"))
            assert not my.is_read_only(s)
        assert time.monotonic() - t0 < 5.0
        assert "not frozen" in (e.value.hint or "")
    finally:
        writer.finish()
    assert writer.failed == 0 and len(writer.acked) > 10
    with my.connect(tgt.conn(), database=False) as t:
        my.reset_replica(t)
