"""Shared pytest configuration. Lab fixtures live in plugin modules so each area owns its own.

With LIFERAFT_REQUIRE_LAB=1 (set by `make test` and CI) a skipped lab test fails the session: lab tests may skip
only on a machine that truly lacks root or network namespaces, and CI is not such a machine.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures_servers",  # moto, s3rver, PowerDNS, fault proxies (liferaft.lab.servers / proxy)
    "tests.fixtures_lab",  # network-namespace hosts and the whole lab (liferaft.lab)
    "tests.pg_fixtures",  # local PostgreSQL clusters (owned by the movers work)
]

_skipped_lab: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "lab" in report.keywords:
        _skipped_lab.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped_lab and os.environ.get("LIFERAFT_REQUIRE_LAB") == "1":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"LIFERAFT_REQUIRE_LAB=1: {len(_skipped_lab)} lab test(s) skipped:", red=True)
            for nodeid in _skipped_lab:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
