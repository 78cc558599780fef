"""`liferaft health` against the whole lab: real moto/s3rver/PowerDNS behind fault proxies, netns hosts over SSH,
the example app on host a. Termination (deny), outage (down) and a cut host must each get their own verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.lab.core import Lab

pytestmark = pytest.mark.lab


def health(lab: Lab, state: Path, *args: str) -> tuple[int, dict[str, Any], float, str]:
    """Run `liferaft health --json` as a user would (a fresh process); return code, JSON, seconds, stderr."""
    argv = [sys.executable, "-m", "liferaft", "--stack", str(lab.info.stack_file), "--state-dir", str(state),
            "health", "--json", *args]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    elapsed = time.monotonic() - t0
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout), elapsed, proc.stderr


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    out = {f"provider:{n}": p["verdict"] for n, p in report["providers"].items()}
    out.update({f"site:{n}": s["verdict"] for n, s in report["sites"].items()})
    return out


@pytest.fixture
def healed(lab: Lab) -> Iterator[Lab]:
    """The lab, healed again after the test whatever happens."""
    lab.heal()
    try:
        yield lab
    finally:
        lab.heal()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


def test_healthy_lab_exits_0_with_every_probe_ok(healed: Lab, state: Path, tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "liferaft.prom"
    code, report, elapsed, _ = health(healed, state, "--prometheus", str(prom))
    print(f"\nliferaft health on the healthy lab: {elapsed:.2f} s wall (process start to exit), "
          f"check itself {report['duration_s']:.2f} s")
    assert code == 0, json.dumps(report, indent=1)
    assert set(verdicts(report).values()) == {"healthy"}
    evidence = [e for p in report["providers"].values() for e in p["evidence"]]
    evidence += [e for s in report["sites"].values() for e in s["evidence"]]
    kinds = {e["kind"] for e in evidence}
    assert {"account", "bucket", "zone", "http", "dns"} <= kinds, kinds
    info = healed.info
    http = [e for e in evidence if e["kind"] == "http"]
    assert [e["probe"] for e in http] == [f"http:web@{info.primary_address}:{info.app_port}"]
    assert http[0]["status"] == 200
    (dns,) = [e for e in evidence if e["kind"] == "dns"]
    assert dns["data"]["answer"] == [info.primary_address]
    text = prom.read_text()
    assert 'liferaft_provider_verdict{stack="microblog",provider="aws",verdict="healthy"} 1' in text
    assert "liferaft_health_verdict_code{stack=\"microblog\"} 0" in text


def test_deny_makes_aws_terminated_with_the_403_as_evidence(healed: Lab, state: Path) -> None:
    healed.cut("aws", "deny")
    code, report, elapsed, _ = health(healed, state)
    aws = report["providers"]["aws"]
    assert code == 3, json.dumps(report, indent=1)
    assert (aws["verdict"], aws["rule"]) == ("terminated", "P1")
    assert any(e["status"] == 403 and e["error"] == "AuthRejected" for e in aws["evidence"]), aws["evidence"]
    assert report["sites"]["primary"]["verdict"] == "terminated"
    # the other vendors are judged on their own evidence: still healthy
    assert {report["providers"][p]["verdict"] for p in ("objstore", "dnshost", "colo-a", "colo-b")} == {"healthy"}
    print(f"\ndeny: {elapsed:.2f} s")
    # the human table says the same, with the evidence
    proc = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(healed.info.stack_file), "--state-dir",
                           str(state), "health"], capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 3
    assert "terminated" in proc.stdout and "AuthRejected" not in proc.stdout and "auth_rejected" in proc.stdout
    assert "403" in proc.stdout


def test_down_makes_aws_unreachable(healed: Lab, state: Path) -> None:
    healed.cut("aws", "down")
    code, report, elapsed, _ = health(healed, state)
    aws = report["providers"]["aws"]
    assert code == 2, json.dumps(report, indent=1)
    assert (aws["verdict"], aws["rule"]) == ("unreachable", "P3")
    assert all(e["outcome"] in ("unreachable", "timeout") for e in aws["evidence"])
    # host a still serves: the primary site is degraded, not gone
    assert (report["sites"]["primary"]["verdict"], report["sites"]["primary"]["rule"]) == ("degraded", "S3")
    print(f"\ndown: {elapsed:.2f} s")


def test_cutting_host_a_makes_the_primary_site_unreachable(healed: Lab, state: Path) -> None:
    healed.cut_host("a")
    code, report, elapsed, _ = health(healed, state, "--timeout", "4")
    primary = report["sites"]["primary"]
    assert code == 2, json.dumps(report, indent=1)
    assert (primary["verdict"], primary["rule"]) == ("unreachable", "S2")
    assert primary["evidence"] and all(e["outcome"] in ("unreachable", "timeout") for e in primary["evidence"])
    assert report["providers"]["colo-a"]["verdict"] == "unreachable"
    # per-probe deadlines: the silent host costs one timeout, not one per probe
    assert report["duration_s"] < 4 + 3, report["duration_s"]
    print(f"\ncut host a: {elapsed:.2f} s wall, check {report['duration_s']:.2f} s (probe timeout 4 s)")


def test_heal_brings_exit_0_back(healed: Lab, state: Path) -> None:
    healed.cut("aws", "deny")
    healed.cut_host("a")
    assert health(healed, state, "--timeout", "3")[0] == 3
    healed.heal()
    # A healed lab may need a moment (the app reconnects to its bucket, sshd answers again on a loaded machine):
    # check until healthy, at most 4 times, and say how many it took.
    for attempt in range(1, 5):
        code, report, _, _ = health(healed, state)
        if code == 0:
            break
        bad = {k: v for k, v in verdicts(report).items() if v != "healthy"}
        print(f"\nafter heal, attempt {attempt}: exit {code}: {bad}")
        time.sleep(2)
    assert code == 0, json.dumps(report, indent=1)
    print(f"\nheal -> exit 0 on attempt {attempt}")


def test_explain_on_a_terminated_provider_does_nothing_by_default(healed: Lab, state: Path) -> None:
    healed.cut("aws", "deny")
    code, out, _, _ = health(healed, state, "--explain")
    assert code == 3
    assert out["explain"]["failover_on"] == "never" and out["explain"]["would_failover"] is False
    assert out["explain"]["target"] == "alt-b"


def test_watch_confirms_a_termination_and_runs_the_hook(healed: Lab, state: Path, tmp_path: Path) -> None:
    """--watch --confirm 2 on a denied provider: the change to terminated is confirmed once, the hook gets it."""
    out = tmp_path / "changes.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')\n")
    # the lab's stack plus a hook, next to the original so its relative secret references still resolve
    original = healed.info.stack_file
    assert "\nhealth:" not in original.read_text()
    stack = original.with_name(f"liferaft-health-watch-{os.getpid()}.yaml")
    stack.write_text(original.read_text() + f"\nhealth:\n  hook: [{sys.executable!r}, {str(hook)!r}]\n")
    try:
        _watch_denied(healed, stack, state, out)
    finally:
        stack.unlink(missing_ok=True)


def _watch_denied(healed: Lab, stack: Path, state: Path, out: Path) -> None:
    healed.cut("aws", "deny")
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack), "--state-dir", str(state), "health", "--watch",
            "--interval", "0", "--confirm", "2", "--count", "3", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 3, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{\"round\"")]
    assert len(lines) == 3
    changes = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    subjects = {(c["subject"], c["verdict"]) for c in changes}
    assert ("provider:aws", "terminated") in subjects and ("site:primary", "terminated") in subjects
    assert all(c["confirmations"] == 2 for c in changes)
