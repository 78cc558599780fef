"""The Redis dataset kind's pure parts: its stack entries, the version check, the key comparison, the teardown.

What it does to real servers is tested in the lab (tests/integration/test_redis_lab.py); `test_digest_*` runs the
per-key digest against two local redis-servers (Debian's, installed by scripts/setup.sh)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.datasets import Dataset, kind_of
from liferaft.datasets.redis_ import removal_lines
from liferaft.movers import redis_ as r
from liferaft.stack.model import RedisStore


def test_entries_are_validated_strictly() -> None:
    spec = RedisStore.model_validate({"port": 6390, "password": "env:REDIS_PW", "db": 2})
    assert (spec.port, spec.db, spec.ephemeral, spec.name) == (6390, 2, False, "redis:6390/2")
    with pytest.raises(ValueError, match="inline secrets"):
        RedisStore.model_validate({"password": "hunter2"})
    with pytest.raises(ValueError):
        RedisStore.model_validate({"db": 16})
    with pytest.raises(ValueError):
        RedisStore.model_validate({"port": 6390, "flush": True})


def test_the_kind_is_registered_and_places_its_steps() -> None:
    kind = kind_of(Dataset("redis", "queue", RedisStore()))
    assert (kind.group, kind.seed_verb, kind.freezes_source, kind.noun) == ("redis", "redis", True, "keyspace")
    assert kind.summary(Dataset("redis", "c", RedisStore(ephemeral=True))) == "ephemeral"
    assert kind.ports(Dataset("redis", "q", RedisStore(port=6390))) == (6390,)
    assert kind.source_ports(Dataset("redis", "c", RedisStore(ephemeral=True))) == []


def test_an_older_target_is_refused() -> None:
    assert r.version_problem("7.0.15", "7.0.15") is None
    assert r.version_problem("6.2.14", "7.0.15") is None
    problem = r.version_problem("7.0.15", "6.2.14")
    assert problem is not None and "6.2.14" in problem and "7.0.15" in problem
    assert r.version_problem("7.2.4", "7.0.15") is not None


def test_the_comparison_names_missing_changed_and_extra_keys() -> None:
    src = r.Keyspace({b"a": "string none x", b"b": "hash ttl y", b"c": "list none z", b"d": "set none w"}, 0.0)
    tgt = r.Keyspace({b"a": "string none x", b"b": "hash none y", b"c": "list none Z", b"e": "zset none v"}, 0.0)
    missing, differ, extra = r.compare(src, tgt)
    assert missing == ["key 'd' missing at the target"]
    assert differ == ["key 'b': TTL set at the source, none at the target", "key 'c': value differs (list)"]
    assert extra == ["key 'e' only at the target"]
    assert src.digest != tgt.digest
    assert r.Keyspace(dict(reversed(src.keys.items())), 1.0).digest == src.digest  # order-independent


def test_teardown_lines_remove_what_redis_yml_made() -> None:
    text = "\n".join(removal_lines([6390, 6390, 6391]))
    for p in (6390, 6391):
        assert f"/run/liferaft-redis-{p}.pid" in text and f"/var/lib/liferaft/redis-{p}" in text
        assert f"/etc/liferaft/redis-{p}.conf" in text
    assert text.count("redis-6390.service") == 2  # stop + unit file, once per port


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[r.RedisConn, r.RedisConn]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: scripts/setup.sh installs it")
    import socket

    procs, conns = [], []
    for name in ("one", "two"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        d = tmp_path / name
        d.mkdir()
        procs.append(subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                                       "--save", "", "--repl-diskless-sync-delay", "0"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conns.append(r.RedisConn("127.0.0.1", port))
    deadline = time.monotonic() + 10
    for c in conns:
        while True:
            try:
                r.version(c)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.monotonic() < deadline
                time.sleep(0.05)
    try:
        yield conns[0], conns[1]
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_digest_is_independent_of_encoding_and_catches_a_changed_byte(two_servers: tuple[r.RedisConn, r.RedisConn]
                                                                      ) -> None:
    """The replica holds a hash that shrank back as a listpack while the source keeps its hashtable, a set in
    another order: same digests; a changed byte, a lost TTL and a missing key are each named."""
    from liferaft.lab.redis_ import fill

    src, tgt = two_servers
    a = r.client(src)
    written = fill(a, n=300)
    assert a.object("encoding", "k:h:big") == b"hashtable"
    assert r.replicate(tgt, src) is True and r.replicate(tgt, src) is False
    r.wait_synced(tgt, src, 30)
    r.pause_writes(src, 5000)
    caught, _ = r.wait_offset(tgt, r.master_offset(src), 5)
    assert caught
    assert r.refuse_writes(src) == 0
    r.unpause(src)
    with pytest.raises(Exception, match="NOREPLICAS"):
        a.set("late", "x")
    assert r.promote(tgt)["was_replica"] is True
    b = r.client(tgt)
    assert b.object("encoding", "k:h:big") == b"listpack"
    one, two = r.digests(src), r.digests(tgt)
    assert len(one.keys) == written == 383 and one.keys == two.keys and one.digest == two.digest
    v = b.get("k:s:000011")
    b.set("k:s:000011", v[:-1] + bytes([v[-1] ^ 1]), keepttl=True)
    b.persist("k:s:000010")
    b.delete("k:l:4")
    missing, differ, extra = r.compare(r.digests(src), r.digests(tgt))
    assert missing == ["key 'k:l:4' missing at the target"] and extra == []
    assert differ == ["key 'k:s:000010': TTL set at the source, none at the target",
                      "key 'k:s:000011': value differs (string)"]
    r.accept_writes(src)
    assert a.set("late", "x")


def test_a_key_about_to_expire_is_not_a_difference() -> None:
    src = r.Keyspace({b"a": "string soon x", b"b": "string soon y", b"c": "string ttl z"}, 0.0)
    tgt = r.Keyspace({b"b": "string ttl y", b"c": "string soon z", b"d": "string soon w"}, 0.0)
    assert r.compare(src, tgt) == ([], [], [])
    assert r.compare(src, r.Keyspace({}, 0.0))[0] == ["key 'c' missing at the target"]


def test_a_seed_loads_from_the_socket_and_leaves_the_rdb_on_disk(two_servers: tuple[r.RedisConn, r.RedisConn]
                                                                 ) -> None:
    """An empty replica loads the master's RDB as it arrives (repl-diskless-load on-empty-db, set by `replicate`),
    and one that persists (save points) then writes its dump file, as a disk load would have left it."""
    src, tgt = two_servers
    r.client(src).mset({f"k{i}": f"v{i}" for i in range(2000)})
    b = r.client(tgt)
    b.config_set("save", "3600 1")
    b.config_set("repl-diskless-load", "disabled")
    dump = Path(r.config_value(b, "dir")) / r.config_value(b, "dbfilename")
    assert not dump.exists()
    assert r.replicate(tgt, src) is True
    assert r.config_value(b, "repl-diskless-load") == "on-empty-db"
    r.wait_synced(tgt, src, 30)
    assert b.dbsize() == 2000
    deadline = time.monotonic() + 20
    while int(b.info("persistence")["rdb_bgsave_in_progress"]) or not dump.exists():
        assert time.monotonic() < deadline, "no dump file after the sync"
        time.sleep(0.05)
    assert int(b.info("persistence")["rdb_changes_since_last_save"]) == 0
    assert r.persist_after_sync(tgt) is False  # nothing left unsaved: no second save
