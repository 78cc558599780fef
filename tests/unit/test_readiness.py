"""Readiness without a lab: the state file, Prometheus text, bounded source calls, and the cold plan's shape."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.engine.standby_state import (
    load_standby,
    load_state,
    push_history,
    save_standby,
    state_path,
)
from liferaft.errors import InvalidInput, Unreachable, UsageError
from liferaft.movers.bounded import bounded, tcp_answers
from liferaft.standby.exposure import prometheus_text, rpo_exposure

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO / "examples" / "microblog"


@pytest.fixture
def hung_server() -> Iterator[tuple[str, int]]:
    """A real TCP server that accepts connections and never says a word (a black-holed provider)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield "127.0.0.1", srv.getsockname()[1]
    finally:
        done.set()
        t.join(2)
        for s in held:
            s.close()
        srv.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _record(**over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "source": "primary", "target": "alt-b",
        "databases": {"blog": {"method": "logical", "lag_bytes": 4096, "lag_seconds": 0.25, "ok": True,
                               "last_sync_at": 1000.0, "subscription": "liferaft_microblog"}},
        "buckets": {"images": {"lag_bytes": 0, "lag_seconds": 3.5, "ok": False, "last_sync_at": 990.0}},
    }
    rec.update(over)
    return rec


def test_state_file_is_owner_only_atomic_and_keeps_other_standbys(tmp_path: Path) -> None:
    """Each standby's record replaces only itself; the file is 0600 in a 0700 dir; no temp file is left."""
    save_standby(tmp_path, "microblog", "alt-b", _record())
    save_standby(tmp_path, "microblog", "alt-c", _record(target="alt-c"))
    save_standby(tmp_path, "microblog", "alt-b", _record(source="elsewhere"))
    path = state_path(tmp_path, "microblog")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["microblog.json"]
    data = json.loads(path.read_text())
    assert data["stack"] == "microblog" and set(data["standbys"]) == {"alt-b", "alt-c"}
    rec = load_standby(tmp_path, "microblog", "alt-b")
    assert rec is not None and rec.source == "elsewhere" and rec.entry("databases", "blog")["lag_bytes"] == 4096
    assert load_standby(tmp_path, "microblog", "alt-z") is None


def test_audit_sees_the_recorded_standby(tmp_path: Path) -> None:
    """The lead's audit looks for readiness/*.json naming the stack: what replicate writes is what it finds."""
    from liferaft.audit._core import _replication_recorded

    assert not _replication_recorded(tmp_path, "microblog")
    save_standby(tmp_path, "microblog", "alt-b", _record())
    assert _replication_recorded(tmp_path, "microblog")


def test_a_corrupt_state_file_is_reported_not_reset(tmp_path: Path) -> None:
    """Losing the record of what the standby holds silently would be worse than stopping."""
    path = state_path(tmp_path, "microblog")
    path.write_text("{not json")
    with pytest.raises(InvalidInput) as e:
        load_state(tmp_path, "microblog")
    assert str(path) in str(e.value)
    assert path.read_text() == "{not json"


def test_rpo_exposure_is_the_worst_dataset_and_history_is_bounded() -> None:
    rec = _record()
    assert rpo_exposure(rec) == 3.5
    assert rpo_exposure({"databases": {}, "buckets": {}}) is None
    entry: dict[str, object] = {}
    for i in range(500):
        push_history(entry, [float(i), 1.0, 2.0])
    hist = entry["history"]
    assert isinstance(hist, list) and len(hist) == 120 and hist[-1][0] == 499.0


def test_prometheus_text_has_lag_per_dataset_in_seconds_and_bytes() -> None:
    text = prometheus_text("microblog", _record())
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert ('liferaft_standby_lag_seconds{stack="microblog",target="alt-b",kind="database",dataset="blog"} 0.250'
            in lines)
    assert 'liferaft_standby_lag_bytes{stack="microblog",target="alt-b",kind="database",dataset="blog"} 4096' in lines
    assert 'liferaft_standby_ok{stack="microblog",target="alt-b",kind="bucket",dataset="images"} 0' in lines
    assert 'liferaft_standby_rpo_exposure_seconds{stack="microblog",target="alt-b"} 3.500' in lines
    for line in lines:  # every sample is "<name>{labels} <number>"
        name_labels, value = line.rsplit(" ", 1)
        float(value)
        assert name_labels.startswith("liferaft_standby_")


