"""Calls to a source that may be gone: every one bounded by a short deadline, never hanging.

A provider cut off with no notice may drop connections (fails fast), answer 403 (fails fast) or black-hole packets
(hangs until some library timeout, often a minute or more). `bounded()` runs the call on a daemon thread and stops
waiting at the deadline: the caller gets `Unreachable` on time, and the stuck thread is abandoned (it holds no lock
of ours and dies with the process).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from liferaft.errors import LiferaftError, Unreachable

T = TypeVar("T")
DEFAULT_SOURCE_TIMEOUT = 5.0


def bounded(fn: Callable[[], T], timeout: float, *, provider: str, what: str) -> T:
    """fn(), or Unreachable(provider, what) once `timeout` seconds have passed without an answer."""
    box: dict[str, object] = {}
    done = threading.Event()

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=call, name=f"liferaft-bounded-{what[:20]}", daemon=True).start()
    if not done.wait(timeout):
        raise Unreachable(provider, what, f"no answer within {timeout:g} s")
    if "error" in box:
        err = box["error"]
        assert isinstance(err, BaseException)
        if isinstance(err, LiferaftError):
            raise err
        raise Unreachable(provider, what, f"{type(err).__name__}: {err}") from None
    return box["value"]  # type: ignore[return-value]


def tcp_answers(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """Does anything accept a TCP connection at address:port within `timeout`? (ok, detail)"""
    t0 = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True, f"answered in {time.monotonic() - t0:.2f} s"
    except OSError as e:
        return False, f"{type(e).__name__}: {e.strerror or e}"[:200]


def probe_ports(address: str, ports: list[int], timeout: float) -> dict[int, tuple[bool, str]]:
    """Probe every port at once under ONE deadline: `timeout` seconds for the whole probe, not per port. Each port
    -> (answered?, detail); a port with no answer by the deadline is reported as such (its thread is abandoned)."""
    results: dict[int, tuple[bool, str]] = {}
    guard = threading.Lock()
    deadline = time.monotonic() + timeout

    def one(port: int) -> None:
        res = tcp_answers(address, port, max(0.05, deadline - time.monotonic()))
        with guard:
            results[port] = res

    threads = [threading.Thread(target=one, args=(p,), name=f"liferaft-probe-{p}", daemon=True) for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with guard:
        return {p: results.get(p, (False, f"no answer within {timeout:g} s")) for p in ports}
