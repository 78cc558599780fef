"""Waiting for an SSH port: a bare TCP accept is not enough, the SSH banner is."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from liferaft.errors import Unreachable
from liferaft.providers._net import host_keys_from_console, known_hosts_lines, wait_tcp


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never says anything (like a catch-all gateway)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_accepting_port_without_ssh_banner_is_unreachable(silent_listener: int) -> None:
    """A port that accepts but is not sshd does not count as reachable."""
    start = time.monotonic()
    with pytest.raises(Unreachable):
        wait_tcp("p", "127.0.0.1", silent_listener, 1.5)
    assert time.monotonic() - start < 4
    wait_tcp("p", "127.0.0.1", silent_listener, 1.5, what="port")  # plain TCP checks still pass


def test_console_host_keys_are_pinned() -> None:
    """cloud-init's console block yields known_hosts lines for the address."""
    out = ("noise\n-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAkey root@h\necdsa-sha2-nistp256 AAAAe root@h\n"
           "-----END SSH HOST KEY KEYS-----\n")
    keys = host_keys_from_console(out)
    assert keys == ("ssh-ed25519 AAAAkey", "ecdsa-sha2-nistp256 AAAAe")
    assert known_hosts_lines("10.0.0.5", 2222, keys)[0] == "[10.0.0.5]:2222 ssh-ed25519 AAAAkey"
