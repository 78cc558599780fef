"""The `ssh` adapter: hosts you bring (colo, bare metal, a VPS with no API) as a pool with pinned host keys.

"Create" allocates a free pool host to a spec name (idempotent by that name), "destroy" (or `liferaft hosts
release`) releases it. Allocations live in `<state_dir>/providers/<name>/allocations.json`, changed under an
exclusive file lock, so two runs never hand out the same host. Each allocation remembers the host keys pinned for
its host when it was made (`allocated_keys.json`): once the stack pins none of them any more, the machine is
another one (reinstalled, or a new lab's host after `lab down` and `lab up`) and the allocation is void and
forgotten. Host keys are always checked: every ssh call uses StrictHostKeyChecking=yes and a known_hosts file
written from the pinned keys only (no keyscan, no trust on first use).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from liferaft.errors import AuthRejected, Conflict, NotFound, ProviderError, ToolMissing, Unreachable
from liferaft.providers._net import known_hosts_lines, wait_tcp
from liferaft.providers.base import Host, HostSpec, ProbeResult, Provider, SshAccess
from liferaft.statedir import owner_only_dir

CONNECT_TIMEOUT = 5  # seconds, ssh -o ConnectTimeout
HOST_KEY_HINT = ("the host_keys pinned for this host in the stack file. If the host was reinstalled, check its "
                 "new key out of band (console, provider panel) before pinning it; otherwise suspect a "
                 "man-in-the-middle or a changed address")
_UNREACHABLE = ("connection refused", "no route to host", "connection timed out", "network is unreachable",
                "operation timed out", "could not resolve hostname", "connection closed by",
                "connection reset", "kex_exchange_identification", "broken pipe", "timed out")


@dataclass(frozen=True)
class PoolHost:
    """One host of the pool, as configured: name, address, port and its pinned public host keys."""

    name: str
    address: str
    port: int
    host_keys: tuple[str, ...]


def _key_ids(host_keys: tuple[str, ...]) -> set[str]:
    """"<type> <base64>" of each pinned key, whatever else its line carried (a host pattern, a comment)."""
    ids = set()
    for line in host_keys:
        parts = line.split()
        for i, part in enumerate(parts[:-1]):
            if part.startswith(("ssh-", "ecdsa-", "sk-")):
                ids.add(f"{part} {parts[i + 1]}")
                break
    return ids


def _write_owner_only(path: Path, text: str) -> None:
    """Write a file in the state dir 0600 (the state dir is nobody else's business), replacing any old one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


class SshAdapter:
    """A pool of SSH hosts. Offers compute (allocate/release/wait) and an account probe (ssh to each host)."""

    def __init__(self, name: str, user: str, private_key_file: str | None, hosts: list[PoolHost], state_dir: str | Path,
                 *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        if not hosts:
            raise ProviderError(name, "open pool", "the pool has no hosts", hint="list hosts in the stack file")
        self.name = name
        self.user = user
        self.private_key_file = private_key_file
        self.pool = {h.name: h for h in hosts}
        self.connect_timeout = connect_timeout
        self.dir = owner_only_dir(Path(state_dir) / "providers" / name, parents_from=state_dir)
        self.known_hosts_file = self.dir / "known_hosts"
        self._write_known_hosts()
        self.compute = self
        self.account = SshProbe(self)

    def __repr__(self) -> str:
        return f"SshAdapter(name={self.name!r}, hosts={list(self.pool)!r})"

    def provider(self, capabilities: tuple[str, ...] = ("compute", "account")) -> Provider:
        return Provider(name=self.name, type="ssh", compute=self if "compute" in capabilities else None,
                        account=self.account if "account" in capabilities else None)

    # ------------------------------------------------------------------------------------------ known hosts
    def _write_known_hosts(self) -> None:
        lines = [line for h in self.pool.values() for line in known_hosts_lines(h.address, h.port, h.host_keys)]
        tmp = self.known_hosts_file.with_suffix(".tmp")
        _write_owner_only(tmp, "".join(f"{line}\n" for line in lines))
        os.replace(tmp, self.known_hosts_file)

    def access(self, pool_host: PoolHost) -> SshAccess:
        return SshAccess(address=pool_host.address, port=pool_host.port, user=self.user,
                         known_hosts=known_hosts_lines(pool_host.address, pool_host.port, pool_host.host_keys),
                         private_key_file=self.private_key_file)

    # ------------------------------------------------------------------------------------------ allocations
    @contextmanager
    def _allocations(self) -> Iterator[dict[str, str]]:
        """{pool host name: spec name}, read and written under an exclusive lock; void allocations (see the
        module doc) are dropped on the way in."""
        path, keys_path = self.dir / "allocations.json", self.dir / "allocated_keys.json"
        with os.fdopen(os.open(self.dir / "allocations.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
                keys: dict[str, list[str]] = json.loads(keys_path.read_text()) if keys_path.exists() else {}
                before, keys_before = dict(data), dict(keys)
                for pool_name in [p for p in data if p in self.pool and p in keys]:
                    if not set(keys[pool_name]) & _key_ids(self.pool[pool_name].host_keys):
                        del data[pool_name]  # another machine under that name now: what was allocated is gone
                        del keys[pool_name]
                yield data
                keys = {p: keys.get(p) or sorted(_key_ids(self.pool[p].host_keys)) for p in data if p in self.pool}
                for target, value, old in ((keys_path, keys, keys_before), (path, data, before)):
                    if value != old:
                        tmp = target.with_suffix(".tmp")
                        _write_owner_only(tmp, json.dumps(value, indent=1, sort_keys=True))
                        os.replace(tmp, target)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _host(self, pool_name: str, spec_name: str) -> Host:
        h = self.pool[pool_name]
        return Host(id=h.name, name=spec_name, address=h.address, state="running", ssh=self.access(h),
                    extra={"pool_host": h.name, "port": h.port})

    def list_hosts(self) -> list[Host]:
        with self._allocations() as alloc:
            return [self._host(p, s) for p, s in sorted(alloc.items()) if p in self.pool]

    def reachable_hosts(self) -> list[Host]:
        """Every host of the pool under its pool name, allocated or not."""
        return [Host(id=h.name, name=h.name, address=h.address, state="running", ssh=self.access(h),
                     extra={"pool_host": h.name, "port": h.port}) for h in self.pool.values()]

    def free_hosts(self) -> list[str]:
        with self._allocations() as alloc:
            return [p for p in self.pool if p not in alloc]

    def create_host(self, spec: HostSpec) -> Host:
        """Allocate a free pool host to spec.name; the same name gets the same host again. A spec may ask for a
        particular pool host with the tag `pool_host`."""
        with self._allocations() as alloc:
            for pool_name, spec_name in alloc.items():
                if spec_name == spec.name and pool_name in self.pool:
                    return self._host(pool_name, spec_name)
            wanted = spec.tags.get("pool_host")
            if wanted and wanted not in self.pool:
                raise NotFound(self.name, f"allocate host for {spec.name}", f"no pool host named {wanted!r}")
            free = [p for p in self.pool if p not in alloc and (not wanted or p == wanted)]
            if not free:
                raise Conflict(self.name, f"allocate host for {spec.name}",
                               f"no free host in the pool ({len(self.pool)} hosts, all allocated)",
                               hint="add hosts to the pool in the stack file, or release one (destroy)")
            alloc[free[0]] = spec.name
            return self._host(free[0], spec.name)

    def destroy_host(self, host_id: str) -> None:
        """Release the pool host back to the pool (nothing on the host is touched)."""
        with self._allocations() as alloc:
            alloc.pop(host_id, None)

    def release(self, name: str) -> tuple[str, str] | None:
        """Forget the allocation of a pool host, named by its pool name or by the name it was allocated to
        (nothing on the host is touched). Returns (pool host, allocated name), or None if none matched."""
        with self._allocations() as alloc:
            for pool_name, spec_name in list(alloc.items()):
                if name in (pool_name, spec_name):
                    del alloc[pool_name]
                    return pool_name, spec_name
        return None

    # ------------------------------------------------------------------------------------------ ssh
    def ssh_argv(self, h: PoolHost) -> list[str]:
        ssh = shutil.which("ssh")
        if ssh is None:
            raise ToolMissing("the ssh client is not installed", hint="install openssh-client")
        argv = [ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_file}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2", "-p", str(h.port)]
        if self.private_key_file:
            argv += ["-o", "IdentitiesOnly=yes", "-i", self.private_key_file]
        return argv + [f"{self.user}@{h.address}"]

    def run(self, pool_name: str, command: str, *, timeout: float = 60.0, operation: str | None = None) -> str:
        """Run a command on a pool host over ssh (host key checked); stdout, or a translated error."""
        h = self.pool.get(pool_name)
        if h is None:
            raise NotFound(self.name, f"ssh {pool_name}", f"no pool host named {pool_name!r}")
        op = operation or f"ssh {self.user}@{h.name} ({h.address}:{h.port})"
        try:
            r = subprocess.run(self.ssh_argv(h) + [command], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Unreachable(self.name, op, f"no answer within {timeout:.0f} s") from None
        if r.returncode == 255:
            raise classify_ssh_failure(self.name, op, h, r.stderr)
        if r.returncode != 0:
            raise ProviderError(self.name, op, f"command exited {r.returncode}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def wait_reachable(self, host: Host, timeout: float = 120.0) -> Host:
        """The SSH port answers, then `ssh true` succeeds with the pinned host key."""
        pool_name = str(host.extra.get("pool_host", host.id))
        h = self.pool.get(pool_name)
        if h is None:
            raise NotFound(self.name, f"wait for host {host.id}", f"no pool host named {pool_name!r}")
        start = time.monotonic()
        wait_tcp(self.name, h.address, h.port, timeout)
        while True:
            try:
                self.run(h.name, "true", timeout=max(5.0, timeout - (time.monotonic() - start)))
                break
            except Unreachable:
                if time.monotonic() - start >= timeout:
                    raise
                time.sleep(0.5)
        return self._host(h.name, host.name)


def classify_ssh_failure(provider: str, operation: str, h: PoolHost, stderr: str) -> ProviderError:
    """ssh exit 255: tell a changed host key, refused credentials and an unreachable host apart."""
    text = stderr.lower()
    tail = " ".join(stderr.strip().splitlines()[-3:])[-300:]
    if ("host key verification failed" in text or "remote host identification has changed" in text
            or "host key for" in text and "has changed" in text or "no matching host key" in text):
        return AuthRejected(provider, operation,
                            f"the host key of {h.name} ({h.address}:{h.port}) does not match the pinned one",
                            hint=HOST_KEY_HINT, code="HostKeyMismatch")
    if "permission denied" in text or "too many authentication failures" in text:
        return AuthRejected(provider, operation, f"{h.name} refused the key ({tail})",
                            hint="the private_key in the stack file and the user's authorized_keys on the host",
                            code="PermissionDenied")
    if any(marker in text for marker in _UNREACHABLE):
        return Unreachable(provider, operation, f"{h.name} ({h.address}:{h.port}) did not answer: {tail}")
    return ProviderError(provider, operation, f"ssh failed: {tail}")


class SshProbe:
    """Account probe for a pool: ssh `true` to every host, concurrently. Any failure fails the probe."""

    def __init__(self, adapter: SshAdapter) -> None:
        self.adapter = adapter

    def probe(self) -> ProbeResult:
        start = time.monotonic()
        names = list(self.adapter.pool)
        # Daemon threads, not a pool: a pool's workers are joined at interpreter exit, so a cut host would hold the
        # process for ssh's own connect timeout after the verdict is already out.
        results: dict[str, ProviderError | None] = {}
        threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, self._one(n)), daemon=True)
                   for n in names]
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.adapter.connect_timeout + 12
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        errors = [results.get(n) or (None if n in results else Unreachable(
            self.adapter.name, "ssh probe", f"host {n}: no answer in time")) for n in names]
        failed: list[ProviderError] = [e for e in errors if e is not None]
        if failed:
            # Auth first (a suspended/changed host matters more than one unreachable box), then unreachable.
            failed.sort(key=lambda e: 0 if isinstance(e, AuthRejected) else 1 if isinstance(e, Unreachable) else 2)
            first = failed[0]
            if len(failed) > 1:
                raise type(first)(first.provider, first.operation,
                                  f"{first.detail} (and {len(failed) - 1} more of {len(names)} hosts failed)",
                                  hint=first.hint, status=first.status, code=first.code)
            raise first
        return ProbeResult(latency_s=time.monotonic() - start, account=self.adapter.user,
                           detail=f"{len(names)} host(s) answered: {', '.join(names)}")

    def _one(self, name: str) -> ProviderError | None:
        try:
            self.adapter.run(name, "true", timeout=self.adapter.connect_timeout + 10)
            return None
        except ProviderError as e:
            return e
