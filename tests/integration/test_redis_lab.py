"""Redis as a dataset kind, in the session's lab, through the real CLI.

A stack of the lab's whose only data is two Redis datasets (`liferaft.lab.redis_`: no service, database, bucket or
DNS, so that each move takes seconds and leaves the example alone; the PostgreSQL, bucket and app steps around it are
tested elsewhere): `queue` (replicated, a password) and `cache`
(`ephemeral: true`), their servers deployed on host a by the same redis.yml a failover runs at the target. Every
check is made from outside liferaft, with the redis client: every key's type, value and TTL presence at both ends,
every write a writer saw acknowledged, the source refusing writes after the freeze.

- bad input: a wrong port and a refused password stop the plan naming the dataset and the setting to fix;
- drill: the cut promotes the target without freezing the source, the data is verified as of the cut, and the
  teardown leaves no Redis on b;
- live failover under writes: the freeze (CLIENT PAUSE WRITE, offsets equal) loses no acknowledged write; a key
  deleted and a byte changed at the target fail the gate naming both keys, before DNS; repaired, the run
  completes; the rollback makes the source writable again;
- replicate + cold failover: the standby's lag is reported as an offset difference, and the cold failover from it
  (host a cut off) serves b with every key written before the last round.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liferaft.lab import redis_ as lr

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@dataclass
class Env:
    lab: Any
    stack: Path
    state: Path
    tmp: Path

    @property
    def info(self) -> Any:
        return self.lab.info

    def cli(self, *args: str, stack: Path | None = None, timeout: float = 600, **env: str
            ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "liferaft", "--stack", str(stack or self.stack), "--state-dir",
                str(self.state), *args]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**clean, **env}, stdin=subprocess.DEVNULL)

    def r(self, host: str, port: int = lr.QUEUE_PORT) -> Any:
        return lr.client(self.info, host, port, password=port == lr.QUEUE_PORT)

    def addr(self, host: str) -> str:
        return str(self.info.hosts[host].address)


def snapshot(r: Any) -> dict[bytes, tuple[str, Any, bool]]:
    """Every key -> (type, value, has a TTL), read with plain commands (not liferaft's digest)."""
    out: dict[bytes, tuple[str, Any, bool]] = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k).decode()
        value: Any
        if t == "string":
            value = r.get(k)
        elif t == "hash":
            value = sorted(r.hgetall(k).items())
        elif t == "list":
            value = r.lrange(k, 0, -1)
        elif t == "set":
            value = sorted(r.smembers(k))
        elif t == "zset":
            value = r.zrange(k, 0, -1, withscores=True)
        elif t == "stream":
            value = [(i, sorted(f.items())) for i, f in r.xrange(k)]
        else:
            continue
        out[k] = (t, value, r.pttl(k) >= 0)
    return out


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    info = lab.info
    stack = lr.redis_stack(info)
    lr.start(info, stack, "a")  # (redis.yml itself runs at the target in every test)
    a = lr.client(info, "a")
    a.flushall()
    lr.fill(a)
    cache = lr.client(info, "a", lr.CACHE_PORT, password=False)
    cache.set("cached:page", "not moved")
    e = Env(lab, stack, tmp_path_factory.mktemp("redis-state"), tmp_path_factory.mktemp("redis"))
    yield e
    script = lr.stop_lines([lr.QUEUE_PORT, lr.CACHE_PORT])
    for h in ("a", "b", "c"):
        info.hosts[h].run(f"sh -c {shlex.quote(script)}", check=False)


def test_bad_input_stops_the_plan_naming_the_dataset_and_the_fix(env: Env) -> None:
    wrong_port = lr.redis_stack(env.info, "liferaft-redis-port.yaml", queue_port=6399, cache=False)
    out = env.cli("plan", "--to", "alt-b", stack=wrong_port, timeout=120)
    assert out.returncode != 0
    assert "redis dataset 'queue'" in out.stderr and "no Redis answers" in out.stderr, out.stderr[-2000:]
    assert "data.redis.queue.port" in out.stderr

    (env.info.secrets_dir / "redis_wrong").write_text("not-the-password\n")
    os.chmod(env.info.secrets_dir / "redis_wrong", 0o600)
    wrong_pw = lr.redis_stack(env.info, "liferaft-redis-pw.yaml", password_ref="file:secrets/redis_wrong",
                              cache=False)
    out = env.cli("plan", "--to", "alt-b", stack=wrong_pw, timeout=120)
    assert out.returncode != 0
    assert "redis dataset 'queue'" in out.stderr and "password was refused" in out.stderr, out.stderr[-2000:]
    assert "data.redis.queue.password" in out.stderr and "not-the-password" not in out.stderr + out.stdout


