"""Saved plans (liferaft.engine.saved): written atomically and owner-only, read back exactly, refused when edited,
and compared with a fresh plan: what changed is named, data sizes within the stated tolerance pass. `show PLAN`
prints one. (The lab's round trip through `plan --out` and `failover --plan` is in
tests/integration/test_saved_plan_lab.py.)"""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path

import pytest

from liferaft.engine import Plan, Step
from liferaft.engine.saved import (
    SIZE_TOLERANCE_BYTES,
    PlanChanged,
    changes,
    is_saved_plan_file,
    load_plan,
    save_plan,
)
from liferaft.errors import EXIT_USAGE, InvalidInput
from tests.cli_helpers import invoke
from tests.unit.test_failover_toys import toy_plan

GIB = 1 << 30


def big(plan: Plan, size: int) -> Plan:
    return dataclasses.replace(plan, bytes_to_move=size, notes=("source host a (10.0.0.1); 3 objects",),
                               resources=({"action": "allocate", "kind": "host", "name": "web-b", "provider": "lab",
                                           "detail": "(free: b)"},))


def test_round_trip_owner_only_atomic(tmp_path: Path) -> None:
    plan = big(toy_plan(tmp_path), 5 * GIB)
    path = tmp_path / "plans" / "move.plan"
    path.parent.mkdir()
    path.write_text("an older plan")
    save_plan(plan, path, {"to": "there", "mode": "live", "ledger": None, "source_timeout": None})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["move.plan"]  # replaced by a rename, no temporary left
    saved = load_plan(path)
    assert saved.plan == plan and saved.plan.hash == plan.hash and saved.options["to"] == "there"
    doc = json.loads(path.read_text())
    assert doc["hash"] == plan.hash and doc["observed"]["dns"] == [{"name": "record", "type": "A", "values": ["old"]}]
    assert doc["observed"]["hosts"][0]["name"] == "web-b" and doc["observed"]["bytes_to_move"] == 5 * GIB
    assert is_saved_plan_file(str(path)) and not is_saved_plan_file("20261203-082558-9565")
    assert changes(saved, plan) == []


def test_edited_files_are_refused(tmp_path: Path) -> None:
    plan = toy_plan(tmp_path)
    path = tmp_path / "p.json"
    save_plan(plan, path)
    doc = json.loads(path.read_text())
    doc["plan"]["steps"][4]["params"]["value"] = "elsewhere"  # the DNS step now points somewhere else
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="hash"):
        load_plan(path)
    save_plan(plan, path)
    doc = json.loads(path.read_text())
    doc["observed"]["dns"][0]["values"] = ["new"]
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="observed"):
        load_plan(path)
    path.write_text("{}")
    with pytest.raises(InvalidInput, match="not a saved plan"):
        load_plan(path)


def test_changes_are_named(tmp_path: Path) -> None:
    plan = big(toy_plan(tmp_path), 5 * GIB)
    save_plan(plan, tmp_path / "p")
    saved = load_plan(tmp_path / "p")

    dns = dataclasses.replace(plan, dns_diff=({"name": "record", "type": "A", "old": ["by-hand"], "new": ["new"]},))
    assert changes(saved, dns) == ["DNS record A: old when planned, by-hand now"]

    grown = big(plan, 5 * GIB + SIZE_TOLERANCE_BYTES + 1)  # 64 MiB more, but < 10 %: the same plan
    assert changes(saved, grown) == []
    assert changes(saved, big(plan, 6 * GIB)) == [
        f"data to move: {5 * GIB} bytes when planned, {6 * GIB} now (more than 10% and 64 MiB apart)"]
    small = load_plan_of(big(plan, 10 << 20), tmp_path)
    assert changes(small, big(plan, 70 << 20)) == []  # 7x, but only 60 MiB more
    assert changes(small, big(plan, 80 << 20))[0].startswith("data to move")

    hosts = dataclasses.replace(plan, resources=({"action": "allocate", "kind": "host", "name": "web-b",
                                                  "provider": "lab", "detail": "(free: c)"},))
    assert changes(saved, hosts) == ["target hosts: web-b at lab (free: b) when planned, web-b at lab (free: c) now"]

    steps = list(plan.steps)
    steps[1] = Step("copy", "toy.copy", "copy chunks", {**steps[1].params, "chunks": 11}, ("make-a",))
    other = dataclasses.replace(plan, steps=tuple(steps), notes=("source host c (10.0.0.3); 3 objects",))
    got = changes(saved, other)
    assert got[0] == "source: source host a (10.0.0.1); 3 objects when planned, source host c (10.0.0.3); " \
                     "3 objects now"
    assert got[1].startswith(f"steps: plan hash {plan.hash} when planned, {other.hash} now (changed: copy)")

    err = PlanChanged(changes(saved, dns), "p")
    assert err.exit_code == EXIT_USAGE and "DNS record A: old when planned, by-hand now" in str(err)


