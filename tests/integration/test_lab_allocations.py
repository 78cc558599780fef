"""Allocations of a lab that was taken down do not block the next lab (its hosts are other machines: new keys).

Before: after `lab down` and `lab up`, the state dir still held host b as allocated to an earlier failover's
`microblog-alt-b`, and a drill into alt-b was refused "host ... is already allocated ... release the host first".
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.engine.observe import open_provider
from liferaft.providers.base import HostSpec
from liferaft.stack import load_stack

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_lab(tmp_path: Path) -> Iterator[Any]:
    from liferaft.lab.core import Lab

    the_lab = Lab(tmp_path / "lab")
    try:
        yield the_lab
    finally:
        the_lab.down()


def _hosts(stack_file: Path, state: Path) -> dict[str, str | None]:
    cp = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(state),
                         "hosts", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert cp.returncode == 0, cp.stderr
    return {r["host"]: r["allocated_to"] for r in json.loads(cp.stdout)["hosts"] if r["provider"] == "colo-b"}


def test_lab_down_and_up_voids_the_old_labs_allocations(bare_lab: Any, tmp_path: Path) -> None:
    """Host b allocated in lab 1 (as a failover does) is free in lab 2, for any state dir that used lab 1."""
    state = tmp_path / "state"
    info = bare_lab.up(timeout=300, example=False, die_with_caller=True)
    compute = open_provider(load_stack(info.stack_file), "colo-b", state).require("compute")
    assert compute.create_host(HostSpec("microblog-alt-b")).id == "b"
    assert _hosts(info.stack_file, state) == {"b": "microblog-alt-b", "c": None}
    bare_lab.down()
    info = bare_lab.up(timeout=300, example=False, die_with_caller=True)
    assert _hosts(info.stack_file, state) == {"b": None, "c": None}
    compute = open_provider(load_stack(info.stack_file), "colo-b", state).require("compute")
    assert compute.create_host(HostSpec("microblog-alt-b")).id == "b"
