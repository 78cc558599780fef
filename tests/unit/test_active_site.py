"""The active site as state (issue 20 item 3): recorded by a completed move, restored by its rollback, read by every
command through `Stack.at_site`, shown by `liferaft status`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.test_readiness import example_stack  # noqa: F401  (fixture)


def _liferaft(stack: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(stack), "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_record_restore_chain(tmp_path: Path) -> None:
    """A failback's rollback restores the failover's record; the failover's rollback restores the stack file's
    primary; another run's rollback changes nothing."""
    from liferaft.engine.active import load_active, record_active, restore_previous

    assert load_active(tmp_path, "s") is None
    first = record_active(tmp_path, "s", site="alt-b", source="primary", run="R1", mode="cold",
                          hosts=[{"name": "b", "address": "10.0.0.2", "private_key": "never kept"}],
                          source_host={"name": "a", "address": "10.0.0.1"})
    assert first["fence"] == {"site": "primary", "host": {"name": "a", "address": "10.0.0.1"}, "mode": "cold",
                              "state": "pending"}
    assert first["hosts"] == [{"name": "b", "address": "10.0.0.2"}]
    assert record_active(tmp_path, "s", site="alt-b", source="primary", run="R1", mode="cold") == first  # idempotent
    second = record_active(tmp_path, "s", site="primary", source="alt-b", run="R2", mode="live")
    assert second["previous"]["run"] == "R1" and second["fence"]["state"] == "read-only"
    assert (tmp_path / "readiness" / "s.moved.json").stat().st_mode & 0o777 == 0o600
    assert restore_previous(tmp_path, "s", run="R1") is False  # not the current record's run
    assert restore_previous(tmp_path, "s", run="R2") is True
    rec = load_active(tmp_path, "s")
    assert rec is not None and rec["site"] == "alt-b" and rec["run"] == "R1"
    assert restore_previous(tmp_path, "s", run="R1") is True and load_active(tmp_path, "s") is None


def test_stack_at_site_swaps_primary_and_alternates(example_stack: Path) -> None:  # noqa: F811
    """The view at the active site: it is the primary, the stack file's primary an alternate; the file untouched."""
    from liferaft.stack import load_stack

    before = example_stack.read_bytes()
    stack = load_stack(example_stack)
    assert stack.at_site("primary") is stack
    view = stack.at_site("alt-b", ["10.213.7.12"])
    assert view.model.primary == "alt-b" and view.model.alternates == ["primary"]
    assert view.active_hosts == ("10.213.7.12",) and view.file_primary == "primary"
    assert stack.model.primary == "primary" and example_stack.read_bytes() == before


