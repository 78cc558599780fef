"""Step kinds of a standby: its journaled set-up (`replicate`) and the cold failover from it. Each calls the dataset's
kind through the standby contract (`liferaft.datasets.base.StandbyCopy`); none knows a kind by name.

Set-up (mode `standby`, planned by `liferaft.standby.setup`):
- `standby.install`  what the standby host needs for one kind's datasets, and liferaft's access at both ends;
- `standby.keep`     the dataset's standby copy set up and brought current once (its result goes to the record).

Cold failover (planned by `liferaft.failover.cold`):
- `standby.promote`  the standby copy becomes the primary without any call to the source; its undo (a rollback, the
                     source answering again) cleans what the promotion abandoned at the source;
- `standby.objects`  the same step for kinds whose promotion only checks the copy as is (a gate: a difference stops
                     the run before DNS) -- which of the two a kind uses is its `promote_step`;
- `standby.loss`     the data-loss report: a write ledger's acknowledged writes missing at the target, or the last
                     replicated position and time per dataset; recorded in the run's summary;
- `standby.release`  liferaft's own access at the promoted standby disabled once the service answers.

Parameters name datasets by kind and key (`dataset_params`); a promotion's step also keeps the dataset's record entry
as it was when planned (`entry`), so a resumed run does what was planned whatever the record says by then.
"""

from __future__ import annotations

import time
from typing import Any

from liferaft.configure import host_from_dict
from liferaft.datasets import Dataset, kind_of
from liferaft.datasets.base import StandbySides, record_group
from liferaft.datasets.registry import datasets
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.results import target_host
from liferaft.engine.runner import RunContext
from liferaft.engine.standby_state import load_standby
from liferaft.errors import RunFailed, UsageError


def dataset_params(ds: Dataset) -> dict[str, Any]:
    """How a step names its dataset: kind and key (and, for readers of older plans, `<noun>: key`)."""
    return {"kind": ds.kind, "dataset": ds.key, kind_of(ds).noun: ds.key}


def dataset_of(ctx: RunContext, params: dict[str, Any]) -> Dataset:
    stack = ctx.require_stack()
    for ds in datasets(stack):
        if ds.kind == params["kind"] and ds.key == params["dataset"]:
            return ds
    raise UsageError(f"the stack has no {params['kind']} dataset {params['dataset']!r} (any more)")


def _host(d: Any) -> Any:
    return host_from_dict(d) if isinstance(d, dict) and d.get("address") else None


def _address_only(address: str | None) -> Any:
    from liferaft.configure import TargetHost

    return TargetHost(name="source", address=address) if address else None


def _recorded(ctx: RunContext) -> Any:
    return load_standby(ctx.state_dir, ctx.plan.stack, ctx.plan.target)


# ------------------------------------------------------------------------------------------------------- set-up
def setup_sides(ctx: RunContext, step: Step) -> StandbySides:
    """The set-up run's view: the source host found when it was planned, the standby host it allocated."""
    p = step.params
    return StandbySides(source=ctx.plan.source, target=ctx.plan.target, source_host=_host(p.get("source_host")),
                        standby_host=target_host(ctx), source_timeout=float(p.get("source_timeout", 5.0)),
                        interval=float(p.get("interval", 5.0)))


@register
class InstallStandby(StepKind):
    name = "standby.install"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        dss = [dataset_of(ctx, {"kind": step.params["kind"], "dataset": key}) for key in step.params["datasets"]]
        out: dict[str, Any] = kind_of(dss[0]).install(ctx, dss, setup_sides(ctx, step), step.params.get("installed_on"))
        return out


@register
class KeepStandby(StepKind):
    """Set up the dataset's standby copy and bring it current once; the result is what the record keeps of it."""

    name = "standby.keep"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        ds = dataset_of(ctx, step.params)
        rec = _recorded(ctx)
        entry = dict(((rec.data if rec else {}).get(record_group(ds)) or {}).get(ds.key) or {})
        t0 = time.monotonic()
        out = kind_of(ds).keep(ctx, ds, setup_sides(ctx, step), entry)
        ctx.emit("standby.kept", f"{kind_of(ds).noun} {ds.key}: standby copy set up and current "
                 f"({time.monotonic() - t0:.1f}s)", dataset=ds.key)
        return {**out, "kept_at": time.time()}


# ------------------------------------------------------------------------------------------------ cold failover
def cold_sides(ctx: RunContext, step: Step) -> StandbySides:
    """The cold run's view: the standby is the run's target host; the source host only as recorded (an address,
    never contacted but to clean up once it answers again)."""
    address = step.params.get("source_address")
    if not address:  # plans made before it was a step parameter
        rec = _recorded(ctx)
        address = rec.source_address if rec is not None else None
    try:
        standby = target_host(ctx)
    except RunFailed:
        standby = None  # nothing allocated (a rollback of a run that stopped before)
    return StandbySides(source=ctx.plan.source, target=ctx.plan.target, source_host=_address_only(address),
                        standby_host=standby)


