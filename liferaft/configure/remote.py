"""Reaching a configured host outside Ansible: one command over host-key-checked SSH, and this controller's address."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from liferaft.errors import AuthRejected, ProviderError, RunFailed, ToolMissing, Unreachable

if TYPE_CHECKING:
    from liferaft.configure import TargetHost


def _argv(host: TargetHost, known: Path, command: str) -> list[str]:
    exe = shutil.which("ssh")
    if exe is None:
        raise ToolMissing("the ssh client is not installed", hint="install openssh-client")
    known.write_text("".join(line + "\n" for line in host.known_hosts_lines()))
    argv = [exe, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            # a host cut off mid-command (packets dropped) ends the session within ~15 s, not ssh's 45 s default
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-p", str(host.port)]
    if host.private_key_file:
        argv += ["-o", "IdentitiesOnly=yes", "-i", host.private_key_file]
    return argv + [f"{host.user}@{host.address}", command]


@contextlib.contextmanager
def ssh_process(host: TargetHost, command: str) -> Iterator[subprocess.Popen[bytes]]:
    """`command` running on `host` (pinned host key, as `ssh`), its stdin/stdout/stderr binary pipes: for long
    jobs that read their input (secrets first) from stdin and stream their progress back. Killed if still running
    when the block ends. Exit 255 is ssh's own failure (see `ssh`)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-ssh-") as d:
        argv = _argv(host, Path(d) / "known_hosts", command)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    if f is not None:
                        f.close()


def ssh(host: TargetHost, command: str, *, stdin: str | None = None, timeout: float = 60.0,
        what: str = "ssh") -> str:
    """Run `command` on `host` with its pinned host key (StrictHostKeyChecking=yes); `stdin` carries secrets."""
    with tempfile.TemporaryDirectory(prefix="liferaft-ssh-") as d:
        argv = _argv(host, Path(d) / "known_hosts", command)
        try:
            r = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise Unreachable(host.name, what, f"no answer within {timeout:.0f}s") from None
    if r.returncode == 255:
        err = r.stderr.lower()
        if "host key" in err:
            raise AuthRejected(host.name, what, f"the host key of {host.address} does not match the pinned one",
                               hint="check the host's key out of band before changing the stack file")
        raise Unreachable(host.name, what, r.stderr.strip()[-300:] or "ssh failed")
    if r.returncode != 0:
        raise ProviderError(host.name, what, f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def seen_from(host: TargetHost) -> str | None:
    """The address `host` sees this controller's SSH connection come from (`$SSH_CLIENT`'s first field there):
    behind NAT it differs from `controller_address`. None when the host does not say."""
    out = ssh(host, 'echo "${SSH_CLIENT%% *}"', timeout=30.0, what="ask the host where liferaft connects from")
    first = (out or "").strip().split()
    return first[0] if first else None


def controller_address(toward: str) -> str:
    """The local address this machine uses to reach `toward` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((toward, 9))
            return str(s.getsockname()[0])
        except OSError as e:
            raise RunFailed(f"no route to {toward}: {e.strerror}") from None