def test_bounded_gives_up_on_a_hung_source_on_time(hung_server: tuple[str, int]) -> None:
    """A black-holed source costs the caller the timeout, not the library's minute."""
    host, port = hung_server

    def talk() -> bytes:
        with socket.create_connection((host, port), timeout=30) as s:
            return s.recv(10)  # never answers

    t0 = time.monotonic()
    with pytest.raises(Unreachable) as e:
        bounded(talk, 0.5, provider="aws", what="list bucket")
    assert time.monotonic() - t0 < 1.5
    assert "no answer within 0.5 s" in str(e.value)
    assert bounded(lambda: 42, 1.0, provider="aws", what="x") == 42
    with pytest.raises(Unreachable):
        bounded(lambda: 1 / 0, 1.0, provider="aws", what="x")


def test_bounded_postgres_lag_on_a_hung_source(hung_server: tuple[str, int]) -> None:
    """The lag query against a source that accepts TCP and never answers ends at the source timeout."""
    from liferaft.movers.pg_conn import PgConn
    from liferaft.movers.pg_standby import source_lag

    host, port = hung_server
    conn = PgConn(host=host, port=port, dbname="x", user="u", password="p")
    t0 = time.monotonic()
    with pytest.raises(Unreachable):
        bounded(lambda: source_lag(conn, "slot", 1.0), 1.0, provider="primary", what="lag")
    assert time.monotonic() - t0 < 2.0


def test_tcp_probe(hung_server: tuple[str, int]) -> None:
    assert tcp_answers(*hung_server, 1.0)[0] is True
    ok, detail = tcp_answers("127.0.0.1", _closed_port(), 1.0)
    assert ok is False and "Refused" in detail


@pytest.fixture
def example_stack(tmp_path: Path) -> Path:
    """The example stack with every endpoint pointed at closed local ports (nothing answers)."""
    d = tmp_path / "stack"
    shutil.copytree(EXAMPLE_DIR, d, ignore=shutil.ignore_patterns("__pycache__"))
    secrets = d / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("aws_access_key_id", "aws_secret_access_key", "db_password", "worker_redis_password", "id_ed25519",
                 "pdns_api_key",
                 "s3rver_key", "s3rver_secret"):
        (secrets / name).write_text("not-a-real-secret\n")
    return d / "liferaft.yaml"


def test_cold_plan_needs_a_recorded_standby(example_stack: Path, tmp_path: Path) -> None:
    from liferaft.failover.cold import build_cold_plan
    from liferaft.stack import load_stack

    stack = load_stack(example_stack)
    target = stack.model.alternates[0]
    with pytest.raises(UsageError) as e:
        build_cold_plan(stack, target, state_dir=tmp_path / "state")
    assert "no standby is recorded" in str(e.value) and "liferaft replicate" in (e.value.hint or "")


