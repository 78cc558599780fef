"""The `digitalocean` adapter runs libcloud's DigitalOcean driver against the lab's DigitalOcean cloud, which makes a
real host per droplet and enforces cloud firewalls with nftables in the host's namespace.

One lab of the module's own (no example app): its `digitalocean` server behind a fault proxy of that flavour.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import AuthRejected, NotFound, QuotaExceeded, Throttled
from liferaft.lab.core import Lab
from liferaft.lab.hosts import netns_names
from liferaft.providers._errors import RetryPolicy, set_retry_policy
from liferaft.providers.base import Host, HostSpec, Provider
from liferaft.providers.registry import open_provider

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def dlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from tests.fixtures_lab import _require_lab_hosts

    _require_lab_hosts()
    the_lab = Lab(tmp_path_factory.mktemp("dlab"))
    try:
        the_lab.up(timeout=120, example=False, die_with_caller=True)
        yield the_lab
    finally:
        the_lab.down()


def _resolve(ref: str) -> str:
    kind, _, target = ref.partition(":")
    assert kind == "file"
    return Path(target).read_text().strip()


def digitalocean(lab: Lab, state_dir: Path, *, token_file: Path | None = None) -> Provider:
    info = lab.info
    config = {"type": "digitalocean", "endpoint": info.endpoints["digitalocean"], "region": "fra1",
              "size": "s-1vcpu-1gb", "image": "debian-12-x64",
              "credentials": {"token": f"file:{token_file or info.secrets_dir / 'do_token'}"},
              "private_key": f"file:{info.secrets_dir / 'id_ed25519'}"}
    return open_provider("do", config, _resolve, state_dir=state_dir)


def cloud(lab: Lab, path: str = "/lab/state", body: dict[str, Any] | None = None) -> dict[str, Any]:
    from liferaft.lab.clouds.server import lab_control

    state = lab.read_state()
    assert state is not None
    d = state["servers"]["digitalocean"]
    return lab_control(d["url"], Path(d["control_token_file"]), path, body)


def ssh(host: Host, known_hosts: Path, command: str = "hostname") -> subprocess.CompletedProcess[str]:
    assert host.ssh is not None and host.ssh.private_key_file
    known_hosts.write_text("".join(f"{line}\n" for line in host.ssh.known_hosts))
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
         "-o", "IdentitiesOnly=yes", "-i", host.ssh.private_key_file, f"{host.ssh.user}@{host.address}", command],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)


CONNECT = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
           "    print('open')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept OSError:\n"
           "    print('dropped')\n")


def connect_from(netns: str, address: str, port: int) -> str:
    """A TCP connect from inside a network namespace: "open", "refused" (reached, nothing listens) or "dropped"."""
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CONNECT, address, str(port)],
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


def test_create_ssh_tags_firewall_list_delete(dlab: Lab, tmp_path: Path) -> None:
    """A droplet created through libcloud is a real host: SSH with the pinned, injected host key works; it carries
    the stack's and the run's tags; its cloud firewall is enforced by nftables on the host (SSH from the controller
    only, PostgreSQL from the controller and the peer, the service port from anyone, outbound open); delete removes
    the droplet, its firewall, its tag and its namespace."""
    compute = digitalocean(dlab, tmp_path / "state").require("compute")
    info = dlab.info
    a, b = info.hosts["a"], info.hosts["b"]
    t0 = time.monotonic()
    host = compute.create_host(HostSpec(name="alt-d-1", tags={"liferaft-stack": "microblog", "liferaft-run": "r1"},
                                        ports=(8080,), private_ports=(5432,), peers=(a.address,)))
    ready = compute.wait_reachable(host, timeout=60)
    print(f"droplet create -> SSH login ready: {time.monotonic() - t0:.2f} s")
    assert ready.state == "running" and ready.ssh is not None
    r = ssh(ready, tmp_path / "known_hosts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alt-d-1"
    lab_droplet = next(d for d in cloud(dlab)["droplets"] if d["id"] == int(host.id))
    assert ready.ssh.known_hosts == (f"{ready.address} {lab_droplet['lab']['host_public_key']}",)
    netns = lab_droplet["lab"]["netns"]
    assert netns in netns_names()

    tagged = compute.list_hosts(tag_name="liferaft-stack:microblog")
    assert [h.id for h in tagged] == [host.id]
    assert sorted(tagged[0].extra["tags"]) == sorted(["liferaft", "liferaft-host:alt-d-1", "liferaft-stack:microblog",
                                                      "liferaft-run:r1"])
    assert compute.list_hosts(tag_name="liferaft-stack:other") == []
    assert compute.create_host(HostSpec(name="alt-d-1")).id == host.id  # idempotent by name
    state_files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert state_files and not [p for p in state_files if "PRIVATE KEY" in p.read_text(errors="replace")]

    fw = next(f for f in cloud(dlab)["firewalls"] if f["name"] == "liferaft-alt-d-1")
    bridge = info.bridge_address
    assert fw["tags"] == ["liferaft-host:alt-d-1"]
    assert [(r["ports"], r["sources"]["addresses"]) for r in fw["inbound_rules"]] == [
        ("22", [f"{bridge}/32"]), ("5432", sorted([f"{bridge}/32", f"{a.address}/32"])),
        ("8080", ["0.0.0.0/0", "::/0"])]
    # enforced on the droplet's host (nftables in its namespace): "refused" = let through, nothing listens there
    assert [connect_from(a.netns, ready.address, p) for p in (22, 5432, 8080)] == ["dropped", "refused", "refused"]
    assert [connect_from(b.netns, ready.address, p) for p in (22, 5432, 8080)] == ["dropped", "dropped", "refused"]
    ruleset = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "liferaft_fw"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert "policy drop" in ruleset and f"ip saddr {bridge} tcp dport 22 accept" in ruleset
    # outbound is open (a DigitalOcean firewall without outbound rules would drop it): the droplet reaches host b
    out = ssh(ready, tmp_path / "known_hosts", f"python3 -c {shlex.quote(CONNECT)} {b.address} 22")
    assert out.stdout.strip() == "open", out.stderr

    host_key = (Path(lab_droplet["lab"]["directory"]) / "upper/etc/ssh/liferaft_host_ed25519_key").read_text()
    assert "OPENSSH PRIVATE KEY" in host_key  # the injected private host key reached the host, and only there:
    body = host_key.splitlines()[1]
    logs = [p for p in dlab.directory.rglob("*.log")] + state_files
    assert logs and not [p for p in logs if body in p.read_text(errors="replace")]

    compute.destroy_host(host.id)
    compute.destroy_host(host.id)  # a missing droplet is not an error
    assert compute.list_hosts() == []
    state = cloud(dlab)
    assert state["droplets"] == [] and state["firewalls"] == [] and "liferaft-host:alt-d-1" not in state["tags"]
    assert netns not in netns_names()


def test_swapped_host_key_is_refused(dlab: Lab, tmp_path: Path) -> None:
    """A droplet that answers with another host key than the one liferaft injected is refused: wait_reachable
    raises the host-key error and no session is opened."""
    compute = digitalocean(dlab, tmp_path / "state").require("compute")
    cloud(dlab, "/lab/settings", {"apply_user_data_host_keys": False})
    try:
        host = compute.create_host(HostSpec(name="alt-d-swapped"))
        try:
            with pytest.raises(AuthRejected) as exc:
                compute.wait_reachable(host, timeout=30)
            assert exc.value.code == "HostKeyMismatch"
            lab_droplet = next(d for d in cloud(dlab)["droplets"] if d["id"] == int(host.id))
            assert "Accepted publickey" not in (Path(lab_droplet["lab"]["directory"]) / "sshd.log").read_text()
        finally:
            compute.destroy_host(host.id)
    finally:
        cloud(dlab, "/lab/settings", {"apply_user_data_host_keys": True})
    assert cloud(dlab)["droplets"] == []


def test_bad_token_is_auth_rejected_naming_the_account(dlab: Lab, tmp_path: Path) -> None:
    """An invalid token: DigitalOcean's 401 `{"id": "unauthorized", ...}` becomes AuthRejected naming the account
    (the CLI's exit 3: test_do_failover_lab), the token never shown; nothing is created."""
    bad = tmp_path / "bad_token"
    bad.write_text("dop_v1_not-a-valid-token")
    provider = digitalocean(dlab, tmp_path / "state", token_file=bad)
    with pytest.raises(AuthRejected) as exc:
        provider.require("compute").create_host(HostSpec(name="alt-d-denied"))
    assert exc.value.code == "unauthorized" and exc.value.status == 401
    assert "'do'" in str(exc.value) and "not-a-valid-token" not in str(exc.value)
    with pytest.raises(AuthRejected):
        provider.require("account").probe()
    assert cloud(dlab)["droplets"] == [] and cloud(dlab)["firewalls"] == []


def test_quota_422_stops_before_any_droplet_is_created(dlab: Lab, tmp_path: Path) -> None:
    """The droplet limit reached (422 "... will exceed your droplet limit"): QuotaExceeded naming the droplet
    limit; no droplet, no namespace, and the firewall and tag made for it are removed again."""
    compute = digitalocean(dlab, tmp_path / "state").require("compute")
    before = set(netns_names())
    cloud(dlab, "/lab/settings", {"droplet_limit": 0})
    try:
        with pytest.raises(QuotaExceeded) as exc:
            compute.create_host(HostSpec(name="alt-d-over"))
    finally:
        cloud(dlab, "/lab/settings", {"droplet_limit": 10})
    assert exc.value.status == 422 and exc.value.code == "droplet_limit" and "droplet limit" in str(exc.value)
    state = cloud(dlab)
    assert state["droplets"] == [] and state["firewalls"] == [] and set(netns_names()) == before
    assert "liferaft-host:alt-d-over" not in state["tags"]


def test_rate_limit_429_is_retried_within_the_budget(dlab: Lab, tmp_path: Path) -> None:
    """429 `too_many_requests` with DigitalOcean's ratelimit-* headers (from the fault proxy) is retried by
    liferaft: 2 throttled answers then success; throttled beyond the budget, Throttled, quickly."""
    from liferaft.lab.proxy import FaultProxy

    state = dlab.read_state()
    assert state is not None
    proxy = FaultProxy.attach("digitalocean", state["proxies"]["digitalocean"]["workdir"])
    account = digitalocean(dlab, tmp_path / "state").require("account")
    old = set_retry_policy(RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2))
    try:
        proxy.reset_stats()
        proxy.set_mode("throttle", count=2)
        assert "droplet limit 10" in account.probe().detail
        assert proxy.stats()["requests"] == 3
        proxy.set_mode("throttle", count=5)
        t0 = time.monotonic()
        with pytest.raises(Throttled) as exc:
            account.probe()
        assert exc.value.code == "too_many_requests" and exc.value.status == 429
        assert time.monotonic() - t0 < 3.0
        assert proxy.stats()["requests"] == 3 + 3
    finally:
        proxy.heal()
        set_retry_policy(old)


