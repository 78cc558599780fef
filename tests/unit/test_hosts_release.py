"""SSH pool allocations that outlive what they were made for: void once the host is another machine (a new lab
after `lab down` and `lab up`), and `liferaft hosts release` for the rest, named by the refusal that meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liferaft.cli import main
from liferaft.engine.plan import Plan, Step
from liferaft.errors import UsageError
from liferaft.providers.base import HostSpec
from liferaft.providers.ssh import PoolHost, SshAdapter
from liferaft.stack import load_stack

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
KEY_B2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"
STACK = f"""\
version: 1
name: toy
providers:
  p:
    type: ssh
    hosts:
      - {{name: a, address: 127.0.0.1, host_keys: ["{KEY_A}"]}}
      - {{name: b, address: 127.0.0.2, host_keys: ["{KEY_B}"]}}
  o:
    type: libcloud
    storage: {{driver: local, path: /tmp}}
sites:
  s1: {{compute: p, objects: o}}
  s2: {{compute: p, objects: o}}
primary: s1
alternates: [s2]
"""


def _pool(state: Path, b_keys: tuple[str, ...] = (KEY_B,)) -> SshAdapter:
    return SshAdapter("p", "root", None, [PoolHost("a", "127.0.0.1", 22, (KEY_A,)),
                                          PoolHost("b", "127.0.0.2", 22, b_keys)], state)


def test_an_allocation_is_void_once_its_host_pins_none_of_its_keys(tmp_path: Path) -> None:
    """Host b rebuilt with new keys (as every `lab up` makes them): what was allocated there is gone, so is the
    allocation. A key added beside the old one is the same machine: the allocation stays."""
    _pool(tmp_path / "first").create_host(HostSpec("toy-s2", tags={"pool_host": "b"}))
    again = _pool(tmp_path / "first", (KEY_B2,)).create_host(HostSpec("toy-s3", tags={"pool_host": "b"}))
    assert again.name == "toy-s3"  # allocated anew at once, and recorded with the new machine's keys:
    assert [h.name for h in _pool(tmp_path / "first", (KEY_B2,)).list_hosts()] == ["toy-s3"]

    _pool(tmp_path).create_host(HostSpec("toy-s2", tags={"pool_host": "b"}))
    assert [h.name for h in _pool(tmp_path, (KEY_B, KEY_B2)).list_hosts()] == ["toy-s2"]
    rebuilt = _pool(tmp_path, (KEY_B2,))
    assert rebuilt.list_hosts() == [] and rebuilt.free_hosts() == ["a", "b"]
    assert json.loads((rebuilt.dir / "allocations.json").read_text()) == {}
    assert rebuilt.create_host(HostSpec("toy-s2", tags={"pool_host": "b"})).id == "b"  # allocatable again


def test_release_by_pool_name_or_allocated_name(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    pool.create_host(HostSpec("toy-s1", tags={"pool_host": "a"}))
    pool.create_host(HostSpec("toy-s2", tags={"pool_host": "b"}))
    assert pool.release("a") == ("a", "toy-s1")
    assert pool.release("toy-s2") == ("b", "toy-s2")
    assert pool.release("b") is None and pool.free_hosts() == ["a", "b"]


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(STACK)
    with pytest.raises(SystemExit) as exit_:
        main(["--stack", str(stack), "--state-dir", str(tmp_path / "state"), *args])
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_hosts_lists_and_release_frees_an_allocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`liferaft hosts` shows who holds what; `hosts release` asks first (--yes when not on a terminal), frees
    the host and says nothing on it was touched; releasing a free host is a usage error."""
    _pool(tmp_path / "state").create_host(HostSpec("toy-s2", tags={"pool_host": "b"}))
    code, out, _ = _cli(tmp_path, capsys, "hosts", "--json")
    assert code == 0
    assert {(r["host"], r["allocated_to"]) for r in json.loads(out)["hosts"]} == {("a", None), ("b", "toy-s2")}
    code, _, err = _cli(tmp_path, capsys, "hosts", "release", "p", "toy-s2")
    assert code == 2 and "--yes" in err
    code, out, _ = _cli(tmp_path, capsys, "hosts", "release", "p", "toy-s2", "--yes")
    assert code == 0 and "released b of p" in out and "nothing on the host was touched" in out
    assert _pool(tmp_path / "state").list_hosts() == []
    code, _, err = _cli(tmp_path, capsys, "hosts", "release", "p", "b", "--yes")
    assert code == 2 and "no host 'b' is allocated in p" in err
    code, _, err = _cli(tmp_path, capsys, "hosts", "release", "o", "x", "--yes")
    assert code == 2 and "not an SSH pool" in err


def test_a_drill_refused_for_an_allocated_host_names_the_release_command(tmp_path: Path) -> None:
    from liferaft.drill.run import require_free_target

    stack_file = tmp_path / "liferaft.yaml"
    stack_file.write_text(STACK)
    state = tmp_path / "state"
    _pool(state).create_host(HostSpec("toy-s2"))
    plan = Plan("toy", "s1", "s2", "live", (Step("allocate", "host.allocate", "allocate",
                                                  {"provider": "p", "name": "toy-s2"}),))
    with pytest.raises(UsageError) as ei:
        require_free_target(load_stack(stack_file), plan, state)
    assert "`liferaft hosts release p toy-s2`" in (ei.value.hint or "")
