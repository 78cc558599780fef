"""Failover into a Hetzner-like site that starts with no servers: the allocate step creates the site's `hosts: N`
servers through `hcloud` against the lab cloud, and rollback deletes every one (the lab cloud lists none)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    d = state["servers"]["hcloud"]
    return lab_control(d["url"], Path(d["control_token_file"]), path, body)


def hcloud_stack(lab: Lab, hosts: int, token: str = "file:secrets/hcloud_token", *, tls: bool = False) -> Path:
    """The lab's stack (`without_worker`) plus a `hetzner` provider (the lab cloud, through its fault proxy) and a site
    `alt-h` on it with `hosts: N`; written next to the lab's stack so its `file:secrets/...` references resolve. `tls`:
    the web service answers HTTPS (same port) with a certificate from the lab's ACME server (pebble, DNS-01 at
    PowerDNS), its health check verifying it by name against pebble's root."""
    info = lab.info
    yaml = YAML()
    data = without_worker(yaml.load(info.stack_file.read_text()))
    if tls:
        assert info.acme is not None, "the lab runs no ACME server"
        web = data["services"]["web"]
        web["tls"] = {"acme": {"directory": info.acme["directory"], "email": "ops@microblog.test",
                               "ca_bundle": info.acme["ca_bundle"]}, "trust": info.acme["issuer_ca"]}
        web["health"]["scheme"] = "https"
    data["providers"]["hetzner"] = {
        "type": "hcloud", "endpoint": info.endpoints["hcloud"] + "/v1", "location": "fsn1", "server_type": "cx22",
        "image": "debian-12", "credentials": {"token": token},
        "private_key": "file:secrets/id_ed25519"}
    data["sites"]["alt-h"] = {"compute": "hetzner", "objects": "objstore", "hosts": hosts}
    data["alternates"].append("alt-h")
    path = info.directory / "liferaft-hcloud.yaml"
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


