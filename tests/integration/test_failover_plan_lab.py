"""`liferaft plan` in the lab: the exact steps, bytes, estimate and DNS diff, and provably no side effects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab


def proxies_mutating(lab: Any) -> dict[str, int]:
    from liferaft.lab.proxy import FaultProxy

    state = lab.read_state()
    return {name: int(FaultProxy.attach(name, p["workdir"]).stats()["mutating"])
            for name, p in state["proxies"].items()}


def pg_writes(info: Any) -> tuple[object, ...]:
    import psycopg

    with psycopg.connect(host=info.hosts["a"].address, port=5432, dbname="microblog", user="microblog",
                         password=info.secret("db_password"), autocommit=True) as c:
        # Per user table, not pg_stat_database: the database-wide tup_* counters include catalog churn such as
        # autoanalyze rewriting pg_statistic, which happens on its own schedule and is not liferaft writing.
        rows = c.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables ORDER BY relname"
                         ).fetchall()
    assert rows
    return tuple(v for r in rows for v in (str(r[0]), int(r[1]), int(r[2]), int(r[3])))


def settled_pg_writes(info: Any) -> tuple[object, ...]:
    """Idle backends report their statistics up to 10 s late (PostgreSQL 15): wait until the counters are still."""
    last, since, deadline = pg_writes(info), time.monotonic(), time.monotonic() + 60
    while time.monotonic() - since < 11.5 and time.monotonic() < deadline:
        time.sleep(1.0)
        now = pg_writes(info)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_plan_shows_steps_bytes_and_dns_diff_and_changes_nothing(lab: Any, tmp_path: Path) -> None:
    """Zero mutating requests at every lab server, no SSH session but the folder's read-only walk on host a, zero
    rows written."""
    info = lab.info
    settled_pg_writes(info)
    before = (proxies_mutating(lab), {n: h.ssh_count() for n, h in info.hosts.items()}, pg_writes(info))
    out = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir",
                          str(tmp_path), "plan", "--to", "alt-b", "--json"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    time.sleep(11.5)  # anything the plan's session wrote would be reported by now
    after = (proxies_mutating(lab), {n: h.ssh_count() for n, h in info.hosts.items()}, pg_writes(info))
    # One SSH session, on host a: the example worker's folder (data.directories.media) is measured there by a
    # read-only walk (lstat), the way the folder kind plans; none on the other hosts.
    assert after == (before[0], {**before[1], "a": before[1]["a"] + 1}, before[2])

    plan = json.loads(out.stdout)
    ids = [s["id"] for s in plan["steps"]]
    assert ids == ["allocate", "prepare", "postgresql", "redis", "db-access", "source-access", "migrate-blog",
                   "sync-images", "redis-worker", "copy-media", "deploy-web", "deploy-worker", "freeze", "verify-data",
                   "dns", "verify-service", "db-release", "files-release"]  # the worker's Redis and folder too
    assert ids.index("verify-data") < ids.index("dns")  # DNS only after the data gate
    assert plan["bytes_to_move"] > 1_000_000 and plan["estimate_s"] > 0
    a, b = info.hosts["a"].address, info.hosts["b"].address
    assert plan["dns_diff"] == [{"name": info.app_fqdn.rstrip(".") + ".", "type": "A", "ttl": 30, "old": [a], "new": [b]}]
    assert {"action": "allocate", "kind": "host", "name": "microblog-alt-b", "provider": "colo-b",
            "detail": "(free: b, c)"} in plan["resources"]
    again = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir",
                            str(tmp_path), "plan", "--to", "alt-b", "--json"], capture_output=True, text=True,
                           timeout=300, check=False)
    assert json.loads(again.stdout)["hash"] == plan["hash"]  # a stable plan
    human = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir",
                            str(tmp_path), "plan", "--to", "alt-b"], capture_output=True, text=True, timeout=300, check=False)
    assert human.returncode == 0 and f"{a} -> {b}" in human.stdout


def test_cold_mode_is_refused_clearly(lab: Any, tmp_path: Path) -> None:
    info = lab.info
    out = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir",
                          str(tmp_path), "plan", "--to", "alt-b", "--mode", "cold"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2 and "cold mode" in out.stderr and "Traceback" not in out.stderr