@register
class PromoteStandby(StepKind):
    name = "standby.promote"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        ds = dataset_of(ctx, step.params)
        out: dict[str, Any] = kind_of(ds).promote(ctx, ds, cold_sides(ctx, step), dict(step.params.get("entry") or {}))
        return out

    def verify(self, ctx: RunContext, step: Step) -> None:
        ds = dataset_of(ctx, step.params)
        kind_of(ds).check_promoted(ctx, ds, cold_sides(ctx, step), dict(step.params.get("entry") or {}))

    def undo(self, ctx: RunContext, step: Step) -> None:
        ds = dataset_of(ctx, step.params)
        kind_of(ds).clean_source(ctx, ds, cold_sides(ctx, step), dict(step.params.get("entry") or {}))


@register
class CheckStandby(PromoteStandby):
    """A promotion that only checks the standby copy as is: a gate, nothing to undo."""

    name = "standby.objects"
    gate = True
    undoable = False


@register
class ReleaseStandby(StepKind):
    """After the move: liferaft's own access at the promoted standby disabled (unlike the live `db.release`,
    nothing is sent to the source: it is gone). Undo enables it again, for a rollback."""

    name = "standby.release"
    undoable = True

    def _each(self, ctx: RunContext, step: Step, *, undo: bool) -> list[str]:
        host = target_host(ctx)
        groups: dict[str, list[Dataset]] = {}
        for item in step.params["datasets"]:
            ds = dataset_of(ctx, item)
            groups.setdefault(ds.kind, []).append(ds)
        return [name for name, dss in groups.items() if kind_of(dss[0]).release(ctx, dss, host, undo=undo)]

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {"released": self._each(ctx, step, undo=False)}

    def undo(self, ctx: RunContext, step: Step) -> None:
        self._each(ctx, step, undo=True)


@register
class DataLoss(StepKind):
    """What the cut cost: from the write ledger when given, else from the last replicated positions."""

    name = "standby.loss"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        rec = load_standby(ctx.state_dir, ctx.plan.stack, step.params["target"])
        promoted = {(r.get("kind"), r.get("dataset")): out for r, out in _promotions(ctx)}
        ledger = step.params.get("ledger")
        host = target_host(ctx) if ledger else None
        found: dict[str, Any] = {}
        led: dict[str, Any] | None = None
        for item in step.params["datasets"]:
            ds = dataset_of(ctx, item)
            kind = kind_of(ds)
            entry = dict(((rec.data if rec else {}).get(record_group(ds)) or {}).get(ds.key) or {})
            out = kind.loss(ctx, ds, entry, promoted.get((ds.kind, ds.key), {}),
                            ledger=ledger if led is None else None, host=host)
            if "ledger" in out and led is None:
                led = out.pop("ledger")
            found[f"{kind.noun} {ds.key}"] = out
        if ledger and led is None:
            raise UsageError("a write ledger was given but no dataset of the stack says where its writes land",
                             hint="add `ledger: {table: ..., key: ..., value: ...}` to the database they land in")
        times = [float(v["last_replicated_at"]) for v in found.values() if v.get("last_replicated_at")]
        out_all: dict[str, Any] = {"datasets": found, "oldest_replicated_at": min(times) if times else None,
                                   "recorded_rpo_exposure_s": rec.rpo_exposure_s if rec else None}
        summary: dict[str, Any] = {"recorded_rpo_exposure_s": out_all["recorded_rpo_exposure_s"]}
        if led is not None:
            out_all["ledger"] = led
            summary.update(lost_writes=led["missing_count"], lost_window_s=led["window_s"])
            msg = (f"data loss: {led['missing_count']} of {led['acknowledged']} acknowledged writes missing at the "
                   f"target, spanning {led['window_s']} s of writes")
        else:
            msg = "data loss: everything written after " + ", ".join(
                f"{k} {time.strftime('%H:%M:%S', time.gmtime(v['last_replicated_at']))}Z"
                for k, v in found.items() if v.get("last_replicated_at"))
        ctx.summarise(data_loss=summary)
        ctx.emit("failover.data_loss", msg, **summary)
        return out_all


def _promotions(ctx: RunContext) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(step params, result) of the run's done promotions, whichever promotion step each kind uses."""
    out = []
    for kind in ("standby.promote", "standby.objects"):
        done = ctx.outputs_of_kind(kind)
        out += [(ctx.plan.step(sid).params, res) for sid, res in done.items()]
    return out
