"""The data steps: one generic family each, for every dataset kind (liferaft.datasets); no step names a kind.

- `data.server`   the playbooks a kind's datasets need on the target (postgresql.yml), one step per playbook;
- `data.source_access` the source opened to the target's address where a kind needs it (PostgreSQL's pg_hba),
                  once the allocation gave that address; undone exactly;
- `data.prepare`  what the deploy and the copies need at the target (a database's migration access, a bucket); the
                  service can be deployed once it is done, beside the seeding;
- `data.seed`     one dataset's bulk copy / start of replication while the source takes writes; read back where
                  the kind says so;
- `cutover.freeze` the write freeze over every dataset: kinds that freeze the source first, the others (objects)
                  once all of those froze, running while they catch up;
- `verify.data`   the gate, per dataset, counts and content hashes, and the write ledger; `drill.verify_data` is
                  the same check as of a drill's cut (differences after the cut are notes, the ledger gives the RPO);
- `drill.cut`     a drill's cut instead of the freeze: copies stop at an instant, the source keeps its writes;
- `data.release`  after the move, liferaft's own access disabled (one step per kind that has any).

Parameters and results are frozen dataclasses, turned into the plan's and the journal's JSON dicts only at that
edge (`from_params` / `to_params`, `from_result` / `to_result`). Datasets appear in JSON grouped by their kind's
`group` (`{"databases": {"blog": "logical"}, "buckets": {"images": "microblog-images"}}`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets import Dataset, kind_of
from liferaft.datasets._util import progress, source_host, target_host
from liferaft.datasets.base import LedgerVerdict, Verdict, kind_named
from liferaft.datasets.registry import by_kind, find, from_params, grouped
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, LiferaftError, RunFailed

if TYPE_CHECKING:
    from liferaft.engine.journal import StepRecord
    from liferaft.stack import Stack

__all__ = ["Cut", "CutResult", "DataPrepare", "DataRelease", "DataSeed", "DataServer", "DataSourceAccess",
           "DatasetsParams",
           "DrillVerifyData", "Freeze", "FreezeResult", "SeedParams", "ServerParams", "VerifyData", "VerifyParams",
           "VerifySummary",
           "progress"]


# ------------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class SeedParams:
    """One dataset's step (`data.seed`): its key, its kind, and what the plan shows of it (e.g. `method`)."""

    dataset: str
    kind: str
    source_host: dict[str, Any]
    shown: dict[str, Any] = field(default_factory=dict)

    def to_params(self) -> dict[str, Any]:
        return {**self.shown, "dataset": self.dataset, "kind": self.kind, "source_host": self.source_host}

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> SeedParams:
        shown = {k: v for k, v in p.items() if k not in ("dataset", "kind", "source_host")}
        return cls(p["dataset"], p["kind"], p.get("source_host") or {}, shown)

    def resolve(self, stack: Stack) -> Dataset:
        return find(stack, self.kind, self.dataset)


@dataclass(frozen=True)
class DatasetsParams:
    """Steps over several datasets (prepare, freeze, cut, release): the datasets grouped by kind, each with its
    kind's summary, and the source host."""

    datasets: tuple[Dataset, ...]
    source_host: dict[str, Any]

    def to_params(self) -> dict[str, Any]:
        return {**grouped(list(self.datasets), lambda ds: kind_of(ds).summary(ds)), "source_host": self.source_host}

    @classmethod
    def from_params(cls, stack: Stack, p: dict[str, Any]) -> DatasetsParams:
        return cls(tuple(from_params(stack, p)), p.get("source_host") or {})


@dataclass(frozen=True)
class VerifyParams(DatasetsParams):
    """The data gate's: the datasets, and the write ledger it checks (None: none)."""

    ledger: str | None = None

    def to_params(self) -> dict[str, Any]:
        return {**super().to_params(), "ledger": self.ledger}

    @classmethod
    def from_params(cls, stack: Stack, p: dict[str, Any]) -> VerifyParams:
        return cls(tuple(from_params(stack, p)), p.get("source_host") or {}, p.get("ledger"))


