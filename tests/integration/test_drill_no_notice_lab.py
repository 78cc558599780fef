"""`liferaft drill --scenario no-notice` in a lab of its own, through the real CLI, checked from outside liferaft.

No-notice: the primary is cut off first (in the lab: the aws proxy drops connections and host a's network is cut),
then the standby at b is promoted and serves through the drill record. Two drills in a row:
1. no standby recorded: the drill makes one while the source answers, and forgets it afterwards;
2. a standby kept by `liferaft replicate --watch`: while the watch runs the drill is refused (the site is the watch's);
   once it is stopped the drill uses the standby, and sets it up again afterwards.
After each: production DNS never moved, the cut is healed (host a serves and takes writes again), b serves nothing,
no replication slot is left abandoned at the source, and the figures are in the report.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import EXIT_LOCKED
from liferaft.lab import example
from liferaft.stack import load_stack
from tests.integration.test_drill_lab import Watcher, cli, health, post, resolve
from tests.lab_checks import owner_dsn, secret_values

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _pg(info: Any, address: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(**owner_dsn(info, address), connect_timeout=5) as c:
        return list(c.execute(sql).fetchall())


OUTPUTS: list[tuple[str, str]] = []  # (what, text) of every drill run here, for the secrets check


def _drill(info: Any, state: Path, tmp_path: Path, name: str) -> tuple[dict[str, Any], Watcher, dict[str, Any]]:
    a = info.hosts["a"].address
    stack = load_stack(info.stack_file)
    assert stack.model.dns is not None
    www, drill = info.app_fqdn, stack.model.dns.fqdn("drill")
    ledger = tmp_path / f"{name}-ledger.sqlite"
    stop_writer = threading.Event()
    writer: dict[str, Any] = {}
    wthread = threading.Thread(target=lambda: writer.update(report=example.run_writer(
        f"http://{a}:8080", str(ledger), rate=10, duration=1800, stop=stop_writer, timeout=2.0)), daemon=True)
    wthread.start()
    watcher = Watcher(info, www, drill, a)
    t0 = time.time()
    try:
        time.sleep(2.0)  # some writes before anything happens
        out = cli(info, state, "drill", "--to", "alt-b", "--scenario", "no-notice", "--report",
                  str(tmp_path / f"{name}-reports"), "--ledger", str(ledger), "--json")
    finally:
        watcher.stop.set()
        stop_writer.set()
        watcher.join()
        wthread.join(30)
    OUTPUTS.append((f"{name} drill output", out.stdout + out.stderr))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    doc: dict[str, Any] = json.loads(out.stdout)
    print(f"\n{name}: drill {doc['id']}: RTO {doc['rto_s']} s (from the cut), RPO {doc['rpo_s']} s, "
          f"{time.time() - t0:.1f} s in all; phases " + ", ".join(f"{p['name']} {p['duration_s']}s"
                                                                  for p in doc["phases"]) + f"; ledger {doc['ledger']}")
    return doc, watcher, writer


def _check_common(info: Any, doc: dict[str, Any], watcher: Watcher, writer: dict[str, Any]) -> None:
    a, b = info.hosts["a"].address, info.hosts["b"].address
    stack = load_stack(info.stack_file)
    assert stack.model.dns is not None
    www, drill = info.app_fqdn, stack.model.dns.fqdn("drill")
    assert doc["passed"] is True and doc["error"] is None and doc["data"]["ok"] is True
    assert doc["scenario"] == "no-notice" and doc["rto_from"] == "cut" and doc["cut_at"] is not None
    assert 0 < doc["rto_s"] <= doc["objectives"]["rto_s"]
    assert doc["first_healthy_at"] - doc["cut_at"] == pytest.approx(doc["rto_s"], abs=0.01)
    lg = doc["ledger"]
    # Writes acknowledged before the cut: all at b, except at most the replication lag's worth (10 writes/s).
    assert lg["acknowledged_before_cut"] > 0 and lg["mismatched"] == 0
    assert lg["missing"] <= 10 and lg["present"] + lg["missing"] == lg["acknowledged_before_cut"]
    assert lg["writes_after_cut"] == 0  # host a was really cut off: nothing was acknowledged after the cut
    assert doc["rpo_s"] is not None and doc["rpo_s"] <= doc["objectives"]["rpo_s"]
    assert writer["report"].acknowledged >= lg["acknowledged_before_cut"]
    assert doc["target_address"] == b and doc["drill_record"] == drill and doc["torn_down"] is True

    # The cut was real: host a did not answer during the drill; production DNS never moved.
    assert any(s[3] is None for s in watcher.samples), "host a answered throughout: it was never cut"
    assert watcher.samples and all(s[1] == [a] for s in watcher.samples if s[1] and not s[1][0].startswith("<")), \
        {tuple(s[1]) for s in watcher.samples}
    assert (b,) in watcher.drill_answers, f"the drill record never pointed at b: {watcher.drill_answers}"
    # Healed and torn down: a serves and takes writes, b serves nothing, the drill record is gone.
    assert resolve(info, www) == [a] and resolve(info, drill) == []
    assert health(a) == 200 and post(a, "after the no-notice drill") == 201
    assert health(b) is None
    # Report files exist and hold the same figures.
    saved = json.loads(Path(doc["report"]["json"]).read_text())
    assert saved["rto_s"] == doc["rto_s"] and saved["rto_from"] == "cut"
    assert "cut" in Path(doc["report"]["html"]).read_text()


def test_no_notice_drill_without_then_with_a_kept_standby(own_lab: Any, tmp_path: Path) -> None:
    lab = own_lab
    info = lab.info
    a, b = info.hosts["a"].address, info.hosts["b"].address
    state = tmp_path / "state"
    readiness = state / "readiness" / "microblog.json"

    # 1. No standby recorded: the drill makes one, cuts, promotes, heals, tears down, forgets it.
    doc, watcher, writer = _drill(info, state, tmp_path, "first")
    _check_common(info, doc, watcher, writer)
    assert doc["phases"][0]["name"] == "standby"  # the drill made its standby
    assert _pg(info, a, "SELECT slot_name, active FROM pg_replication_slots") == []  # nothing abandoned at a
    assert _pg(info, a, "SELECT pubname FROM pg_publication") == []
    assert "alt-b" not in json.loads(readiness.read_text())["standbys"]
    status = lab.status()  # only what the drill cut was healed, and all of it
    assert status["cut_hosts"] == [] and set(status["modes"].values()) == {"forward"}, status

    # 2. A standby kept by `replicate --watch`. While the watch runs, the site is its own: a drill is refused before
    # it touches anything (it would promote the standby the watch keeps syncing into). Once the watch is stopped,
    # the drill uses the standby as it is and sets it up again afterwards (subscribed and current).
    watch = subprocess.Popen([sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir",
                              str(state), "replicate", "--to", "alt-b", "--watch", "--interval", "1", "--json"],
                             stdout=subprocess.PIPE, stderr=(tmp_path / "watch.err").open("w"), text=True,
                             stdin=subprocess.DEVNULL)
    first: dict[str, Any] = {}
    try:
        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline() or "{}")  # one round done: the standby is set up and current
        assert first.get("source_reachable") is True, first
        refused = cli(info, state, "drill", "--to", "alt-b", "--scenario", "no-notice", "--json", timeout=120)
        OUTPUTS.append(("refused drill output", refused.stdout + refused.stderr))
        assert refused.returncode == EXIT_LOCKED, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert json.loads(refused.stdout)["error"] == "LockHeld"
        assert f"process {watch.pid} (replicate --watch)" in refused.stderr, refused.stderr[-2000:]
        assert "stop `liferaft replicate --to alt-b`" in refused.stderr
        assert lab.status()["cut_hosts"] == []  # refused before the cut
    finally:
        watch.send_signal(signal.SIGTERM)  # the watch ends after its round in progress
        rest, _ = watch.communicate(timeout=120)
    OUTPUTS.append(("replicate --watch output", json.dumps(first) + rest + (tmp_path / "watch.err").read_text()))
    assert watch.returncode == 0, (tmp_path / "watch.err").read_text()[-3000:]
    doc, watcher, writer = _drill(info, state, tmp_path, "second")
    _check_common(info, doc, watcher, writer)
    assert doc["phases"][0]["name"] != "standby"  # the drill did not make it (it sets it up again at the end)
    rec = json.loads(readiness.read_text())["standbys"]["alt-b"]
    assert rec["standby_host"]["address"] == b
    slots = _pg(info, a, "SELECT slot_name, active FROM pg_replication_slots")
    assert len(slots) == 1 and slots[0][1] is True, slots  # b subscribes again (the abandoned slot was dropped)
    assert post(a, "replicated after the drill") == 201
    deadline = time.monotonic() + 30
    want = _pg(info, a, "SELECT count(*) FROM posts")[0][0]
    while _pg(info, b, "SELECT count(*) FROM posts")[0][0] != want:
        assert time.monotonic() < deadline, "the re-established standby does not follow the source"
        time.sleep(0.5)
    # No secret in any output, report, journal or state file of either drill.
    secrets = secret_values(info, state)
    assert {"db_password", "aws_secret_access_key"} <= set(secrets) and any(k.startswith("state:") for k in secrets)
    texts = list(OUTPUTS) + [(str(p), p.read_bytes().decode("utf-8", "replace")) for p in
                             [*tmp_path.glob("*-reports/*"), *state.rglob("*")]
                             if p.is_file() and not p.name.endswith(".secret") and p.suffix != ".sqlite"]
    import sqlite3

    for db in state.rglob("*.db"):  # the journal, as SQL
        with sqlite3.connect(db) as c:
            texts.append((str(db), "\n".join(c.iterdump())))
    leaks = [f"{what}: {name}" for what, text in texts for name, value in secrets.items() if value in text]
    assert not leaks, leaks
