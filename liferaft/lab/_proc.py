"""Small process helpers for the lab: free ports, child processes that die with their controller, readiness polls.

How lab processes are started (`spawn`):
- each in its own session (`start_new_session=True`), so a Ctrl-C in the controller's terminal does not reach it;
- under `setpriv --pdeathsig KILL -- ...` (util-linux), so the kernel SIGKILLs it when the process that started it
  dies, even by SIGKILL. Caveat of the kernel feature: "parent" is the *thread* that forked. Start lab processes
  from a long-lived thread (the main thread), never from a short-lived worker thread, or they die with the worker.
  `die_with_parent=False` leaves this out (for a detached lab whose controller exits on purpose).
- stdout and stderr appended to one log file; stdin from /dev/null; secrets are never put in argv or the env by
  this module's callers (they live in files with mode 0600).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from liferaft.errors import LiferaftError, ToolMissing

LOG_TAIL_LINES = 20

# Lab traffic is local: never route it through an HTTP proxy configured in the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` right now (bind port 0, read it, close). Other programs may race for it:
    callers retry on "address in use"."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port(address: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port free for both TCP and UDP on `address` (DNS listens on both)."""
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(attempts):
        port = free_port(address)
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as u:
                u.bind((address, port))
            return port
        except OSError:
            continue
    raise LiferaftError(f"no port free for both TCP and UDP on {address}")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def require_tool(name: str, hint: str) -> str:
    """The full path of program `name` on PATH, or ToolMissing with an install hint."""
    found = shutil.which(name)
    if not found:
        raise ToolMissing(f"{name} is not installed (not on PATH)", hint=hint)
    return found


class Child:
    """One child process started by the lab, with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, die_with_parent: bool = True) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        argv = self.argv
        if self.die_with_parent:
            setpriv = require_tool("setpriv", "install util-linux (apt-get install util-linux)")
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, cwd=self.cwd, start_new_session=True, close_fds=True,
                )
            except FileNotFoundError as e:
                raise ToolMissing(f"cannot start {self.name}: {e.filename} not found") from None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL and wait. Idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        self.proc = None

    def failure(self, what: str) -> LiferaftError:
        """An error saying what failed, with the exit code if it died and the log's tail."""
        code = self.exit_code()
        died = f" (exited with code {code})" if code is not None else ""
        tail = log_tail(self.log_path)
        return LiferaftError(
            f"{self.name}: {what}{died}; last lines of {self.log_path}:\n{tail}",
            hint="read the whole log; check that the port is free and the program is installed",
        )


def wait_until(child: Child, ready: Callable[[], bool], timeout: float, what: str = "not ready") -> None:
    """Poll `ready()` every 50 ms until true; raise the child's failure (with log tail) on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.running():
            raise child.failure("exited before it was ready")
        try:
            ok = ready()
        except Exception:  # noqa: BLE001 - any error while polling means "not ready yet"
            ok = False
        if ok:
            return
        if time.monotonic() > deadline:
            raise child.failure(f"{what} after {timeout:.0f} s")
        time.sleep(0.05)


def http_status(url: str, *, method: str = "GET", data: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> int:
    """The HTTP status of a request (errors with a status return it; connection errors raise)."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def url_host(address: str) -> str:
    """An address as it goes into a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address
