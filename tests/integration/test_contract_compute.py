"""Compute contract, written once, run against every compute adapter on a real lab server:
aws EC2 on moto, libcloud EC2 driver on moto (with the test-only namespace shim), ssh pool on lab hosts, and the
API clouds (digitalocean through libcloud's DigitalOcean driver, hcloud) on the lab's clouds, whose hosts are real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.errors import Conflict
from liferaft.providers.base import Compute, Host, HostSpec
from tests.contract_shims.libcloud_ec2 import moto_ec2_namespace
from tests.contract_shims.targets import (
    Target,
    aws_provider,
    cloud_provider,
    libcloud_ec2_provider,
    moto_image,
    ssh_provider,
    uid,
)

pytestmark = [pytest.mark.lab, pytest.mark.contract]


@pytest.fixture(params=["aws-ec2@moto", "libcloud-ec2@moto", "ssh@lab-hosts", "digitalocean@lab-cloud",
                        "hcloud@lab-cloud"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param.endswith("@lab-cloud"):
        provider, proxy = cloud_provider(request.param.split("@")[0], request.getfixturevalue("cloud_lab"), tmp_path)
        yield Target(request.param, provider, proxy, extra={"image": None, "size": None})
        return
    if request.param == "ssh@lab-hosts":
        hosts = request.getfixturevalue("lab_hosts")
        yield Target(request.param, ssh_provider("colo", hosts, tmp_path, names=("a", "b")),
                     extra={"image": None, "size": None, "pool": 2})
        return
    ep = request.getfixturevalue("aws_endpoint")
    extra = {"image": moto_image(ep), "size": "t2.micro"}
    if request.param == "aws-ec2@moto":
        yield Target(request.param, aws_provider(ep, tmp_path), ep.proxy, extra=extra)
        return
    with moto_ec2_namespace():  # moto's EC2 XML namespace lacks libcloud's trailing slash (lab-only quirk)
        yield Target(request.param, libcloud_ec2_provider(ep, tmp_path), ep.proxy, shim=moto_ec2_namespace,
                     extra=extra)


def _wait(compute: Compute, host: Host) -> Host:
    """Cloud hosts: wait until running (moto's instances have no network to connect to, and lab traffic stays
    on loopback and lab namespaces). Pool hosts: the full wait_reachable, SSH with the pinned key."""
    if hasattr(compute, "wait_running"):
        return compute.wait_running(host.id, timeout=30)  # type: ignore[no-any-return]
    return compute.wait_reachable(host, timeout=30)


def test_contract_create_is_idempotent_by_name(target: Target) -> None:
    """Creating the same spec name twice gives the same host; it is listed, runs, and destroy ends it
    (twice is fine)."""
    compute: Compute = target.provider.require("compute")
    spec = HostSpec(uid("web"), image=target.extra["image"], size=target.extra["size"])
    host = compute.create_host(spec)
    try:
        assert compute.create_host(spec).id == host.id
        assert host.name == spec.name
        assert host.id in {h.id for h in compute.list_hosts()}
        running = _wait(compute, host)
        assert running.state == "running" and running.address
    finally:
        compute.destroy_host(host.id)
    compute.destroy_host(host.id)
    assert all(h.state == "terminated" for h in compute.list_hosts() if h.id == host.id)


def test_contract_reachable_hosts_have_ssh_access(target: Target) -> None:
    """reachable_hosts (where a failover looks for the source host) lists only hosts with SSH access: a cloud's
    existing hosts, a pool's every host allocated or not."""
    compute: Compute = target.provider.require("compute")
    listed = {h.id for h in compute.list_hosts()}
    reachable = compute.reachable_hosts()
    assert all(h.ssh is not None and h.ssh.known_hosts for h in reachable)
    if target.extra.get("pool"):
        assert sorted(h.id for h in reachable) == ["a", "b"] and listed <= {h.id for h in reachable}
    else:
        assert {h.id for h in reachable} <= listed


def test_contract_ssh_pool_allocates_and_pins_host_keys(lab_hosts: object, tmp_path: Path) -> None:
    """The ssh pool allocates hosts until it is empty, then Conflict; wait_reachable proves SSH works with
    StrictHostKeyChecking and returns known_hosts lines of the pinned keys; release frees the host; allocations
    survive a new adapter (they live in the state dir)."""
    compute: Compute = ssh_provider("colo", lab_hosts, tmp_path, names=("a", "b")).require("compute")
    a = compute.create_host(HostSpec("one"))
    b = compute.create_host(HostSpec("two"))
    assert {a.id, b.id} == {"a", "b"}
    with pytest.raises(Conflict):
        compute.create_host(HostSpec("three"))
    ready = compute.wait_reachable(a, timeout=20)
    assert ready.ssh is not None and ready.ssh.known_hosts
    assert all(line.split()[0] == ready.address for line in ready.ssh.known_hosts)
    compute.destroy_host(a.id)
    again: Compute = ssh_provider("colo", lab_hosts, tmp_path, names=("a", "b")).require("compute")
    assert again.create_host(HostSpec("three")).id == "a"
    assert sorted(h.name for h in again.list_hosts()) == ["three", "two"]


def test_contract_aws_key_pair_is_imported_and_used(aws_endpoint: object, tmp_path: Path) -> None:
    """(aws) an SSH public key is imported as a key pair (idempotently) and new instances boot with it."""
    import subprocess

    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    compute = aws_provider(aws_endpoint, tmp_path).require("compute")
    name = uid("lr-key")
    compute.ensure_key_pair(name, (tmp_path / "id.pub").read_text())
    compute.ensure_key_pair(name, (tmp_path / "id.pub").read_text())
    host = compute.create_host(HostSpec(uid("keyed"), image=moto_image(aws_endpoint)))
    try:
        assert host.extra["key_name"] == name
    finally:
        compute.destroy_host(host.id)
