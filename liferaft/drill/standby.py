"""The standby a no-notice drill fails over into, before and after.

Before the cut: the standby `liferaft replicate` keeps warm at the target is used as it is; when there is none the
drill makes one now, while the source still answers (replicate's journaled set-up and one round), and forgets it
afterwards.

After the run (the cut healed): a promotion may leave something behind at the source it could not reach (PostgreSQL:
the replication slot and publication of the subscription it dropped -- a slot nobody reads keeps WAL forever), so
each promoted dataset's kind cleans its source side (`StandbyCopy.clean_source`, in the context of the standby's
set-up run). After the teardown a standby that existed before the drill is set up again (replicate's set-up and one
round); one the drill made is forgotten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.errors import RunFailed, UsageError
from liferaft.events import Events

if TYPE_CHECKING:
    from liferaft.stack import Stack


@dataclass
class Seeded:
    pre_existing: bool  # a standby was recorded before the drill (it is set up again afterwards)
    source_address: str | None
    started: float
    ended: float
    seconds: float | None = None  # how long the drill took to make the standby (None: it existed)
    target: str = ""
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<group>/<key>" -> the record's entry


def _replicator(stack: Stack, state_dir: Path, target: str, events: Events) -> Any:
    from liferaft.failover.cold import source_timeout
    from liferaft.standby.keeper import ReplicateOptions, Replicator

    return Replicator(stack, state_dir, ReplicateOptions(target=target, source_timeout=source_timeout(stack)),
                      events=events)


def _entries(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each dataset's entry in the standby record as it was before the drill (what its promotion will drop)."""
    from liferaft.datasets.base import record_groups

    return {f"{group}/{key}": dict(entry) for group in record_groups()
            for key, entry in (record.get(group) or {}).items() if isinstance(entry, dict)}


def _setup_and_round(rep: Any) -> dict[str, Any]:
    with rep:
        rep.setup()
        summary: dict[str, Any] = rep.round()
    if rep.record.get("source_error"):
        raise RunFailed(f"the standby could not be brought up to date: {rep.record['source_error']}",
                        hint=f"check `liferaft replicate --to {rep.target}` while the source answers")
    return summary


def ensure_standby(stack: Stack, state_dir: Path, target: str, events: Events) -> Seeded:
    """The recorded standby, or a new one made now (needs the source to answer)."""
    from liferaft.engine.observe import open_provider
    from liferaft.failover.cold import require_standby
    from liferaft.standby.keeper import standby_spec_name

    t0 = time.time()
    try:
        rec = require_standby(stack, target, state_dir)
    except UsageError:
        rec = None
    if rec is not None:
        src = rec.data.get("source_host") or {}
        host = rec.standby_host or {}
        events.emit("drill.standby", f"using the standby kept at {target} on {host.get('name')} "
                    f"({host.get('address')}); last recorded RPO exposure "
                    f"{rec.rpo_exposure_s if rec.rpo_exposure_s is not None else '?'} s", pre_existing=True)
        return Seeded(True, src.get("address"), t0, t0, None, target, _entries(rec.data))
    name = standby_spec_name(stack, target)
    compute = open_provider(stack, stack.site(target).compute, state_dir).require("compute")
    if any(h.name == name for h in compute.list_hosts()):
        raise UsageError(f"host {name} is already allocated at {stack.site(target).compute} but no standby is "
                         "recorded for it (an earlier failover?); a no-notice drill would promote and tear down what "
                         "runs there", hint="drill into another site; or, if no run of yours uses it any more (e.g. it "
                         f"is left from a lab taken down), `liferaft hosts release {stack.site(target).compute} {name}`")
    events.emit("drill.standby", f"no standby at {target}: making one now, while the source answers (replicate's "
                "set-up and one round); the drill forgets it afterwards", pre_existing=False)
    rep = _replicator(stack, state_dir, target, events)
    _setup_and_round(rep)
    t1 = time.time()
    src = rep.record.get("source_host") or {}
    return Seeded(False, src.get("address"), t0, t1, t1 - t0, target, _entries(rep.record))


def drop_abandoned_slots(stack: Stack, state_dir: Path, seeded: Seeded, promoted: set[str],
                         events: Events) -> list[str]:
    """At the (healed) source: what the drill's promotions abandoned there is cleaned, per promoted dataset, by its
    kind (PostgreSQL: the slot and publication; only where the standby's subscription is really gone). A dataset not
    promoted (the drill stopped before) keeps its source side: the standby still subscribes and catches up now that
    the source answers again."""
    from liferaft.configure import TargetHost
    from liferaft.datasets import kind_of
    from liferaft.datasets.base import StandbySides, record_group
    from liferaft.datasets.registry import datasets
    from liferaft.failover.cold import source_timeout
    from liferaft.standby.setup import open_context, setup_runs

    if not seeded.source_address:
        return []
    runs = setup_runs(state_dir, stack.model.name, seeded.target)
    if not runs:
        return []
    cleaned: list[str] = []
    with open_context(stack, state_dir, runs[0].id, events) as ctx:
        sides = StandbySides(source=stack.model.primary, target=seeded.target,
                             source_host=TargetHost(name="source", address=seeded.source_address),
                             source_timeout=source_timeout(stack))
        for ds in datasets(stack):
            entry = seeded.entries.get(f"{record_group(ds)}/{ds.key}")
            if ds.key not in promoted or not entry:
                continue
            done = kind_of(ds).clean_source(ctx, ds, sides, entry)
            if done.get("dropped"):
                cleaned.append(str(done.get("slot")))
    if cleaned:
        events.emit("drill.source_cleaned", f"dropped the replication slot(s) the promotion abandoned at the source: "
                    f"{', '.join(cleaned)}", slots=cleaned)
    return cleaned


def after_drill(stack: Stack, state_dir: Path, target: str, seeded: Seeded, *, kept: bool, torn_down: bool,
                events: Events) -> str | None:
    """Leave the readiness state true: set a standby that existed before up again, forget one the drill made."""
    from liferaft.engine.standby_state import forget_standby

    if kept:
        forget_standby(state_dir, stack.model.name, target)
        return (f"the standby at {target} was promoted by the drill and is kept running (--keep); after `liferaft "
                f"drill --teardown RUN`, run `liferaft replicate --to {target}` to keep a standby again")
    if not torn_down:
        return None
    if not seeded.pre_existing:
        forget_standby(state_dir, stack.model.name, target)
        return f"the standby the drill made at {target} is torn down and forgotten"
    t0 = time.monotonic()
    events.emit("drill.standby", f"setting the standby at {target} up again (it was promoted by the drill)")
    _setup_and_round(_replicator(stack, state_dir, target, events))
    return f"the standby at {target} is set up again and current ({time.monotonic() - t0:.1f} s)"
