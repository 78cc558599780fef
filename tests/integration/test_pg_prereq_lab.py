"""PostgreSQL prerequisites in the lab (issue 20 item 6), on a lab of the module's own.

The source (host a) gets a table without a primary key, and its pg_hba no longer admits the lab's /24: only the
controller and itself, so nothing at host b may connect to it. Then:
- `plan` names the table and exits 2; `failover` refuses the same way before anything is allocated;
- with `replica_identity: full` on the database, a failover (stopped before its freeze) opens the source to b's
  address by the `source-access` step (the rule in a's pg_hba file, for the migration role only), replicates the
  table, and an UPDATE made at the source after the migration started is at b after the freeze (by content);
- its rollback removes exactly that rule: the file is byte for byte what it was, and b is refused again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HBA = "/var/lib/postgresql/15/liferaft/pg_hba.conf"
PSQL = "/usr/lib/postgresql/15/bin/psql"


class Env:
    def __init__(self, info: Any, state: Path) -> None:
        self.info, self.state = info, state
        self.a, self.b = info.hosts["a"].address, info.hosts["b"].address
        text = info.stack_file.read_text()
        assert "      migrate: logical" in text
        self.full = info.stack_file.with_name("liferaft-replica-identity-full.yaml")
        self.full.write_text(text.replace("      migrate: logical", "      migrate: logical\n"
                                          "      replica_identity: full", 1))

    def cli(self, *args: str, stack: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(stack or self.info.stack_file),
                               "--state-dir", str(self.state), *args], capture_output=True, text=True, timeout=600,
                              check=False)

    def sql(self, address: str, query: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(host=address, port=5432, dbname="microblog", user="microblog", autocommit=True,
                             password=self.info.secret("db_password"), connect_timeout=10) as c:
            cur = c.execute(query)
            return list(cur.fetchall()) if cur.description else []

    def hba(self) -> str:
        return str(self.info.hosts["a"].run(f"cat {HBA}").stdout)

    def from_b(self, user: str) -> str:
        """What a's PostgreSQL answers a connection from host b (no password given: only the rule is at stake)."""
        out = self.info.hosts["b"].run(f"PGCONNECT_TIMEOUT=5 {PSQL} -w 'host={self.a} dbname=microblog user={user} "
                                       "sslmode=disable' -c 'SELECT 1' </dev/null 2>&1", check=False)
        return str(out.stdout)


@pytest.fixture(scope="module")
def env(own_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Env:
    e = Env(own_lab.info, tmp_path_factory.mktemp("pg-prereq-state"))
    e.sql(e.a, "CREATE TABLE tags (post_id int, tag text); "
               "INSERT INTO tags VALUES (1, 'first'), (2, 'second'), (3, 'third')")
    wide = f"{e.info.bridge_address}/24"
    a = e.info.hosts["a"]
    assert wide in e.hba()
    # a `liferaft deploy` (what `lab up` runs) also admits each host the stack's other sites declare, b among them:
    # take b's own rule away too, so that only the failover's source-access step can let it in
    b_rule = re.escape(f"{e.info.hosts['b'].address}/32")
    a.run(f"sed -i -e 's#{wide}#{e.info.bridge_address}/32#' -e '\\#[[:space:]]{b_rule}[[:space:]]#d' {HBA} && "
          f"su postgres -s /bin/sh -c "
          f"'{PSQL} -X -q -h /var/run/postgresql -d postgres -c \"SELECT pg_reload_conf()\"' >/dev/null")
    assert "no pg_hba.conf entry" in e.from_b("microblog")
    return e


def test_a_table_without_a_primary_key_stops_the_plan_and_the_failover(env: Env) -> None:
    """Exit 2 naming the table and the stack key (and an extension the target host b lacks, read there over SSH);
    nothing allocated, no run recorded."""
    env.sql(env.a, "CREATE EXTENSION IF NOT EXISTS pgcrypto")
    control = "/usr/share/postgresql/15/extension/pgcrypto.control"
    b = env.info.hosts["b"]
    b.run(f"mv {control} {control}.hidden")  # b's own /usr (an overlay): the controller's stays
    try:
        out = env.cli("plan", "--to", "alt-b", "--json")
    finally:
        b.run(f"mv {control}.hidden {control}")
    assert out.returncode == 2, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    (problem,) = [p for p in doc["problems"] if p["check"] == "primary-key"]
    assert problem["dataset"] == "blog" and "public.tags" in problem["message"]
    assert "replica_identity: full" in problem["fix"] and "migrate: dump" in problem["fix"]
    (missing,) = [p for p in doc["problems"] if p["check"] == "extensions"]
    assert "pgcrypto" in missing["message"] and "target b" in missing["message"]
    human = env.cli("plan", "--to", "alt-b")
    assert human.returncode == 2 and "public.tags" in human.stdout
    out = env.cli("failover", "--to", "alt-b", "--yes", "--json")
    assert out.returncode == 2 and "public.tags" in out.stderr, out.stderr[-2000:]
    assert json.loads(env.cli("runs", "--json").stdout) == []
    plan = json.loads(env.cli("plan", "--to", "alt-b", "--json", stack=env.full).stdout)
    assert not plan["problems"] and plan["ok"] is True  # pgcrypto is at b again
    assert any("REPLICA IDENTITY FULL" in n for n in plan["notes"])


def test_source_access_and_replica_identity_full_then_rollback_removes_exactly_the_rule(env: Env) -> None:
    """The failover opens a to b for the migration role, carries an UPDATE of the keyless table made after the
    migration started, and its rollback leaves a's pg_hba as it was."""
    before = env.hba()
    out = env.cli("failover", "--to", "alt-b", "--yes", "--json", "--stop-before", "freeze", stack=env.full)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout)["run"]
    opened = env.hba()
    added = [ln for ln in opened.splitlines() if ln not in before.splitlines()]
    assert len(added) == 1 and added[0].split()[:5] == ["host", "microblog", "liferaft_migrator", f"{env.b}/32",
                                                        "scram-sha-256"] and run in added[0]
    assert "no pg_hba.conf entry" not in env.from_b("liferaft_migrator")  # the rule admits the migration role
    assert "no pg_hba.conf entry" in env.from_b("microblog")  # and nothing else
    assert env.sql(env.a, "SELECT relreplident FROM pg_class WHERE relname = 'tags'") == [("f",)]

    env.sql(env.a, "UPDATE tags SET tag = 'changed after the start' WHERE post_id = 2; "
                   "DELETE FROM tags WHERE post_id = 3")
    out = env.cli("resume", run, "--stop-before", "dns", stack=env.full)
    assert out.returncode == 0, out.stderr[-3000:]
    assert env.sql(env.b, "SELECT post_id, tag FROM tags ORDER BY 1") == [(1, "first"),
                                                                        (2, "changed after the start")]
    shown = json.loads(env.cli("show", run, "--json", stack=env.full).stdout)
    result = {s["step"]: s for s in shown["steps"]}["migrate-blog"]["result"]
    assert result["replica_identity_full"] == ["public.tags"]

    out = env.cli("rollback", run, "--yes", stack=env.full)
    assert out.returncode == 0, out.stderr[-3000:]
    assert env.hba() == before
    assert "no pg_hba.conf entry" in env.from_b("liferaft_migrator")
