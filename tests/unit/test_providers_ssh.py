"""The ssh pool adapter without a network: allocation bookkeeping, known_hosts, and reading ssh's failures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from liferaft.errors import AuthRejected, Conflict, NotFound, ProviderError, Unreachable
from liferaft.providers.base import HostSpec
from liferaft.providers.ssh import PoolHost, SshAdapter, classify_ssh_failure

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
POOL = [PoolHost("a", "10.9.9.11", 22, (KEY_A,)), PoolHost("b", "10.9.9.12", 2222, (KEY_B,))]


def test_allocation_is_idempotent_exhaustible_and_persistent(tmp_path: Path) -> None:
    """Same name, same host; a full pool is a Conflict; release frees; state survives a new adapter."""
    pool = SshAdapter("colo", "root", None, POOL, tmp_path)
    a = pool.create_host(HostSpec("web-1"))
    assert pool.create_host(HostSpec("web-1")).id == a.id == "a"
    assert pool.create_host(HostSpec("web-2")).id == "b"
    with pytest.raises(Conflict):
        pool.create_host(HostSpec("web-3"))
    pool.destroy_host("a")
    pool.destroy_host("a")  # releasing twice is fine
    again = SshAdapter("colo", "root", None, POOL, tmp_path)
    assert [h.name for h in again.list_hosts()] == ["web-2"] and again.free_hosts() == ["a"]
    with pytest.raises(NotFound):
        again.create_host(HostSpec("web-9", tags={"pool_host": "zz"}))


def test_every_pool_host_is_reachable_allocated_or_not(tmp_path: Path) -> None:
    """Where a failover looks for the source host: every pool host under its pool name with its pinned keys and
    port, whether liferaft allocated it (a standby) or not (the primary's own host)."""
    pool = SshAdapter("colo", "deploy", "/keys/id", POOL, tmp_path)
    pool.create_host(HostSpec("web-1"))
    hosts = {h.name: h for h in pool.reachable_hosts()}
    assert sorted(hosts) == ["a", "b"] and [h.name for h in pool.list_hosts()] == ["web-1"]
    b = hosts["b"]
    assert b.ssh is not None and (b.address, b.ssh.port, b.ssh.user, b.ssh.private_key_file) == (
        "10.9.9.12", 2222, "deploy", "/keys/id")
    assert list(b.ssh.known_hosts) == [f"[10.9.9.12]:2222 {KEY_B}"]


def test_known_hosts_pins_configured_keys_only(tmp_path: Path) -> None:
    """known_hosts holds exactly the pinned keys, with [addr]:port for non-22 ports; SshAccess carries them."""
    pool = SshAdapter("colo", "root", "/keys/id", POOL, tmp_path)
    assert pool.known_hosts_file.read_text().splitlines() == [f"10.9.9.11 {KEY_A}", f"[10.9.9.12]:2222 {KEY_B}"]
    host = pool.create_host(HostSpec("x", tags={"pool_host": "b"}))
    assert host.ssh is not None and host.ssh.known_hosts == (f"[10.9.9.12]:2222 {KEY_B}",)
    assert host.ssh.private_key_file == "/keys/id"
    argv = pool.ssh_argv(POOL[0])
    assert "StrictHostKeyChecking=yes" in argv and f"UserKnownHostsFile={pool.known_hosts_file}" in argv
    assert stat.S_IMODE(pool.dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(("stderr", "cls", "code"), [
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", AuthRejected,
     "HostKeyMismatch"),
    ("Host key verification failed.", AuthRejected, "HostKeyMismatch"),
    ("root@10.9.9.11: Permission denied (publickey).", AuthRejected, "PermissionDenied"),
    ("ssh: connect to host 10.9.9.11 port 22: Connection refused", Unreachable, None),
    ("ssh: connect to host 10.9.9.11 port 22: No route to host", Unreachable, None),
    ("ssh: connect to host 10.9.9.11 port 22: Connection timed out", Unreachable, None),
    ("kex_exchange_identification: read: Connection reset by peer", Unreachable, None),
    ("something else entirely", ProviderError, None),
])
def test_ssh_failures_are_told_apart(stderr: str, cls: type, code: str | None) -> None:
    """ssh's exit-255 messages map to a changed host key, a refused key, or an unreachable host."""
    err = classify_ssh_failure("colo", "ssh a", POOL[0], stderr)
    assert type(err) is cls and err.code == code
    if code == "HostKeyMismatch":
        assert "does not match the pinned one" in err.message and "out of band" in str(err)
