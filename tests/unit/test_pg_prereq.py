"""PostgreSQL's prerequisites in the plan (issue 20 item 6): the pg_hba rule the `source-access` step adds and
removes, the step's place in the plans, and blocking problems stopping `plan` (exit 2), drills and every run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from liferaft.datasets.pg_prereq import _admits, hba_rule, with_rules, without_rules
from liferaft.engine.plan import Plan, PlanBlocked
from liferaft.errors import EXIT_USAGE
from liferaft.stack import load_stack
from tests.unit.test_plan_snapshots import _example, _live, _observed, _setup

HBA = """\
# Managed by liferaft (postgresql.yml). Local changes are overwritten.
# TYPE  DATABASE     USER  ADDRESS                 METHOD
local   all          all                           peer
host    all          all   127.0.0.1/32            scram-sha-256
host    all          all   10.0.0.1/32    scram-sha-256
"""
MARK = "# liferaft run 20261203-150000-abcd"
PK = {"dataset": "blog", "check": "primary-key", "message": "logical replication cannot carry UPDATE/DELETE of 1 "
      "table(s) without a primary key: public.tags", "fix": "`replica_identity: full` on data.databases.blog",
      "blocking": True}
NOTE = {"dataset": "blog", "check": "access", "message": "the `source-access` step adds the target's rule",
        "fix": "", "blocking": False}


def test_the_rule_goes_first_once_and_only_it_is_removed() -> None:
    """Added before the first rule (first match wins), marked with the run; again: unchanged; undo: the file as
    it was, byte for byte."""
    rule = hba_rule("microblog", "10.0.0.12")
    assert rule.split() == ["host", "microblog", "liferaft_migrator", "10.0.0.12/32", "scram-sha-256"]
    text, ours, before = with_rules(HBA, [rule], MARK)
    lines = text.splitlines()
    assert ours == [rule] and before == []
    assert lines[2] == f"{rule}    {MARK}" and lines[3].startswith("local")
    again, ours2, _ = with_rules(text, [rule], MARK)  # a resumed step
    assert again == text and ours2 == [rule]
    assert without_rules(text, [rule], MARK) == HBA
    assert without_rules(text, [rule], "# liferaft run other") == text  # another run's undo leaves it


def test_a_rule_already_there_is_neither_added_nor_removed() -> None:
    """The same fields already in the file (any spacing, any comment): nothing added, so the undo removes nothing."""
    rule = hba_rule("microblog", "10.0.0.12")
    there = HBA + "host  microblog  liferaft_migrator  10.0.0.12/32  scram-sha-256  # by hand\n"
    text, ours, before = with_rules(there, [rule], MARK)
    assert text == there and ours == [] and before == [rule]
    assert without_rules(text, ours, MARK) == there


def test_which_rules_admit_the_target() -> None:
    """pg_hba_file_rules rows: database and user (or `all`), an address range holding the target, not `reject`."""
    row = (5, "host", ["all"], ["all"], "10.0.0.0", "255.255.255.0", "scram-sha-256", None)
    assert _admits(row, "microblog", "10.0.0.12")
    assert not _admits(row, "microblog", "10.0.1.12")
    assert not _admits((5, "host", ["other"], ["all"], "10.0.0.0", "255.255.255.0", "scram-sha-256", None),
                       "microblog", "10.0.0.12")
    assert not _admits((5, "host", ["all"], ["all"], "10.0.0.0", "255.255.255.0", "reject", None),
                       "microblog", "10.0.0.12")
    assert _admits((5, "hostssl", ["microblog"], ["liferaft_migrator"], "10.0.0.12", None, "scram-sha-256",
                    None), "microblog", "10.0.0.12")


def test_source_access_opens_the_source_before_the_logical_copy_only(tmp_path: Path) -> None:
    """Live and standby set-up: after the allocation (the address is known then), before the copy that needs it;
    a dump (made by the controller) needs no step."""
    plan = _live(_example(tmp_path / "logical"))
    step = plan.step("source-access")
    assert step.kind == "data.source_access" and step.depends_on == ("allocate",)
    assert step.params["databases"] == {"blog": "logical"}
    assert "source-access" in plan.step("migrate-blog").depends_on
    assert "source-access" not in plan.step("sync-images").depends_on
    setup = _setup(_example(tmp_path / "setup"))
    assert "source-access" in setup.step("keep-blog").depends_on
    # a dump made by the controller (`data_path: controller`) needs no step; one made at the target host does
    controller = _example(tmp_path / "dump", dump=True)
    text = controller.path.read_text().replace("    compute: colo-b\n", "    compute: colo-b\n    data_path: controller\n", 1)
    controller.path.write_text(text)
    assert "source-access" not in _live(load_stack(controller.path)).step_ids
    at_target = _live(_example(tmp_path / "dump-at-target", dump=True))
    assert at_target.step("source-access").params["databases"] == {"blog": "dump"}


def test_blocking_problems_stop_the_plan_every_run_and_the_drill(tmp_path: Path) -> None:
    """A blocking problem is the plan's (kept through JSON and the drill transform) and refused by every run,
    before anything is created; a non-blocking one is a note."""
    from liferaft.drill.plan import to_drill
    from liferaft.engine import Runner
    from liferaft.failover.planner import make_plan

    stack = _example(tmp_path / "s")
    plan = make_plan(stack, "primary", "alt-b", "live", _observed(problems=(PK, NOTE)))
    assert plan.problems == (PK,) and plan.blocking == (PK,)
    assert f"blog: {NOTE['message']}" in plan.notes
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).problems == (PK,)
    assert "problems" not in _live(stack).to_dict()  # a plan without problems looks as it did
    with pytest.raises(PlanBlocked) as e:
        plan.require_no_blocking()
    assert e.value.exit_code == EXIT_USAGE and "public.tags" in str(e.value) and "replica_identity: full" in str(e.value)
    assert e.value.to_dict()["problems"] == [PK]
    drill = to_drill(plan, drill_record="drill", dns_provider="dnshost", zone="microblog.test")
    assert drill.problems == (PK,)
    state = tmp_path / "state"
    with pytest.raises(PlanBlocked):
        Runner(state, stack=stack).start(plan)
    assert not list(state.rglob("journal.db"))  # no run was recorded: nothing acted


def test_plan_exits_2_naming_the_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`plan` prints the plan and its problems with their fixes and exits 2; `--json` lists them; `failover`
    refuses before asking anything."""
    from liferaft.cli import main
    from liferaft.failover import planner

    stack = _example(tmp_path / "s")
    blocked = planner.make_plan(stack, "primary", "alt-b", "live", _observed(problems=(PK,)))

    def fake_build_plan(*a: Any, **kw: Any) -> Plan:
        return blocked

    monkeypatch.setattr(planner, "build_plan", fake_build_plan)
    args = ["--stack", str(stack.path), "--state-dir", str(tmp_path / "state")]

    def run(*more: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            main([*args, *more])
        out, err = capsys.readouterr()
        return int(exit_.value.code or 0), out, err

    code, out, _ = run("plan", "--to", "alt-b", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and doc["problems"] == [PK]
    code, out, _ = run("plan", "--to", "alt-b")
    assert code == 2 and "public.tags" in out and "replica_identity: full" in out and "Problems" in out
    clean = dataclasses.replace(blocked, problems=())
    monkeypatch.setattr(planner, "build_plan", lambda *a, **kw: clean)
    code, out, _ = run("plan", "--to", "alt-b", "--json")
    assert code == 0 and json.loads(out)["problems"] == []
    monkeypatch.setattr(planner, "build_plan", fake_build_plan)
    code, out, err = run("failover", "--to", "alt-b", "--yes", "--json")
    assert code == 2 and json.loads(out.splitlines()[-1])["problems"] == [PK] and "public.tags" in err
    assert not list((tmp_path / "state").rglob("journal.db"))
