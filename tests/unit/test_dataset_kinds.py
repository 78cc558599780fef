"""The dataset contract: a kind is one module plus one registry line.

A toy third kind (directories of files, copied between two local folders) is registered here, in the test, and goes
through the real planner (`make_plan`), the real data steps (prepare, seed, freeze, the gate, the drill's cut and its
check as of the cut) and the real runner -- with no change to the step library or the planner. Only the steps that
need a real host (allocation, playbooks, DNS) are stood in for, since a unit test has none.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from liferaft.datasets import Dataset, Size
from liferaft.datasets.base import _REGISTRY, LedgerVerdict, Verdict, Where, register_kind
from liferaft.engine import Runner
from liferaft.engine.kinds import _REGISTRY as STEP_KINDS
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.observe import Observed
from liferaft.errors import CheckFailed
from liferaft.failover.planner import make_plan
from liferaft.stack import Stack, load_stack

STACK = """\
version: 1
name: toy
providers:
  pool-a:
    type: ssh
    user: root
    private_key: file:key
    hosts: [{name: a, address: 127.0.0.2, host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA/ugkVGSOctNgI54jGZg2AY4iSHYxzkbPrw/BdRwxD9"]}]
  pool-b:
    type: ssh
    user: root
    private_key: file:key
    hosts: [{name: b, address: 127.0.0.3, host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO+vgjWQM5X+kiyB+JO1LIYv1ZzwampWBLgrGyE9PdSa"]}]
  store:
    type: libcloud
    storage: {driver: local, path: store}
sites:
  primary: {compute: pool-a, objects: store}
  alt: {compute: pool-b, objects: store}
primary: primary
alternates: [alt]
services: {}
"""


@dataclass(frozen=True)
class DirSpec:
    name: str
    root: str  # <root>/<site>/<name> holds the directory at that site


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*"))
            if p.is_file() and not p.name.startswith(".")}


class Directories:
    """The toy kind: a folder of files per site; "frozen" is a marker file the source's writers respect."""

    name: ClassVar[str] = "directory"
    noun: ClassVar[str] = "directory"
    group: ClassVar[str] = "directories"
    seed_verb: ClassVar[str] = "copy"
    freezes_source: ClassVar[bool] = True
    release_id: ClassVar[str | None] = "dir-release"
    ledger: ClassVar[bool] = False
    summary_name: ClassVar[str] = "folder"
    seed_needs_prepare: ClassVar[bool] = True

    def __init__(self) -> None:
        self.entries_by_stack: dict[str, dict[str, DirSpec]] = {}
        self.calls: list[str] = []

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(self.entries_by_stack.get(model.name, {}))

    def _dir(self, ds: Dataset, site: str) -> Path:
        return Path(ds.spec.root) / site / ds.spec.name

    def summary(self, ds: Dataset) -> Any:
        return ds.spec.name

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        return {"seed": f"copy directory {ds.key}", "prepare": f"directory {ds.key} made at the target"}

    def provider(self, stack: Stack, site: str) -> str:
        return str(stack.site(site).compute)

    def observe(self, where: Where, ds: Dataset) -> Size:
        files = list(self._dir(ds, where.source).glob("*"))
        return Size(bytes=sum(f.stat().st_size for f in files), items=len(files))

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        return size.items / 1000

    def ports(self, ds: Dataset) -> tuple[int, ...]:
        return ()

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return []

    def playbook_vars(self, ctx: Any, datasets: list[Dataset], address: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}

    def prepare(self, ctx: Any, ds: Dataset) -> dict[str, Any]:
        self.calls.append(f"prepare {ds.key}")
        self._dir(ds, ctx.plan.target).mkdir(parents=True, exist_ok=True)
        return {"made": True}

    def unprepare(self, ctx: Any, ds: Dataset) -> None:
        self.calls.append(f"unprepare {ds.key}")

    def _copy(self, ctx: Any, ds: Dataset) -> int:
        src, tgt = self._dir(ds, ctx.plan.source), self._dir(ds, ctx.plan.target)
        n = 0
        for f in src.glob("*"):
            if f.name != ".frozen" and (not (tgt / f.name).exists() or (tgt / f.name).read_bytes() != f.read_bytes()):
                shutil.copyfile(f, tgt / f.name)
                n += 1
        return n

    def seed(self, ctx: Any, ds: Dataset) -> dict[str, Any]:
        self.calls.append(f"seed {ds.key}")
        return {"copied": self._copy(ctx, ds)}

    def check_seed(self, ctx: Any, ds: Dataset) -> None:
        return None

    def unseed(self, ctx: Any, ds: Dataset) -> None:
        self.calls.append(f"unseed {ds.key}")

    def warm(self, ctx: Any, ds: Dataset) -> None:
        return None

    def freeze(self, ctx: Any, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        self.calls.append(f"freeze {ds.key}")
        (self._dir(ds, ctx.plan.source) / ".frozen").write_text("")
        on_frozen()
        return {"copied": self._copy(ctx, ds)}

    def unfreeze(self, ctx: Any, ds: Dataset) -> None:
        self.calls.append(f"unfreeze {ds.key}")
        (self._dir(ds, ctx.plan.source) / ".frozen").unlink(missing_ok=True)

    def verify(self, ctx: Any, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        self.calls.append(f"verify {ds.key} as_of_cut={as_of_cut}")
        src = _digest(self._dir(ds, ctx.plan.source))
        tgt = _digest(self._dir(ds, ctx.plan.target))
        differs = tuple(f"directory {ds.key}: {k} differs" for k in sorted(src) if tgt.get(k) not in (None, src[k]))
        missing = tuple(f"directory {ds.key}: {k} missing at the target" for k in sorted(set(src) - set(tgt)))
        if as_of_cut:  # written after the cut: a note, not a difference
            return Verdict(checked={f"directory {ds.key} files": len(src)}, problems=differs, notes=missing)
        return Verdict(checked={f"directory {ds.key}": len(src)}, problems=differs + missing)

    def check_ledger(self, ctx: Any, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        raise NotImplementedError

    def release(self, ctx: Any, datasets: list[Dataset]) -> dict[str, Any]:
        self.calls.append("release " + ",".join(d.key for d in datasets))
        return {"released": [d.key for d in datasets]}

    def unrelease(self, ctx: Any, datasets: list[Dataset]) -> None:
        self.calls.append("unrelease")

    def cut(self, ctx: Any, ds: Dataset) -> dict[str, Any]:
        self.calls.append(f"cut {ds.key}")
        return {"copied": self._copy(ctx, ds), "caught_up": True}

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return [f"rm -rf /srv/{d.spec.name}" for d in datasets]


# ------------------------------------------------------------------------------------- stand-ins for the host
class _NoHost(StepKind):
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: Any, step: Any) -> dict[str, Any]:
        return {}


class _Allocate(_NoHost):
    name = "host.allocate"

    def apply(self, ctx: Any, step: Any) -> dict[str, Any]:
        host = {"name": "b", "address": "127.0.0.3", "port": 22, "user": "root", "host_keys": [],
                "private_key_file": None}
        return {**host, "hosts": [host]}


class _Configure(_NoHost):
    name = "host.configure"


class _VerifyService(_NoHost):
    name = "verify.service"


class _DrillVerifyService(_NoHost):
    name = "drill.verify_service"


@pytest.fixture()
def toy(tmp_path: Path) -> Iterator[tuple[Stack, Directories, Path]]:
    import liferaft.datasets.registry
    import liferaft.steps  # noqa: F401

    kind = Directories()
    shadowed = _REGISTRY.get(kind.name)  # the built-in kind of that name, put back afterwards
    register_kind(kind)  # the one registry line a new kind needs
    saved = {n: STEP_KINDS[n] for n in ("host.allocate", "host.configure", "verify.service", "drill.verify_service")}
    for stand_in in (_Allocate, _Configure, _VerifyService, _DrillVerifyService):
        register(stand_in)
    (tmp_path / "key").write_text("not-a-key\n")
    (tmp_path / "liferaft.yaml").write_text(STACK)
    stack = load_stack(tmp_path / "liferaft.yaml")
    root = tmp_path / "data"
    kind.entries_by_stack["toy"] = {"notes": DirSpec("notes", str(root)), "pics": DirSpec("pics", str(root))}
    for name in ("notes", "pics"):
        d = root / "primary" / name
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"{i}.txt").write_text(f"{name} {i}\n")
    try:
        yield stack, kind, root
    finally:
        _REGISTRY.pop(kind.name, None)
        if shadowed is not None:
            _REGISTRY[kind.name] = shadowed
        STEP_KINDS.update(saved)
        STEP_KINDS.pop("toy.act", None)


def observed(stack: Stack) -> Observed:
    from liferaft.configure import TargetHost, host_to_dict
    from liferaft.events import Events
    from liferaft.failover.planner import measure

    src = TargetHost(name="a", address="127.0.0.2")
    sizes = measure(stack, "primary", "alt", None, Events())(src)
    return Observed(source_host=host_to_dict(src), target_host_preview=None, target_free=(), sizes=sizes)


def test_a_new_kind_is_planned_run_and_verified_by_the_unchanged_engine(toy: Any, tmp_path: Path) -> None:
    """Plan: the toy's datasets get the generic steps (ids from the kind); run: every step done, the copy equal;
    the observed sizes reach the plan; a difference at the target stops the gate naming the file."""
    stack, kind, root = toy
    plan = make_plan(stack, "primary", "alt", "live", observed(stack))
    ids = list(plan.step_ids)
    assert ids == ["allocate", "prepare", "db-access", "copy-notes", "copy-pics", "freeze", "verify-data",
                   "verify-service", "dir-release"]
    assert plan.step("copy-notes").params["folder"] == "notes"
    assert plan.step("freeze").params["directories"] == {"notes": "notes", "pics": "pics"}
    assert plan.bytes_to_move == sum(f.stat().st_size for f in root.glob("primary/*/*"))

    out = Runner(tmp_path / "state", stack=stack).start(plan)
    assert out.status == "done"
    for name in ("notes", "pics"):
        assert _digest(root / "alt" / name) == _digest(root / "primary" / name)
        assert (root / "primary" / name / ".frozen").exists()  # the source stays frozen after a move
    assert kind.calls[:4] == ["prepare notes", "prepare pics", "seed notes", "seed pics"]
    assert "verify notes as_of_cut=False" in kind.calls and kind.calls[-1] == "release notes,pics"

    # Rolled back: undone in reverse, through the kind (release, freeze, seeds, prepare).
    Runner(tmp_path / "state", stack=stack).rollback(out.run_id)
    undone = kind.calls[kind.calls.index("release notes,pics") + 1:]
    assert undone == ["unrelease", "unfreeze notes", "unfreeze pics", "unseed pics", "unseed notes",
                      "unprepare pics", "unprepare notes"]
    assert not (root / "primary" / "notes" / ".frozen").exists()

    # A target file changed after the freeze: the gate stops the run naming it.
    tampered = with_step_after(make_plan(stack, "primary", "alt", "live", observed(stack)), "freeze", "verify-data",
                               lambda: (root / "alt" / "pics" / "1.txt").write_text("tampered\n"))
    with pytest.raises(CheckFailed, match=r"directory pics: 1.txt differs"):
        Runner(tmp_path / "state2", stack=stack).start(tampered)


def with_step_after(plan: Any, after: str, before: str, act: Any) -> Any:
    """`plan` with a toy step doing `act()` right after step `after`, step `before` waiting for it."""
    from liferaft.engine.plan import Plan, Step

    class _Act(StepKind):
        name = "toy.act"

        def apply(self, ctx: Any, step: Any) -> dict[str, Any]:
            act()
            return {}

    register(_Act)
    steps = []
    for s in plan.steps:
        steps.append(Step(s.id, s.kind, s.title, s.params, (*s.depends_on, "act")) if s.id == before else s)
        if s.id == after:
            steps.append(Step("act", "toy.act", "act", {}, (after,)))
    return Plan(plan.stack, plan.source, plan.target, plan.mode, tuple(steps))


def test_a_new_kind_is_drilled_as_of_the_cut(toy: Any, tmp_path: Path) -> None:
    """The drill transform keeps the kind's steps, cuts instead of freezing (the source is never frozen), and the
    same gate checks as of the cut: a file written after the cut is a note, not a failure."""
    from liferaft.drill.plan import to_drill

    stack, kind, root = toy
    plan = to_drill(make_plan(stack, "primary", "alt", "live", observed(stack)), drill_record=None,
                    dns_provider=None, zone=None)
    teardown = plan.step("drill-teardown")
    assert teardown.params["directories"] == ["notes", "pics"]

    drilled = with_step_after(plan, "drill-cut", "drill-verify-data",  # a writer at the source, after the cut
                              lambda: (root / "primary" / "notes" / "late.txt").write_text("after the cut\n"))
    out = Runner(tmp_path / "state", stack=stack).start(drilled)
    assert out.status == "done"
    assert "cut notes" in kind.calls and not any(c.startswith("freeze") for c in kind.calls)
    assert "verify notes as_of_cut=True" in kind.calls
    assert not (root / "primary" / "notes" / ".frozen").exists()
    from liferaft.engine.journal import Journal, journal_path
    from liferaft.steps.data import VerifySummary

    with Journal(journal_path(tmp_path / "state", "toy")) as j:
        summary = VerifySummary.of_records(j.steps(out.run_id))
    assert summary is not None and summary.ok and summary.caught_up
    assert summary.notes == ("directory notes: late.txt missing at the target",)


def test_deploy_waits_for_prepare_not_for_the_copies() -> None:
    """The example's plan: the service deploy depends on the datasets being prepared (access, bucket), not on their
    copies, which run beside it; buckets copy right after the allocation; the freeze waits for both."""
    from tests.unit.test_failover_planner import EXAMPLE
    from tests.unit.test_failover_planner import observed as example_observed

    stack = load_stack(EXAMPLE)
    plan = make_plan(stack, "primary", "alt-b", "live", example_observed())
    deps = {s.id: set(s.depends_on) for s in plan.steps}

    def needs(a: str, b: str) -> bool:  # a waits for b, directly or not
        seen, todo = set(), [a]
        while todo:
            for d in deps[todo.pop()]:
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return b in seen

    assert needs("deploy-web", "db-access") and needs("deploy-web", "postgresql")
    assert not needs("deploy-web", "migrate-blog") and not needs("deploy-web", "sync-images")
    assert deps["sync-images"] == {"allocate", "migrate-blog"}  # the copies one after another, beside the deploy
    assert needs("freeze", "deploy-web") and needs("freeze", "migrate-blog") and needs("freeze", "sync-images")
    assert needs("migrate-blog", "db-access")
