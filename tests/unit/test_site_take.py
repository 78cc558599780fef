"""A failover takes the site from a standby keeper (`replicate`): SIGTERM, a bounded wait for its round to end,
then the site is the run's. A run or a drill holding the site is refused at once; a pid the note names is only
signalled while it is still the process that wrote the note. Real processes and real flocks."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.engine import Runner, SiteLock
from liferaft.engine.standby_state import save_standby
from liferaft.errors import LockHeld
from liferaft.events import Event, Events
from tests.unit.test_readiness import example_stack  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import signal, sys, threading, time
from pathlib import Path
from liferaft.engine import SiteLock
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
state, by, yields, round_s, stubborn = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", float(sys.argv[4]), sys.argv[5] == "1"
with SiteLock(state, "toy", "there").acquire(by=by, yields=yields):
    print("held", flush=True)
    while not stop.wait(0.05):
        pass
    print("asked", flush=True)
    time.sleep(round_s)  # the round in progress ends first
    while stubborn:
        time.sleep(0.1)
print("released", flush=True)
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _hold(procs: list[subprocess.Popen[str]], state: Path, by: str, *, yields: bool, round_s: float = 0.0,
          stubborn: bool = False) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(state), by, "1" if yields else "0", str(round_s),
                          "1" if stubborn else "0"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    procs.append(p)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_keeper_is_asked_to_end_its_round_and_the_site_is_taken(tmp_path: Path,
                                                                    holders: list[subprocess.Popen[str]]) -> None:
    """replicate-like keeper: SIGTERM, its 1 s round ends, it releases and exits 0; the run then holds the site."""
    state = tmp_path / "state"
    keeper = _hold(holders, state, "replicate --watch", yields=True, round_s=1.0)
    events: list[Event] = []
    t0 = time.monotonic()
    with SiteLock(state, "toy", "there").take("run-1", by="failover run", events=events.append) as lock:
        took = time.monotonic() - t0
        assert keeper.wait(10) == 0
        note = json.loads(lock.path.read_text())
        assert note["pid"] == os.getpid() and note["by"] == "failover run" and note["yields"] is None
    assert 1.0 <= took < 5.0, took
    assert keeper.stdout is not None and keeper.stdout.read().split() == ["asked", "released"]
    kinds = [e.kind for e in events]
    assert kinds == ["site.taking", "site.taken"], kinds
    assert f"took site there from replicate --watch pid {keeper.pid} in" in events[-1].message
    assert events[-1].data["seconds"] >= 1.0


def test_a_run_or_drill_holding_the_site_is_refused_at_once_and_not_signalled(
        tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    for by in ("failover run", "drill, no-notice"):
        other = _hold(holders, state, by, yields=False)
        t0 = time.monotonic()
        with pytest.raises(LockHeld) as refused:
            SiteLock(state, "toy", "there").take(by="failover run")
        assert time.monotonic() - t0 < 0.5
        assert f"process {other.pid} ({by})" in str(refused.value)
        assert other.poll() is None  # never signalled
        other.kill()
        other.wait(10)


def test_a_keeper_that_does_not_let_go_in_time_is_a_clear_refusal(tmp_path: Path,
                                                                  holders: list[subprocess.Popen[str]]) -> None:
    state = tmp_path / "state"
    keeper = _hold(holders, state, "replicate --watch", yields=True, stubborn=True)
    t0 = time.monotonic()
    with pytest.raises(LockHeld, match=f"replicate --watch \\(pid {keeper.pid}\\) was asked to stop 1 s ago"):
        SiteLock(state, "toy", "there").take(by="failover run", wait=1.0)
    assert 1.0 <= time.monotonic() - t0 < 3.0
    assert keeper.stdout is not None and keeper.stdout.readline().strip() == "asked"  # it did get the signal


def test_a_stale_note_never_gets_its_pid_signalled(tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    """The flock is held by a process that has not written its note yet; the note left behind names a pid that is
    now another process (its start time differs): that process is not signalled, the take is refused in time."""
    state = tmp_path / "state"
    lock = SiteLock(state, "toy", "there")
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        lock.path.write_text(json.dumps({"pid": bystander.pid, "by": "replicate --watch", "run": None,
                                         "start": "1", "yields": "SIGTERM"}))
        code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
        flocker = subprocess.Popen([sys.executable, "-c", code, str(lock.path)], stdout=subprocess.PIPE, text=True)
        holders.append(flocker)
        assert flocker.stdout is not None and flocker.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match="was asked to stop"):
            lock.take(by="failover run", wait=0.5)
        assert bystander.poll() is None and flocker.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)
    with pytest.raises(BlockingIOError):  # the flocker really held it throughout
        fd = os.open(lock.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_claim_before_planning(tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    """The failover command claims the stack and the site before it plans: without confirmation yet, a keeper is
    only checked (left running); with it, the keeper is asked at once and not waited for (its 1 s round ends while
    the plan is made); the run then takes the site, timed from the ask; a run holding the site is refused at once."""
    state = tmp_path / "state"
    events: list[Event] = []
    runner = Runner(state, stack_name="toy", events=Events(events.append))
    keeper = _hold(holders, state, "replicate --watch", yields=True, round_s=1.0)
    with runner.claim("there", take_site=False):
        assert keeper.poll() is None
    t0 = time.monotonic()
    with runner.claim("there", take_site=True):
        assert time.monotonic() - t0 < 0.5 and keeper.poll() is None  # asked, not waited for
        time.sleep(0.6)  # planning
        with SiteLock(state, "toy", "there").take(by="failover run", events=runner.events):
            assert keeper.wait(10) == 0
        assert 1.0 <= time.monotonic() - t0 < 3.0
    assert [e.kind for e in events] == ["site.taking", "site.taken"] and events[1].data["seconds"] >= 1.0
    with runner.claim("there", take_site=True):  # a free site is simply held
        pass
    other = _hold(holders, state, "failover run", yields=False)
    for take_site in (False, True):
        with pytest.raises(LockHeld), runner.claim("there", take_site=take_site):
            pass
    assert other.poll() is None


def test_failover_cli_is_refused_at_once_not_after_probing_the_source(
        tmp_path: Path, holders: list[subprocess.Popen[str]], example_stack: Path) -> None:  # noqa: F811
    """`failover --mode cold` into a site a drill holds: exit 5 before the source is probed (a black-holed source
    under a 20 s source timeout); the plan used to be made first (~10.5 s in the lab) and the refusal came after."""
    from liferaft.errors import EXIT_LOCKED
    from liferaft.stack import load_stack

    stack = load_stack(example_stack)
    m = stack.model
    state = tmp_path / "state"
    with socket.socket() as silent:  # a listener that never accepts: connects to it hang (queue full)
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for f in fillers:
            f.setblocking(False)
            f.connect_ex(silent.getsockname())
        save_standby(state, m.name, "alt-b", {
            "source": m.primary, "target": "alt-b",
            "source_host": {"name": "a", "address": "127.0.0.1", "port": silent.getsockname()[1]},
            "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": f"{m.name}-alt-b",
                             "provider": stack.site("alt-b").compute},
            "databases": {k: {"method": d.migrate, "subscription": "s"} for k, d in m.data.databases.items()},
            "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
            "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
            "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}})
        drill = subprocess.Popen([sys.executable, "-m", "tests.unit.test_failover_toys", "hold-site", str(state), m.name,
                                  "alt-b", "drill, no-notice"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        holders.append(drill)
        assert drill.stdout is not None and drill.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state),
                            "failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json"], cwd=REPO,
                           capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "LIFERAFT_SOURCE_TIMEOUT": "20"})
        took = time.monotonic() - t0
        for f in fillers:
            f.close()
    assert r.returncode == EXIT_LOCKED, r.stderr[-2000:]
    assert f"process {drill.pid} (drill, no-notice)" in r.stderr and "source probe" not in r.stderr
    assert took < 10, took  # Python start-up and the stack file, not the 20 s probe
    assert drill.poll() is None  # a drill is never signalled
