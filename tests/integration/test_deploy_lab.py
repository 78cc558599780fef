"""`liferaft deploy` (issue 20 item 1) in a lab of the module's own, started without the example app: the example
stack deployed at the alternate site alt-b, where nothing runs yet (host b), through the CLI.

One journey, one lab: the dry run changes nothing; the deploy makes the database (whose pg_hba admits the host the
other site declares: a connection from host a works), the bucket, the service, and points the DNS name at b (the
app answers 200 through it at the lab's DNS server); `status` says the stack runs at alt-b; a second deploy changes
nothing and says so (journaled); rolling back the second run leaves everything, rolling back the first removes what
it made (DNS back to a, service and cluster gone, host released, active site back to the primary).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def dlab(own_cloud_lab: Any) -> Any:
    """A lab of the module's own with nothing deployed (`lab up` without the example app)."""
    return own_cloud_lab


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy-state")


def _run(lab: Any, state_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    e.update(LIFERAFT_STACK=str(lab.info.stack_file), LIFERAFT_STATE_DIR=str(state_dir))
    return subprocess.run([sys.executable, "-m", "liferaft", *args], env=e, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _resolve(info: Any) -> list[str]:
    from liferaft.steps.verify import resolve

    return resolve(info.app_fqdn, "A", info.dns_server)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def _on(info: Any, host: str, script: str) -> str:
    from liferaft.configure.remote import ssh
    from liferaft.lab.example import lab_target_host

    return ssh(lab_target_host(info, host), "sh -s", stdin=script, timeout=60.0, what="test")


def _db_from_a(info: Any, address: str) -> str:
    """`SELECT current_database()` at `address` over TCP from host a, as the application's owner (the password on
    stdin, never on a command line)."""
    from liferaft.stack import load_stack

    stack = load_stack(info.stack_file)
    db = stack.model.data.databases["blog"]
    password = stack.secret(db.password)
    return _on(info, "a", f"PGPASSWORD='{password}' PGCONNECT_TIMEOUT=5 /usr/lib/postgresql/15/bin/psql -X -At "
                          f"-h {address} -p {db.port} -U {db.owner} -d {db.name} -c 'SELECT current_database()' "
                          "2>&1 || true\n").strip()


def test_deploy_at_a_new_site_then_again_then_rolled_back(dlab: Any, state_dir: Path) -> None:
    """Dry run: nothing changes. Deploy at alt-b: the app answers 200 by its DNS name at b, the database is there
    and admits host a (the other site's declared host), status says alt-b. Again: nothing to change, journaled.
    Rollbacks: the second removes nothing, the first everything it made."""
    info = dlab.info
    a, b = info.hosts["a"].address, info.hosts["b"].address
    assert _resolve(info) == [a]  # what `lab up` made: the zone names host a, nothing runs anywhere

    plan = _json(_run(dlab, state_dir, "deploy", "--site", "alt-b", "--dry-run", "--json"))
    assert plan["mode"] == "deploy" and plan["target"] == "alt-b"
    assert [s["id"] for s in plan["steps"]] == ["allocate", "prepare", "create-databases", "create-buckets", "redis",
                                               "deploy-web", "deploy-worker", "dns", "verify-service", "changes"]
    assert plan["steps"][2]["params"]["allow_from"] == [f"{a}/32"]
    assert _resolve(info) == [a]
    assert "absent" in _on(info, "b", "[ -d /var/lib/postgresql/15/liferaft ] && echo present || echo absent\n")

    t0 = time.monotonic()
    first = _json(_run(dlab, state_dir, "deploy", "--site", "alt-b", "--yes", "--json"))
    took = time.monotonic() - t0
    assert first["status"] == "done" and first["site"] == "alt-b", first
    assert {"allocate", "create-databases", "create-buckets", "redis", "deploy-web", "deploy-worker",
            "dns"} <= set(first["changed"])
    assert not first["nothing_changed"]
    # the app by its DNS name at the lab's DNS server
    assert _resolve(info) == [b]
    assert _status(f"http://{_resolve(info)[0]}:{info.app_port}/healthz") == 200
    # the database, reached from the other site's declared host (pg_hba admits a), and the rule itself
    assert _db_from_a(info, b) == "microblog"
    hba = _on(info, "b", "cat /var/lib/postgresql/15/liferaft/pg_hba.conf\n")
    assert any(line.split()[:4] == ["host", "replication", "all", f"{a}/32"] for line in hba.splitlines()), hba
    status = _json(_run(dlab, state_dir, "status", "--json"))
    assert status["active_site"] == "alt-b", status
    runs = _json(_run(dlab, state_dir, "runs", "--json"))
    assert [r["mode"] for r in runs] == ["deploy"]

    again = _run(dlab, state_dir, "deploy", "--site", "alt-b", "--yes")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to change: 0 steps changed" in again.stdout, again.stdout
    shown = _json(_run(dlab, state_dir, "show", "last", "--json"))
    assert shown["summary"]["changed_steps"] == 0 and shown["mode"] == "deploy", shown["summary"]
    second_run = shown["run"]
    assert second_run != first["run"]

    undone = _json(_run(dlab, state_dir, "rollback", second_run, "--yes", "--json"))
    assert undone["status"] == "rolled-back"
    assert _status(f"http://{b}:{info.app_port}/healthz") == 200  # the first deploy's work stays
    assert _resolve(info) == [b]
    assert _json(_run(dlab, state_dir, "status", "--json"))["active_site"] == "alt-b"

    undone = _json(_run(dlab, state_dir, "rollback", first["run"], "--yes", "--json"))
    assert undone["status"] == "rolled-back"
    assert _resolve(info) == [a]
    assert _status(f"http://{b}:{info.app_port}/healthz") is None
    left = _on(info, "b", "ls -d /var/lib/postgresql/15/liferaft /opt/liferaft/web /etc/liferaft/web.json "
                          "2>/dev/null || true\n")
    assert left.strip() == "", left
    assert _json(_run(dlab, state_dir, "status", "--json"))["active_site"] == "primary"
    hosts = _run(dlab, state_dir, "hosts", "--json")
    assert "microblog-alt-b" not in hosts.stdout, hosts.stdout
    print(f"first deploy at alt-b took {took:.1f} s")
