"""The warm standby tier in a lab of its own, through the real CLI: `sites.alt-b.standby: warm`.

`replicate --watch` keeps the standby at b with the service deployed there against b's own copies and STOPPED (checked
on host b: no process, nothing answers); `plan --mode cold` starts it instead of deploying it; the primary is cut
(aws down, host a cut off) and one command, `failover --mode cold`, serves the app from b through DNS with no service
deploy in its journal (the deployed service started) and no acknowledged write lost (the lag was 0 at the cut). The
rollback stops the started service at b again.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_no_notice_lab import (
    RATE,
    Proc,
    _cli,
    _env,
    _first_200_by_dns,
    _owner_dsn,
    _phases,
    _resolve,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def warm_stack(info: Any, tier: str = "warm") -> Path:
    """The lab's stack with `sites.alt-b.standby` set, beside the original so secrets resolve."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(info.stack_file.read_text())
    doc["sites"]["alt-b"]["standby"] = tier
    path = info.stack_file.with_name(f"liferaft-{tier}.yaml")
    with open(path, "w") as f:
        yaml.dump(doc, f)
    return path


def app_answers(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/healthz", timeout=2):
            return True
    except Exception:  # noqa: BLE001 - refused, timed out, HTTP error: it does not serve
        return False


def app_running_on(host: Any, service: str = "web") -> bool:
    """Whether the service's process runs on the lab host (start-stop-daemon's pidfile, as the playbook starts it)."""
    r = host.run(f"start-stop-daemon --status --pidfile /run/liferaft/{service}/{service}.pid", check=False)
    return r.returncode == 0


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm-state")


@pytest.fixture
def writer(own_lab: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    from liferaft.lab.example import run_writer

    info = own_lab.info
    stop = threading.Event()
    box: dict[str, Any] = {"ledger": str(tmp_path / "ledger.sqlite"), "stop": stop}

    def run() -> None:
        box["report"] = run_writer(lambda: f"http://{_resolve(info)}:{info.app_port}", box["ledger"], rate=RATE,
                                   duration=900, stop=stop, timeout=2.0)

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    try:
        yield box
    finally:
        stop.set()
        box["thread"].join(15)


def test_a_warm_standby_fails_over_by_starting_its_stopped_service(own_lab: Any, state_dir: Path, tmp_path: Path,
                                                                   writer: dict[str, Any]) -> None:
    from liferaft.lab.example import verify_ledger

    info = own_lab.info
    b_host = info.hosts["b"]
    b = b_host.address
    stack_file = warm_stack(info)
    rep = Proc(_cli("replicate", "--to", "alt-b", "--watch", "--interval", "1", "--source-timeout", "2", "--json"),
               _env(stack_file, state_dir), tmp_path / "replicate.err")
    outcome: dict[str, Any] = {}
    try:
        rep.wait_for(lambda t, d: len(rep.lines) >= 2, 300, "replicate rounds")
        last = rep.lines[-1][1]
        assert last["tier"] == "warm" and last["services"]["web"]["state"] == "stopped", last
        assert last["services"]["web"]["ok"] and len(last["services"]["web"]["digest"]) == 32, last
        # deployed at b against b's own copies, and not running there
        assert b_host.run("test -f /etc/liferaft/web/config.json && test -x /etc/liferaft/web/start && "
                          "cat /etc/liferaft/web/standby").stdout.strip() == last["services"]["web"]["digest"]
        assert json.loads(b_host.run("cat /etc/liferaft/web/config.json").stdout)["db"]["host"] == b
        assert not app_running_on(b_host) and not app_answers(b, info.app_port)

        plan = subprocess.run(_cli("plan", "--to", "alt-b", "--mode", "cold", "--json"),
                              env=_env(stack_file, state_dir, LIFERAFT_SOURCE_TIMEOUT="2"), capture_output=True,
                              text=True, timeout=120, check=False)
        assert plan.returncode == 0, plan.stderr[-3000:]
        planned = json.loads(plan.stdout)
        kinds = {s["id"]: s["kind"] for s in planned["steps"]}
        assert kinds.get("start-web") == "service.start" and "service.deploy" not in kinds.values(), kinds
        assert any("standby tier: warm" in n for n in planned["notes"]), planned["notes"]

        # the writer stops; the standby reports it caught up (lag 0); then the no-notice cut
        writer["stop"].set()
        writer["thread"].join(15)
        t_quiet = time.time()
        _, caught = rep.wait_for(lambda t, d: t > t_quiet + 1.0 and d.get("source_reachable")
                                 and d["databases"]["blog"]["lag_seconds"] == 0, 60, "lag 0 after the writer stopped")
        t_cut = time.time()
        own_lab.cut("aws", "down")
        own_lab.cut_host("a")
        assert not app_running_on(b_host)  # still stopped at the cut: nobody wrote into the standby copy
        fo = subprocess.run(_cli("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json"),
                            env=_env(stack_file, state_dir, LIFERAFT_VERIFY_LEDGER=writer["ledger"],
                                     LIFERAFT_SOURCE_TIMEOUT="2"),
                            capture_output=True, text=True, timeout=600, check=False)
        assert fo.returncode == 0, fo.stderr[-4000:]
        first_200 = _first_200_by_dns(info, b, t_cut, 30)
        outcome = json.loads(fo.stdout)
        show = subprocess.run(_cli("show", outcome["run"], "--json"), env=_env(stack_file, state_dir),
                              capture_output=True, text=True, timeout=60, check=False)
        steps = {s["step"]: s for s in json.loads(show.stdout)["steps"]}
        assert not [s for s in steps.values() if s["kind"] in ("service.deploy", "host.configure")], steps.keys()
        assert steps["start-web"]["kind"] == "service.start" and steps["start-web"]["status"] == "done"
        assert steps["start-web"]["result"]["deployed"] is False, steps["start-web"]
        check = verify_ledger(writer["ledger"], _owner_dsn(info, b))
        lost = len(check.missing) + len(check.mismatched)
        print(f"\nwarm: lag before the cut {caught['databases']['blog']['lag_seconds']} s; cut -> first 200 by DNS "
              f"{first_200:.1f} s; writes acknowledged {check.acknowledged}, lost {lost}; start-web "
              f"{steps['start-web']['duration_s']} s ({steps['start-web']['result']}); failover phases: {_phases(fo.stderr)}")
        assert lost == 0 and check.acknowledged > 50
        assert app_running_on(b_host)
    finally:
        rep.stop()
        own_lab.heal()
    # the rollback (the source answers again) undoes the start: the service at b is stopped again
    deadline = time.monotonic() + 60
    while True:
        try:
            import psycopg

            with psycopg.connect(**_owner_dsn(info, info.primary_address)) as c:
                c.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    back = subprocess.run(_cli("rollback", outcome["run"], "--yes", "--json"), env=_env(stack_file, state_dir),
                          capture_output=True, text=True, timeout=600, check=False)
    assert back.returncode == 0, back.stderr[-3000:]
    assert _resolve(info) == info.primary_address
    assert not app_running_on(b_host) and not app_answers(b, info.app_port)


def test_a_no_notice_drill_into_the_warm_site_starts_the_service_and_says_the_tier(own_lab: Any, state_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """After the rollback above: the standby set up again (one `replicate`), then a no-notice drill into b: the
    drill's cold plan starts the service kept there (no deploy), the report names the tier, and afterwards the
    standby is warm again (deployed anew after the drill's teardown removed it, and stopped)."""
    info = own_lab.info
    b_host = info.hosts["b"]
    stack_file = warm_stack(info)
    env = _env(stack_file, state_dir)
    rep = subprocess.run(_cli("replicate", "--to", "alt-b", "--json"), env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert json.loads(rep.stdout)["services"]["web"]["state"] == "stopped"
    assert not app_running_on(b_host)
    drill = subprocess.run(_cli("drill", "--to", "alt-b", "--scenario", "no-notice", "--report", str(tmp_path),
                                "--json"), env=env, capture_output=True, text=True, timeout=900, check=False)
    assert drill.stdout.strip(), drill.stderr[-4000:]
    result = json.loads(drill.stdout)
    # without a ledger the RPO is an upper bound (the lab's objective of 0 is then missed: exit 1); the drill ran
    assert drill.returncode in (0, 1) and result["error"] is None and result["data"]["ok"], drill.stderr[-4000:]
    assert result["rto_s"] is not None and result["torn_down"], result
    assert result["tier"] == "warm" and result["rto_from"] == "cut"
    show = subprocess.run(_cli("show", result["run_id"], "--json"), env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    kinds = {s["step"]: s["kind"] for s in json.loads(show.stdout)["steps"]}
    assert kinds.get("start-web") == "service.start" and "service.deploy" not in kinds.values(), kinds
    report = next(tmp_path.rglob("*.md")).read_text()
    assert "no-notice scenario, warm standby" in report
    print(f"\nwarm no-notice drill: RTO {result['rto_s']:.1f} s from the cut; phases "
          + ", ".join(f"{p['name']} {p['duration_s']:.1f}" for p in result["phases"]))
    # the standby is warm again: deployed anew (the teardown removed it), stopped
    status = subprocess.run(_cli("replicate", "--to", "alt-b", "--status", "--json"), env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert json.loads(status.stdout)["services"]["web"]["state"] == "stopped", status.stdout
    assert b_host.run("cat /etc/liferaft/web/standby").stdout.strip()
    assert not app_running_on(b_host) and not app_answers(b_host.address, info.app_port)
