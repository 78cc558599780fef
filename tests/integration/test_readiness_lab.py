"""Standby readiness in the whole lab: `liferaft replicate` keeps host b's copy warm and reports the lag; after a
no-notice cut (aws down, host a cut) `liferaft failover --mode cold` serves the app from host b through DNS, and
the write ledger shows no more lost writes than the lag reported just before the cut.

The tests share one lab (session fixture) and one state dir. The failover journey ends by rolling back (which drops
the slot the promotion abandoned at a), keeping a standby at b again and stopping it (`replicate --stop`): DNS at a,
no slot, no subscription, and the service deployed at b stopped by the rollback (so the drill tests, which expect b
silent, may run after this module).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RATE = 20.0  # writes per second during the cut


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readiness-state")


def _env(lab: Any, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    env.update(LIFERAFT_STACK=str(lab.info.stack_file), LIFERAFT_STATE_DIR=str(state_dir), **extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "liferaft", *args]


def _resolve(info: Any) -> str:
    import dns.resolver

    host, _, port = info.dns_server.rpartition(":")
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = int(port)
    r.lifetime = 2.0
    return str(r.resolve(info.app_fqdn, "A")[0])


def _ttl(info: Any) -> int:
    """The TTL of the app's A record as the lab's authoritative server answers it."""
    import dns.resolver

    host, _, port = info.dns_server.rpartition(":")
    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = [host], int(port), 2.0
    return int(r.resolve(info.app_fqdn, "A").rrset.ttl)


def _owner_dsn(info: Any, address: str) -> dict[str, Any]:
    from liferaft.stack import load_stack

    stack = load_stack(info.stack_file)
    db = next(iter(stack.model.data.databases.values()))
    return {"host": address, "port": db.port, "dbname": db.name, "user": db.owner,
            "password": stack.secret(db.password), "connect_timeout": 5}


def _count_posts(dsn: dict[str, Any]) -> int:
    import psycopg

    with psycopg.connect(**dsn) as c:
        row = c.execute("SELECT count(*) FROM posts").fetchone()
    return int(row[0]) if row else -1


def _wait_until_answers(dsn: dict[str, Any], timeout: float) -> float:
    """Seconds until a connection to `dsn` runs a query; raises the last error after `timeout`."""
    import psycopg

    t0 = time.monotonic()
    while True:
        try:
            with psycopg.connect(**dsn) as c:
                c.execute("SELECT 1")
            return time.monotonic() - t0
        except psycopg.OperationalError:
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(0.5)


def _slots(info: Any, address: str) -> list[str]:
    import psycopg

    with psycopg.connect(**_owner_dsn(info, address)) as c:
        return [str(r[0]) for r in c.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1").fetchall()]


def _subscriptions(info: Any, address: str) -> list[str]:
    import psycopg

    with psycopg.connect(**_owner_dsn(info, address)) as c:
        return [str(r[0]) for r in c.execute("SELECT subname FROM pg_subscription ORDER BY 1").fetchall()]


@pytest.fixture
def writer(lab: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The example's write generator, following the app's DNS name at the lab's DNS server on every write."""
    from liferaft.lab.example import run_writer

    info = lab.info
    ledger = tmp_path / "ledger.sqlite"
    stop = threading.Event()
    box: dict[str, Any] = {"ledger": str(ledger), "stop": stop}

    def url() -> str:
        return f"http://{_resolve(info)}:{info.app_port}"

    def run() -> None:
        box["report"] = run_writer(url, str(ledger), rate=RATE, duration=900, stop=stop, timeout=2.0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    box["thread"] = t
    try:
        yield box
    finally:
        stop.set()
        t.join(15)


def test_replicate_once_reports_lag_and_records_the_standby(lab: Any, state_dir: Path, tmp_path: Path) -> None:
    """One round: the standby on host b has the source's rows and objects, lag per dataset is reported in seconds
    and bytes (JSON and Prometheus), and the state file records where everything is."""
    info = lab.info
    prom = tmp_path / "standby.prom"
    t0 = time.monotonic()
    r = subprocess.run(_cli("replicate", "--to", "alt-b", "--json", "--prometheus", str(prom)),
                       env=_env(lab, state_dir), capture_output=True, text=True, timeout=600, check=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    print(f"replicate (set-up + one round): {took:.1f}s; {json.dumps(out)}")
    db, bucket = out["databases"]["blog"], out["buckets"]["images"]
    assert db["ok"] and db["method"] == "logical" and isinstance(db["lag_bytes"], int) and db["lag_seconds"] >= 0
    assert bucket["ok"] and bucket["lag_bytes"] >= 0 and bucket["lag_seconds"] >= 0
    assert out["rpo_exposure_s"] is not None and out["source_reachable"] is True

    state_file = state_dir / "readiness" / "microblog.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    rec = json.loads(state_file.read_text())["standbys"]["alt-b"]
    b = info.hosts["b"]
    assert rec["standby_host"]["address"] == b.address and rec["source_host"]["address"] == info.primary_address
    assert rec["databases"]["blog"]["subscription"] == "liferaft_microblog"
    assert rec["buckets"]["images"]["listed"] > 0
    assert "password" not in state_file.read_text().lower()
    text = prom.read_text()
    assert 'liferaft_standby_lag_seconds{stack="microblog",target="alt-b",kind="database",dataset="blog"}' in text
    assert 'liferaft_standby_lag_bytes{stack="microblog",target="alt-b",kind="bucket",dataset="images"}' in text

    # the copy is real: same rows at b as at a (the app is idle at this point), every object at the standby store
    deadline = time.monotonic() + 30
    while _count_posts(_owner_dsn(info, b.address)) != _count_posts(_owner_dsn(info, info.primary_address)):
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.2)
    from liferaft.engine.observe import open_provider
    from liferaft.stack import load_stack

    stack = load_stack(info.stack_file)
    objects = open_provider(stack, "objstore", state_dir).require("objects")
    assert len(list(objects.list_objects("microblog-images"))) == rec["buckets"]["images"]["listed"]



def _dump_variant(info: Any) -> Path:
    """The lab's stack with the database copied by periodic dumps to a second alternate, alt-c on host c."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(info.stack_file.read_text())
    colo_c = json.loads(json.dumps(doc["providers"]["colo-b"]))
    colo_c["hosts"] = [h for h in colo_c["hosts"] if h["name"] == "c"]
    doc["providers"]["colo-c"] = colo_c
    doc["providers"]["colo-b"]["hosts"] = [h for h in doc["providers"]["colo-b"]["hosts"] if h["name"] != "c"]
    doc["sites"]["alt-c"] = {"compute": "colo-c", "objects": doc["sites"]["alt-b"]["objects"]}
    doc["alternates"] = [*doc["alternates"], "alt-c"]
    for db in doc["data"]["databases"].values():
        db["migrate"] = "dump"
    path = info.stack_file.with_name("liferaft-dump-variant.yaml")  # beside the original: secrets resolve
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return path


def test_replicate_dump_mode_keeps_a_whole_copy(lab: Any, state_dir: Path) -> None:
    """`migrate: dump`: each round dumps the source into a staging database at the standby and swaps it in; the
    lag is the time since the last dump started and the WAL written since."""
    info = lab.info
    stack_file = _dump_variant(info)
    t0 = time.monotonic()
    r = subprocess.run(_cli("--stack", str(stack_file), "replicate", "--to", "alt-c", "--watch", "--count", "2",
                            "--interval", "1", "--json"), env=_env(lab, state_dir), capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    rounds = [json.loads(line) for line in r.stdout.splitlines()]
    print(f"replicate (dump mode, set-up + 2 rounds): {time.monotonic() - t0:.1f}s; {json.dumps(rounds[-1])}")
    assert len(rounds) == 2
    for rnd in rounds:
        db = rnd["databases"]["blog"]
        assert db["method"] == "dump" and db["ok"] and 0 <= db["lag_seconds"] < 120 and db["lag_bytes"] >= 0
    c = info.hosts["c"]
    assert _count_posts(_owner_dsn(info, c.address)) == _count_posts(_owner_dsn(info, info.primary_address))
    rec = json.loads((state_dir / "readiness" / "microblog.json").read_text())["standbys"]
    assert rec["alt-c"]["standby_host"]["address"] == c.address and rec["alt-c"]["databases"]["blog"]["dump_lsn"]
    assert rec["alt-b"]["databases"]["blog"]["method"] == "logical"  # the other standby's record is kept


def test_no_notice_cut_then_cold_failover_serves_from_b(lab: Any, state_dir: Path, writer: dict[str, Any]) -> None:
    """replicate --watch + writes; aws down and host a cut; cold failover; app at b through DNS; lost writes no
    more than the lag reported just before the cut (and under 5 s of writes)."""
    from liferaft.lab.example import verify_ledger

    info = lab.info
    b = info.hosts["b"]
    rounds: list[tuple[float, dict[str, Any]]] = []
    rep = subprocess.Popen(_cli("replicate", "--to", "alt-b", "--watch", "--interval", "1", "--count", "900",
                                "--source-timeout", "2", "--json"),
                           env=_env(lab, state_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_tail: list[str] = []

    def read_out() -> None:
        assert rep.stdout is not None
        for line in rep.stdout:
            rounds.append((time.time(), json.loads(line)))

    def read_err() -> None:
        assert rep.stderr is not None
        for line in rep.stderr:
            err_tail[:] = [*err_tail[-40:], line]

    for fn in (read_out, read_err):
        threading.Thread(target=fn, daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while len(rounds) < 5:
            assert rep.poll() is None, "replicate exited early:\n" + "".join(err_tail)
            assert time.monotonic() < deadline, "no replicate rounds:\n" + "".join(err_tail)
            time.sleep(0.2)
        assert writer["thread"].is_alive()
        before = rounds[-1][1]
        assert before["source_reachable"] and before["databases"]["blog"]["ok"]
        lag_s = float(before["databases"]["blog"]["lag_seconds"])
        lag_b = int(before["databases"]["blog"]["lag_bytes"])

        t_cut = time.time()
        lab.cut("aws", "down")
        lab.cut_host("a")
        # replicate notices within a round and the source timeout, and keeps going
        deadline = time.monotonic() + 30
        while not any(t > t_cut and not s.get("source_reachable") for t, s in rounds):
            assert time.monotonic() < deadline, "replicate never reported the source unreachable"
            assert rep.poll() is None, "replicate died at the cut:\n" + "".join(err_tail)
            time.sleep(0.2)
        noticed = min(t for t, s in rounds if t > t_cut and not s.get("source_reachable")) - t_cut
        rep.send_signal(signal.SIGTERM)
        assert rep.wait(30) == 0  # stopped by SIGTERM: it ends its round and exits 0, as asked

        # started during the outage, replicate neither hangs nor forgets: it keeps the recorded standby, says stale
        t1 = time.monotonic()
        once = subprocess.run(_cli("replicate", "--to", "alt-b", "--source-timeout", "2", "--json"),
                              env=_env(lab, state_dir), capture_output=True, text=True, timeout=120, check=False)
        once_s = time.monotonic() - t1
        assert once.returncode == 3, once.stderr[-2000:]
        stale = json.loads(once.stdout)
        assert stale["source_reachable"] is False and not stale["databases"]["blog"]["ok"]
        assert stale["standby_host"] == "microblog-alt-b"
        assert once_s < 60

        # a standby object that is not what replicate copied stops the run before DNS; fixed, resume finishes
        from liferaft.engine.observe import open_provider
        from liferaft.stack import load_stack

        store = open_provider(load_stack(info.stack_file), "objstore", state_dir).require("objects")
        victim = min(o.key for o in store.list_objects("microblog-images"))
        good = b"".join(store.get_object("microblog-images", victim))
        store.put_object("microblog-images", victim, [good[::-1]], size=len(good))
        fo_env = _env(lab, state_dir, LIFERAFT_SOURCE_TIMEOUT="2")
        t0 = time.monotonic()
        fo = subprocess.run(_cli("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json",
                                 "--ledger", writer["ledger"]), env=fo_env,
                            capture_output=True, text=True, timeout=900, check=False)
        stopped_s = time.monotonic() - t0
        assert fo.returncode != 0 and "standby-images" in fo.stderr and victim in fo.stderr, fo.stderr[-3000:]
        assert _resolve(info) == info.primary_address  # DNS untouched
        store.put_object("microblog-images", victim, [good], size=len(good))
        t0 = time.monotonic()
        fo = subprocess.run(_cli("resume", "last", "--json"), env=fo_env, capture_output=True, text=True,
                            timeout=900, check=False)
        failover_s = stopped_s + time.monotonic() - t0
        assert fo.returncode == 0, fo.stderr[-4000:]
        outcome = json.loads(fo.stdout)
        assert outcome["status"] == "done"
        loss = outcome["summary"]["data_loss"]

        # the app answers from b through its DNS name, and takes writes there
        assert _resolve(info) == b.address
        with urllib.request.urlopen(f"http://{b.address}:{info.app_port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        acked_at_b = _count_posts(_owner_dsn(info, b.address))
        deadline = time.monotonic() + 30
        while _count_posts(_owner_dsn(info, b.address)) < acked_at_b + 20:
            assert time.monotonic() < deadline, "no new writes reached b through DNS"
            time.sleep(0.2)
        writer["stop"].set()
        writer["thread"].join(15)
        report = writer["report"]

        import psycopg  # liferaft's migration superuser no longer logs in at the promoted standby

        migrator = (state_dir / "stacks" / "microblog" / "pg-migrator.secret").read_text().strip()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**{**_owner_dsn(info, b.address), "user": "liferaft_migrator", "password": migrator})

        check = verify_ledger(writer["ledger"], _owner_dsn(info, b.address))
        lost = len(check.missing) + len(check.mismatched)
        allowed = int(RATE * (lag_s + 0.5)) + 1  # the reported lag, a half-second of sampling, one write in flight
        print(f"\nlag just before the cut: {lag_s:.3f}s / {lag_b} B; replicate noticed the cut after "
              f"{noticed:.1f}s; replicate started during the outage returned in {once_s:.1f}s; cold failover {failover_s:.1f}s (stopped at the object gate after {stopped_s:.1f}s, then resumed); writes acknowledged {check.acknowledged}, "
              f"lost {lost} (failover reported {loss.get('lost_writes')}, window {loss.get('lost_window_s')}s), "
              f"allowed {allowed}; writer: {report.to_dict()}")
        assert loss["lost_writes"] == len(check.missing)
        assert lost <= allowed
        assert lost < RATE * 5  # under 5 s of writes
        assert check.acknowledged > 100

        # b is where the stack runs now: replicating the old primary into it is refused (the day the old provider
        # answers again it would overwrite b's data), before anything is contacted
        again = subprocess.run(_cli("replicate", "--to", "alt-b", "--json"), env=_env(lab, state_dir),
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 2, again.stderr[-2000:]
        assert f"failed over into 'alt-b' (run {outcome['run']}, done)" in again.stderr
        assert _count_posts(_owner_dsn(info, b.address)) >= acked_at_b + 20

        # the old primary answers again and the failover is rolled back: DNS at a, and the replication slot the
        # promotion abandoned at a is dropped (nobody reads it: it would keep a's WAL forever, and its name would
        # stop a new standby's subscription)
        lab.heal()
        # Seen in 2 of 4 runs on 2026-12-02 (never reproduced by cutting and healing host a alone): the first
        # connections to a's PostgreSQL right after the heal were closed before PostgreSQL logged anything
        # ("server closed the connection unexpectedly"). Wait, bounded, until a answers as an operator would.
        healed_after = _wait_until_answers(_owner_dsn(info, info.primary_address), timeout=60.0)
        print(f"host a's PostgreSQL answered {healed_after:.1f}s after the heal")
        from liferaft.engine.standby_state import load_standby

        recorded = load_standby(state_dir, "microblog", "alt-b")
        assert recorded is not None
        slot = str(recorded.entry("databases", "blog")["subscription"])
        assert _slots(info, info.primary_address) == [slot]  # left by the promotion, which could not reach a
        back = subprocess.run(_cli("rollback", outcome["run"], "--yes", "--json"), env=_env(lab, state_dir),
                              capture_output=True, text=True, timeout=600, check=False)
        assert back.returncode == 0, back.stderr[-3000:]
        assert "standby.source_cleaned" in back.stderr and f"slot and publication {slot}" in back.stderr
        assert _resolve(info) == info.primary_address
        assert _slots(info, info.primary_address) == []
        assert "service.stopped" in back.stderr
        with pytest.raises(urllib.error.URLError) as refused:  # stopped: no answer at all, not even an error page
            urllib.request.urlopen(f"http://{b.address}:{info.app_port}/healthz", timeout=5).close()
        assert not isinstance(refused.value, urllib.error.HTTPError), refused.value

        # so a standby can be kept at b again (from a), the record's TTL lowered ahead of a move, and stopped:
        # subscription, slot and record gone, the TTL back as it was
        assert _ttl(info) == 30
        kept = subprocess.run(_cli("replicate", "--to", "alt-b", "--json", "--lower-ttl", "5"),
                              env=_env(lab, state_dir), capture_output=True, text=True, timeout=600, check=False)
        assert kept.returncode == 0, kept.stderr[-3000:]
        assert _ttl(info) == 5 and "replicate.ttl_lowered" in kept.stderr
        assert json.loads(kept.stdout)["databases"]["blog"]["ok"]
        assert _slots(info, info.primary_address) == [slot] and _subscriptions(info, b.address) == [slot]
        stop = subprocess.run(_cli("replicate", "--to", "alt-b", "--stop", "--json"), env=_env(lab, state_dir),
                              capture_output=True, text=True, timeout=120, check=False)
        assert stop.returncode == 0, stop.stderr[-3000:]
        stopped = json.loads(stop.stdout)
        assert stopped["stopped"] and stopped["databases"]["blog"] == {
            "subscription": slot, "subscription_dropped": True, "slot_dropped": True}
        assert _slots(info, info.primary_address) == [] and _subscriptions(info, b.address) == []
        assert load_standby(state_dir, "microblog", "alt-b") is None
        assert _ttl(info) == 30 and _resolve(info) == info.primary_address
    finally:
        if rep.poll() is None:
            rep.kill()
            rep.wait(10)
        lab.heal()