@dataclass(frozen=True)
class ServerParams:
    """A playbook some kind's datasets need on the target (`data.server`)."""

    playbook: str
    kind: str
    datasets: tuple[Dataset, ...]
    source_host: dict[str, Any]

    def to_params(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "kind": self.kind, **grouped(list(self.datasets)),
                "source_host": self.source_host}

    @classmethod
    def from_params(cls, stack: Stack, p: dict[str, Any]) -> ServerParams:
        return cls(p["playbook"], p["kind"], tuple(from_params(stack, p)), p.get("source_host") or {})


# --------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class FreezeResult:
    """What the write freeze did: when it started, when the first source refused writes, per dataset."""

    freeze_started: float
    writes_frozen_at: float
    datasets: dict[str, dict[str, Any]]  # group -> key -> the kind's freeze result
    catch_up_s: float

    def to_result(self) -> dict[str, Any]:
        return {"freeze_started": self.freeze_started, "writes_frozen_at": self.writes_frozen_at, **self.datasets,
                "catch_up_s": self.catch_up_s}

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> FreezeResult:
        groups = {k: v for k, v in r.items() if isinstance(v, dict)}
        return cls(float(r["freeze_started"]), float(r.get("writes_frozen_at") or r["freeze_started"]), groups,
                   float(r.get("catch_up_s") or 0.0))

    def of(self, ds: Dataset) -> dict[str, Any] | None:
        found = self.datasets.get(kind_of(ds).group, {}).get(ds.key)
        return found if isinstance(found, dict) else None


@dataclass(frozen=True)
class CutResult:
    """A drill's cut: its instant, per dataset."""

    cut_at: float
    datasets: dict[str, dict[str, Any]]

    def to_result(self) -> dict[str, Any]:
        return {"cut_at": self.cut_at, **self.datasets}

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> CutResult:
        return cls(float(r["cut_at"]), {k: v for k, v in r.items() if isinstance(v, dict)})

    def of(self, ds: Dataset) -> dict[str, Any] | None:
        found = self.datasets.get(kind_of(ds).group, {}).get(ds.key)
        return found if isinstance(found, dict) else None

    @classmethod
    def of_records(cls, records: list[StepRecord]) -> float | None:
        """The cut instant a drill's journal recorded (the cut step's memo: set before it acted), else None."""
        rec = next((r for r in records if r.kind == Cut.name), None)
        return float(rec.memo["cut_at"]) if rec is not None and "cut_at" in rec.memo else None


@dataclass(frozen=True)
class VerifySummary:
    """What the drill's data gate found (remembered in its memo before it passes or fails)."""

    ok: bool
    checked: dict[str, int]
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    ledger: dict[str, Any] | None
    cut_at: float | None
    caught_up: bool
    replication_lag_s: float | None
    replication_lag_bytes: int | None
    lag_s_left: float

    def to_result(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "problems": list(self.problems), "notes": list(self.notes),
                "ledger": self.ledger, "cut_at": self.cut_at, "caught_up": self.caught_up,
                "replication_lag_s": self.replication_lag_s, "replication_lag_bytes": self.replication_lag_bytes,
                "lag_s_left": self.lag_s_left}

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> VerifySummary:
        return cls(bool(r.get("ok")), dict(r.get("checked") or {}), tuple(r.get("problems") or ()),
                   tuple(r.get("notes") or ()), r.get("ledger"), r.get("cut_at"), bool(r.get("caught_up")),
                   r.get("replication_lag_s"), r.get("replication_lag_bytes"), float(r.get("lag_s_left") or 0.0))

    @classmethod
    def of_records(cls, records: list[StepRecord]) -> VerifySummary | None:
        """The drill gate's findings from a journal (its memo), None when it never got that far."""
        rec = next((r for r in records if r.kind == DrillVerifyData.name), None)
        found = rec.memo.get("summary") if rec is not None else None
        return cls.from_result(found) if found else None