def test_every_command_judges_against_the_active_site(example_stack: Path, tmp_path: Path) -> None:  # noqa: F811
    """With alt-b recorded as active: the health report calls alt-b the primary and probes only the host the stack
    runs on (not the whole pool); `failover --to alt-b` is refused as the source; `status --json` says where it
    runs, since when, by which run, and the old site's fencing; a read-only status creates nothing."""
    from liferaft.engine.active import record_active

    state = tmp_path / "state"
    r = _liferaft(example_stack, state, "status", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["active_site"] == "primary" and doc["moved"] is False and doc["last_drill"] is None
    assert not state.exists()  # status reads only

    record_active(state, "microblog", site="alt-b", source="primary", run="R1", mode="cold",
                  hosts=[{"name": "b", "address": "10.213.7.12"}], source_host={"name": "a", "address": "10.0.0.1"})
    r = _liferaft(example_stack, state, "status", "--json")
    doc = json.loads(r.stdout)
    assert doc["active_site"] == "alt-b" and doc["run"] == "R1" and doc["mode"] == "cold" and doc["since"]
    assert doc["stack_file_primary"] == "primary" and doc["fence"]["state"] == "pending"
    text = _liferaft(example_stack, state, "status").stdout
    assert "active site: alt-b" in text and "NOT FENCED YET" in text and "still names primary" in text

    r = _liferaft(example_stack, state, "health", "--json", "--timeout", "1")
    report = json.loads(r.stdout)
    assert report["sites"]["alt-b"]["role"] == "primary" and report["sites"]["primary"]["role"] == "alternate"
    http = [e for e in report["sites"]["alt-b"]["evidence"] if e.get("kind") == "http"]
    # the data plane probes where the stack runs: host b only, not c of the same pool
    assert {e["target"].split("//")[1].split(":")[0] for e in http} == {"10.213.7.12"}
    assert not [e for e in report["sites"]["primary"]["evidence"] if e.get("kind") == "http"]

    r = _liferaft(example_stack, state, "failover", "--to", "alt-b", "--yes")
    assert r.returncode == 2 and "already the source" in r.stderr


def test_a_drill_into_the_site_the_stack_left_is_refused(example_stack: Path, tmp_path: Path) -> None:  # noqa: F811
    """Its teardown would remove the cluster holding the old primary's own copies: exit 2, the failback named."""
    from liferaft.engine.active import record_active

    state = tmp_path / "state"
    record_active(state, "microblog", site="alt-b", source="primary", run="R1", mode="cold",
                  hosts=[{"name": "b", "address": "10.213.7.12"}], source_host={"name": "a", "address": "10.0.0.1"})
    r = _liferaft(example_stack, state, "drill", "--to", "primary")
    assert r.returncode == 2 and "the site the stack left by run R1" in r.stderr
    assert "liferaft replicate --to primary" in r.stderr


def test_a_drill_into_the_site_the_stack_left_is_from_its_standby(example_stack: Path,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    """Once `replicate --to` the old primary keeps a standby there (its old copies set aside), a drill into it is
    the failback's rehearsal: a notice drill is refused (exit 2) naming the no-notice one, which is let through to
    the drill itself (which, with no lab behind the stack file, then fails on its own)."""
    from liferaft.engine.active import record_active, update_fence
    from liferaft.engine.standby_state import save_standby

    state = tmp_path / "state"
    record_active(state, "microblog", site="alt-b", source="primary", run="R1", mode="cold",
                  hosts=[{"name": "b", "address": "10.213.7.12"}], source_host={"name": "a", "address": "10.0.0.1"})
    save_standby(state, "microblog", "primary", {"standby_host": {"name": "a", "address": "10.0.0.1"},
                                                  "source_host": {"name": "b", "address": "10.213.7.12"}})
    # a standby record from before the move (nothing set aside since): still the old primary's own copies there
    r = _liferaft(example_stack, state, "drill", "--to", "primary", "--scenario", "no-notice")
    assert r.returncode == 2 and "needs a standby kept there first" in r.stderr, r.stderr
    update_fence(state, "microblog", state="fenced", set_aside=["database microblog kept as microblog_before_r1"])
    r = _liferaft(example_stack, state, "drill", "--to", "primary")
    assert r.returncode == 2 and "the site the stack left by run R1" in r.stderr
    assert "--scenario no-notice" in r.stderr and "needs a standby kept there first" not in r.stderr
    r = _liferaft(example_stack, state, "drill", "--to", "primary", "--scenario", "no-notice", "--json")
    assert "the site the stack left" not in r.stderr, r.stderr


def test_postgres_teardown_keeps_a_cluster_that_holds_other_databases() -> None:
    """The drill teardown's PostgreSQL lines decide on the host: a cluster holding only the stack's databases (and
    the system ones) is removed; one holding others -- set-aside copies -- keeps running, only the stack's databases
    (subscriptions first, without reaching the publisher) and roles nothing else needs dropped, and it says so."""
    from types import SimpleNamespace

    from liferaft.datasets.base import TEARDOWN_KEPT
    from liferaft.datasets.postgres import teardown_lines

    ds = [SimpleNamespace(spec=SimpleNamespace(version=15, port=5432, name="microblog", owner="microblog"))]
    script = "\n".join(teardown_lines(ds))  # type: ignore[arg-type]
    assert "datname NOT IN ('postgres', 'template0', 'template1', 'microblog')" in script
    keep, remove = script.split("\nelse\n")
    assert "rm -rf /var/lib/postgresql/15/liferaft" not in keep and "rm -rf /var/lib/postgresql/15/liferaft" in remove
    assert 'DROP DATABASE IF EXISTS "microblog" WITH (FORCE)' in keep and "SET (slot_name = NONE)" in keep
    assert keep.index("DROP SUBSCRIPTION") < keep.index("DROP DATABASE") and TEARDOWN_KEPT in keep
    assert "_before_" not in script  # nothing names a set-aside copy: every database not the stack's stays
    subprocess.run(["sh", "-n"], input=script + "\n", text=True, check=True)
