"""`liferaft deploy` without a lab: the plan builder's mode `deploy` run by the real runner over the toy dataset kind
of test_dataset_kinds, given `existing`/`create`/`uncreate` (the optional part of the dataset contract a deploy
uses). Only the steps that need a real host are stood in for (as there). The lab test (test_deploy_lab) does it with
PostgreSQL, a bucket, the example app and DNS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liferaft.datasets import Dataset
from liferaft.engine import Runner
from liferaft.planner.builder import Deploy, build
from liferaft.steps.deploy import changed
from tests.unit.test_dataset_kinds import toy  # noqa: F401  (fixture)


def _give_create(kind: Any) -> None:
    def existing(ctx: Any, datasets: list[Dataset]) -> dict[str, Any]:
        return {"dirs": [ds.key for ds in datasets if kind._dir(ds, ctx.plan.target).exists()]}

    def create(ctx: Any, datasets: list[Dataset], existing: dict[str, Any]) -> dict[str, Any]:
        for ds in datasets:
            kind._dir(ds, ctx.plan.target).mkdir(parents=True, exist_ok=True)
        return {"created": [ds.key for ds in datasets if ds.key not in existing["dirs"]]}

    def uncreate(ctx: Any, datasets: list[Dataset], existing: dict[str, Any]) -> None:
        for ds in datasets:
            if ds.key not in existing["dirs"]:
                kind._dir(ds, ctx.plan.target).rmdir()
                kind.calls.append(f"uncreate {ds.key}")

    kind.existing, kind.create, kind.uncreate = existing, create, uncreate


def test_a_deploy_makes_the_data_once_says_nothing_changed_then_and_its_rollback_removes_only_its_own(
        toy: Any, tmp_path: Path) -> None:  # noqa: F811
    """First deploy at `alt`: the kind's datasets made there, the run done and counted changed. Second: nothing
    made, `changed_steps` 0 in the run's summary. Rolling back the second removes nothing; the first, what it
    made."""
    stack, kind, root = toy
    _give_create(kind)
    plan = build(stack, "alt", "alt", Deploy(allow_from=("127.0.0.2/32",)))
    assert plan.mode == "deploy" and list(plan.step_ids) == ["allocate", "prepare", "create-directories",
                                                            "verify-service", "changes"]
    assert plan.step("create-directories").params == {"kind": "directory", "directories": ["notes", "pics"],
                                                      "allow_from": ["127.0.0.2/32"]}
    runner = Runner(tmp_path / "state", stack=stack)
    first = runner.start(plan)
    assert first.status == "done" and first.summary["changed"] == ["create-directories"]
    assert (root / "alt" / "notes").is_dir() and (root / "alt" / "pics").is_dir()

    second = runner.start(build(stack, "alt", "alt", Deploy(allow_from=("127.0.0.2/32",))))
    assert second.status == "done" and second.summary["changed_steps"] == 0 and second.summary["changed"] == []

    runner.rollback(second.run_id)
    assert (root / "alt" / "notes").is_dir() and not any(c.startswith("uncreate") for c in kind.calls)
    runner.rollback(first.run_id)
    assert not (root / "alt" / "notes").exists() and not (root / "alt" / "pics").exists()
    assert sorted(c for c in kind.calls if c.startswith("uncreate")) == ["uncreate notes", "uncreate pics"]


def test_what_counts_as_a_change() -> None:
    """Ansible's changed count, a flag, a list of what was made or replaced; nothing else."""
    assert changed({"changed": 3}) and changed({"changed": ["www."]}) and changed({"created": ["blog"]})
    assert not changed({"changed": 0, "created": []}) and not changed({"address": "10.0.0.1"})


def test_the_other_sites_declared_hosts_are_admitted(toy: Any) -> None:  # noqa: F811
    """A site's databases admit the hosts the stack's other sites declare (pool hosts), never its own."""
    from liferaft.failover.deploy import declared_peers

    stack, _, _ = toy
    assert declared_peers(stack, "alt") == ["127.0.0.2/32"]
    assert declared_peers(stack, "primary") == ["127.0.0.3/32"]


def test_a_deploy_stopped_before_a_step_resumes_to_done(toy: Any, tmp_path: Path) -> None:  # noqa: F811
    """`--stop-before`: the run stops there (resume hint), `resume` finishes it and the count covers both parts."""
    stack, kind, root = toy
    _give_create(kind)
    runner = Runner(tmp_path / "state", stack=stack)
    out = runner.start(build(stack, "alt", "alt", Deploy()), stop_before="verify-service")
    assert out.status == "stopped" and (root / "alt" / "notes").is_dir()
    done = runner.resume(out.run_id)
    assert done.status == "done" and done.summary["changed"] == ["create-directories"]