# ------------------------------------------------------------------------------------------------ step kinds
@register
class DataServer(StepKind):
    """A playbook the datasets of one kind need on the target (e.g. postgresql.yml)."""

    name = "data.server"
    serial: ClassVar[str | None] = "ansible"
    phase: ClassVar[str | None] = "configure"
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.configure import run_playbook
        from liferaft.steps.hosts import ansible_events

        stack = ctx.require_stack()
        p = ServerParams.from_params(stack, step.params)
        host = target_host(ctx)
        variables, secret_vars = kind_named(p.kind).playbook_vars(ctx, list(p.datasets), host.address)
        res = run_playbook(p.playbook, [host], variables={"liferaft_listen_address": host.address, **variables},
                           secret_variables=secret_vars, on_event=ansible_events(ctx), base_dir=stack.base_dir,
                           state_dir=ctx.state_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed}


@register
class DataPrepare(StepKind):
    """What the deploy and the copies need at the target, for every dataset (undo: the move's access disabled)."""

    name = "data.prepare"
    undoable = True
    phase: ClassVar[str | None] = "data"
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        out: dict[str, Any] = {}
        for ds in p.datasets:
            out.setdefault(kind_of(ds).group, {})[ds.key] = kind_of(ds).prepare(ctx, ds)
        return out

    def undo(self, ctx: RunContext, step: Step) -> None:
        for ds in reversed(DatasetsParams.from_params(ctx.require_stack(), step.params).datasets):
            kind_of(ds).unprepare(ctx, ds)


@register
class DataSourceAccess(StepKind):
    """Let the target host reach the source for the datasets that need it (kinds with `open_source`: PostgreSQL's
    subscription connects from the target), once the allocation gave its address; undo: exactly that removed."""

    name = "data.source_access"
    undoable = True
    phase: ClassVar[str | None] = "data"
    drill: ClassVar[str | None] = "keep"  # acts on the source's access rules only, and its undo removes them

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        out: dict[str, Any] = {}
        for name, group in by_kind(list(p.datasets)).items():
            out[kind_named(name).group] = kind_named(name).open_source(ctx, group)
        return out

    def undo(self, ctx: RunContext, step: Step) -> None:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        for name, group in reversed(list(by_kind(list(p.datasets)).items())):
            kind_named(name).close_source(ctx, group)


@register
class DataSeed(StepKind):
    """One dataset's bulk copy or the start of its replication, while the source keeps taking writes."""

    name = "data.seed"
    undoable = True
    phase: ClassVar[str | None] = "data"
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        ds = SeedParams.from_params(step.params).resolve(ctx.require_stack())
        out: dict[str, Any] = kind_of(ds).seed(ctx, ds)
        return out

    def verify(self, ctx: RunContext, step: Step) -> None:
        ds = SeedParams.from_params(step.params).resolve(ctx.require_stack())
        kind_of(ds).check_seed(ctx, ds)

    def undo(self, ctx: RunContext, step: Step) -> None:
        ds = SeedParams.from_params(step.params).resolve(ctx.require_stack())
        kind_of(ds).unseed(ctx, ds)


class _Later:
    """The datasets that freeze after every source froze (objects), on their own thread: it never touches the
    journal (the target host was read before it starts)."""

    def __init__(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        self.ctx, self.datasets = ctx, datasets
        self.thread: threading.Thread | None = None
        self.out: dict[str, dict[str, Any]] = {}
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            for ds in self.datasets:
                self.out.setdefault(kind_of(ds).group, {})[ds.key] = kind_of(ds).freeze(self.ctx, ds, None)
        except BaseException as e:  # noqa: BLE001 (re-raised on the runner's thread)
            self.error = e

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="liferaft-final-delta", daemon=True)
            self.thread.start()

    def result(self) -> dict[str, dict[str, Any]]:
        self.start()
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.out


