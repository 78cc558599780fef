"""Failover into a brand-new DigitalOcean account: the allocate step creates the site's `hosts: N` droplets through
libcloud's DigitalOcean driver against the lab cloud, and rollback deletes every one (the lab cloud lists none).

One lab (with the example app) shared by the module's tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from liferaft.lab.core import Lab
from liferaft.lab.hosts import netns_names
from tests.fixtures_lab import without_worker

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def cloud_state(lab: Lab, path: str = "/lab/state", body: dict[str, Any] | None = None) -> dict[str, Any]:
    from liferaft.lab.clouds.server import lab_control

    state = lab.read_state()
    assert state is not None
    d = state["servers"]["digitalocean"]
    return lab_control(d["url"], Path(d["control_token_file"]), path, body)


def do_stack(lab: Lab, hosts: int, token: str = "file:secrets/do_token") -> Path:
    """The lab's stack (`without_worker`) plus a `do` provider (the lab cloud, through its fault proxy) and a site
    `alt-do` on it with `hosts: N`; written next to the lab's stack so its `file:secrets/...` references resolve."""
    info = lab.info
    yaml = YAML()
    data = without_worker(yaml.load(info.stack_file.read_text()))
    data["providers"]["do"] = {
        "type": "digitalocean", "endpoint": info.endpoints["digitalocean"], "region": "fra1", "size": "s-1vcpu-1gb",
        "image": "debian-12-x64", "credentials": {"token": token}, "private_key": "file:secrets/id_ed25519"}
    data["sites"]["alt-do"] = {"compute": "do", "objects": "objstore", "hosts": hosts}
    data["alternates"].append("alt-do")
    path = info.directory / "liferaft-do.yaml"
    with path.open("w") as f:
        yaml.dump(data, f)
    return path


