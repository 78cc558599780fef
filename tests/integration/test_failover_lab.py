"""Failover end to end in the lab: the example app on host a moves to host b (site alt-b) through the real CLI.

Every check is made from outside liferaft: a real DNS query to PowerDNS, HTTP to the app, every object's sha256 on
both object stores, and the example app's write ledger looked up in b's database. Each test leaves the lab as it
found it (rollback: DNS back to a, source writable again).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from liferaft.lab import example
from tests.lab_checks import app_records, bucket_hashes, direct_s3, owner_dsn

pytestmark = [pytest.mark.lab, pytest.mark.slow]
BUCKET = "microblog-images"


@dataclass
class Env:
    info: Any
    state: Path
    tmp: Path

    @property
    def a(self) -> str:
        return str(self.info.hosts["a"].address)

    @property
    def b(self) -> str:
        return str(self.info.hosts["b"].address)

    def cli(self, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "liferaft", "--stack", str(self.info.stack_file), "--state-dir",
                str(self.state), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, **env}, stdin=subprocess.DEVNULL)

    def last_run(self) -> dict[str, Any]:
        out = self.cli("runs", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)[0]

    def dns(self) -> list[str]:
        return app_records(self.info)

    def s3(self, provider: str) -> Any:
        return direct_s3(self.info, provider)

    def hashes(self, provider: str) -> dict[str, str]:
        return bucket_hashes(self.info, provider, BUCKET)

    def dsn(self, address: str) -> dict[str, Any]:
        return owner_dsn(self.info, address)


@pytest.fixture(scope="module")
def env(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(lab.info, tmp_path_factory.mktemp("failover-state"), tmp_path_factory.mktemp("failover"))


def post(url: str, body: str) -> int:
    req = urllib.request.Request(f"{url}/posts", data=json.dumps({"author": "t", "body": body}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def health(address: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


class Writer:
    """The example's ledger writer in a thread: every acknowledged write lands in the ledger."""

    def __init__(self, url: str, ledger: Path) -> None:
        self.stop = threading.Event()
        self.report: Any = None
        self.thread = threading.Thread(target=self._run, args=(url, str(ledger)), daemon=True)
        self.thread.start()

    def _run(self, url: str, ledger: str) -> None:
        self.report = example.run_writer(url, ledger, rate=20, duration=900, stop=self.stop, timeout=3.0)

    def finish(self) -> Any:
        self.stop.set()
        self.thread.join(30)
        return self.report


def assert_serving_from_b(env: Env, ledger: Path | None) -> None:
    """DNS answers b; the app answers through it; every object equal by sha256; every acknowledged write on b."""
    assert env.dns() == [env.b]
    assert health(env.dns()[0]) == 200
    src, tgt = env.hashes("aws"), env.hashes("objstore")
    assert src and {k: tgt.get(k) for k in src} == src
    if ledger is not None:
        check = example.verify_ledger(str(ledger), env.dsn(env.b))
        assert check.ok and check.acknowledged > 0, check.to_dict()


def rollback_to_a(env: Env, run: str) -> None:
    out = env.cli("rollback", run, "--yes")
    assert out.returncode == 0, out.stderr[-3000:]
    assert env.dns() == [env.a]
    # the app deployed at b was stopped: a client still holding b's address gets no answer, not an acknowledgement
    with pytest.raises(urllib.error.URLError):  # health() returns the status of any HTTP answer, errors included
        health(env.b)
    deadline = time.monotonic() + 20  # the app reconnects after its read-only sessions were ended
    while post(f"http://{env.a}:8080", "writable again after rollback") != 201:
        assert time.monotonic() < deadline, "the source does not accept writes after the rollback"
        time.sleep(0.5)


def window_of(stdout: str) -> float:
    line = next(x for x in stdout.splitlines() if x.startswith("write-unavailability window:"))
    return float(line.split(":")[1].strip().rstrip("s"))