@register
class Freeze(StepKind):
    """The write freeze: every source refuses writes, copies caught up, the objects' final delta."""

    name = "cutover.freeze"
    undoable = True
    drill: ClassVar[str | None] = "cut"  # a drill replaces it by its cut

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        target_host(ctx)  # read from the journal now, on the runner's thread (the later datasets run on another)
        for ds in p.datasets:
            kind_of(ds).warm(ctx, ds)  # clients open before the freeze starts, not inside it
        if "freeze_started" not in ctx.memo:  # a resumed freeze keeps its first start: the window is honest
            ctx.remember(freeze_started=time.time())
        started = float(ctx.memo["freeze_started"])
        first = [ds for ds in p.datasets if kind_of(ds).freezes_source]
        # The later datasets start once every source refuses writes (every object an acknowledged write refers to
        # exists by then) and run while the sources' copies catch up.
        later = _Later(ctx, [ds for ds in p.datasets if not kind_of(ds).freezes_source])
        frozen: set[str] = set()

        def on_frozen(ds: Dataset) -> Any:
            def done() -> None:
                frozen.add(ds.id)
                if len(frozen) == len(first):
                    later.start()
            return done

        out: dict[str, dict[str, Any]] = {}
        for ds in first:
            out.setdefault(kind_of(ds).group, {})[ds.key] = kind_of(ds).freeze(ctx, ds, on_frozen(ds))
        later.start()  # no-op when already running
        for group, found in later.result().items():
            out.setdefault(group, {}).update(found)
        return FreezeResult(started, float(ctx.memo.get("writes_frozen_at", started)), out,
                            round(time.time() - started, 3)).to_result()

    def undo(self, ctx: RunContext, step: Step) -> None:
        for ds in DatasetsParams.from_params(ctx.require_stack(), step.params).datasets:
            kind_of(ds).unfreeze(ctx, ds)


@register
class Cut(StepKind):
    """A drill's cut, in place of the write freeze: each dataset's copy stops at an instant; nothing is frozen."""

    name = "drill.cut"
    phase: ClassVar[str | None] = "data"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        if "cut_at" not in ctx.memo:
            ctx.remember(cut_at=time.time())
        out: dict[str, dict[str, Any]] = {}
        for ds in p.datasets:
            out.setdefault(kind_of(ds).group, {})[ds.key] = kind_of(ds).cut(ctx, ds)
        return CutResult(float(ctx.memo["cut_at"]), out).to_result()


