"""Pinned host keys for servers liferaft creates through an API, and the verified first login (hcloud, digitalocean).

liferaft generates each new server's host key and injects it through cloud-init user data (`_cloudinit`); the public
half is pinned here, by server name, before the server exists, so the very first SSH connection is already checked.
`login` returns only after a real `ssh true` with that pinned key (and no other) succeeded.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from liferaft.errors import Unreachable
from liferaft.providers.base import Host


def controller_address(endpoint: str) -> str:
    """The local address this machine uses toward the API endpoint (a UDP connect sends nothing). Right for a
    controller with a public address; behind NAT, configure `ssh_sources` instead."""
    host = urllib.parse.urlsplit(endpoint).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 443))
        return str(s.getsockname()[0])


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