def cli(stack: Path, state: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def last_json(out: subprocess.CompletedProcess[str], key: str = "steps_total") -> Any:
    """The last top-level JSON object on stdout that has `key` (event lines may come before or after it)."""
    decoder, found, text = json.JSONDecoder(), None, "\n" + out.stdout
    i = text.find("\n{")
    while i >= 0:
        try:
            doc, _ = decoder.raw_decode(text, i + 1)
            if isinstance(doc, dict) and key in doc:
                found = doc
        except ValueError:
            pass
        i = text.find("\n{", i + 1)
    assert found is not None, f"no JSON with {key!r} in: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    return found


def test_failover_into_new_digitalocean_account_and_rollback_deletes_every_droplet(own_lab: Lab,
                                                                                   tmp_path: Path) -> None:
    """hosts: 2 at a DigitalOcean site that has no droplets: `plan` says 2 droplets at the API's hourly price; the
    allocate step creates 2 droplets tagged with the stack and the run, each behind its own cloud firewall; the
    failover finishes there (DNS on the first droplet); rollback deletes both droplets, their firewalls and their
    namespaces, and the lab cloud lists none."""
    from tests.lab_checks import app_records

    stack, state = do_stack(own_lab, hosts=2), tmp_path / "state"
    plan = cli(stack, state, "plan", "--to", "alt-do", "--json")
    assert plan.returncode == 0, plan.stderr
    alloc = next(s for s in last_json(plan, "steps")["steps"] if s["id"] == "allocate")
    assert alloc["params"]["count"] == 2 and alloc["params"]["provider"] == "do"
    host_row = next(r for r in last_json(plan, "resources")["resources"] if r["kind"] == "host")
    assert host_row["action"] == "create"
    assert host_row["detail"].startswith("2 x s-1vcpu-1gb (debian-12-x64) at fra1, 0.00893 USD/h each")
    assert cloud_state(own_lab)["droplets"] == []

    run = cli(stack, state, "failover", "--to", "alt-do", "--yes", "--stop-before", "prepare", "--json")
    outcome = last_json(run)
    assert outcome["status"] == "stopped", run.stdout[-3000:] + run.stderr[-3000:]
    droplets = cloud_state(own_lab)["droplets"]
    assert sorted(d["name"] for d in droplets) == ["microblog-alt-do", "microblog-alt-do-1"]
    assert all(d["status"] == "active" and {"liferaft", "liferaft-stack:microblog",
                                            f"liferaft-run:{outcome['run']}"} <= set(d["tags"]) for d in droplets)
    namespaces = [d["lab"]["netns"] for d in droplets]
    assert set(namespaces) <= set(netns_names())
    info = own_lab.info
    fws = {f["name"]: f for f in cloud_state(own_lab)["firewalls"]}
    assert sorted(fws) == ["liferaft-microblog-alt-do", "liferaft-microblog-alt-do-1"]
    rules = {r["ports"]: r["sources"]["addresses"] for r in fws["liferaft-microblog-alt-do"]["inbound_rules"]}
    second_ip = next(d for d in droplets if d["name"] == "microblog-alt-do-1")["networks"]["v4"][0]["ip_address"]
    assert rules == {"22": [f"{info.bridge_address}/32"], "8080": ["0.0.0.0/0", "::/0"],  # PostgreSQL: also the
                     "5432": sorted([f"{info.bridge_address}/32", f"{info.primary_address}/32",  # site's 2nd host
                                     f"{second_ip}/32"])}

    done = cli(stack, state, "resume", outcome["run"], "--json")
    assert last_json(done)["status"] == "done", done.stdout[-3000:] + done.stderr[-3000:]
    first = next(d for d in droplets if d["name"] == "microblog-alt-do")
    assert app_records(own_lab.info) == [first["networks"]["v4"][0]["ip_address"]]
    # both droplets run the app (the second against the first's database, through its firewall)
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://{second_ip}:8080/healthz", timeout=10) as r:
        assert json.loads(r.read()) == {"ok": True, "database": "ok", "bucket": "ok"}

    back = cli(stack, state, "rollback", outcome["run"], "--yes", "--json")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    after = cloud_state(own_lab)
    assert after["droplets"] == [] and after["firewalls"] == []
    assert not set(namespaces) & set(netns_names())
    assert app_records(own_lab.info) == [own_lab.info.primary_address]


def test_a_droplet_that_never_answers_is_deleted_and_the_run_resumes(own_lab: Lab, tmp_path: Path) -> None:
    """A new droplet that never boots within the bound: the allocate step deletes what it created and the run
    stops (exit 4, resumable); once droplets boot again, resume creates it anew; rollback deletes it."""
    stack, state = do_stack(own_lab, hosts=1), tmp_path / "state"
    cloud_state(own_lab, "/lab/settings", {"hold_boot": True})
    try:
        run = cli(stack, state, "failover", "--to", "alt-do", "--yes", "--stop-before", "prepare", "--json",
                  LIFERAFT_HOST_READY_TIMEOUT="3")
        assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
        assert "did not answer SSH" in run.stdout + run.stderr
        assert cloud_state(own_lab)["droplets"] == []
    finally:
        cloud_state(own_lab, "/lab/settings", {"hold_boot": False})
    runs = cli(stack, state, "runs", "--json")
    assert runs.returncode == 0, runs.stdout[-3000:] + runs.stderr[-3000:]
    outcome = json.loads(runs.stdout)[0]
    assert outcome["status"] == "failed", outcome
    resumed = cli(stack, state, "resume", outcome["run"], "--stop-before", "prepare", "--json")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert last_json(resumed)["status"] == "stopped", resumed.stdout[-2000:]
    droplets = cloud_state(own_lab)["droplets"]
    assert [(d["name"], d["status"]) for d in droplets] == [("microblog-alt-do", "active")]
    back = cli(stack, state, "rollback", outcome["run"], "--yes", "--json")
    assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    assert cloud_state(own_lab)["droplets"] == []


def test_a_revoked_token_exits_3_and_health_says_terminated(own_lab: Lab, tmp_path: Path) -> None:
    """A token DigitalOcean refuses (401 `unauthorized`): `providers check` exits 3 naming the provider and
    AuthRejected; `health` says the provider and its site are terminated (rule P1, the 401 as evidence) while the
    others stay healthy; the token is never shown."""
    bad = own_lab.info.directory / "secrets" / "do_token_revoked"
    bad.write_text("dop_v1_revoked-token")
    stack = do_stack(own_lab, hosts=1, token=f"file:{bad}")
    check = cli(stack, tmp_path / "state", "providers", "check", "--json", timeout=120)
    assert check.returncode == 3, check.stdout[-2000:] + check.stderr[-2000:]
    do = next(p for p in json.loads(check.stdout)["providers"] if p["name"] == "do")
    assert do["error"] == "AuthRejected" and "account 'do' was rejected" in do["message"], do
    out = cli(stack, tmp_path / "state", "health", "--json", timeout=180)
    report = json.loads(out.stdout)
    provider = report["providers"]["do"]
    assert out.returncode == 3, out.stdout[-3000:]
    assert (provider["verdict"], provider["rule"]) == ("terminated", "P1")
    assert any(e["status"] == 401 and e["error"] == "AuthRejected" for e in provider["evidence"])
    assert report["sites"]["alt-do"]["verdict"] == "terminated"
    assert report["providers"]["colo-a"]["verdict"] == "healthy"
    assert "revoked-token" not in check.stdout + check.stderr + out.stdout + out.stderr


def test_droplet_limit_stops_the_plan_before_anything_is_created(own_lab: Lab, tmp_path: Path) -> None:
    """The account's droplet_limit (GET /v2/account) against the droplets it has: `hosts: 2` with a limit of 1
    stops `plan` and `failover` naming droplet_limit, before any droplet is created."""
    stack, state = do_stack(own_lab, hosts=2), tmp_path / "state"
    ok = cli(stack, state, "plan", "--to", "alt-do", "--json", timeout=180)
    host_row = next(r for r in last_json(ok, "resources")["resources"] if r["kind"] == "host")
    assert "USD/h each before taxes" in host_row["detail"] and "droplet_limit: 0 of 10 used" in host_row["detail"]
    cloud_state(own_lab, "/lab/settings", {"droplet_limit": 1})
    try:
        for argv in (("plan", "--to", "alt-do", "--json"), ("failover", "--to", "alt-do", "--yes", "--json")):
            out = cli(stack, state, *argv, timeout=180)
            assert out.returncode != 0 and "droplet_limit is 1" in out.stdout + out.stderr, out.stdout + out.stderr
        assert cloud_state(own_lab)["droplets"] == []
    finally:
        cloud_state(own_lab, "/lab/settings", {"droplet_limit": 10})
