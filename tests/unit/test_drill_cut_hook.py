"""A no-notice drill cuts the primary off only through the stack's documented hooks (the lab registers its own)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from liferaft.drill import cut as cutting
from liferaft.errors import InvalidInput, RunFailed
from liferaft.stack import load_stack
from tests.unit.test_failover_planner import copy_example

HOOK = """
import json, sys
doc = json.load(sys.stdin)
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "stdin": doc}) + "\\n")
if "fail" in sys.argv:
    print("no permission to cut", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"description": "firewalled " + str(doc["source_address"]), "rule": 42}))
"""


def _stack(tmp_path: Path, cut: list[str], heal: list[str]):  # type: ignore[no-untyped-def]
    path = copy_example(tmp_path)
    path.write_text(path.read_text() + f"\ndrill:\n  cut: {json.dumps(cut)}\n  heal: {json.dumps(heal)}\n")
    return load_stack(path)


def test_cut_and_heal_hooks_get_the_documented_request(tmp_path: Path) -> None:
    """cut gets the sites, providers and source address on stdin; heal gets the same plus what cut printed."""
    script, log = tmp_path / "hook.py", tmp_path / "calls.jsonl"
    script.write_text(HOOK)
    stack = _stack(tmp_path, [sys.executable, str(script), str(log), "cut"],
                   [sys.executable, str(script), str(log), "heal"])
    the_cut = cutting.cut_primary(stack, "alt-b", "10.0.0.11")
    assert the_cut.how == "hook" and the_cut.describe() == "firewalled 10.0.0.11"
    cutting.heal(stack, the_cut)
    cutting.heal(stack, the_cut)  # healing twice runs the hook once
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"] for c in calls] == [["cut"], ["heal"]]
    req = calls[0]["stdin"]
    assert (req["source_site"], req["target_site"], req["source_address"]) == ("primary", "alt-b", "10.0.0.11")
    assert req["source"] == {"compute": stack.site("primary").compute, "objects": stack.site("primary").objects}
    assert calls[1]["stdin"]["cut"] == {"description": "firewalled 10.0.0.11", "rule": 42}


def test_a_failing_cut_hook_stops_the_drill_with_its_message(tmp_path: Path) -> None:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    stack = _stack(tmp_path, [sys.executable, str(script), str(tmp_path / "l"), "fail"],
                   [sys.executable, str(script), str(tmp_path / "l"), "heal"])
    with pytest.raises(RunFailed, match="exited 3: no permission to cut"):
        cutting.cut_primary(stack, "alt-b", "10.0.0.11")


def test_without_hooks_the_primary_is_simply_not_used(tmp_path: Path) -> None:
    stack = load_stack(copy_example(tmp_path))
    the_cut = cutting.cut_primary(stack, "alt-b", "10.0.0.11")
    assert the_cut.how == "not used" and "not used" in the_cut.describe()


def test_a_cut_hook_without_its_heal_hook_is_invalid(tmp_path: Path) -> None:
    path = copy_example(tmp_path)
    path.write_text(path.read_text() + '\ndrill:\n  cut: ["/bin/true"]\n')
    with pytest.raises(InvalidInput) as err:
        load_stack(path)
    assert any(p.path == "drill.heal" and "heal hook" in p.message for p in err.value.problems)