def test_cold_plan_uses_the_standby_and_never_waits_on_the_source(example_stack: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps in order, engine kinds reused, the source probed once within the timeout and nothing else."""
    from liferaft.engine.kinds import get_kind
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV, build_cold_plan
    from liferaft.stack import load_stack

    stack = load_stack(example_stack)
    m = stack.model
    target = m.alternates[0]
    state = tmp_path / "state"
    rec = {"source": m.primary, "target": target,
           "source_host": {"name": "a", "address": "127.0.0.1", "port": _closed_port()},
           "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": f"{m.name}-{target}",
                            "provider": stack.site(target).compute},
           "databases": {k: {"method": d.migrate, "subscription": f"liferaft_{d.name}", "lag_seconds": 0.2}
                         for k, d in m.data.databases.items()},
           "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
           "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
           "buckets": {k: {"last_sync_at": 1.0, "lag_seconds": 2.0} for k in m.data.buckets}}
    save_standby(state, m.name, target, rec)
    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    t0 = time.monotonic()
    plan = build_cold_plan(stack, target, state_dir=state)  # the example's DNS provider does not answer here
    assert time.monotonic() - t0 < 15
    kinds = [s.kind for s in plan.steps]
    assert plan.mode == "cold" and kinds[0] == "host.allocate" and kinds[-2:] == ["verify.service", "standby.release"]
    assert plan.steps[0].params["name"] == f"{m.name}-{target}"
    assert "standby.promote" in kinds and "standby.loss" in kinds and "service.deploy" in kinds
    assert kinds.index("standby.loss") < kinds.index("service.deploy") < kinds.index("verify.service")
    if m.data.buckets:
        assert "standby.objects" in kinds
    for s in plan.steps:
        get_kind(s.kind)
    assert not any(k in kinds for k in ("db.migrate", "cutover.freeze", "objects.sync", "db.access"))
    # a rollback drops the slot the promotion abandons at the source: the plan says where that is
    promotes = [s for s in plan.steps if s.kind == "standby.promote"]
    assert promotes and all(s.params["source_address"] == "127.0.0.1" for s in promotes)
    assert get_kind("standby.promote").undoable
    assert any("did not answer" in n for n in plan.notes)
    assert os.environ[SOURCE_TIMEOUT_ENV] == "0.5"


def test_replicate_cli_usage_mistakes(example_stack: Path, tmp_path: Path) -> None:
    """Usage mistakes exit 2 before anything is contacted."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir",
                        str(tmp_path / "s"), "replicate", "--to", "alt-b", "--count", "2"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--count needs --watch" in r.stderr
    r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir",
                        str(tmp_path / "s"), "replicate", "--to", "primary"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "is the primary" in r.stderr
    for extra in (["--watch"], ["--interval", "5"], ["--prometheus", str(tmp_path / "p.prom")], ["--lower-ttl", "30"]):
        r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir",
                            str(tmp_path / "s"), "replicate", "--to", "alt-b", "--stop", *extra],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2 and "--stop takes none of" in r.stderr, extra
    r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir",
                        str(tmp_path / "s"), "replicate", "--to", "alt-b", "--stop"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "no standby recorded at 'alt-b'" in r.stderr


