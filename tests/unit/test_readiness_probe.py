"""Bounded probing of a source that may be gone, with real sockets: one deadline for the whole cold-failover probe
(ports in parallel), and a standby's lag that grows from its last confirmed position while the source is silent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.engine.standby_state import load_standby, save_standby
from liferaft.movers.bounded import probe_ports
from tests.unit.test_readiness import _closed_port, example_stack  # noqa: F401 (a fixture)


@pytest.fixture
def black_holes() -> Iterator[list[int]]:
    """Two local ports whose SYNs are dropped: a listener with a full accept queue (listen(0), queue filled) never
    completes another handshake, so a connect hangs until its timeout -- as a cut-off host's address does."""
    servers, fillers = [], []
    for _ in range(2):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        servers.append(srv)
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(srv.getsockname())
            except BlockingIOError:
                pass
            fillers.append(c)
    time.sleep(0.2)
    try:
        yield [int(s.getsockname()[1]) for s in servers]
    finally:
        for s in fillers + servers:
            s.close()


def test_the_whole_source_probe_has_one_deadline(black_holes: list[int]) -> None:
    """Two silent ports cost one timeout, not one each (they were probed one after the other: 2 x the timeout)."""
    t0 = time.monotonic()
    got = probe_ports("127.0.0.1", black_holes, 1.0)
    took = time.monotonic() - t0
    assert 0.9 <= took < 1.5, took
    assert [ok for ok, _ in got.values()] == [False, False] and list(got) == black_holes


def test_the_probe_reports_each_port_and_a_closed_one_at_once(black_holes: list[int]) -> None:
    closed = _closed_port()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        open_port = int(srv.getsockname()[1])
        t0 = time.monotonic()
        got = probe_ports("127.0.0.1", [closed, open_port], 5.0)
        assert time.monotonic() - t0 < 1.0  # nothing silent: no waiting at all
    assert got[open_port][0] is True and got[closed][0] is False and "Refused" in got[closed][1]
    got = probe_ports("127.0.0.1", [black_holes[0], closed], 1.0)
    assert got[black_holes[0]][0] is False and "Refused" in got[closed][1]


def test_cold_plan_probe_of_a_silent_source_costs_one_timeout(example_stack: Path,  # noqa: F811
                                                              tmp_path: Path, black_holes: list[int]) -> None:
    """The cold plan probes the source's SSH and PostgreSQL ports: both black-holed, the probe takes one
    source timeout and the plan says the source did not answer within it."""
    from liferaft.events import Event
    from liferaft.failover import cold
    from liferaft.stack import load_stack

    example_stack.write_text(example_stack.read_text().replace("port: 5432", f"port: {black_holes[1]}"))
    stack = load_stack(example_stack)
    m = stack.model
    target = m.alternates[0]
    assert {d.port for d in m.data.databases.values()} == {black_holes[1]}
    rec = {"source": m.primary, "target": target,
           "source_host": {"name": "a", "address": "127.0.0.1", "port": black_holes[0]},
           "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22}, "databases": {}, "buckets": {}}
    save_standby(tmp_path, m.name, target, rec)
    standby = load_standby(tmp_path, m.name, target)
    assert standby is not None
    events: list[Event] = []
    t0 = time.monotonic()
    notes = cold._probe_source(standby, stack, 1.0, cold.as_events(events.append))
    assert time.monotonic() - t0 < 1.5
    assert "did not answer within 1 s" in notes[0]
    assert events[0].data["source_answers"] is False
    assert all(f"127.0.0.1:{port} no answer" in events[0].message for port in black_holes), events[0].message


def test_lag_grows_from_the_last_confirmed_position_while_the_source_is_silent(example_stack: Path,  # noqa: F811
                                                                              tmp_path: Path) -> None:
    """Rounds that cannot reach the source (every endpoint of the example is a closed port here) report each
    dataset's lag as now minus the time it was last confirmed caught up -- growing, not the last 0.0 s."""
    from liferaft.stack import load_stack
    from liferaft.standby.keeper import ReplicateOptions, Replicator

    stack = load_stack(example_stack)
    m = stack.model
    target = m.alternates[0]
    confirmed = time.time() - 10.0
    save_standby(tmp_path, m.name, target, {
        "source": m.primary, "target": target,
        "source_host": {"name": "a", "address": "127.0.0.1", "port": _closed_port()},
        "standby_host": {"name": "b", "address": "127.0.0.1", "port": _closed_port()},
        "databases": {k: {"method": "logical", "subscription": "liferaft_x", "lag_seconds": 0.0, "lag_bytes": 0,
                          "ok": True, "caught_up_at": confirmed} for k in m.data.databases},
        "buckets": {k: {"lag_seconds": 0.0, "ok": True, "caught_up_at": confirmed} for k in m.data.buckets}})
    # rounds act in the context of the standby's set-up run (journaled): one that made this standby
    from liferaft.engine import Journal, journal_path
    from liferaft.standby.setup import plan_setup

    setup = plan_setup(stack, target, {"name": "a", "address": "127.0.0.1"}, {}, source_timeout=0.5, interval=0.2)
    with Journal(journal_path(tmp_path, m.name)) as journal:
        journal.create_run("r-setup", setup)
        journal.set_run_status("r-setup", "done")
    rep = Replicator(stack, tmp_path, ReplicateOptions(target=target, interval=0.2, source_timeout=0.5))
    first = rep.round()
    time.sleep(1.0)
    second = rep.round()
    assert first["source_reachable"] is False
    for group in ("databases", "buckets"):
        for key, d in first[group].items():
            assert d["ok"] is False and 10.0 <= d["lag_seconds"] < 20.0, (group, key, d)
            assert second[group][key]["lag_seconds"] >= d["lag_seconds"] + 0.9
    assert second["rpo_exposure_s"] >= 11.0


def test_the_move_record_is_shown_and_forgotten_only_by_its_own_rollback(example_stack: Path,  # noqa: F811
                                                                          tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from liferaft.engine.standby_state import forget_move, load_move, record_move

    assert load_move(tmp_path, "microblog") is None
    record_move(tmp_path, "microblog", site="alt-b", source="primary", run="R1", mode="cold")
    r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(tmp_path),
                        "health", "--json", "--timeout", "1"], capture_output=True, text=True, timeout=120,
                       check=False)
    moved = json.loads(r.stdout)["moved"]
    assert moved["site"] == "alt-b" and moved["run"] == "R1" and moved["mode"] == "cold"
    assert forget_move(tmp_path, "microblog", run="R0") is False and load_move(tmp_path, "microblog")
    assert forget_move(tmp_path, "microblog", run="R1") is True and load_move(tmp_path, "microblog") is None
