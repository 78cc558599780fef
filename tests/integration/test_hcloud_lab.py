"""The `hcloud` adapter runs Hetzner's own library against the lab's Hetzner cloud, which makes a real host per server.

One lab of the module's own (no example app): its `hcloud` server behind a fault proxy of the `hcloud` flavour.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import AuthRejected, QuotaExceeded, Throttled
from liferaft.lab.core import Lab
from liferaft.lab.hosts import lab_resources, netns_names
from liferaft.providers._errors import RetryPolicy, set_retry_policy
from liferaft.providers.base import Host, HostSpec, Provider
from liferaft.providers.registry import open_provider

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def hlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from tests.fixtures_lab import _require_lab_hosts

    _require_lab_hosts()
    the_lab = Lab(tmp_path_factory.mktemp("hlab"))
    try:
        the_lab.up(timeout=120, example=False, die_with_caller=True)
        yield the_lab
    finally:
        the_lab.down()


def _resolve(ref: str) -> str:
    kind, _, target = ref.partition(":")
    assert kind == "file"
    return Path(target).read_text().strip()


def hetzner(lab: Lab, state_dir: Path, *, token_file: Path | None = None) -> Provider:
    info = lab.info
    config = {"type": "hcloud", "endpoint": info.endpoints["hcloud"] + "/v1", "server_type": "cx22",
              "image": "debian-12", "location": "fsn1",
              "credentials": {"token": f"file:{token_file or info.secrets_dir / 'hcloud_token'}"},
              "private_key": f"file:{info.secrets_dir / 'id_ed25519'}"}
    return open_provider("hetzner", config, _resolve, state_dir=state_dir)


def cloud(lab: Lab, path: str = "/lab/state", body: dict[str, Any] | None = None) -> dict[str, Any]:
    from liferaft.lab.clouds.server import lab_control

    state = lab.read_state()
    assert state is not None
    d = state["servers"]["hcloud"]
    return lab_control(d["url"], Path(d["control_token_file"]), path, body)


def ssh(host: Host, known_hosts: Path, command: str = "hostname") -> subprocess.CompletedProcess[str]:
    assert host.ssh is not None and host.ssh.private_key_file
    known_hosts.write_text("".join(f"{line}\n" for line in host.ssh.known_hosts))
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
         "-o", "IdentitiesOnly=yes", "-i", host.ssh.private_key_file, f"{host.ssh.user}@{host.address}", command],
        capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)


def connect_from(netns: str, address: str, port: int) -> str:
    """A TCP connect from inside a network namespace: "open", "refused" (reached, nothing listens) or "dropped"."""
    code = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)\n"
            "    print('open')\nexcept ConnectionRefusedError:\n    print('refused')\nexcept OSError:\n"
            "    print('dropped')\n")
    r = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", code, address, str(port)],
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.strip()


def test_create_ssh_list_delete(hlab: Lab, tmp_path: Path) -> None:
    """A server created through `hcloud` is a real host: SSH with the pinned, injected host key works; its firewall
    is enforced; the list shows the stack's labels; delete removes the server and its namespace, and the cloud
    lists none."""
    compute = hetzner(hlab, tmp_path / "state").require("compute")
    t0 = time.monotonic()
    host = compute.create_host(HostSpec(name="alt-h-1", tags={"liferaft-stack": "microblog", "liferaft-run": "r1"},
                                        ports=(8080,), private_ports=(5432,), peers=(hlab.info.hosts["a"].address,)))
    ready = compute.wait_reachable(host, timeout=60)
    took = time.monotonic() - t0
    print(f"server create -> SSH login ready: {took:.2f} s")
    assert ready.state == "running" and ready.ssh is not None
    r = ssh(ready, tmp_path / "known_hosts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "alt-h-1"
    lab_server = next(s for s in cloud(hlab)["servers"] if s["id"] == int(host.id))
    assert ready.ssh.known_hosts == (f"{ready.address} {lab_server['lab']['host_public_key']}",)
    netns = lab_server["lab"]["netns"]
    assert netns in netns_names()

    listed = {h.id: h for h in compute.list_hosts()}
    assert listed[host.id].extra["labels"] == {"liferaft": "managed", "liferaft-stack": "microblog",
                                              "liferaft-run": "r1"}
    assert compute.create_host(HostSpec(name="alt-h-1")).id == host.id  # idempotent by name
    state_files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert state_files and not [p for p in state_files if "PRIVATE KEY" in p.read_text(errors="replace")]
    fw = next(f for f in cloud(hlab)["firewalls"] if f["name"] == "liferaft-alt-h-1")
    bridge = hlab.info.bridge_address
    a, b = hlab.info.hosts["a"], hlab.info.hosts["b"]
    assert [(r["port"], r["source_ips"]) for r in fw["rules"]] == [
        ("22", [f"{bridge}/32"]), ("5432", sorted([f"{bridge}/32", f"{a.address}/32"])),
        ("8080", ["0.0.0.0/0", "::/0"])]
    # enforced on the server (nftables in its namespace): SSH from the controller only, PostgreSQL from the
    # controller and the peer (host a), the service port from anyone; "refused" = let through, nothing listens
    assert [connect_from(a.netns, ready.address, p) for p in (22, 5432, 8080)] == ["dropped", "refused", "refused"]
    assert [connect_from(b.netns, ready.address, p) for p in (22, 5432, 8080)] == ["dropped", "dropped", "refused"]

    host_key = (Path(lab_server["lab"]["directory"]) / "upper/etc/ssh/liferaft_host_ed25519_key").read_text()
    assert "OPENSSH PRIVATE KEY" in host_key  # the injected private host key reached the server, and only there:
    body = host_key.splitlines()[1]
    logs = [p for p in hlab.directory.rglob("*.log")] + [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert logs and not [p for p in logs if body in p.read_text(errors="replace")]

    compute.destroy_host(host.id)
    compute.destroy_host(host.id)  # a missing server is not an error
    assert compute.list_hosts() == []
    state = cloud(hlab)
    assert state["servers"] == [] and state["firewalls"] == []
    assert netns not in netns_names()
    assert not [link for link in lab_resources(lab_server["lab"]["netns"].split("-")[1])["links"]
                if link.endswith(f"s{int(lab_server['lab']['address'].rsplit('.', 1)[1]) - 100}")]


def test_swapped_host_key_is_refused(hlab: Lab, tmp_path: Path) -> None:
    """A server that answers with another host key than the one liferaft injected (an image ignoring the user
    data, or a man in the middle) is refused: wait_reachable raises the host-key error, no session is opened."""
    compute = hetzner(hlab, tmp_path / "state").require("compute")
    cloud(hlab, "/lab/settings", {"apply_user_data_host_keys": False})
    try:
        host = compute.create_host(HostSpec(name="alt-h-swapped"))
        try:
            with pytest.raises(AuthRejected) as exc:
                compute.wait_reachable(host, timeout=30)
            assert exc.value.code == "HostKeyMismatch"
            lab_server = next(s for s in cloud(hlab)["servers"] if s["id"] == int(host.id))
            log = Path(lab_server["lab"]["directory"]) / "sshd.log"
            assert "Accepted publickey" not in log.read_text()
        finally:
            compute.destroy_host(host.id)
    finally:
        cloud(hlab, "/lab/settings", {"apply_user_data_host_keys": True})


def test_bad_token_is_auth_rejected_naming_the_account(hlab: Lab, tmp_path: Path) -> None:
    """An invalid token: the cloud's 401 `unauthorized` becomes AuthRejected naming the account (exit code 3)."""
    bad = tmp_path / "bad_token"
    bad.write_text("not-a-valid-token")
    provider = hetzner(hlab, tmp_path / "state", token_file=bad)
    with pytest.raises(AuthRejected) as exc:
        provider.require("compute").create_host(HostSpec(name="alt-h-denied"))
    assert exc.value.code == "unauthorized" and exc.value.status == 401
    assert "'hetzner'" in str(exc.value) and "not-a-valid-token" not in str(exc.value)
    with pytest.raises(AuthRejected):
        provider.require("account").probe()
    assert cloud(hlab)["servers"] == []