def test_live_failover_freezes_writes_then_the_gate_catches_a_missing_key_and_a_changed_byte(env: Env) -> None:
    a, b = env.r("a"), None
    writer = lr.Writer(env.r("a"), rate=50)
    try:
        time.sleep(1.0)
        out = env.cli("failover", "--to", "alt-b", "--yes", "--stop-before", "verify-data")
    finally:
        writer.finish()
    assert out.returncode == 0 and "stopped" in out.stdout, out.stderr[-4000:]
    run = json.loads(env.cli("runs", "--json").stdout)[0]["run"]
    b = env.r("b")
    # every acknowledged write is at b; the source refuses writes from the freeze on
    assert len(writer.acked) > 20
    present = b.exists(*writer.acked)
    assert present == len(writer.acked), (present, len(writer.acked))
    import redis

    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        a.set("after-the-freeze", "x")
    assert b.info("replication")["role"] == "master"
    assert snapshot(a) == snapshot(b)
    # the ephemeral cache: created empty at b, writable
    cache_b = env.r("b", lr.CACHE_PORT)
    assert cache_b.dbsize() == 0 and cache_b.set("cached:new", "1")

    shown = json.loads(env.cli("show", run, "--json").stdout)
    freeze = next(s for s in shown["steps"] if s["step"] == "freeze")["result"]
    print(f"redis freeze: {freeze['redis']['queue']}")
    assert freeze["redis"]["queue"]["method"] == "replicaof" and freeze["redis"]["cache"]["method"] == "ephemeral"

    # tamper with the target: one key gone, one byte of another changed
    b.delete("k:s:000007")
    value = b.get("k:s:000011")
    b.set("k:s:000011", value[:-1] + bytes([value[-1] ^ 1]))
    out = env.cli("resume", run)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "k:s:000007" in out.stderr and "missing at the target" in out.stderr, out.stderr[-3000:]
    assert "k:s:000011" in out.stderr and "value differs" in out.stderr
    assert "DNS was not touched" in out.stderr

    for key in ("k:s:000007", "k:s:000011"):  # repaired, as an operator would
        b.set(key, a.get(key))
    out = env.cli("resume", run)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(env.cli("runs", "--json").stdout)[0]["status"] == "done"

    back = env.cli("rollback", run, "--yes")
    assert back.returncode == 0, back.stderr[-3000:]
    assert a.set("after-the-rollback", "x")  # the source accepts writes again
    a.delete("after-the-rollback")


def test_drill_cuts_without_freezing_verifies_as_of_the_cut_and_tears_down(env: Env) -> None:
    from liferaft.movers.bounded import tcp_answers

    a = env.r("a")
    writer = lr.Writer(env.r("a"), rate=50)
    try:
        out = env.cli("drill", "--to", "alt-b", "--json", "--report", str(env.tmp / "drill-report"))
    finally:
        writer.finish()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    print(f"\nredis drill: RTO {doc['rto_s']} s, data {doc['data']}")
    assert doc["passed"] is True and doc["data"]["ok"] is True and doc["torn_down"] is True
    assert doc["data"]["checked"]["redis queue keys"] >= 2000
    assert writer.failed == 0 and len(writer.acked) > 20  # the source was never frozen
    assert a.set("after-the-drill", "x") and a.delete("after-the-drill")
    b = env.info.hosts["b"]
    for port in (lr.QUEUE_PORT, lr.CACHE_PORT):  # torn down: nothing answers, nothing left on b
        assert not tcp_answers(env.addr("b"), port, 2.0)[0]
    left = b.run("ls -d /var/lib/liferaft/redis-* /etc/liferaft/redis-* /var/log/liferaft/redis-* "
                 "/run/liferaft-redis-* 2>/dev/null; true").stdout.split()
    assert left == []


def test_replicate_reports_the_offset_lag_and_a_cold_failover_promotes_the_standby(env: Env) -> None:
    a = env.r("a")
    out = env.cli("replicate", "--to", "alt-b", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    first = json.loads(out.stdout)
    b = env.r("b")
    assert b.info("replication")["role"] == "slave" and b.info("replication")["master_host"] == env.addr("a")
    late = lr.fill(a, n=300, prefix="late")  # written after the set-up: the next round must see them copied
    out = env.cli("replicate", "--to", "alt-b", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    round_ = json.loads(out.stdout)
    record = json.loads((env.state / "readiness" / "redisdemo.json").read_text())["standbys"]["alt-b"]
    queue = record["keyspaces"]["queue"]
    print(f"\nreplicate: set-up {first['keyspaces']['queue']}, round {round_['keyspaces']['queue']}, record {queue}")
    assert round_["keyspaces"]["queue"]["ok"] is True and round_["keyspaces"]["queue"]["lag_bytes"] == 0
    # the lag is the offset difference: the standby had reached the source's offset, which grew with the writes
    assert queue["source_offset"] == queue["standby_offset"] and queue["link"] == "up"
    assert queue["source_offset"] > 1000 and queue["caught_up_at"] >= queue["measured_at"] - 5
    assert record["keyspaces"]["cache"]["method"] == "ephemeral"
    before = snapshot(a)
    assert sum(1 for k in before if k.startswith(b"late:")) == late

    env.lab.cut_host("a")
    try:
        out = env.cli("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json", LIFERAFT_SOURCE_TIMEOUT="2")
        assert out.returncode == 0, out.stderr[-4000:]
        assert b.info("replication")["role"] == "master"
        assert snapshot(b) == before  # nothing was written after the last round: nothing lost
        assert b.set("written-at-b", "1")  # the promoted standby takes writes
        cache_b = env.r("b", lr.CACHE_PORT)
        assert cache_b.set("cached:x", "1")
        outcome = json.loads(out.stdout)
    finally:
        env.lab.heal()
    back = env.cli("rollback", outcome["run"], "--yes", "--json")
    assert back.returncode == 0, back.stderr[-3000:]
    assert a.set("after-the-rollback", "x") and a.delete("after-the-rollback")
