"""`liferaft drill --to alt-b` in the lab, through the real CLI, checked from outside liferaft.

While the drill runs, a watcher queries PowerDNS for the production record and the drill record and GETs the app's
health on host a, and the example's ledger writer keeps writing to host a. Afterwards: production DNS never moved,
the drill record pointed at b during the drill and is gone, host a answered 200 throughout and still takes writes,
every write acknowledged before the cut is at the target (RPO 0), b no longer serves, and the report and the history
have the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from liferaft.lab import example
from liferaft.stack import load_stack
from tests.fixtures_lab import resolve

pytestmark = [pytest.mark.lab, pytest.mark.slow]




def health(address: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def wait_healthy(address: str, timeout: float = 60.0) -> None:
    """Until the app at `address` answers 200: an earlier test of the session's shared lab may have restarted or cut
    its servers, and the drill's claim is that production stays healthy *during* the drill, not that it starts so."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=5) as r:
                if r.status == 200:
                    return
                why = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}: {e.read()[:300]!r}"
        except OSError as e:
            why = f"{type(e).__name__}: {e}"
        time.sleep(0.5)
    pytest.fail(f"the app at {address} was not healthy within {timeout:.0f} s before the drill: {why}")


def post(address: str, body: str) -> int | None:
    req = urllib.request.Request(f"http://{address}:8080/posts", method="POST",
                                 data=json.dumps({"author": "drill-test", "body": body}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


class Watcher:
    """Samples production DNS, the drill record and host a's health until stopped; the drill record also on its
    own, fast (it points at the target only between the DNS step and the teardown, a second or so)."""

    def __init__(self, info: Any, www: str, drill: str, a: str) -> None:
        self.samples: list[tuple[float, list[str], list[str], int | None]] = []
        self.drill_answers: set[tuple[str, ...]] = set()
        self.stop = threading.Event()
        self._args = (info, www, drill, a)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.fast = threading.Thread(target=self._run_fast, daemon=True)
        self.thread.start()
        self.fast.start()

    def _run(self) -> None:
        info, www, drill, a = self._args
        while not self.stop.is_set():
            self.samples.append((time.time(), resolve(info, www), resolve(info, drill), health(a)))
            self.stop.wait(0.5)

    def _run_fast(self) -> None:
        info, _, drill, _ = self._args
        while not self.stop.is_set():
            self.drill_answers.add(tuple(resolve(info, drill)))
            self.stop.wait(0.02)

    def join(self) -> None:
        self.thread.join(10)
        self.fast.join(10)


def cli(info: Any, state: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          stdin=subprocess.DEVNULL, check=False)


def test_drill_to_alt_b_leaves_production_alone_and_reports(lab: Any, tmp_path: Path) -> None:
    """The whole drill: measured, verified, isolated from production, torn down, reported, remembered."""
    info = lab.info
    a, b = info.hosts["a"].address, info.hosts["b"].address
    stack = load_stack(info.stack_file)
    assert stack.model.dns is not None
    www, drill = info.app_fqdn, stack.model.dns.fqdn("drill")
    assert resolve(info, www) == [a] and resolve(info, drill) == [] and health(b) is None
    state, reports, ledger = tmp_path / "state", tmp_path / "reports", tmp_path / "ledger.sqlite"
    wait_healthy(a)

    stop_writer = threading.Event()
    writer: dict[str, Any] = {}
    wthread = threading.Thread(target=lambda: writer.update(report=example.run_writer(
        f"http://{a}:8080", str(ledger), rate=10, duration=1800, stop=stop_writer)), daemon=True)
    wthread.start()
    watcher = Watcher(info, www, drill, a)
    t0 = time.time()
    try:
        out = cli(info, state, "drill", "--to", "alt-b", "--report", str(reports), "--ledger", str(ledger),
                  "--json")
    finally:
        watcher.stop.set()
        stop_writer.set()
        watcher.join()
        wthread.join(30)
    elapsed = time.time() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    print(f"\ndrill {doc['id']}: RTO {doc['rto_s']} s, RPO {doc['rpo_s']} s, {elapsed:.1f} s in all; phases "
          + ", ".join(f"{p['name']} {p['duration_s']}s" for p in doc["phases"]) + f"; ledger {doc['ledger']}")

    # Measured and verified.
    assert doc["passed"] is True and doc["error"] is None and doc["data"]["ok"] is True
    assert 0 < doc["rto_s"] <= doc["objectives"]["rto_s"] and doc["rpo_s"] == 0.0
    lg = doc["ledger"]
    assert lg["acknowledged_before_cut"] > 0 and lg["missing"] == 0 and lg["mismatched"] == 0
    assert lg["present"] == lg["acknowledged_before_cut"] and lg["writes_after_cut"] > 0
    assert writer["report"].acknowledged >= lg["acknowledged_before_cut"] + lg["writes_after_cut"]
    assert [p["name"] for p in doc["phases"]] == ["provision", "configure", "data", "verify", "dns", "teardown"]
    assert doc["target_address"] == b and doc["drill_record"] == drill and doc["torn_down"] is True

    # Production untouched, drill record used during the drill only, the source served throughout.
    assert watcher.samples and all(s[1] == [a] for s in watcher.samples), \
        {tuple(s[1]) for s in watcher.samples}
    assert (b,) in watcher.drill_answers, f"the drill record never pointed at b: {watcher.drill_answers}"
    assert watcher.drill_answers | {tuple(s[2]) for s in watcher.samples} <= {(), (b,)}
    bad = [(round(s[0] - t0, 1), s[3]) for s in watcher.samples if s[3] != 200]
    assert not bad, f"host a's health was not 200 at {bad}"
    assert resolve(info, www) == [a] and resolve(info, drill) == []
    assert post(a, "after the drill") == 201  # the source was never frozen

    # Torn down: nothing answers on b any more.
    assert health(b) is None

    # Report and history.
    files = doc["report"]
    assert Path(files["html"]).exists() and Path(files["markdown"]).exists()
    saved = json.loads(Path(files["json"]).read_text())
    assert saved["rto_s"] == doc["rto_s"] and saved["rpo_s"] == doc["rpo_s"]
    assert all(p["end"] >= p["start"] for p in saved["phases"])
    listed = cli(info, state, "drills", "--json", timeout=60)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["drills"]
    assert row["id"] == doc["id"] and row["passed"] is True and row["rto_s"] == doc["rto_s"]
    runs = cli(info, state, "runs", "--json", timeout=60)
    assert json.loads(runs.stdout)[0]["status"] == "rolled-back" and json.loads(runs.stdout)[0]["drill"] is True


def keyspace(r: Any) -> dict[bytes, tuple[str, Any]]:
    """Every key of a Redis -> (type, value), read with plain commands (not liferaft's digest)."""
    out: dict[bytes, tuple[str, Any]] = {}
    for k in r.scan_iter(count=1000):
        t = r.type(k).decode()
        value = {"string": r.get, "list": lambda k: r.lrange(k, 0, -1), "hash": lambda k: sorted(r.hgetall(k).items()),
                 "set": lambda k: sorted(r.smembers(k)), "zset": lambda k: r.zrange(k, 0, -1, withscores=True)}[t](k)
        out[k] = (t, value)
    return out


def files(host: Any, path: str) -> dict[str, str]:
    """Every file under `path` on a lab host -> its sha256, read with sha256sum over SSH."""
    out = host.run(f"cd {path} && find . -type f -print0 | xargs -0 -r sha256sum").stdout
    return {line[66:]: line[:64] for line in out.splitlines() if line}


def worker_copies_equal(info: Any, stack: Any, doc: dict[str, Any]) -> None:
    """The example's second service's data at the drill's target, checked from outside liferaft: its Redis
    (`data.redis.worker`: every key's type and value, a card per seeded image) and its media folder
    (`data.directories.media`: every file's sha256) are what the source holds; the drill's report names both."""
    a, b = info.hosts["a"], info.hosts["b"]
    at_a, at_b = (keyspace(example.worker_redis(stack, h.address)) for h in (a, b))
    cards = [k for k in at_a if k.startswith(b"mb:card:")]
    assert len(cards) >= example.LAB_IMAGES and at_b == at_a, (len(at_a), len(at_b))
    path = stack.model.data.directories["media"].path
    fa, fb = files(a, path), files(b, path)
    assert len(fa) == 2 * len(cards) and fb == fa, (len(fa), len(fb))
    checked = doc["data"]["checked"]
    print(f"\nworker data at b: {len(at_b)} Redis keys, {len(fb)} files; the drill checked {checked}")
    assert any("worker" in k and v == len(at_a) for k, v in checked.items()), checked
    assert any("media" in k and v == len(fa) for k, v in checked.items()), checked


def test_drill_keep_then_teardown(lab: Any, tmp_path: Path) -> None:
    """--keep leaves the target serving through the drill record; `drill --teardown RUN` removes it all."""
    info = lab.info
    a, b = info.hosts["a"].address, info.hosts["b"].address
    stack = load_stack(info.stack_file)
    assert stack.model.dns is not None
    drill = stack.model.dns.fqdn("drill")
    state = tmp_path / "state"
    out = cli(info, state, "drill", "--to", "alt-b", "--keep", "--report", str(tmp_path / "r"), "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    print(f"\nkept drill {doc['id']}: RTO {doc['rto_s']} s, RPO {doc['rpo_s']} s")
    assert doc["kept"] is True and doc["torn_down"] is False and doc["passed"] is True
    assert [p["name"] for p in doc["phases"]] == ["provision", "configure", "data", "verify", "dns"]
    try:
        assert resolve(info, drill) == [b] and health(b) == 200
        assert resolve(info, info.app_fqdn) == [a] and health(a) == 200
        worker_copies_equal(info, stack, doc)
    finally:
        down = cli(info, state, "drill", "--teardown", doc["run_id"], "--json", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    assert json.loads(down.stdout)["torn_down"] is True
    assert resolve(info, drill) == [] and health(b) is None and health(a) == 200
    left = info.hosts["b"].run("ls -d /var/lib/liferaft/worker /var/lib/liferaft/redis-6379 /opt/liferaft/worker "
                               "2>/dev/null; true").stdout.split()
    assert left == []  # the worker, its Redis and its folder torn down at b
    (row,) = json.loads(cli(info, state, "drills", "--json", timeout=60).stdout)["drills"]
    assert row["run_id"] == doc["run_id"] and row["kept"] is True and row["torn_down"] is True
    again = cli(info, state, "drill", "--teardown", doc["run_id"], timeout=60)
    assert again.returncode == 2 and "already rolled back" in again.stderr


def test_failed_data_check_stops_before_dns_and_still_tears_down(lab: Any, tmp_path: Path) -> None:
    """A write the ledger says was acknowledged with other content fails the data gate: the drill fails (exit 1),
    the drill record is never set, and the target is torn down all the same."""
    info = lab.info
    a, b = info.hosts["a"].address, info.hosts["b"].address
    stack = load_stack(info.stack_file)
    assert stack.model.dns is not None
    drill = stack.model.dns.fqdn("drill")
    req = urllib.request.Request(f"http://{a}:8080/posts", method="POST",
                                 data=json.dumps({"author": "drill-test", "body": "the real body"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        post_id = int(json.loads(r.read())["id"])
    ledger = tmp_path / "ledger.sqlite"
    led = example._load("writer").Ledger(str(ledger))
    now = time.time()
    led.record("forged", post_id, "0" * 64, now - 2, now - 1, 201, None)  # acknowledged before the cut, other body
    led.close()
    watcher = Watcher(info, info.app_fqdn, drill, a)
    try:
        out = cli(info, tmp_path / "state", "drill", "--to", "alt-b", "--ledger", str(ledger), "--report",
                  str(tmp_path / "r"), "--json")
    finally:
        watcher.stop.set()
        watcher.join()
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["passed"] is False and doc["data"]["ok"] is False and doc["rto_s"] is None
    assert any(f"row {post_id} differs" in p for p in doc["data"]["problems"])
    assert "drill-verify-data" in doc["error"] and doc["torn_down"] is True
    assert watcher.drill_answers | {tuple(s[2]) for s in watcher.samples} == {()}, \
        "the drill record was set despite the failed gate"
    assert all(s[1] == [a] and s[3] == 200 for s in watcher.samples)
    assert health(b) is None and resolve(info, drill) == []
    assert "verify" in [p["name"] for p in doc["phases"] if p["status"] == "failed"]