def test_failover_into_new_hetzner_account_and_rollback_deletes_every_server(own_lab: Lab, tmp_path: Path) -> None:
    """hosts: 2 at an hcloud site that has no servers: `plan` says 2 hosts; the allocate step creates 2 servers
    labelled with the stack and the run; the failover finishes there (DNS on the first server, the app answers);
    rollback deletes both servers and their namespaces, and the lab cloud lists none.

    The web service answers HTTPS there (issue 23's done-when): a certificate the lab's ACME server (pebble) issued
    through a DNS-01 challenge at the lab's PowerDNS, on both servers, each running the app (prepared and deployed on
    both; the database on the first); a client resolving the service's name at the lab's DNS server completes a TLS
    handshake that verifies pebble's chain and the name."""
    import ssl

    from liferaft.steps.tls import https_get
    from liferaft.steps.verify import resolve
    from tests.lab_checks import app_records

    info = own_lab.info
    stack, state = hcloud_stack(own_lab, hosts=2, tls=True), tmp_path / "state"
    plan = cli(stack, state, "plan", "--to", "alt-h", "--json")
    assert plan.returncode == 0, plan.stderr
    alloc = next(s for s in last_json(plan, "steps")["steps"] if s["id"] == "allocate")
    assert alloc["params"]["count"] == 2 and alloc["params"]["provider"] == "hetzner"
    tls_step = next(s for s in last_json(plan, "steps")["steps"] if s["kind"] == "tls.certificate")
    assert tls_step["params"]["service"] == "web"
    host_row = next(r for r in last_json(plan, "resources")["resources"] if r["kind"] == "host")
    assert host_row["action"] == "create"
    assert host_row["detail"].startswith("2 x cx22 (debian-12) at fsn1, 0.0071 EUR/h each")  # the lab cloud's price
    assert cloud_state(own_lab)["servers"] == []

    run = cli(stack, state, "failover", "--to", "alt-h", "--yes", "--stop-before", "prepare", "--json")
    outcome = last_json(run)
    assert outcome["status"] == "stopped", run.stdout + run.stderr
    servers = cloud_state(own_lab)["servers"]
    assert sorted(s["name"] for s in servers) == ["microblog-alt-h", "microblog-alt-h-1"]
    assert all(s["status"] == "running" and s["labels"]["liferaft-stack"] == "microblog"
               and s["labels"]["liferaft-run"] == outcome["run"] for s in servers)
    namespaces = [s["lab"]["netns"] for s in servers]
    assert set(namespaces) <= set(netns_names())
    rules = {r["port"]: r["source_ips"] for f in cloud_state(own_lab)["firewalls"] if f["name"] == "liferaft-microblog-alt-h"
             for r in f["rules"]}  # SSH from the controller; PostgreSQL from it, the source host and the site's
    second_ip = next(s for s in servers if s["name"] == "microblog-alt-h-1")["public_net"]["ipv4"]["ip"]  # 2nd host
    assert rules == {"22": [f"{info.bridge_address}/32"], "8080": ["0.0.0.0/0", "::/0"],
                     "5432": sorted([f"{info.bridge_address}/32", f"{info.primary_address}/32", f"{second_ip}/32"])}

    done = cli(stack, state, "resume", outcome["run"], "--json")
    assert last_json(done)["status"] == "done", done.stdout[-3000:] + done.stderr[-3000:]
    first = next(s for s in servers if s["name"] == "microblog-alt-h")
    assert app_records(own_lab.info) == [first["public_net"]["ipv4"]["ip"]]

    # HTTPS by DNS name: resolve at the lab's DNS server, handshake verifying pebble's chain and the name
    fqdn, issuer_ca = info.app_fqdn, str(info.acme["issuer_ca"])  # type: ignore[index]
    addresses = resolve(fqdn, "A", info.dns_server)
    assert addresses == [first["public_net"]["ipv4"]["ip"]]
    status, peer = https_get(addresses[0], 8080, "/healthz", fqdn, cafile=issuer_ca, timeout=10)
    assert status == 200 and ("DNS", fqdn) in peer["subjectAltName"]
    assert any("Pebble" in v for rdn in peer["issuer"] for _, v in rdn), peer["issuer"]
    with pytest.raises(ssl.SSLCertVerificationError):  # the name is checked
        https_get(addresses[0], 8080, "/healthz", "other.microblog.test", cafile=issuer_ca, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):  # the chain is checked (pebble's root, not any CA)
        https_get(addresses[0], 8080, "/healthz", fqdn, cafile=str(info.acme["ca_bundle"]), timeout=10)  # type: ignore[index]
    # the second server is prepared, holds the same certificate and runs the app against the first's database
    status, peer2 = https_get(second_ip, 8080, "/healthz", fqdn, cafile=issuer_ca, timeout=10)
    assert status == 200 and peer2["serialNumber"] == peer["serialNumber"]
    journal = last_json(cli(stack, state, "show", outcome["run"], "--json"), "steps")
    cert = next(s for s in journal["steps"] if s["kind"] == "tls.certificate")["result"]
    assert cert["action"] == "issued" and sorted(cert["hosts"]) == ["microblog-alt-h", "microblog-alt-h-1"]
    deploy = next(s for s in journal["steps"] if s["step"] == "deploy-web")["result"]
    assert deploy["hosts"] == ["microblog-alt-h", "microblog-alt-h-1"]

    # `health` at the moved stack (alt-h now its primary): each server's certificate expiry, under the site
    yaml = YAML()
    moved_data = yaml.load(stack.read_text())
    moved_data["primary"], moved_data["alternates"] = "alt-h", ["primary", "alt-b"]
    moved = stack.with_name("liferaft-hcloud-moved.yaml")
    with moved.open("w") as f:
        yaml.dump(moved_data, f)
    health = cli(moved, state, "health", "--json", timeout=180)
    certs = json.loads(health.stdout)["sites"]["alt-h"]["certificates"]
    assert sorted(c["endpoint"] for c in certs) == sorted(f"{ip}:8080" for ip in (addresses[0], second_ip)), certs
    assert all(c["days_left"] > 1 and c["not_after"] == peer["notAfter"] for c in certs), certs

    back = cli(stack, state, "rollback", outcome["run"], "--yes", "--json")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert cloud_state(own_lab)["servers"] == []
    assert not set(namespaces) & set(netns_names())
    assert app_records(own_lab.info) == [own_lab.info.primary_address]


