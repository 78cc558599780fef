"""Contract targets: every adapter opened THROUGH THE REGISTRY from stack-shaped configs, against lab servers.

Each target says how to fault its endpoint (the lab proxy in deny/down/throttle; for ssh: a wrong key, a cut
host), so the contract tests are written once and parametrised over adapters.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.providers.base import Provider
from liferaft.providers.registry import open_provider


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def resolver(secrets: dict[str, str]) -> Callable[[str], str]:
    """Stands in for Stack.secret: refs -> values, only for the refs this config uses."""
    return lambda ref: secrets[ref]


@dataclass
class Target:
    """One adapter under contract."""

    id: str
    provider: Provider
    proxy: Any = None  # liferaft.lab.proxy.FaultProxy in front of the endpoint, None for local/ssh
    multipart_etag: bool = False  # multipart uploads produce "-N" ETags (proves multipart was used)
    shim: Callable[[], AbstractContextManager[None]] = nullcontext
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ builders
def aws_provider(endpoint: Any, state_dir: Path) -> Provider:
    config = {"type": "aws", "region": endpoint.region, "endpoint": endpoint.url,
              "credentials": {"access_key_id": "env:AWS_KEY", "secret_access_key": "env:AWS_SECRET"}}
    return open_provider("aws", config, resolver({"env:AWS_KEY": endpoint.access_key,
                                                   "env:AWS_SECRET": endpoint.secret_key}), state_dir=state_dir)


def libcloud_s3_provider(name: str, endpoint: Any, state_dir: Path) -> Provider:
    config = {"type": "libcloud",
              "storage": {"driver": "s3", "host": endpoint.address, "port": endpoint.port, "secure": False},
              "credentials": {"key": "env:KEY", "secret": "env:SECRET"}}
    return open_provider(name, config, resolver({"env:KEY": endpoint.access_key, "env:SECRET": endpoint.secret_key}),
                         state_dir=state_dir)


def libcloud_local_provider(path: Path, state_dir: Path) -> Provider:
    config = {"type": "libcloud", "storage": {"driver": "local", "path": str(path)}}
    return open_provider("local", config, resolver({}), state_dir=state_dir)


def libcloud_pdns_provider(endpoint: Any, state_dir: Path) -> Provider:
    config = {"type": "libcloud",
              "dns": {"driver": "powerdns", "host": endpoint.address, "port": endpoint.port, "secure": False,
                      "api_version": "v1"},
              "credentials": {"key": "env:PDNS_KEY"}}
    return open_provider("dnshost", config, resolver({"env:PDNS_KEY": endpoint.api_key}), state_dir=state_dir)


def libcloud_ec2_provider(endpoint: Any, state_dir: Path) -> Provider:
    config = {"type": "libcloud",
              "compute": {"driver": "ec2", "host": endpoint.address, "port": endpoint.port, "secure": False,
                          "region": endpoint.region, "signature_version": "4"},
              "credentials": {"key": "env:KEY", "secret": "env:SECRET"}}
    return open_provider("lc-ec2", config, resolver({"env:KEY": endpoint.access_key,
                                                      "env:SECRET": endpoint.secret_key}), state_dir=state_dir)


def ssh_provider(name: str, lab_hosts: Any, state_dir: Path, *, names: tuple[str, ...] = ("a", "b", "c"),
                 key_file: Path | None = None, host_keys: dict[str, str] | None = None) -> Provider:
    hosts = [{"name": n, "address": lab_hosts[n].address, "port": lab_hosts[n].port,
              "host_keys": [(host_keys or {}).get(n, lab_hosts[n].host_public_key)]} for n in names]
    config = {"type": "ssh", "user": "root", "private_key": f"file:{key_file or lab_hosts.client_key}", "hosts": hosts}
    provider = open_provider(name, config, resolver({}), state_dir=state_dir)
    provider.compute.connect_timeout = 2  # type: ignore[union-attr]  # keep "down" tests fast
    return provider


def cloud_provider(kind: str, cloud_lab: Any, state_dir: Path) -> tuple[Provider, Any]:
    """`digitalocean` (libcloud's DigitalOcean driver) or `hcloud` against the lab's cloud of that kind, and the
    fault proxy in front of it."""
    from liferaft.lab.proxy import FaultProxy

    info, state = cloud_lab.info, cloud_lab.read_state()
    token = (info.secrets_dir / ("do_token" if kind == "digitalocean" else "hcloud_token")).read_text().strip()
    config: dict[str, Any] = {"type": kind, "credentials": {"token": "env:TOKEN"},
                              "private_key": f"file:{info.secrets_dir / 'id_ed25519'}"}
    if kind == "digitalocean":
        config.update(endpoint=info.endpoints["digitalocean"])
    else:
        config.update(endpoint=info.endpoints["hcloud"] + "/v1", server_type="cx22", image="debian-12")
    provider = open_provider(kind, config, resolver({"env:TOKEN": token}), state_dir=state_dir)
    return provider, FaultProxy.attach(kind, state["proxies"][kind]["workdir"])


_IMAGES: dict[str, str] = {}


def moto_image(endpoint: Any) -> str:
    """One of moto's built-in AMIs, found by a name filter (listing all 1,177 takes ~3 s on a busy machine)."""
    if endpoint.server.url not in _IMAGES:
        ec2 = endpoint.client("ec2", direct=True)
        images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*"]}])["Images"]
        images = images or ec2.describe_images()["Images"]
        _IMAGES[endpoint.server.url] = str(images[0]["ImageId"])
    return _IMAGES[endpoint.server.url]


@contextmanager
def faulted(proxy: Any, mode: str, **kwargs: Any) -> Iterator[None]:
    proxy.set_mode(mode, **kwargs)
    try:
        yield
    finally:
        proxy.set_mode("forward")
