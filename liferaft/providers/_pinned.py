"""Pinned host keys for servers liferaft creates through an API, and the verified first login (hcloud, digitalocean).

liferaft generates each new server's host key and injects it through cloud-init user data (`_cloudinit`); the public
half is pinned here, by server name, before the server exists, so the very first SSH connection is already checked.
`login` returns only after a real `ssh true` with that pinned key (and no other) succeeded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from liferaft.errors import ProviderError, Unreachable
from liferaft.providers._cloudinit import public_key_of
from liferaft.providers._net import wait_tcp
from liferaft.providers.base import Host


def controller_address(endpoint: str) -> str:
    """The local address this machine uses toward the API endpoint (a UDP connect sends nothing). Right for a
    controller with a public address; behind NAT, configure `ssh_sources` instead."""
    host = urllib.parse.urlsplit(endpoint).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 443))
        return str(s.getsockname()[0])


def ssh_sources(provider: str, configured: Iterable[str], endpoint: str) -> list[str]:
    """Where SSH may come from: the configured `ssh_sources`, else this controller's address toward `endpoint`."""
    sources = list(configured)
    if sources:
        return sources
    try:
        return [f"{controller_address(endpoint)}/32"]
    except OSError as exc:
        raise ProviderError(provider, "firewall rules", f"cannot tell this controller's address toward "
                            f"{endpoint}: {exc}", hint="set ssh_sources (the controller's public "
                            "address as a /32) for this provider in the stack file") from None


def inbound_sources(sources: list[str], private_ports: Iterable[int], peers: Iterable[str]
                    ) -> tuple[list[str], list[str], list[int]]:
    """What a created host's firewall admits, vendor-neutral: (who reaches SSH, who reaches the private ports, the
    private ports other than SSH). SSH is the controller's (`sources`); the private ports (databases) are the
    controller's and the peers' (the source host, the site's other hosts); a private port 22 (a folder the source
    host pushes over SSH) puts the peers on the one SSH rule."""
    private = {int(p) for p in private_ports}
    trusted = sorted(set(sources) | {p if "/" in p else f"{p}/32" for p in peers})
    return (trusted if 22 in private else list(sources)), trusted, sorted(private - {22})


def ssh_key(provider: str, private_key_file: str | None, kind: str, list_keys: Callable[[], Iterable[Any]],
            upload: Callable[[str, str], Any]) -> Any:
    """liferaft's SSH key at the provider (uploaded once by `upload(name, public key)`, found again among
    `list_keys()` by its public key). `kind` names what liferaft logs in to ("droplets", "servers")."""
    if not private_key_file:
        raise ProviderError(provider, "upload ssh key", "no private_key is configured for this provider",
                            hint=f"set private_key (a secret reference) so liferaft can log in to the {kind}")
    public = public_key_of(private_key_file)
    for key in list_keys():
        if " ".join(str(key.public_key).split()[:2]) == public:
            return key
    return upload(f"liferaft-{provider}-{hashlib.sha256(public.encode()).hexdigest()[:10]}", public)


class PinnedKeys:
    """Public host keys liferaft generated for its servers, by server name: {name: {"id", "host_key"}}."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "host_keys.json"

    @contextmanager
    def edit(self) -> Iterator[dict[str, dict[str, Any]]]:
        with os.fdopen(os.open(self.dir / "host_keys.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.exists() else {}
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)

    def get(self, name: str) -> str | None:
        with self.edit() as data:
            entry = data.get(name)
            return str(entry["host_key"]) if entry else None


@contextmanager
def undo_if_refused(pinned: PinnedKeys, name: str, delete_firewall: Callable[[str], None]) -> Iterator[None]:
    """Around a create call: when the provider refused it (a 4xx: quota, bad input), nothing was made, so the
    firewall made for it is deleted and its pinned key forgotten; the refusal is raised as it was."""
    try:
        yield
    except ProviderError as exc:
        if exc.status is not None and 400 <= exc.status < 500:  # refused (quota, bad input): nothing was made
            try:
                delete_firewall(name)  # so nothing made for it stays behind either
            except ProviderError:
                pass  # the refusal is the error to report
            with pinned.edit() as keys:  # nor the key pinned for a host that never existed
                keys.pop(name, None)
        raise


def wait_running(provider: str, get_host: Callable[[str], Host], host_id: str, timeout: float,
                 poll_interval: float, kind: str, status_key: str) -> Host:
    """Poll `get_host` until the host runs with an address; Unreachable (naming its `status_key` status) when it
    is terminated or `timeout` passed. `kind` names it in the error ("droplet", "server")."""
    deadline = time.monotonic() + timeout
    while True:
        host = get_host(host_id)
        if host.state == "running" and host.address:
            return host
        if host.state == "terminated" or time.monotonic() >= deadline:
            raise Unreachable(provider, f"wait for {kind} {host_id}",
                              f"status is {host.extra.get(status_key)} after {timeout:.0f} s")
        time.sleep(poll_interval)


def wait_reachable(provider: str, host_id: str, running: Host, start: float, timeout: float, directory: Path,
                   kind: str) -> Host:
    """After `running` (waited for since `start`, monotonic): the SSH port answers and a login with the pinned host
    key succeeds, within what is left of `timeout`. A host without a pinned key was not made by liferaft."""
    if running.ssh is None or running.address is None:
        raise ProviderError(provider, f"wait for {kind} {host_id}",
                            f"no pinned host key for {kind} {running.name}: liferaft did not create it",
                            hint=f"delete the {kind} (liferaft pins only host keys it generated) or pick "
                                 "another name")
    wait_tcp(provider, running.address, 22, max(0.5, timeout - (time.monotonic() - start)))
    login(provider, running, directory, max(1.0, timeout - (time.monotonic() - start)))
    return running


def login(provider: str, host: Host, directory: Path, timeout: float) -> None:
    """`ssh true` with StrictHostKeyChecking against the host's pinned key only; retried while sshd starts. A host
    key mismatch is raised at once (AuthRejected, code HostKeyMismatch), never retried into acceptance."""
    from liferaft.providers.ssh import PoolHost, classify_ssh_failure

    assert host.ssh is not None and host.address is not None
    known = directory / f"known_hosts.{host.id}"
    known.write_text("".join(f"{line}\n" for line in host.ssh.known_hosts))
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
            "-i", str(host.ssh.private_key_file), f"{host.ssh.user}@{host.address}", "true"]
    op = f"ssh {host.ssh.user}@{host.name} ({host.address})"
    pool_host = PoolHost(name=host.name, address=host.address, port=22, host_keys=())
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                   timeout=max(5.0, deadline - time.monotonic()), check=False)
            except subprocess.TimeoutExpired:
                raise Unreachable(provider, op, f"no answer within {timeout:.0f} s") from None
            if r.returncode == 0:
                return
            err = classify_ssh_failure(provider, op, pool_host, r.stderr)
            if err.code == "HostKeyMismatch" or time.monotonic() >= deadline:
                raise err
            time.sleep(0.3)
    finally:
        known.unlink(missing_ok=True)
