"""`health --watch`: hysteresis, hooks, webhooks and the failover policy, against real local HTTP servers that a
test makes fail."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liferaft.events import Event
from liferaft.health import HealthReport, Hysteresis, Verdict, check_health, explain, watch
from liferaft.providers.base import Provider
from liferaft.stack import load_stack
from tests.unit.test_health_helpers import HttpAccount, ProbeServer, closed_port, http_provider, write_stack

H, D, T = Verdict.HEALTHY, Verdict.DEGRADED, Verdict.TERMINATED


def test_hysteresis_needs_n_agreeing_results_in_a_row() -> None:
    h = Hysteresis(3)
    seen = [h.observe({"x": v}) for v in (H, H, H, D, H, D, D, D)]
    assert [len(t) for t in seen] == [0, 0, 1, 0, 0, 0, 0, 1]
    assert (seen[2][0].previous, seen[2][0].current) == ("unknown", H)
    assert (seen[7][0].previous, seen[7][0].current, seen[7][0].confirmations) == ("healthy", D, 3)
    assert h.confirmed == {"x": D}


def test_hysteresis_of_one_follows_every_result() -> None:
    h = Hysteresis(1)
    assert [t[0].current for t in (h.observe({"x": v}) for v in (H, D, H))] == [H, D, H]


@dataclass
class Env:
    stack_path: Path
    app: ProbeServer
    cloud: ProbeServer
    cloud2: ProbeServer
    colo: ProbeServer

    def stack(self) -> Any:
        return load_stack(self.stack_path)

    def opener(self, name: str) -> Provider:
        if name in ("cloud", "cloud2"):
            return http_provider(name, getattr(self, name).url)
        return Provider(name=name, type="ssh-test", account=HttpAccount(name, self.colo.url))  # type: ignore[arg-type]

    def checker(self, stack: Any) -> Callable[[], HealthReport]:
        return lambda: check_health(stack, opener=self.opener, timeout=1.0)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    servers: list[ProbeServer] = []

    def make(**stack_kw: Any) -> Env:
        app, cloud, cloud2, colo = (ProbeServer().start() for _ in range(4))
        servers.extend([app, cloud, cloud2, colo])
        path = write_stack(tmp_path, cloud_port=cloud.port, app_port=app.port, standby_port=cloud2.port, **stack_kw)
        return Env(path, app, cloud, cloud2, colo)

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


def hook_script(tmp_path: Path, exit_code: int = 0) -> list[str]:
    """A hook that appends its stdin (one JSON change) to changes.jsonl."""
    script = tmp_path / "hook.py"
    script.write_text("import sys, pathlib\n"
                      f"p = pathlib.Path({str(tmp_path / 'changes.jsonl')!r})\n"
                      "p.open('a').write(sys.stdin.read().strip() + '\\n')\n"
                      f"sys.exit({exit_code})\n")
    return [sys.executable, str(script)]


def test_healthy_check_of_the_unit_stack(env: Callable[..., Env]) -> None:
    e = env()
    report = e.checker(e.stack())()
    assert report.verdict is H, report.to_dict()
    probes = {ev.probe for ev in report.evidence}
    assert {"account", "bucket:unit-images", f"http:web@127.0.0.1:{e.app.port}"} <= probes


def test_a_single_failed_probe_does_not_flip_the_verdict(env: Callable[..., Env], tmp_path: Path) -> None:
    """--confirm 3: the app answers 503 once; the round sees it, the confirmed verdict stays healthy, no hook."""
    e = env(hook=hook_script(tmp_path))
    stack = e.stack()
    raw: list[Verdict] = []
    check = e.checker(stack)

    def flaky_check() -> HealthReport:
        if len(raw) == 3:
            e.app.fail_next = 1  # exactly one failing health request, in round 4
        report = check()
        raw.append(report.verdicts()["site:primary"])
        return report

    result = watch(stack, flaky_check, interval=0.0, confirm=3, count=6)
    assert raw == [H, H, H, D, H, H]  # the failure really happened and was seen
    assert result.confirmed["site:primary"] is H and result.verdict is H
    assert result.changes == [] and result.actions == []
    assert not (tmp_path / "changes.jsonl").exists()


def test_a_confirmed_change_runs_the_hook_and_the_webhook_with_the_change_json(env: Callable[..., Env],
                                                                                tmp_path: Path) -> None:
    hooks = ProbeServer().start()
    try:
        e = env(hook=hook_script(tmp_path), webhook=f"{hooks.url}/liferaft")
        stack = e.stack()
        check = e.checker(stack)
        rounds = 0

        def failing_from_round_3() -> HealthReport:
            nonlocal rounds
            rounds += 1
            if rounds == 3:
                e.app.status = 500
            return check()

        events: list[Event] = []
        result = watch(stack, failing_from_round_3, interval=0.0, confirm=2, count=5, events=events.append)
    finally:
        hooks.stop()
    assert [c["subject"] for c in result.changes] == ["site:primary"]
    (line,) = (tmp_path / "changes.jsonl").read_text().splitlines()
    change = json.loads(line)
    assert (change["previous"], change["verdict"], change["confirmations"]) == ("healthy", "degraded", 2)
    assert change["stack"] == "unit" and change["rule"] == "S3"
    assert change["evidence"][0]["status"] == 500 and change["evidence"][0]["kind"] == "http"
    assert json.loads(hooks.posted[0]) == {**change, "at": json.loads(hooks.posted[0])["at"]}
    assert [a.action for a in result.actions] == ["hook", "webhook"] and all(a.ok for a in result.actions)
    assert "health.change" in [ev.kind for ev in events]


def test_failing_hook_and_webhook_are_reported_and_the_watch_goes_on(env: Callable[..., Env],
                                                                     tmp_path: Path) -> None:
    e = env(hook=hook_script(tmp_path, exit_code=7), webhook=f"http://127.0.0.1:{closed_port()}/x")
    stack = e.stack()
    e.app.status = 500
    result = watch(stack, e.checker(stack), interval=0.0, confirm=1, count=3)
    assert result.rounds == 3
    hook, webhook = result.actions
    assert (hook.ok, hook.returncode) == (False, 7)
    assert not webhook.ok and "not reachable" in webhook.detail


def test_missing_hook_program_is_reported(env: Callable[..., Env], tmp_path: Path) -> None:
    e = env(hook=[str(tmp_path / "no-such-hook")])
    stack = e.stack()
    e.app.status = 500
    result = watch(stack, e.checker(stack), interval=0.0, confirm=1, count=1)
    assert not result.actions[0].ok and "could not start" in result.actions[0].detail


def test_explain_shows_the_policy_without_acting(env: Callable[..., Env]) -> None:
    e = env(failover_on="terminated")
    stack = e.stack()
    assert explain(stack, e.checker(stack)(), confirm=3)["would_failover"] is False
    e.cloud.status = 403  # the primary objects provider refuses us: the primary site is terminated
    x = explain(stack, e.checker(stack)(), confirm=3)
    assert x["verdict"] == "terminated" and x["would_failover"] is True
    assert x["command"][-7:] == ["failover", "--mode", "live", "--to", "standby", "--yes", "--json"]
    assert "no standby is recorded" in x["mode_why"]  # cold needs one
    x = explain(stack, e.checker(stack)(), confirm=3, standby_at=lambda site: site == "standby")
    assert x["mode"] == "cold" and x["command"][-7:-4] == ["failover", "--mode", "cold"]
    x = explain(stack, e.checker(stack)(), confirm=3, moved={"site": "standby", "run": "R", "mode": "cold"})
    assert x["would_failover"] is False and "moved to standby" in x["why"]


def test_policy_never_does_not_fail_over(env: Callable[..., Env]) -> None:
    e = env()
    e.cloud.status = 403
    stack = e.stack()
    assert explain(stack, e.checker(stack)(), confirm=3)["would_failover"] is False
    result = watch(stack, e.checker(stack), interval=0.0, confirm=1, count=2)
    assert result.failover_pid is None and result.verdict is T


def test_confirmed_termination_starts_liferaft_failover_once(env: Callable[..., Env], tmp_path: Path) -> None:
    """failover_on: terminated -> after `confirm` terminated rounds, `liferaft failover --to standby --yes` runs
    as a real subprocess, exactly once."""
    e = env(failover_on="terminated")
    stack = e.stack()
    e.cloud.status = 403
    state = tmp_path / "state"
    state.mkdir()
    t0 = time.monotonic()
    result = watch(stack, e.checker(stack), interval=0.0, confirm=2, count=4, state_dir=state)
    starts = [a for a in result.actions if a.action == "failover"]
    assert len(starts) == 1 and starts[0].ok, result.to_dict()
    assert "failover --mode live --to standby --yes --json" in starts[0].detail
    assert result.failover_pid and result.failover_returncode is not None
    (log,) = state.glob("health-failover-*.log")
    assert log.exists()
    assert time.monotonic() - t0 < 120
