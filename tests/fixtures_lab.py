"""Host and whole-lab fixtures (owned by the lab-hosts work).

`lab_hosts`: three network-namespace hosts a, b, c with sshd, session-scoped.
`lab`: a whole lab (`Lab.up()` in a temporary directory), session-scoped, torn down in a finally block.
Both skip only when this machine cannot run lab hosts (not root, no netns permission), saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from liferaft.lab.core import Lab
    from liferaft.lab.hosts import LabHost


def _require_lab_hosts() -> None:
    from liferaft.lab.hosts import LabUnavailable, check_lab_possible

    try:
        check_lab_possible()
    except LabUnavailable as e:
        pytest.skip(f"lab hosts unavailable on this machine: {e}")


@dataclass(frozen=True)
class LabHostsHandle:
    """What tests get from `lab_hosts`: hosts by name and the files to reach them with."""

    hosts: dict[str, LabHost]
    known_hosts: Path
    client_key: Path
    bridge_address: str
    directory: Path

    def __getitem__(self, name: str) -> LabHost:
        return self.hosts[name]


@pytest.fixture(scope="session")
def lab_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHostsHandle]:
    """Three lab hosts (a, b, c) reachable over SSH with host keys checked."""
    _require_lab_hosts()
    from liferaft.lab.hosts import LabHosts

    hosts = LabHosts(directory=tmp_path_factory.mktemp("lab-hosts"), names=("a", "b", "c"))
    try:
        hosts.up(timeout=30)
        yield LabHostsHandle(hosts=dict(hosts.hosts), known_hosts=hosts.known_hosts, client_key=hosts.client_key,
                             bridge_address=hosts.bridge_address, directory=hosts.directory)
    finally:
        problems = hosts.down()
        if problems:
            raise AssertionError(f"lab hosts teardown left: {problems}")


def _whole_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_lab_hosts()
    from liferaft.lab.core import Lab

    the_lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        the_lab.up(timeout=300, die_with_caller=True)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A whole lab (servers, proxies, hosts, example app, stack file), up for the session."""
    yield from _whole_lab(tmp_path_factory)


@pytest.fixture(scope="session")
def cloud_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab without the example app, for its provider clouds (hcloud, digitalocean) and their fault proxies."""
    yield from _cloud_lab(tmp_path_factory)


@pytest.fixture(scope="module")
def own_cloud_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The same, of the module's own: for tests whose hosts must start as `lab up` leaves them, whatever the
    session's earlier modules did in the shared one."""
    yield from _cloud_lab(tmp_path_factory)


def _cloud_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _require_lab_hosts()
    from liferaft.lab.core import Lab

    the_lab = Lab(tmp_path_factory.mktemp("cloud-lab"))
    try:
        the_lab.up(timeout=120, example=False, die_with_caller=True)
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A whole lab of the module's own, for journeys that must start from a pristine primary (DNS on host a, no
    replication slot) whatever the session's earlier tests (cold failovers, cuts) left in the shared one."""
    yield from _whole_lab(tmp_path_factory)


def resolve(info: Any, fqdn: str) -> list[str]:
    """The A records of `fqdn` at the lab's authoritative server (what a client would be told); [] for none."""
    import dns.exception
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    host, port = info.dns_address
    r.nameservers, r.port, r.lifetime, r.cache = [host], port, 3.0, None
    try:
        return sorted(a.to_text() for a in r.resolve(fqdn, "A"))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as e:
        return [f"<{type(e).__name__}>"]


def without_worker(data: Any) -> Any:
    """The example stack (as loaded YAML) without its worker service and the worker's Redis keyspace and folder: for
    sites of `hosts: N` > 1. The worker is a one-host service (its Redis and its folder live on its host, and a stack
    file has no per-service placement yet), so a site of N hosts carries the web service with its database and
    bucket only."""
    data["services"].pop("worker", None)
    for kind in ("redis", "directories"):
        data["data"].pop(kind, None)
    return data