@register
class VerifyData(StepKind):
    """The gate: any difference stops the run before DNS is touched, naming what differs. Every dataset is checked
    by its kind, concurrently; then the write ledger, when given."""

    name = "verify.data"
    gate = True
    phase: ClassVar[str | None] = "verify"
    drill: ClassVar[str | None] = "verify"  # a drill checks as of its cut instead
    as_of_cut: ClassVar[bool] = False

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = VerifyParams.from_params(ctx.require_stack(), step.params)
        prior, cut_at = self._prior(ctx, p)
        # Journal reads (the hosts) happen here, on the runner's thread; the workers only talk to servers.
        target_host(ctx)
        source_host(ctx)
        verdicts: dict[str, Verdict] = {}
        errors: list[str] = []

        def check(ds: Dataset) -> None:
            verdicts[ds.id] = kind_of(ds).verify(ctx, ds, as_of_cut=self.as_of_cut, prior=prior.get(ds.id))

        with ThreadPoolExecutor(max_workers=max(1, len(p.datasets)), thread_name_prefix="liferaft-verify") as pool:
            for f in [pool.submit(check, ds) for ds in p.datasets]:
                try:
                    f.result()
                except LiferaftError as e:
                    if self.as_of_cut:
                        raise  # a server gone fails the drill's step as it is
                    errors.append(str(e))
        if errors:
            raise RunFailed("could not verify the target's data; DNS was not touched:\n  " + "\n  ".join(errors))
        checked: dict[str, int] = {}
        problems: list[str] = []
        notes: list[str] = []
        timings: dict[str, float] = {}
        for ds in p.datasets:
            v = verdicts[ds.id]
            checked.update(v.checked)
            problems += v.problems
            notes += v.notes
            timings[f"{kind_of(ds).noun} {ds.key}"] = v.seconds
        ledger = self._ledger(ctx, p, cut_at, checked, problems, timings) if p.ledger else None
        if not self.as_of_cut:
            if problems:
                more = f"\n  ... and {len(problems) - 15} more" if len(problems) > 15 else ""
                raise CheckFailed("the target's data differs from the source; DNS was not touched:\n  "
                                  + "\n  ".join(problems[:15]) + more)
            ctx.emit("verify.data.ok", "data verified: " + ", ".join(f"{k} ({v})" for k, v in sorted(checked.items())),
                     checked=checked, timings=timings)
            return {"checked": checked, "timings": timings}  # (the same check again after a resume: cheap)
        figures = [verdicts[ds.id].figures for ds in p.datasets]
        lags = [f for f in figures if f.get("lag_s_at_cut") is not None]
        summary = VerifySummary(
            ok=not problems, checked=checked, problems=tuple(problems), notes=tuple(notes), ledger=ledger,
            cut_at=cut_at, caught_up=all(f.get("caught_up") is not False for f in figures),
            replication_lag_s=max((float(f["lag_s_at_cut"]) for f in lags), default=None),
            replication_lag_bytes=max((int(f["lag_bytes_at_cut"]) for f in lags), default=None),
            lag_s_left=max((float(f.get("lag_s_left") or 0.0) for f in lags), default=0.0)).to_result()
        ctx.remember(summary=summary)
        if problems:
            raise CheckFailed("the target's data differs from the source as of the cut:\n  "
                              + "\n  ".join(problems[:15]))
        ctx.emit("drill.data", "data verified as of the cut: " + ", ".join(f"{k} ({v})" for k, v in
                                                                            sorted(checked.items())), **summary)
        return summary

    def _prior(self, ctx: RunContext, p: DatasetsParams) -> tuple[dict[str, dict[str, Any] | None], float | None]:
        """Each dataset's part of the freeze's result (None where the freeze was retried: an interrupted freeze
        may have copied what its final result does not list), or of the drill's cut, and the cut instant."""
        prior: dict[str, dict[str, Any] | None] = {}
        if self.as_of_cut:
            found = ctx.outputs_of_kind(Cut.name)
            cut = CutResult.from_result(next(iter(found.values()))) if found else None
            for ds in p.datasets:
                prior[ds.id] = cut.of(ds) if cut else None
            return prior, cut.cut_at if cut else None
        for sid, out in ctx.outputs_of_kind(Freeze.name).items():
            retried = ctx.journal.step(ctx.run_id, sid).attempts > 1
            freeze = FreezeResult.from_result(out)
            for ds in p.datasets:
                prior[ds.id] = None if retried else freeze.of(ds)
        return prior, None

    def _ledger(self, ctx: RunContext, p: VerifyParams, cut_at: float | None, checked: dict[str, int],
                problems: list[str], timings: dict[str, float]) -> dict[str, Any]:
        """The write ledger, checked against the first dataset whose kind keeps one (the stack says where its
        writes land)."""
        assert p.ledger is not None
        t0 = time.monotonic()
        ds = next((d for d in p.datasets if kind_of(d).ledger), None)
        if ds is None:
            problems.append("a write ledger was given but the stack has no database")
            return {"acknowledged_before_cut": 0, "present": 0, "missing": 0, "mismatched": 0,
                    "writes_after_cut": 0, "first_missing_at": None}
        found: LedgerVerdict = kind_of(ds).check_ledger(ctx, ds, p.ledger, cut_at)
        checked["ledger writes before the cut" if self.as_of_cut else "ledger writes"] = found.checked
        problems += found.problems
        timings["ledger"] = round(time.monotonic() - t0, 3)
        return dict(found.summary)


@register
class DrillVerifyData(VerifyData):
    """The gate as of a drill's cut. Its findings are remembered in the journal before it passes or fails."""

    name = "drill.verify_data"
    drill: ClassVar[str | None] = None
    as_of_cut: ClassVar[bool] = True


@register
class DataRelease(StepKind):
    """After the move: liferaft's own access to one kind's datasets disabled (undo re-enables it for rollback)."""

    name = "data.release"
    undoable = True
    drill: ClassVar[str | None] = "keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        return _by_kind(p.datasets, lambda kind, dss: kind.release(ctx, dss))

    def undo(self, ctx: RunContext, step: Step) -> None:
        p = DatasetsParams.from_params(ctx.require_stack(), step.params)
        _by_kind(p.datasets, lambda kind, dss: kind.unrelease(ctx, dss))


def _by_kind(datasets: tuple[Dataset, ...], fn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dss in by_kind(datasets).items():
        out.update(fn(kind_named(name), dss) or {})
    return out