def test_replicate_and_drill_refuse_a_site_another_process_uses(example_stack: Path, tmp_path: Path) -> None:
    """`replicate` and `drill` (both scenarios) into a site another process holds (a `replicate --watch`, a drill, a
    failover run) exit with the lock's code, naming the holder, before anything is contacted; an unknown site is a
    usage error that leaves no lock file behind."""
    import signal
    import subprocess
    import sys

    from liferaft.errors import EXIT_LOCKED
    from liferaft.stack import load_stack

    state = tmp_path / "s"
    name = load_stack(example_stack).model.name
    base = [sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state)]
    holder = subprocess.Popen([sys.executable, "-m", "tests.unit.test_failover_toys", "hold-site", str(state), name,
                               "alt-b", "replicate --watch"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        for args in (["replicate", "--to", "alt-b"], ["replicate", "--to", "alt-b", "--watch"],
                     ["drill", "--to", "alt-b"], ["drill", "--to", "alt-b", "--scenario", "no-notice"]):
            t0 = time.monotonic()
            r = subprocess.run([*base, *args, "--json"], capture_output=True, text=True, timeout=60, check=False)
            assert r.returncode == EXIT_LOCKED, (args, r.stdout, r.stderr)
            assert json.loads(r.stdout)["error"] == "LockHeld"
            assert f"site 'alt-b' of stack '{name}' is in use by process {holder.pid} (replicate --watch)" in r.stderr
            assert time.monotonic() - t0 < 30  # refused at once, not after waiting on the closed endpoints
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    r = subprocess.run([*base, "drill", "--to", "nowhere"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "no site named 'nowhere'" in r.stderr
    assert not list(state.rglob("site-nowhere*"))


def test_replicate_refuses_a_site_a_run_put_the_stack_into(example_stack: Path, tmp_path: Path) -> None:
    """A done failover into the site (the stack runs there now), a drill kept running there, a run stopped midway:
    `replicate --to` that site exits 2 saying which run and what to do, before anything is contacted. Rolled-back
    runs leave the site free; runs into other sites do not matter."""
    import subprocess
    import sys

    from liferaft.engine import Journal, Plan, Step, journal_path
    from liferaft.stack import load_stack
    from liferaft.standby.keeper import require_no_run_into

    stack = load_stack(example_stack)
    state = tmp_path / "s"
    base = [sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state)]

    def add_run(run_id: str, status: str, *, target: str = "alt-b", drill: bool = False) -> None:
        steps = (Step("one", "host.allocate", "x"),) + ((Step("guard", "drill.teardown", "y"),) if drill else ())
        plan = Plan(stack.model.name, stack.model.primary, target, "live", steps)
        with Journal(journal_path(state, stack.model.name)) as j:
            j.create_run(run_id, plan)
            j.set_run_status(run_id, status)

    def refused() -> str:
        r = subprocess.run([*base, "replicate", "--to", "alt-b"], capture_output=True, text=True, timeout=60,
                           check=False)
        assert r.returncode == 2, r.stderr
        return r.stderr

    require_no_run_into(stack, state, "alt-b")  # no journal yet: free
    add_run("r-failover", "done")
    add_run("r-other-site", "done", target="alt-c")
    assert "failed over into 'alt-b' (run r-failover, done)" in refused()
    assert "liferaft rollback r-failover" in refused()
    with Journal(journal_path(state, stack.model.name)) as j:
        j.set_run_status("r-failover", "rolled-back")
    add_run("r-drill", "done", drill=True)
    assert "a drill kept its target running at 'alt-b' (run r-drill)" in refused()
    assert "liferaft drill --teardown r-drill" in refused()
    with Journal(journal_path(state, stack.model.name)) as j:
        j.set_run_status("r-drill", "rolled-back")
    add_run("r-stopped", "stopped")
    assert "run r-stopped into 'alt-b' is stopped" in refused()
    with Journal(journal_path(state, stack.model.name)) as j:
        j.set_run_status("r-stopped", "rolled-back")
    require_no_run_into(stack, state, "alt-b")  # every run into alt-b rolled back: free again


def test_plan_source_timeout_flag_bounds_the_cold_probe(example_stack: Path, tmp_path: Path,
                                                        hung_server: tuple[str, int]) -> None:
    """`plan --mode cold --source-timeout S`: the one probe of a source that accepts and never answers is bounded
    by S (the flag wins over LIFERAFT_SOURCE_TIMEOUT); the flag is refused in live mode."""
    import subprocess
    import sys

    from liferaft.stack import load_stack

    stack = load_stack(example_stack)
    m = stack.model
    target = m.alternates[0]
    state = tmp_path / "state"
    host, port = hung_server
    save_standby(state, m.name, target, {
        "source": m.primary, "target": target, "source_host": {"name": "a", "address": host, "port": port},
        "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": f"{m.name}-{target}",
                         "provider": stack.site(target).compute},
        "databases": {k: {"method": d.migrate, "subscription": f"liferaft_{d.name}"} for k, d in m.data.databases.items()},
        "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
        "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
        "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}})
    base = [sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state)]
    env = {**os.environ, "LIFERAFT_SOURCE_TIMEOUT": "30"}
    t0 = time.monotonic()
    r = subprocess.run([*base, "plan", "--to", target, "--mode", "cold", "--source-timeout", "1", "--json"],
                       capture_output=True, text=True, timeout=120, check=False, env=env)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert "timeout 1 s" in r.stderr and took < 25, (took, r.stderr[-1000:])
    r = subprocess.run([*base, "plan", "--to", target, "--source-timeout", "1"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and "--mode cold" in r.stderr


def test_health_shows_each_standbys_rpo_exposure(example_stack: Path, tmp_path: Path) -> None:
    """`liferaft health` reads the readiness state (no network for it) and says what a cut now would lose."""
    import json
    import subprocess
    import sys

    from liferaft.stack import load_stack
    from liferaft.standby.exposure import exposure

    stack = load_stack(example_stack)
    m = stack.model
    state = tmp_path / "state"
    assert exposure(state, m.name) == {}
    save_standby(state, m.name, "alt-b", _record())
    got = exposure(state, m.name, now=time.time() + 10)
    assert got["alt-b"]["rpo_exposure_s"] == 3.5 and 9 <= got["alt-b"]["measured_ago_s"] <= 12
    base = [sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state), "health"]
    r = subprocess.run([*base, "--json", "--timeout", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode in (0, 1, 2, 3), r.stderr[-2000:]
    assert json.loads(r.stdout)["standbys"]["alt-b"]["rpo_exposure_s"] == 3.5
    r = subprocess.run([*base, "--timeout", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert "standby at alt-b" in r.stdout and "lose about 3.5 s" in r.stdout, r.stdout[-2000:]