def test_a_server_that_never_answers_is_deleted_and_the_run_resumes(own_lab: Lab, tmp_path: Path) -> None:
    """A new server that never boots within the bound: the allocate step deletes what it created and the run
    stops (exit 4, resumable); once servers boot again, resume creates it anew; rollback deletes it."""
    stack, state = hcloud_stack(own_lab, hosts=1), tmp_path / "state"
    cloud_state(own_lab, "/lab/settings", {"hold_boot": True})
    try:
        run = cli(stack, state, "failover", "--to", "alt-h", "--yes", "--stop-before", "prepare", "--json",
                  LIFERAFT_HOST_READY_TIMEOUT="3")
        assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
        assert "did not answer SSH" in run.stdout + run.stderr
        assert cloud_state(own_lab)["servers"] == []
    finally:
        cloud_state(own_lab, "/lab/settings", {"hold_boot": False})
    runs = cli(stack, state, "runs", "--json")
    assert runs.returncode == 0, runs.stdout[-3000:] + runs.stderr[-3000:]
    outcome = json.loads(runs.stdout)[0]
    assert outcome["status"] == "failed", outcome
    resumed = cli(stack, state, "resume", outcome["run"], "--stop-before", "prepare", "--json")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert last_json(resumed)["status"] == "stopped", resumed.stdout[-2000:]
    servers = cloud_state(own_lab)["servers"]
    assert [(s["name"], s["status"]) for s in servers] == [("microblog-alt-h", "running")]
    back = cli(stack, state, "rollback", outcome["run"], "--yes", "--json")
    assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    assert cloud_state(own_lab)["servers"] == []


def test_health_says_terminated_when_the_hetzner_token_is_refused(own_lab: Lab, tmp_path: Path) -> None:
    """`liferaft health` with a token the cloud refuses (401 `unauthorized`): the hetzner provider is terminated
    (rule P1, the 401 as evidence), its site too, exit 3; the other providers stay healthy."""
    bad = own_lab.info.directory / "secrets" / "hcloud_token_revoked"
    bad.write_text("revoked-token")
    stack = hcloud_stack(own_lab, hosts=1, token=f"file:{bad}")
    out = cli(stack, tmp_path / "state", "health", "--json", timeout=180)
    report = json.loads(out.stdout)
    hetzner = report["providers"]["hetzner"]
    assert out.returncode == 3, out.stdout[-3000:]
    assert (hetzner["verdict"], hetzner["rule"]) == ("terminated", "P1")
    assert any(e["status"] == 401 and e["error"] == "AuthRejected" for e in hetzner["evidence"])
    assert report["sites"]["alt-h"]["verdict"] == "terminated"
    assert report["providers"]["colo-a"]["verdict"] == "healthy"
    assert "revoked-token" not in out.stdout + out.stderr


def test_quota_stops_before_any_server_is_created(own_lab: Lab, tmp_path: Path) -> None:
    """The project's server limit, checked before acting: with the stack's `server_limit: 2` and `hosts: 3`, `plan`
    and `failover` stop naming server_limit and nothing is created; with no `server_limit` in the stack (Hetzner's
    API does not publish it) the lab cloud refuses the second server with Hetzner's 403 resource_limit_exceeded:
    the run stops naming it and the server it had made is deleted -- the lab cloud lists none either way."""
    yaml = YAML()
    stack, state = hcloud_stack(own_lab, hosts=3), tmp_path / "state"
    data = yaml.load(stack.read_text())
    data["providers"]["hetzner"]["server_limit"] = 2
    with stack.open("w") as f:
        yaml.dump(data, f)
    plan = cli(stack, state, "plan", "--to", "alt-h", "--json", timeout=180)
    assert plan.returncode != 0 and "server_limit is 2" in plan.stdout + plan.stderr, plan.stdout + plan.stderr
    run = cli(stack, state, "failover", "--to", "alt-h", "--yes", "--json", timeout=180)
    assert run.returncode != 0 and "server_limit is 2" in run.stdout + run.stderr, run.stdout + run.stderr
    assert cloud_state(own_lab)["servers"] == []

    stack = hcloud_stack(own_lab, hosts=2)  # the limit unknown to liferaft: the vendor's refusal stops it
    ok = cli(stack, state, "plan", "--to", "alt-h", "--json", timeout=180)
    host_row = next(r for r in last_json(ok, "resources")["resources"] if r["kind"] == "host")
    assert "server_limit: not published by the provider (0 in use)" in host_row["detail"]
    assert "0.0142 EUR/h for all 2" in host_row["detail"]
    cloud_state(own_lab, "/lab/settings", {"server_limit": 1})
    try:
        run = cli(stack, state, "failover", "--to", "alt-h", "--yes", "--stop-before", "prepare", "--json")
        assert run.returncode != 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "resource_limit_exceeded (server_limit)" in run.stdout + run.stderr, run.stdout[-2000:]
        assert cloud_state(own_lab)["servers"] == []
    finally:
        cloud_state(own_lab, "/lab/settings", {"server_limit": 10})