def test_offer_reads_size_price_and_droplet_limit_without_creating(dlab: Lab, tmp_path: Path) -> None:
    """`offer` (what `plan` shows) reads the size's hourly price, the image and the account's droplet limit from
    the API; an unknown size or image is NotFound before anything is created."""
    compute = digitalocean(dlab, tmp_path / "state").require("compute")
    offer = compute.offer(HostSpec(name="alt-d-1"))
    assert offer == {"server_type": "s-1vcpu-1gb", "location": "fra1", "image": "debian-12-x64",
                     "hourly_net": "0.00893", "hourly_gross": "0.00893", "currency": "USD", "taxes": "excluded",
                     "droplet_limit": 10, "droplets": 0}
    with pytest.raises(NotFound):
        compute.offer(HostSpec(name="alt-d-1", size="s-99vcpu"))
    with pytest.raises(NotFound):
        compute.offer(HostSpec(name="alt-d-1", image="plan9-x64"))
    assert cloud(dlab)["droplets"] == [] and cloud(dlab)["firewalls"] == []


def test_droplets_and_hetzner_servers_live_side_by_side(dlab: Lab, tmp_path: Path) -> None:
    """The lab's two clouds share one bridge: a droplet and a Hetzner server made at the same time get their own
    addresses and namespaces (DigitalOcean's from .200, Hetzner's from .100), both answer SSH, both go on delete."""
    info = dlab.info
    hetzner = open_provider("hetzner", {
        "type": "hcloud", "endpoint": info.endpoints["hcloud"] + "/v1", "server_type": "cx22", "image": "debian-12",
        "credentials": {"token": f"file:{info.secrets_dir / 'hcloud_token'}"},
        "private_key": f"file:{info.secrets_dir / 'id_ed25519'}"}, _resolve, state_dir=tmp_path / "h").require("compute")
    do = digitalocean(dlab, tmp_path / "d").require("compute")
    before = set(netns_names())
    made = [(c, c.create_host(HostSpec(name=n))) for c, n in ((do, "side-d"), (hetzner, "side-h"))]
    try:
        ready = [c.wait_reachable(h, timeout=60) for c, h in made]
        last_octets = [int(str(r.address).rsplit(".", 1)[1]) for r in ready]
        assert 200 <= last_octets[0] < 250 and 100 <= last_octets[1] < 200
        assert len(set(netns_names()) - before) == 2
        for r in ready:
            assert ssh(r, tmp_path / f"kh-{r.name}").stdout.strip() == r.name
    finally:
        for c, h in made:
            c.destroy_host(h.id)
    assert cloud(dlab)["droplets"] == [] and set(netns_names()) == before