def test_killed_mid_copy_then_failed_gate_leaves_dns_untouched_then_resume_completes(env: Env) -> None:
    """SIGKILL in the middle of the bucket copy; resume; a tampered target fails the data gate naming the objects
    with DNS untouched; once repaired, resume completes with the app on b."""
    s3 = env.s3("aws")
    for i in range(150):  # enough objects that the copy is still running at the first progress report
        s3.put_object(Bucket=BUCKET, Key=f"extra/{i:04d}", Body=os.urandom(8192))
    out = env.cli("failover", "--to", "alt-b", "--yes", "--json", LIFERAFT_TEST_KILL_ON_EVENT="objects.progress")
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    run = env.last_run()
    assert run["status"] == "running" and run["drill"] is False
    shown = json.loads(env.cli("show", run["run"], "--json").stdout)
    assert {s["step"]: s["status"] for s in shown["steps"]}["sync-images"] == "running"
    copied = len(env.hashes("objstore"))
    assert 0 < copied < 210, copied  # a real partial copy

    out = env.cli("resume", run["run"], "--stop-before", "verify-data")
    assert out.returncode == 0 and "stopped" in out.stdout, out.stderr[-3000:]
    tgt = env.s3("objstore")
    tgt.delete_object(Bucket=BUCKET, Key="extra/0007")
    body = tgt.get_object(Bucket=BUCKET, Key="extra/0011")["Body"].read()
    tgt.put_object(Bucket=BUCKET, Key="extra/0011", Body=bytes(b ^ 0xFF for b in body))  # same size, other bytes

    out = env.cli("resume", run["run"])
    assert out.returncode == 1, out.stderr[-3000:]
    assert "extra/0007" in out.stderr and "extra/0011" in out.stderr and "DNS was not touched" in out.stderr
    assert env.dns() == [env.a]

    src = env.s3("aws")
    for key in ("extra/0007", "extra/0011"):  # repair the target, as an operator would
        tgt.put_object(Bucket=BUCKET, Key=key, Body=src.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    out = env.cli("resume", run["run"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "write-unavailability window" in out.stdout
    assert_serving_from_b(env, None)
    rollback_to_a(env, run["run"])


def test_failover_under_write_load(env: Env) -> None:
    """With the writer running against a, the app ends up served from b through DNS with every acknowledged
    write and every object, and the write-unavailability window is printed (target under 2 s)."""
    ledger = env.tmp / "ledger-clean.sqlite"
    writer = Writer(f"http://{env.a}:8080", ledger)
    try:
        time.sleep(2)
        out = env.cli("failover", "--to", "alt-b", "--yes", "--ledger", str(ledger))
    finally:
        first = writer.finish()
    assert out.returncode == 0, out.stderr[-4000:]
    window = window_of(out.stdout)
    assert "dns_stale_for_s: 30" in out.stdout  # the lab record's TTL: how long resolvers may still answer a
    shown = json.loads(env.cli("show", "last", "--json").stdout)
    timing = {s["step"]: s["duration_s"] for s in shown["steps"]}
    print(f"write-unavailability window {window:.3f}s; steps {timing}; writer: {first.to_dict()}")
    assert first.acknowledged > 0
    after = example.run_writer(f"http://{env.dns()[0]}:8080", str(ledger), rate=20, duration=2)
    assert after.acknowledged > 0 and after.failed == 0
    assert_serving_from_b(env, ledger)
    import psycopg

    secret = (env.state / "stacks" / "microblog" / "pg-migrator.secret").read_text().strip()
    for address in (env.a, env.b):  # liferaft's superuser for the move can no longer log in anywhere
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host=address, port=5432, dbname="postgres", user="liferaft_migrator", password=secret,
                            connect_timeout=5).close()
    assert window < 5.0  # the target is 2 s; this shared 2-core machine is noisy (see the printed value)
    rollback_to_a(env, env.last_run()["run"])


def test_sigkill_at_every_step_boundary_then_resume(env: Env) -> None:
    """The process is SIGKILLed right after each step in turn; every resume continues where the journal says, and
    the last one completes with the same checks."""
    plan = json.loads(env.cli("plan", "--to", "alt-b", "--json").stdout)
    steps = [s["id"] for s in plan["steps"]]
    ledger = env.tmp / "ledger-kill.sqlite"
    writer = Writer(f"http://{env.a}:8080", ledger)
    try:
        out = env.cli("failover", "--to", "alt-b", "--yes", "--ledger", str(ledger),
                      LIFERAFT_TEST_KILL_AFTER_STEP=steps[0])
        assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
        run = env.last_run()["run"]
        for done, step in enumerate(steps[1:], start=2):
            out = env.cli("resume", run, LIFERAFT_TEST_KILL_AFTER_STEP=step)
            assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
            shown = json.loads(env.cli("show", run, "--json").stdout)
            assert [s["status"] for s in shown["steps"]].count("done") == done
            # nothing applied twice: each done step once, the rest not yet
            assert [s["attempts"] for s in shown["steps"]] == [1] * done + [0] * (len(steps) - done)
        out = env.cli("resume", run)
    finally:
        writer.finish()
    assert out.returncode == 0, out.stderr[-3000:]
    assert "write-unavailability window" in out.stdout
    assert_serving_from_b(env, ledger)
    rollback_to_a(env, run)



def test_bucket_and_dump_move_at_the_target_host_not_through_the_controller(env: Env, lab: Any) -> None:
    """`data_path: auto` with a target host (the database in `migrate: dump` mode): `plan` says the bucket's bytes
    and the dump flow through b, not this controller; liferaft's own mover (the zip it builds and sends, checked by
    sha256) copies and reads back the bucket at b; the fault proxies in front of both stores count the body bytes per
    client, and this controller's share stays far below the data size. The mover is SIGKILLed on b mid-copy by its
    PID: the step fails, resume completes the failover (the manifest here kept what the dead mover reported), every
    object equal by sha256 on both stores, nothing left on b. The database (with a 16 MB table beside the app's) is
    dumped and restored inside the freeze by pg_dump | pg_restore at b: counters in a's netns (nftables) count what
    its PostgreSQL sent to this controller and to the rest; the app deploys after the freeze (its health needs its
    schema) and serves from b through DNS; the bulk table is equal by content at b. Then the rollback, and the next
    plan estimates from the rate measured."""
    import yaml

    from liferaft.lab.proxy import FaultProxy
    from liferaft.movers.remote import build_bundle

    doc = yaml.safe_load(env.info.stack_file.read_text())
    for db in doc["data"]["databases"].values():
        db["migrate"] = "dump"
    stack_file = env.info.stack_file.with_name("liferaft-dump-at-target.yaml")  # beside it: secrets resolve
    stack_file.write_text(yaml.safe_dump(doc))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir",
                               str(env.state), *args], capture_output=True, text=True, timeout=600, check=False,
                              stdin=subprocess.DEVNULL)

    s3 = env.s3("aws")
    size = 0
    for i in range(40):  # 40 x 1.25 MiB = 52 MB
        body = os.urandom(1_310_720)
        s3.put_object(Bucket=BUCKET, Key=f"big/{i:03d}", Body=body)
        size += len(body)
    db_size = 16 * 1_048_576  # incompressible: the dump's bytes are these
    with psycopg.connect(**env.dsn(env.a)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bulk (id int PRIMARY KEY, payload bytea NOT NULL)")
        for i in range(16):
            cur.execute("INSERT INTO bulk VALUES (%s, %s)", (i, os.urandom(1_048_576)))
    bulk_md5 = "SELECT count(*), md5(string_agg(md5(payload), '' ORDER BY id)) FROM bulk"
    controller = env.info.bridge_address
    # what a's PostgreSQL sends, to this controller and to anyone else (b's pg_dump), counted in a's netns
    env.info.hosts["a"].run(f"""set -e
nft add table inet lrmeter
nft add chain inet lrmeter out '{{ type filter hook output priority 0; }}'
nft add rule inet lrmeter out tcp sport 5432 ip daddr {controller} counter comment '"controller"'
nft add rule inet lrmeter out tcp sport 5432 ip daddr != {controller} counter comment '"others"'""")
    plan = cli("plan", "--to", "alt-b", "--json")
    assert plan.returncode == 0, plan.stderr[-2000:]
    notes = json.loads(plan.stdout)["notes"]
    flow = [n for n in notes if n.startswith("bucket images: bytes flow")]
    assert flow and f"({env.b}) at site alt-b" in flow[0] and "not through this controller" in flow[0], notes
    assert any(n.startswith("database blog: pg_dump -Fd | pg_restore run on host") and f"({env.b})" in n
               for n in notes), notes
    assert any(n.startswith("the services deploy after the freeze (database blog") for n in notes), notes
    assert [s["id"] for s in json.loads(plan.stdout)["steps"]].index("deploy-web") > \
        [s["id"] for s in json.loads(plan.stdout)["steps"]].index("freeze")
    proxies = {n: FaultProxy.attach(n, p["workdir"]) for n, p in lab.read_state()["proxies"].items()
               if n in ("aws", "objstore")}
    for p in proxies.values():
        p.reset_stats()
    # every request to the target store waits 1 s while the first run copies: on a quiet machine the 40 objects
    # were all copied before the first progress event reached this test (CI: 40 < 40)
    proxies["objstore"].set_mode("forward", delay=1.0)
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(env.state),
            "failover", "--to", "alt-b", "--yes", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    hello: dict[str, Any] = {}
    killed = False
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:  # the run's events, JSON lines
        lines.append(line)
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev.get("kind") == "objects.remote" and not hello:
            hello = ev
        if ev.get("kind") == "objects.progress" and hello and not killed and int(ev.get("done") or 0) >= 1:
            env.info.hosts["b"].run(f"kill -9 {int(hello['pid'])}")
            killed = True
    rc = proc.wait(timeout=600)
    proxies["objstore"].set_mode("forward")
    text = "".join(lines)
    assert killed, "".join(x for x in lines if '"objects.' in x and "progress" not in x)[-6000:]
    assert rc == 4 and "the mover on" in text, text[-3000:]  # the run failed (resumable)
    # the mover ran from the zip this liferaft built and sent (not from an install on the host)
    bundle = build_bundle(env.state / "stacks" / "microblog" / "movers")
    assert hello["bundle_sha256"] == bundle.sha256
    assert hello["liferaft"].startswith("/tmp/liferaft-mover-") and hello["liferaft"].endswith("/lib/liferaft/__init__.py")
    copied = len([k for k in env.hashes("objstore") if k.startswith("big/")])
    assert 0 < copied < 40, copied
    run = env.last_run()["run"]
    out = cli("resume", run, "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"pg.dump.remote"' in out.stderr, out.stderr[-3000:]  # pg_dump ran on b
    # nothing of the mover is left on b (the killed one's folder went when the next mover started)
    assert env.info.hosts["b"].run("ls -d /tmp/liferaft-mover-* 2>/dev/null | wc -l").stdout.strip() == "0"
    assert_serving_from_b(env, None)
    with psycopg.connect(**env.dsn(env.a)) as ca, ca.cursor() as cur_a, \
            psycopg.connect(**env.dsn(env.b)) as cb, cb.cursor() as cur_b:
        cur_a.execute(bulk_md5)
        cur_b.execute(bulk_md5)
        at_a, at_b = cur_a.fetchone(), cur_b.fetchone()
    assert at_a == at_b and at_a[0] == 16, (at_a, at_b)
    counters = json.loads(env.info.hosts["a"].run("nft -j list table inet lrmeter").stdout)
    env.info.hosts["a"].run("nft delete table inet lrmeter")
    sent = {r["rule"]["comment"]: next(e["counter"]["bytes"] for e in r["rule"]["expr"] if "counter" in e)
            for r in counters["nftables"] if "rule" in r}
    mine = sum(v["received"] + v["sent"] for p in proxies.values()
               for c, v in p.stats()["by_client"].items() if c == controller)
    total = sum(v["received"] + v["sent"] for p in proxies.values() for v in p.stats()["by_client"].values())
    print(f"bucket {size} bytes; through the proxies: {total} bytes, of which this controller {mine}; "
          f"database {db_size} bytes of bulk rows; a's PostgreSQL sent {sent['others']} bytes to b, "
          f"{sent['controller']} to this controller")
    assert total > 2 * size  # the copy and its read-back went through the proxies, from b
    assert mine < size / 20, (mine, size)
    assert sent["others"] > db_size  # the dump was read from b
    assert sent["controller"] < db_size / 10, sent  # and not through here (observe, freeze, the gate's hashes)
    out = cli("rollback", run, "--yes")  # with the stack file the run was made with
    assert out.returncode == 0, out.stderr[-3000:]
    assert env.dns() == [env.a]
    with psycopg.connect(**env.dsn(env.a)) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE bulk")
    again = cli("plan", "--to", "alt-b", "--json")
    assert any("last copy measured" in n and "at the target's hosts" in n for n in json.loads(again.stdout)["notes"])