def test_quota_stops_before_any_host_is_created(hlab: Lab, tmp_path: Path) -> None:
    """The server limit reached: QuotaExceeded naming the limit; no server, no namespace was made."""
    compute = hetzner(hlab, tmp_path / "state").require("compute")
    before = set(netns_names())
    cloud(hlab, "/lab/settings", {"server_limit": 0})
    try:
        with pytest.raises(QuotaExceeded) as exc:
            compute.create_host(HostSpec(name="alt-h-over"))
    finally:
        cloud(hlab, "/lab/settings", {"server_limit": 10})
    assert exc.value.code == "resource_limit_exceeded" and "server_limit" in str(exc.value)
    state = cloud(hlab)
    assert state["servers"] == [] and state["firewalls"] == [] and set(netns_names()) == before


def test_rate_limit_is_retried_within_the_budget(hlab: Lab, tmp_path: Path) -> None:
    """429 `rate_limit_exceeded` (from the fault proxy, Hetzner's body) is retried by liferaft: 2 throttled
    answers then success; throttled beyond the budget, Throttled."""
    from liferaft.lab.proxy import FaultProxy

    state = hlab.read_state()
    assert state is not None
    proxy = FaultProxy.attach("hcloud", state["proxies"]["hcloud"]["workdir"])
    account = hetzner(hlab, tmp_path / "state").require("account")
    old = set_retry_policy(RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2))
    try:
        proxy.reset_stats()
        proxy.set_mode("throttle", count=2)
        assert account.probe().detail.startswith("3 locations")
        assert proxy.stats()["requests"] == 3
        proxy.set_mode("throttle", count=5)
        t0 = time.monotonic()
        with pytest.raises(Throttled) as exc:
            account.probe()
        assert exc.value.code == "rate_limit_exceeded"
        assert time.monotonic() - t0 < 3.0  # liferaft's budget, not the library's own backoff (up to 60 s a try)
        assert proxy.stats()["requests"] == 3 + 3
    finally:
        proxy.heal()
        set_retry_policy(old)


def test_offer_reads_type_image_and_hourly_price_without_creating(hlab: Lab, tmp_path: Path) -> None:
    """`offer` (what `plan` shows) reads the server type, image and hourly price from the API; an unknown server
    type is NotFound before anything is created."""
    from liferaft.errors import NotFound

    compute = hetzner(hlab, tmp_path / "state").require("compute")
    offer = compute.offer(HostSpec(name="alt-h-1"))
    assert offer == {"server_type": "cx22", "location": "fsn1", "image": "debian-12", "hourly_net": "0.0060",
                     "hourly_gross": "0.0071", "currency": "EUR"}
    with pytest.raises(NotFound):
        compute.offer(HostSpec(name="alt-h-1", size="cx999"))
    assert cloud(hlab)["servers"] == [] and cloud(hlab)["firewalls"] == []
