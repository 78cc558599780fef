"""Small network helpers shared by the compute adapters: wait for a TCP port, read host keys from console output."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from liferaft.providers.base import Host

from liferaft.errors import Unreachable


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_banner(address: str, port: int, timeout: float = 1.0) -> bool:
    """The port answers with an SSH identification string ("SSH-2.0-..."). A bare TCP accept proves little:
    middleboxes and some NAT gateways accept every connection."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(256).startswith(b"SSH-")
    except OSError:
        return False


def wait_tcp(provider: str, address: str, port: int, timeout: float, *, what: str = "ssh port") -> None:
    """Poll until address:port answers (for an ssh port: with the SSH banner), else Unreachable after `timeout`."""
    deadline = time.monotonic() + timeout
    check = ssh_banner if what == "ssh port" else tcp_open
    while True:
        remaining = deadline - time.monotonic()
        if check(address, port, timeout=max(0.2, min(1.0, remaining))):
            return
        if time.monotonic() >= deadline:
            raise Unreachable(provider, f"wait for {what} {address}:{port}",
                              f"no TCP answer within {timeout:.0f} s",
                              hint="the host's state, its firewall/security group, and the route to it")
        time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))


_KEYS_BLOCK = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.DOTALL)


def wait_running(get_host: Callable[[str], Host], host_id: str, timeout: float, poll: float, *, provider: str,
                 what: str, state_key: str) -> Host:
    """Poll a compute provider until the host runs; Unreachable when it is terminated or the timeout passes (the
    provider's own state, under `state_key` of the host's extra, in the message)."""
    deadline = time.monotonic() + timeout
    while True:
        host = get_host(host_id)
        if host.state == "running":
            return host
        if host.state == "terminated" or time.monotonic() >= deadline:
            raise Unreachable(provider, f"wait for {what} {host_id}",
                              f"state is {host.extra.get(state_key)} after {timeout:.0f} s")
        time.sleep(poll)


def host_keys_from_console(output: str) -> tuple[str, ...]:
    """cloud-init prints the host's public keys between markers on the serial console: "<type> <base64> ..."."""
    m = _KEYS_BLOCK.search(output or "")
    if not m:
        return ()
    keys = []
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) >= 2 and (parts[0].startswith("ssh-") or parts[0].startswith("ecdsa-")):
            keys.append(f"{parts[0]} {parts[1]}")
    return tuple(keys)


def known_hosts_lines(address: str, port: int, host_keys: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """known_hosts lines pinning `host_keys` ("<type> <base64>") for address[:port]."""
    target = address if port == 22 else f"[{address}]:{port}"
    return tuple(f"{target} {' '.join(k.split()[:2])}" for k in host_keys)
