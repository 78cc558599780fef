"""Standby keeping and cold failover call dataset kinds through the standby contract: a kind registered beside the
built-in ones gets its install, keep and promotion steps in the set-up and cold plans without a line changed there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from tests.unit.test_readiness import example_stack  # noqa: F401  (fixture)


class Toy:
    """A dataset kind of one entry, `t1`, whose promotion is the generic standby.promote step."""

    name: ClassVar[str] = "toy"
    noun: ClassVar[str] = "toyset"
    promote_step: ClassVar[tuple[str, str]] = ("standby.promote", "toy")

    def entries(self, model: Any) -> dict[str, Any]:
        return {"t1": SimpleNamespace(name="toy-one")}

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return bool(entry.get("kept"))

    def source_ports(self, ds: Any) -> list[int]:
        return []

    def standby_place(self, stack: Any, ds: Any, target: str) -> str:
        return "toy-provider"

    def install_title(self, stack: Any, datasets: list[Any]) -> str | None:
        return "toy server"

    def promote_title(self, stack: Any, ds: Any, sides: Any, entry: dict[str, Any]) -> str:
        return f"promote toy {ds.key}"

    def release_standby_title(self, stack: Any, datasets: list[Any]) -> str | None:
        return "toy access off"


@pytest.fixture
def toy() -> Iterator[Toy]:
    from liferaft.datasets.base import _REGISTRY, register_kind

    kind = Toy()
    register_kind(kind)
    try:
        yield kind
    finally:
        _REGISTRY.pop(kind.name, None)


def test_a_new_kind_gets_its_set_up_and_cold_steps_from_the_contract(example_stack: Path,  # noqa: F811
                                                                     tmp_path: Path, toy: Toy,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.engine.standby_state import save_standby
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV, build_cold_plan
    from liferaft.stack import load_stack
    from liferaft.standby.setup import plan_setup

    stack = load_stack(example_stack)
    m = stack.model
    target = m.alternates[0]
    setup = plan_setup(stack, target, {"name": "a", "address": "127.0.0.1"}, {}, source_timeout=1.0, interval=1.0)
    by_id = {s.id: s for s in setup.steps}
    assert setup.mode == "standby"
    assert by_id["install-toy"].kind == "standby.install" and by_id["install-toy"].params["datasets"] == ["t1"]
    assert by_id["keep-t1"].kind == "standby.keep" and by_id["keep-t1"].params["kind"] == "toy"
    assert {s.id for s in setup.steps if s.kind == "standby.keep"} == {f"keep-{k}" for k in
                                                                       [*m.data.databases, *m.data.buckets, *m.data.redis,
                                                                        *m.data.directories, "t1"]}

    rec = {"source": m.primary, "target": target,
           "source_host": {"name": "a", "address": "127.0.0.1", "port": 1},
           "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22},
           "databases": {k: {"method": d.migrate, "subscription": "liferaft_x"} for k, d in m.data.databases.items()},
           "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
           "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
           "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}}
    state = tmp_path / "state"
    save_standby(state, m.name, target, rec)
    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    from liferaft.errors import UsageError

    with pytest.raises(UsageError, match="holds no copy of: t1"):  # the kind says whether the record holds a copy
        build_cold_plan(stack, target, state_dir=state, probe_source=False)
    save_standby(state, m.name, target, {**rec, "toysets": {"t1": {"kept": True, "subscription": "s"}}})
    plan = build_cold_plan(stack, target, state_dir=state, probe_source=False)
    step = plan.step("toy-t1")
    assert step.kind == "standby.promote" and step.title == "promote toy t1"
    assert step.params["kind"] == "toy" and step.params["toyset"] == "t1" and step.params["entry"] == {
        "subscription": "s"}
    assert {"kind": "toy", "dataset": "t1", "toyset": "t1"} in plan.step("data-loss").params["datasets"]
    assert "toy-t1" in plan.step("deploy-web").depends_on  # the service is deployed on the promoted copies
    assert "toy access off" in plan.step("db-release").title
    assert {"action": "promote", "kind": "toyset", "name": "toy-one", "provider": "toy-provider"} in plan.resources


def test_every_built_in_standby_kind_has_the_whole_contract() -> None:
    """Each registered kind that keeps a standby copy answers every method of `StandbyCopy` (a missing one only
    showed when a drill reached it: a no-notice drill of the example, whose worker's keyspace and folder kinds had no
    `promoted_summary`, ended in an internal error after the promotions)."""
    import inspect

    from liferaft.datasets.base import StandbyCopy
    from liferaft.datasets.registry import kind_by_group

    methods = [n for n, v in vars(StandbyCopy).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert "promoted_summary" in methods and "promote" in methods
    kinds = [k for k in kind_by_group().values() if hasattr(k, "promote")]
    assert {k.name for k in kinds} >= {"postgresql", "bucket", "redis", "directory", "sqlite", "mysql"}
    for kind in kinds:
        missing = [n for n in methods if not callable(getattr(kind, n, None))]
        assert not missing, f"{kind.name} lacks {missing}"
        checked, notes = kind.promoted_summary("k", {})
        assert checked and all(isinstance(v, int) for v in checked.values()) and isinstance(notes, list), kind.name
