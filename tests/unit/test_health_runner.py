"""Probes run concurrently with per-probe deadlines against real local HTTP servers: a hung one never delays
the others' results."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from liferaft.health import Found, ProbeTask, run_probes
from liferaft.health.probes import http_probe
from tests.unit.test_health_helpers import ProbeServer, closed_port


@pytest.fixture
def servers() -> Iterator[dict[str, ProbeServer]]:
    made = {"fast": ProbeServer().start(), "slow": ProbeServer(delay=0.3).start(),
            "hung": ProbeServer(delay=20).start(), "broken": ProbeServer(status=500).start()}
    try:
        yield made
    finally:
        for s in made.values():
            s.stop()


def http_task(name: str, port: int, timeout: float, expect: int = 200) -> ProbeTask:
    return ProbeTask(probe=name, kind="http", plane="data", site="s", timeout=timeout, target=str(port),
                     fn=lambda: http_probe("http", "127.0.0.1", port, "/healthz", expect_status=expect,
                                           timeout=timeout + 5))  # socket timeout longer: the runner must cut it


def test_hung_probe_is_reported_as_timeout_without_delaying_the_others(servers: dict[str, ProbeServer]) -> None:
    t0 = time.monotonic()
    # Generous deadlines for the answering servers: the point is the hung one, not this machine's speed.
    results = run_probes([http_task("hung", servers["hung"].port, 1.0), http_task("fast", servers["fast"].port, 8),
                          http_task("slow", servers["slow"].port, 8)])
    elapsed = time.monotonic() - t0
    by = {e.probe: e for e in results}
    assert [e.probe for e in results] == ["hung", "fast", "slow"]
    assert by["hung"].outcome == "timeout" and by["hung"].error == "Timeout"
    assert by["fast"].ok and by["fast"].latency_s is not None
    assert by["slow"].ok and (by["slow"].latency_s or 0) >= 0.3
    assert elapsed < 10, elapsed  # bounded by the deadlines, not by the hung server's 20 s


def test_a_full_pool_of_hung_probes_still_lets_queued_probes_run(servers: dict[str, ProbeServer]) -> None:
    """With two workers both stuck, their deadlines free the slots and the queued probe still gets its verdict."""
    t0 = time.monotonic()
    results = run_probes([http_task("hung1", servers["hung"].port, 0.5), http_task("hung2", servers["hung"].port, 0.5),
                          http_task("fast", servers["fast"].port, 8)], max_workers=2)
    assert [e.outcome for e in results] == ["timeout", "timeout", "ok"]
    assert time.monotonic() - t0 < 12  # far below the hung server's 20 s


def test_outcomes_of_real_failures(servers: dict[str, ProbeServer]) -> None:
    results = run_probes([http_task("broken", servers["broken"].port, 2),
                          http_task("refused", closed_port(), 2)])
    broken, refused = results
    assert (broken.outcome, broken.status, broken.code) == ("failed", 500, "HTTP_500")
    assert refused.outcome == "unreachable" and refused.error == "ConnectionRefusedError"


def test_follow_up_probes_are_scheduled_and_reported(servers: dict[str, ProbeServer]) -> None:
    child = http_task("child", servers["fast"].port, 2)
    parent = ProbeTask(probe="parent", kind="hosts", plane="control", timeout=2, fn=lambda: Found("1 running",
                                                                                                 then=(child,)))
    results = run_probes([parent])
    assert [(e.probe, e.outcome) for e in results] == [("parent", "ok"), ("child", "ok")]


def test_a_probe_that_raises_anything_becomes_evidence_not_a_crash() -> None:
    def boom() -> Found:
        raise RuntimeError("bug in a probe")

    (e,) = run_probes([ProbeTask(probe="x", kind="account", plane="control", timeout=1, fn=boom)])
    assert (e.outcome, e.error) == ("error", "RuntimeError") and "bug in a probe" in e.detail


def test_a_lazy_import_race_is_retried_not_reported() -> None:
    """Two threads importing a cyclic SDK at once fail with Python's import deadlock; the probe tries again."""
    from liferaft.errors import ProviderError

    calls = []

    def racy() -> Found:
        calls.append(1)
        if len(calls) == 1:
            raise ProviderError("dnshost", "probe", "_DeadlockError: deadlock detected by _ModuleLock('x.types')")
        if len(calls) == 2:
            raise ImportError("cannot import name 'P' from partially initialized module 'x.providers'")
        return Found("ok")

    (e,) = run_probes([ProbeTask(probe="account", kind="account", plane="control", timeout=2, fn=racy)])
    assert e.ok and len(calls) == 3


def test_ordinary_import_errors_are_not_retried() -> None:
    calls = []

    def missing() -> Found:
        calls.append(1)
        raise ImportError("No module named 'nosuchsdk'")

    (e,) = run_probes([ProbeTask(probe="account", kind="account", plane="control", timeout=2, fn=missing)])
    assert e.outcome == "error" and len(calls) == 1
