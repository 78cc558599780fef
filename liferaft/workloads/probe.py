"""HTTP probes of a service: is it healthy, does anything still answer. Standard library only."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from liferaft.errors import CheckFailed


def health_url(health: Any, address: str) -> str:
    """A service's health check (the stack's `services.<name>.health`) at `address`."""
    return f"{health.scheme}://{address}:{health.port}{health.path}"


def answers(url: str) -> bool:
    """Does anything answer HTTP at `url` (any status counts; over HTTPS a certificate this controller does not
    trust counts too: a server answered the handshake)?"""
    import ssl

    try:
        with urllib.request.urlopen(url, timeout=2.0):
            return True
    except urllib.error.HTTPError:
        return True
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)
    except ssl.SSLError:
        return True
    except OSError:
        return False


def wait_silent(url: str, timeout: float) -> None:
    """Wait until nothing answers at `url`; CheckFailed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while answers(url):
        if time.monotonic() > deadline:
            raise CheckFailed(f"{url} still answers after its service was stopped")
        time.sleep(0.2)


def http_check(address: str, health: Any, *, timeout: float = 10.0) -> float:
    """GET the health path on `address` until it answers the expected status; returns when it first did."""
    url = health_url(health, address)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(2.0, float(health.timeout))) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            status, last = None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if status == health.expect_status:
            return time.time()
        if status is not None:
            last = f"HTTP {status}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"{url} did not answer {health.expect_status} within {timeout:.0f}s (last: {last})")
        time.sleep(0.05)