def test_a_locked_account_is_auth_rejected(dlab: Lab, tmp_path: Path) -> None:
    """/v2/account says `status: locked` (the token still works): the account probe says AuthRejected with
    DigitalOcean's status message, so `health` counts the provider as terminated, not healthy."""
    account = digitalocean(dlab, tmp_path / "state").require("account")
    cloud(dlab, "/lab/settings", {"account_status": "locked", "status_message": "Account locked: abuse report"})
    try:
        with pytest.raises(AuthRejected) as exc:
            account.probe()
    finally:
        cloud(dlab, "/lab/settings", {"account_status": "active"})
    assert exc.value.code == "locked" and "abuse report" in str(exc.value)
    assert "droplet limit" in account.probe().detail


def test_a_create_whose_answer_is_lost_makes_one_droplet(dlab: Lab, tmp_path: Path) -> None:
    """The droplet is made but its creation is answered 500 (a lost answer): liferaft's retry finds it by its tag
    instead of creating a second one of the same name (DigitalOcean would allow it); it is reachable with the key
    pinned before the first attempt."""
    compute = digitalocean(dlab, tmp_path / "state").require("compute")
    cloud(dlab, "/lab/settings", {"lose_create_answers": 1})
    try:
        host = compute.create_host(HostSpec(name="alt-d-lost"))
    finally:
        cloud(dlab, "/lab/settings", {"lose_create_answers": 0})
    try:
        assert [str(d["id"]) for d in cloud(dlab)["droplets"] if d["name"] == "alt-d-lost"] == [host.id]
        ready = compute.wait_reachable(host, timeout=60)
        assert ssh(ready, tmp_path / "known_hosts").stdout.strip() == "alt-d-lost"
    finally:
        compute.destroy_host(host.id)
    assert cloud(dlab)["droplets"] == []
