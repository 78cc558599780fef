"""The operator's view in the lab, through the real CLI: a drill's log off a terminal (counted), and a saved plan's
round trip (plan --out, show, a DNS record changed by hand refused naming it, then applied exactly, rolled back).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.lab_checks import app_records, secret_values

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def cli(info: Any, state: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          stdin=subprocess.DEVNULL, check=False)


def set_app_record(info: Any, addresses: list[str]) -> None:
    """Change the app's A record by hand, at PowerDNS's own API (not through liferaft)."""
    zone = info.zone.rstrip(".") + "."
    body = {"rrsets": [{"name": info.app_fqdn.rstrip(".") + ".", "type": "A", "ttl": 30, "changetype": "REPLACE",
                        "records": [{"content": a, "disabled": False} for a in addresses]}]}
    req = urllib.request.Request(f"{info.direct['dnshost']}/api/v1/servers/localhost/zones/{zone}", method="PATCH",
                                 data=json.dumps(body).encode(), headers={"X-API-Key": info.secret("pdns_api_key"),
                                                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status in (200, 204)


def in_terminal(info: Any, state: Path, *args: str, rows: int = 30) -> tuple[str, int | None]:
    """Run the CLI in a pseudo-terminal of `rows` x 160: what it showed (escape sequences removed), its exit code."""
    import pexpect

    argv = ["-m", "liferaft", "--stack", str(info.stack_file), "--state-dir", str(state), *args]
    child = pexpect.spawn(sys.executable, argv, env={**os.environ, "TERM": "xterm-256color"},
                          dimensions=(rows, 160), encoding="utf-8", timeout=900)
    child.expect(pexpect.EOF)
    child.close()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before).replace("\r", "")
    (state.parent / f"terminal-{args[0]}.txt").write_text(plain)
    return plain, child.exitstatus


def test_drill_log_off_a_terminal_is_one_line_per_step_event_and_per_tenth(lab: Any, tmp_path: Path) -> None:
    info = lab.info
    state = tmp_path / "state"
    out = cli(info, state, "drill", "--to", "alt-b", "--report", str(tmp_path / "r"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    lines = out.stderr.splitlines()
    runs = json.loads(cli(info, state, "runs", "--json", timeout=60).stdout)
    shown = json.loads(cli(info, state, "show", runs[0]["run"], "--json", timeout=60).stdout)
    steps = [s["step"] for s in shown["steps"]]
    started = [x for x in lines if re.match(r"\[\d+/\d+\] ", x) and " done in " not in x]
    done = Counter(m.group(1) for x in lines if (m := re.match(r"\[\d+/\d+\] (\S+) done in ", x)))
    undo = Counter(m.group(1) for x in lines if (m := re.match(r"(\S+) undone$", x)))
    undoing = [x for x in lines if x.startswith("undo ")]
    progress = [x for x in lines if re.match(r"  \S+: \d+% \(", x)]
    per_copy = Counter(x.split(":")[0].strip() for x in progress)
    other = [x for x in lines if x not in started and x not in progress and x not in undoing
             and not re.match(r"\[\d+/\d+\] (\S+) done in |(\S+) undone$", x)]
    print(f"\ndrill log off a terminal: {len(lines)} lines: {len(started)} step starts, {sum(done.values())} ends, "
          f"{len(undoing)} undos started, {sum(undo.values())} undone, {len(progress)} progress lines "
          f"({dict(per_copy)}), {len(other)} others")
    assert len(started) == len(steps) and set(done) == set(steps) and max(done.values()) == 1, lines
    assert len(undoing) == sum(undo.values()) and max(undo.values(), default=1) == 1
    assert all(n <= 10 for n in per_copy.values()), per_copy
    for step in per_copy:
        tenths = [int(x.split(":")[1].split("%")[0]) for x in progress if x.startswith(f"  {step}:")]
        assert tenths == sorted(set(tenths)), tenths
    assert len(other) <= 20, other  # the run and the drill's own few lines (the cut, the data check, the teardown)
    assert not any("ansible" in x or "task.start" in x or "pg.target.kept" in x for x in lines), lines


def test_saved_plan_refused_after_a_dns_change_by_hand_then_applied_exactly(lab: Any, tmp_path: Path) -> None:
    info = lab.info
    a, b, c = (info.hosts[n].address for n in ("a", "b", "c"))
    state, plan_file = tmp_path / "state", tmp_path / "move.plan"
    www = info.app_fqdn.rstrip(".") + "."
    assert app_records(info) == [a]
    out = cli(info, state, "plan", "--to", "alt-b", "--out", str(plan_file), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"failover --plan {plan_file}" in out.stdout
    assert oct(plan_file.stat().st_mode & 0o777) == "0o600"
    text = plan_file.read_text()
    saved = json.loads(text)
    leaks = [name for name, value in secret_values(info, state).items() if value in text]
    assert not leaks, f"secret values in the saved plan: {leaks}"
    assert saved["observed"]["dns"] == [{"name": www, "type": "A", "values": [a]}]

    shown = cli(info, state, "show", str(plan_file), timeout=60)
    assert shown.returncode == 0 and saved["hash"] in shown.stdout and f"{www} A: {a} ->" in shown.stdout

    set_app_record(info, [c])  # someone changes the record by hand between the review and the apply
    try:
        refused = cli(info, state, "failover", "--plan", str(plan_file), "--yes", timeout=600)
    finally:
        set_app_record(info, [a])
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-3000:]
    assert f"DNS {www} A: {a} when planned, {c} now" in refused.stderr, refused.stderr[-3000:]
    assert app_records(info) == [a]
    assert json.loads(cli(info, state, "runs", "--json", timeout=60).stdout) == []  # nothing ran

    # Applied in a terminal: the live view of a real failover, its write freeze, then the summary.
    plain, code = in_terminal(info, state, "failover", "--plan", str(plan_file), "--yes")
    (run,) = json.loads(cli(info, state, "runs", "--json", timeout=60).stdout)
    try:
        check_applied(info, plain, code, run, plan_file, saved, b)
    finally:
        back = cli(info, state, "rollback", run["run"], "--yes", timeout=600)
        assert back.returncode == 0, back.stderr[-3000:]
    assert app_records(info) == [a]


def check_applied(info: Any, plain: str, code: int | None, run: dict[str, Any], plan_file: Path,
                  saved: dict[str, Any], b: str) -> None:
    assert code == 0 and run["status"] == "done", plain[-4000:]
    assert f"the saved plan {plan_file} still holds (plan hash {saved['hash']}): applying it" in plain
    window = re.search(r"(?m)^write-unavailability window: ([\d.]+)s *$", plain)
    assert window and plain.count(f"write-unavailability window: {window.group(1)}s") >= 2, plain[-4000:]
    assert re.search(r"(?m)^✓ freeze\s+freeze writes at the source.* \d+\.\ds *$", plain)
    assert re.search(r"write freeze: [\d.]+s so far", plain), plain[-4000:]  # shown while it lasted
    assert re.search(r"(?m)^run \S+: done \(\d+/\d+ steps, [\d.]+s\) *$", plain), plain[-3000:]
    rec = json.loads(cli(info, plan_file.parent / "state", "show", run["run"], "--json", timeout=60).stdout)
    assert rec["plan"]["hash"] == saved["hash"] and rec["plan"]["steps"] == saved["plan"]["steps"]
    assert app_records(info) == [b]


def test_drill_in_a_terminal_fits_one_screen_and_ends_with_the_summary(lab: Any, tmp_path: Path) -> None:
    """The real drill in a pseudo-terminal of 30 rows: the step list redrawn in place (never taller than the
    screen), states shown (running with time, done with duration, waiting), the bucket copy's progress bar, the
    teardown's undo list, then the drill's verdict."""
    info = lab.info
    rows = 30
    plain, code = in_terminal(info, tmp_path / "state", "drill", "--to", "alt-b", "--report", str(tmp_path / "r"),
                              rows=rows)
    assert code == 0, plain[-4000:]
    verdict = re.search(r"(?m)^drill \S+: PASSED\s+\S+ -> alt-b \(notice\) *$", plain)
    assert verdict, plain[-3000:]
    view = plain[:verdict.start()]  # what stderr showed while the drill ran; the summary follows on stdout
    frames = [f for f in re.split(r"run \S+: (?:\S+ -> \S+ \(\w+\), \d+ steps|undoing \d+ steps)", view)
              if "steps," in f.split("\n", 1)[0]]
    heights = [len(f.rstrip("\n").split("\n")) for f in frames]
    print(f"\ndrill in a terminal: {len(frames)} redraws, frames of at most "
          f"{max(heights)} lines on a {rows}-line screen")
    assert len(frames) >= 5 and max(heights) < rows, heights
    assert re.search(r"(?m)^▶ \S+ .* \d+\.\ds *$", plain) and re.search(r"(?m)^✓ \S+ .* \d+\.\ds *$", plain)
    assert re.search(r"(?m)^· \S+\s+waiting", plain)
    assert re.search(r"━+ +\d+%  \d+/\d+ objects, [\d.]+ \w+/[\d.]+ \w+", plain), plain[-3000:]  # the bucket copy's bar
    assert not re.search(r"(?m)^\[\d+/\d+\] ", plain)  # redrawn in place, not a line per step event
    assert "RTO " in plain[verdict.end():] and "target torn down" in plain[verdict.end():]
    kinds = re.findall(r"\b(?:ansible|pg|objects|run|step|standby)\.[a-z_]+\b.*", plain)
    assert not kinds, kinds[:5]  # no event kinds: the display speaks in words