def load_plan_of(plan: Plan, tmp_path: Path) -> object:
    save_plan(plan, tmp_path / "small")
    return load_plan(tmp_path / "small")


def test_show_prints_a_saved_plan(tmp_path: Path) -> None:
    plan = big(toy_plan(tmp_path), 5 * GIB)
    path = tmp_path / "move.plan"
    save_plan(plan, path, {"to": "there", "mode": "live"})
    r = invoke("--state-dir", str(tmp_path / "state"), "show", str(path))
    assert r.exit_code == 0, r.stderr
    assert f"saved plan {path}" in r.stdout and f"plan hash {plan.hash}" in r.stdout
    assert "copy chunks" in r.stdout and "record A: old -> new" in r.stdout and "5.0 GiB" in r.stdout
    assert "within 10% or 64 MiB" in r.stdout
    j = invoke("--state-dir", str(tmp_path / "state"), "show", str(path), "--json")
    assert j.exit_code == 0 and json.loads(j.stdout)["plan"]["hash"] == plan.hash
    assert not (tmp_path / "state").exists()  # showing a plan file touches no state


def test_drill_plan_drills_the_saved_plan_or_refuses_naming_the_change(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`drill --plan`: the drill is the saved live plan's drill while a fresh observation agrees with it; a changed
    DNS value refuses it (exit 2) naming the change. The fresh plan is our own planner's, stood in here."""
    from liferaft.drill import run as drill_run
    from liferaft.drill.plan import to_drill
    from liferaft.engine.saved import PlanChanged
    from liferaft.failover import planner
    from liferaft.stack import load_stack

    stack = load_stack(Path(__file__).resolve().parents[2] / "examples/microblog/liferaft.yaml")
    obs_kw = {"source_host": {"name": "a", "address": "10.0.0.11", "port": 22, "user": "root",
                               "host_keys": ["ssh-ed25519 AAAA"], "private_key_file": "/k"},
                  "target_host_preview": "10.0.0.12", "target_free": ("b",), "sizes": {"images": {"items": 1, "bytes": 1}, "blog": {"bytes": 1}},
                  "dns_current": {"www.microblog.test.": {"ttl": 30, "values": ["10.0.0.11"]}}}
    from liferaft.engine.observe import Observed

    saved_plan = planner.make_plan(stack, "primary", "alt-b", "live", Observed(**obs_kw))  # type: ignore[arg-type]
    path = tmp_path / "plan.json"
    save_plan(saved_plan, path, {"to": "alt-b", "mode": "live"})
    fresh = {"plan": saved_plan}
    monkeypatch.setattr(planner, "build_plan", lambda *a, **k: fresh["plan"])
    opts = drill_run.DrillOptions("alt-b", plan_path=str(path))
    drilled = drill_run.build_drill_plan(stack, opts, tmp_path, None)  # type: ignore[arg-type]
    expected = to_drill(saved_plan, **drill_run._drill_dns(stack))
    assert drilled.step_ids == expected.step_ids and drilled.hash == expected.hash
    moved = {**obs_kw, "dns_current": {"www.microblog.test.": {"ttl": 30, "values": ["10.0.0.99"]}}}
    fresh["plan"] = planner.make_plan(stack, "primary", "alt-b", "live", Observed(**moved))  # type: ignore[arg-type]
    with pytest.raises(PlanChanged) as e:
        drill_run.build_drill_plan(stack, opts, tmp_path, None)  # type: ignore[arg-type]
    assert "10.0.0.99" in str(e.value) and e.value.exit_code == EXIT_USAGE
