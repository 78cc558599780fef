"""`liferaft replicate`: keep the standby at an alternate site current, and measure what a cut would lose.

Set-up (`Replicator.setup`): the source host is found (the one the service's DNS records point at: the engine's
observer), then the set-up plan (`liferaft.standby.setup`: allocate the standby host, prepare it, what each dataset
kind needs there, each dataset's standby copy started) runs through the engine's runner as a journaled run of mode
`standby`, under the site lock `replicate` holds; one left unfinished with the same plan is resumed instead. What it
made goes to the standby record.
Each round (`Replicator.round`), in the set-up run's context: per dataset, its kind keeps the copy current (a dump
where due, an incremental bucket sync, the subscription checked) and measures the lag (bounded by the source
timeout); then the state file. The keeper never branches on a dataset's kind: it calls the standby contract.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import liferaft.steps  # noqa: F401  (registers the step kinds the set-up runs)
from liferaft.datasets import kind_of
from liferaft.datasets.base import StandbySides, record_group, record_groups
from liferaft.datasets.registry import datasets
from liferaft.engine.results import ALLOCATE_KIND, result_of
from liferaft.engine.runner import RunContext, Runner
from liferaft.engine.standby_state import load_standby, push_history, save_standby
from liferaft.errors import LiferaftError, ProviderError, RunFailed, Unreachable, UsageError
from liferaft.events import Events, as_events
from liferaft.movers.bounded import DEFAULT_SOURCE_TIMEOUT, bounded
from liferaft.standby.exposure import rpo_exposure
from liferaft.standby.setup import (
    STANDBY_MODE,
    open_context,
    plan_setup,
    setup_runs,
    standby_spec_name,
    standby_tier,
    unfinished_setup,
    warm_services,
)

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.stack import Stack

__all__ = ["ReplicateOptions", "Replicator", "Watched", "require_no_run_into", "standby_spec_name", "summary_of",
           "watch"]


@dataclass(frozen=True)
class ReplicateOptions:
    target: str
    interval: float = 5.0
    source_timeout: float = DEFAULT_SOURCE_TIMEOUT
    lower_ttl: int | None = None  # lower the service records' TTLs to this many seconds (restored by stop())


def require_no_run_into(stack: Stack, state_dir: Path, target: str) -> None:
    """Refuse to replicate into a site that a failover run or a drill has (or may have) put the stack into: every
    run into it that is not rolled back (standby set-ups aside: they are this keeper's own). A done failover made it
    where the stack runs now -- replicating the stack file's primary into it would overwrite its data with the old
    site's the day the old provider answers again; a drill kept running (--keep) serves a promoted copy there; a run
    that stopped or failed midway is resumed or rolled back first. Rolled-back runs (every drill that tore down)
    leave the site free."""
    from liferaft.engine.journal import Journal, journal_path
    from liferaft.steps.drill import is_drill

    path = journal_path(state_dir, stack.model.name)
    if not path.exists():
        return
    with Journal(path) as journal:
        every = [r for r in journal.runs() if r.status != "rolled-back" and r.mode != STANDBY_MODE]
    runs = [r for r in every if r.target == target]
    if not runs:
        return
    r = runs[0]  # newest first
    left = [o for o in every if o.status == "done" and o.source == target and o.created > r.created
            and not is_drill(o.plan.steps)]
    if r.status == "done" and not is_drill(r.plan.steps) and left:
        return  # the stack moved into it, then out of it again (a failback): it may keep a standby now
    if r.status == "done" and is_drill(r.plan.steps):
        raise UsageError(f"a drill kept its target running at {target!r} (run {r.id}): a standby there would "
                         "subscribe into the drill's promoted copy", hint=f"liferaft drill --teardown {r.id}")
    if r.status == "done":
        raise UsageError(f"the stack was failed over into {target!r} (run {r.id}, done): it runs there now, its "
                         "active site; a standby there would overwrite its data",
                         hint=f"keep a standby of it elsewhere (`liferaft replicate --to SITE`, the old primary "
                              f"{stack.file_primary or stack.model.primary!r} included), or move back first "
                              f"(`liferaft rollback {r.id}`)")
    raise UsageError(f"run {r.id} into {target!r} is {r.status}: the site holds whatever it left there",
                     hint=f"finish it (`liferaft resume {r.id}`) or undo it (`liferaft rollback {r.id}`) first")


class Replicator:
    """One standby (target site) of one stack. A context manager: it holds the set-up run's context (its journal)
    while rounds run."""

    def __init__(self, stack: Stack, state_dir: Path, options: ReplicateOptions,
                 events: Events | None = None) -> None:
        m = stack.model
        stack.site(options.target)
        require_no_run_into(stack, Path(state_dir), options.target)  # first: it names the run that moved it there
        if options.target == m.primary:
            raise UsageError(f"site {options.target!r} is the primary: replicate to an alternate",
                             hint=f"alternates: {', '.join(m.alternates) or '(none)'}")
        self.stack = stack
        self.state_dir = Path(state_dir)
        self.opts = options
        self.source = m.primary
        self.target = options.target
        self.events = as_events(events)
        prev = load_standby(self.state_dir, m.name, self.target)
        self.record: dict[str, Any] = dict(prev.data) if prev else {}
        self.record.update(source=self.source, target=self.target)
        self.record.setdefault("started_at", time.time())
        for group in record_groups():
            self.record.setdefault(group, {})
        self.ctx: RunContext | None = None
        self._held = contextlib.ExitStack()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ctx = None
        self._held.close()

    # ----------------------------------------------------------------------------------------------- helpers
    def emit(self, kind: str, message: str, **data: Any) -> None:
        if self.ctx is not None:
            data.setdefault("run", self.ctx.run_id)
        self.events.emit(kind, message, **{"stack": self.stack.model.name, "target": self.target, **data})

    def save(self) -> Path:
        self.record["rpo_exposure_s"] = rpo_exposure(self.record)
        return save_standby(self.state_dir, self.stack.model.name, self.target, self.record)

    def _use(self, run_id: str) -> RunContext:
        """Act in the context of set-up run `run_id` from now on."""
        if self.ctx is not None and self.ctx.run_id == run_id:
            return self.ctx
        self.close()
        self.ctx = self._held.enter_context(open_context(self.stack, self.state_dir, run_id, self.events))
        return self.ctx

    def sides(self) -> StandbySides:
        from liferaft.configure import host_from_dict

        def host(key: str) -> TargetHost | None:
            d = self.record.get(key)
            return host_from_dict(d) if isinstance(d, dict) and d.get("address") else None

        return StandbySides(source=self.source, target=self.target, source_host=host("source_host"),
                            standby_host=host("standby_host"), source_timeout=self.opts.source_timeout,
                            interval=self.opts.interval)

    def _entry(self, ds: Any) -> dict[str, Any]:
        entry: dict[str, Any] = self.record.setdefault(record_group(ds), {}).setdefault(ds.key, {})
        return entry

    # ------------------------------------------------------------------------------------------------- set-up
    def setup(self) -> dict[str, Any]:
        """Make the standby exist and keep each dataset (idempotent), as a journaled run. Needs the source to
        answer. An unfinished set-up run of the same plan (killed, failed) is resumed, not started again."""
        t0 = time.monotonic()
        source = self._find_source_host()
        from liferaft.configure import host_to_dict

        plan = plan_setup(self.stack, self.target, host_to_dict(source), self.record,
                          source_timeout=self.opts.source_timeout, interval=self.opts.interval,
                          problems=self._prerequisites(source))
        runner = Runner(self.state_dir, stack=self.stack, events=self.events)
        again = unfinished_setup(self.state_dir, self.stack.model.name, self.target, plan)
        out = runner.resume(again) if again else runner.start(plan)
        self.record["source_host"] = host_to_dict(source)  # a stack without datasets has no step that names it
        self._adopt(out.run_id)
        seconds = round(time.monotonic() - t0, 2)
        host = self.record["standby_host"]
        tier = standby_tier(self.stack, self.target)
        warm = sorted(self.record.get("services") or {})
        self.emit("replicate.ready", f"standby at {self.target} on host {host['name']} ({host['address']}) ready in "
                  f"{seconds:.1f}s (set-up run {out.run_id}); tier {tier}"
                  + (f": services {', '.join(warm)} deployed and stopped" if warm else ""),
                  seconds=seconds, host=host["name"], tier=tier, services=warm)
        return {"seconds": seconds, "standby_host": host, "run": out.run_id, "tier": tier}

    def _prerequisites(self, source: TargetHost) -> tuple[dict[str, Any], ...]:
        """What the kinds' checks find at the source before the set-up creates anything (a blocking one stops it)."""
        from liferaft.engine.observe import target_free
        from liferaft.planner import prereq

        free, _ = target_free(self.stack, self.stack.site(self.target).compute, self.state_dir)
        candidate = prereq.target_candidate(self.stack, self.target, self.state_dir, free)
        t = self.opts.source_timeout
        return bounded(lambda: prereq.check(self.stack, self.source, self.target, self.state_dir, source, candidate,
                                            self.events), max(t, 15.0), provider=self.source,
                       what="check the source's prerequisites")

    def _adopt(self, run_id: str) -> None:
        """Record what done set-up run `run_id` made: the hosts, each dataset's standby copy."""
        ctx = self._use(run_id)
        plan = ctx.plan
        alloc = result_of(ctx, ALLOCATE_KIND)
        self.record["standby_host"] = {k: v for k, v in alloc.items() if k not in ("hosts", "host_id")} | {
            "spec_name": standby_spec_name(self.stack, self.target), "provider": self.stack.site(self.target).compute}
        named = next((s.params["source_host"] for s in plan.steps if s.params.get("source_host")), None)
        if named is not None:
            self.record["source_host"] = named
        for sid, result in ctx.outputs_of_kind("standby.keep").items():
            params = plan.step(sid).params
            ds = next(d for d in datasets(self.stack) if d.kind == params["kind"] and d.key == params["dataset"])
            entry = self._entry(ds)
            entry.update(result)
            entry.update(ok=True, error=None, stale_since=None)
        services: dict[str, Any] = {}
        for sid, result in ctx.outputs_of_kind("standby.service").items():
            services[str(plan.step(sid).params["service"])] = {
                "digest": result.get("digest"), "address": result.get("address"), "state": "stopped",
                "deployed_at": time.time() if result.get("deployed") else
                (self.record.get("services") or {}).get(str(plan.step(sid).params["service"]), {}).get("deployed_at"),
                "ok": True, "error": None}
        self.record["services"] = services
        self.record.update(installed_on=self.record["standby_host"]["address"], set_up_at=time.time(),
                           setup_run=run_id, tier=standby_tier(self.stack, self.target))
        self.save()

    def lower_ttls(self) -> None:
        """With `lower_ttl`: the service records' TTLs lowered ahead of a move, the originals kept in the record."""
        from liferaft.standby.ttl import lower_ttls

        if self.opts.lower_ttl is None:
            return
        before = dict(self.record.get("dns_ttls") or {})
        self.record["dns_ttls"] = lower_ttls(self.stack, self.state_dir, self.opts.lower_ttl, before)
        self.save()
        lowered = sorted(set(self.record["dns_ttls"]) - set(before))
        if lowered:
            self.emit("replicate.ttl_lowered", f"DNS TTL of {', '.join(lowered)} lowered to "
                      f"{self.opts.lower_ttl} s (restored by --stop)", records=lowered, ttl=self.opts.lower_ttl)

    def setup_or_attach(self) -> dict[str, Any]:
        """Set up; if the source does not answer but a standby was recorded before, keep watching that one (the
        rounds then record the source as unreachable and the copy as stale instead of failing to start)."""
        try:
            return self.setup()
        except (Unreachable, ProviderError, RunFailed) as e:
            if not (self.record.get("standby_host") and self.record.get("source_host")):
                raise
            self.emit("replicate.degraded", f"set-up could not reach the source ({e}); watching the standby "
                      "recorded before", error=str(e)[:300])
            self.attach()
            return {"attached": True, "error": str(e)[:300]}

    def _find_source_host(self) -> TargetHost:
        from liferaft.engine.observe import dns_current, find_source_host

        t = self.opts.source_timeout
        current = bounded(lambda: dns_current(self.stack, self.state_dir), max(t, 10.0), provider="dns",
                          what="read the service's DNS records")
        host = find_source_host(self.stack, self.source, current, self.state_dir)
        self.emit("replicate.source", f"source host {host.name} ({host.address})", host=host.name)
        return host

    def attach(self) -> RunContext:
        """Act on the standby recorded by an earlier set-up (no source or DNS calls), in the context of the newest
        set-up run into the site."""
        if not (self.record.get("standby_host") and self.record.get("source_host")):
            raise UsageError(f"no standby recorded for {self.target}", hint=f"run `liferaft replicate --to "
                             f"{self.target}` while the source answers")
        if self.ctx is not None:
            return self.ctx
        runs = setup_runs(self.state_dir, self.stack.model.name, self.target)
        if not runs:
            raise UsageError(f"the standby at {self.target} has no set-up run in the journal",
                             hint=f"run `liferaft replicate --to {self.target}` while the source answers")
        return self._use(runs[0].id)

    # ------------------------------------------------------------------------------------------------- stop
    def stop(self) -> dict[str, Any]:
        """Stop keeping this standby: per dataset, what keeps its copy is removed at both ends (PostgreSQL: the
        subscription at the standby, without asking the source, then the slot and the publication at the source: a
        slot nobody reads keeps WAL at the primary forever). Then the record is forgotten. The standby's copies and
        its host are left as they are. The source must answer; a standby that does not is reported and the source
        is cleaned all the same."""
        from liferaft.engine.standby_state import forget_standby
        from liferaft.standby.ttl import restore_ttls

        if not self.record.get("standby_host"):
            raise UsageError(f"no standby recorded at {self.target!r}: nothing to stop")
        ctx = self.attach()
        sides = self.sides()
        out: dict[str, Any] = {g: {} for g in record_groups()}
        for ds in datasets(self.stack):
            done = kind_of(ds).stop(ctx, ds, sides, self._entry(ds))
            if done is not None:
                out.setdefault(record_group(ds), {})[ds.key] = done
        restored = restore_ttls(self.stack, self.state_dir, self.record.get("dns_ttls") or {})
        if restored:
            self.emit("replicate.ttl_restored", "DNS TTLs restored: " + ", ".join(
                f"{fqdn} {ttl} s" for fqdn, ttl in restored.items()), restored=restored)
        forget_standby(self.state_dir, self.stack.model.name, self.target)
        host = self.record.get("standby_host") or {}
        self.emit("replicate.stopped", f"the standby at {self.target} is no longer kept; its host "
                  f"{host.get('name')} ({host.get('address')}) and its copies are left as they are")
        return {"target": self.target, "stopped": True, "standby_host": host.get("name"), **out}

    # ------------------------------------------------------------------------------------------------- rounds
    def round(self) -> dict[str, Any]:
        """One round: per dataset, the copy kept current and the lag measured; state saved."""
        ctx = self.attach()
        sides = self.sides()
        t0 = time.time()
        errors: list[str] = []
        unreachable = False
        for ds in datasets(self.stack):
            kind = kind_of(ds)
            entry = self._entry(ds)
            try:
                entry.update(kind.keep(ctx, ds, sides, entry))
                entry.update(kind.lag(ctx, ds, sides, entry))
                entry.update(ok=True, error=None, stale_since=None)
                push_history(entry, [float(entry["measured_at"]), float(entry.get("lag_bytes") or 0),
                                     float(entry["lag_seconds"])])
            except Exception as e:  # noqa: BLE001 - recorded: a watch keeps the last copy and says it is stale
                unreachable = unreachable or isinstance(e, Unreachable)
                errors.append(f"{kind.noun} {ds.key}: {_describe(e)}")
                _mark_error(entry, e, t0)
        self._keep_services(ctx)
        image_errors = self._mirror_images()
        unreachable = unreachable or any(isinstance(e, Unreachable) for e in image_errors)
        errors += [_describe(e) for e in image_errors]
        self.record["source_reachable"] = not unreachable
        self.record["source_error"] = errors[0] if errors else None
        self.record["last_round_at"] = t0
        path = self.save()
        summary = self.summary()
        self.emit("replicate.lag", _lag_line(summary), **summary, state_file=str(path))
        return summary

    def _keep_services(self, ctx: RunContext) -> None:
        """Warm tier: each service at the standby kept at the current version -- deployed again (stopped) when what
        its deploy uses changed since (the stack file's entry, the playbook, the artifact). A failure is recorded
        and tried again next round; the cold plan then deploys that service instead of starting it."""
        from liferaft.configure import host_from_dict
        from liferaft.workloads import workload
        from liferaft.workloads.base import warm_kind

        self.record["tier"] = standby_tier(self.stack, self.target)
        try:
            wanted = warm_services(self.stack, self.target)
        except LiferaftError as e:
            self.record["services_error"] = _describe(e)[:300]
            return
        services: dict[str, Any] = self.record.setdefault("services", {})
        host_d = self.record.get("standby_host") or {}
        for svc, digest in wanted.items():
            entry = services.setdefault(svc, {})
            if entry.get("digest") == digest and entry.get("address") == host_d.get("address") and entry.get("ok"):
                continue
            wl = workload(self.stack, svc)
            kind = warm_kind(wl)
            if kind is None:
                continue
            t0 = time.monotonic()
            try:
                kind.deploy_stopped(ctx, wl, host_from_dict(host_d), digest)
            except Exception as e:  # noqa: BLE001 - recorded: the cold plan deploys it instead; next round retries
                entry.update(ok=False, error=_describe(e)[:300], error_at=time.time())
                self.emit("replicate.service_error", f"service {svc}: could not be deployed at the standby "
                          f"({_describe(e)[:200]}); a cold failover deploys it", service=svc)
                continue
            previous = entry.get("digest")
            entry.update(digest=digest, address=host_d.get("address"), state="stopped", deployed_at=time.time(),
                         ok=True, error=None)
            self.emit("replicate.service", f"service {svc}: deployed again at the standby and stopped in "
                      f"{time.monotonic() - t0:.1f}s (what its deploy uses changed: digest "
                      f"{str(previous)[:12]} -> {digest[:12]})", service=svc, digest=digest)
        for svc in set(services) - set(wanted):
            services.pop(svc, None)  # not kept warm any more (tier or stack changed): deployed at failover

    def _mirror_images(self) -> list[Exception]:
        """Each workload whose kind ships images (`mirror`) has them copied to the target site's registry by digest;
        its lag recorded as data lag is (images behind, seconds since last confirmed mirrored)."""
        from liferaft.workloads import kind_of as workload_kind
        from liferaft.workloads import workloads

        images: dict[str, Any] = self.record.setdefault("images", {})
        source = str(self.record.get("source") or self.stack.model.primary)
        seen = set()
        failed: list[Exception] = []
        for wl in workloads(self.stack):
            mirror = getattr(workload_kind(wl), "mirror", None)
            if mirror is None:
                continue
            seen.add(wl.name)
            entry = images.setdefault(wl.name, {})
            now = time.time()
            try:
                entry.update(mirror(self.stack, wl, source, self.target))
                entry.update(ok=True, error=None, stale_since=None)
            except Exception as e:  # noqa: BLE001 - recorded: the next round tries again; the summary says so
                entry["lag_images"] = 1
                _mark_error(entry, e, now)
                failed.append(e)
                self.emit("replicate.image_error", f"service {wl.name}: image not mirrored to {self.target} "
                          f"({_describe(e)[:200]})", service=wl.name)
                continue
            if entry.get("copied"):
                self.emit("replicate.image", f"service {wl.name}: image {entry['image']} mirrored to "
                          f"{entry['registry']} ({str(entry['digest'])[:19]})", service=wl.name,
                          digest=entry["digest"])
        for svc in set(images) - seen:
            images.pop(svc, None)
        return failed

    def summary(self) -> dict[str, Any]:
        return summary_of(self.stack, self.target, self.record)


def summary_of(stack: Stack, target: str, record: dict[str, Any]) -> dict[str, Any]:
    """What a round reports (and `replicate --status` shows) of a standby record: per dataset the lag, per warm
    service its state and digest, the tier the stack file declares, the RPO exposure."""
    def pick(d: dict[str, Any]) -> dict[str, Any]:
        return {k: d.get(k) for k in ("method", "lag_bytes", "lag_seconds", "ok", "error", "last_sync_at") if k in d}
    groups = {g: {k: pick(v) for k, v in sorted((record.get(g) or {}).items())} for g in record_groups()}
    return {"target": target, "source": record.get("source", stack.model.primary),
            "tier": standby_tier(stack, target),
            "services": {k: {x: v.get(x) for x in ("state", "digest", "ok", "error") if x in v}
                         for k, v in sorted((record.get("services") or {}).items())},
            "standby_host": (record.get("standby_host") or {}).get("name"), **groups,
            "images": {k: {x: v.get(x) for x in ("image", "digest", "registry", "lag_images", "lag_seconds", "ok",
                                                 "error") if x in v}
                       for k, v in sorted((record.get("images") or {}).items())},
            "rpo_exposure_s": rpo_exposure(record), "source_reachable": record.get("source_reachable"),
            "last_round_at": record.get("last_round_at")}


def _mark_error(entry: dict[str, Any], e: Exception, now: float) -> None:
    """A round that could not sync or measure: the lag grows from the last confirmed position -- lag_seconds is now
    minus the time up to which the standby was last confirmed to hold the source's writes (`caught_up_at`): the
    source may have taken writes since, and nobody can say it did not. The bytes stay the last measured (unknown
    since). `stale_since` says since when."""
    if entry.get("ok", True) or not entry.get("stale_since"):
        entry["stale_since"] = now
    entry.update(ok=False, error=_describe(e)[:300], error_at=now)
    confirmed = entry.get("caught_up_at")
    if confirmed is not None:
        entry.update(lag_seconds=round(max(0.0, now - float(confirmed)), 3), measured_at=now)


def _describe(e: Exception) -> str:
    return str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"


def _lag_line(s: dict[str, Any]) -> str:
    parts = [f"{g.removesuffix('s')} {k}: {v.get('lag_bytes', '?')} B / {v.get('lag_seconds', '?')} s"
             + ("" if v.get("ok") else " (!)") for g in record_groups() for k, v in s.get(g, {}).items()]
    parts += [f"image {k}: {v.get('lag_images', '?')} behind / {v.get('lag_seconds', '?')} s"
              + ("" if v.get("ok") else " (!)") for k, v in (s.get("images") or {}).items()]
    return f"{s['target']}: " + "; ".join(parts) + f"; RPO exposure {s['rpo_exposure_s']} s"


@dataclass(frozen=True)
class Watched:
    """What a watch did: how many rounds, and the last round's summary (None when it ran none). Only the last is
    kept: a watch runs for days (the soak benchmark measured ~1.5 MiB per 1,000 rounds when every one was kept)."""

    rounds: int
    last: dict[str, Any] | None


def watch(rep: Replicator, *, interval: float, count: int | None, on_round: Any = None,
          stop: Any = None) -> Watched:
    """Rounds every `interval` seconds (`count` rounds, or until `stop` is set). A round that fails is recorded
    and the loop goes on: the standby must keep its last good copy and say how stale it grows."""
    summary: dict[str, Any] | None = None
    n = 0
    while count is None or n < count:
        if stop is not None and stop.is_set():  # asked to stop before this round (e.g. during the set-up)
            break
        t0 = time.monotonic()
        try:
            summary = rep.round()
        except Unreachable as e:
            summary = {"error": str(e)}
        if on_round is not None:
            on_round(summary)
        n += 1
        if count is not None and n >= count:
            break
        delay = max(0.0, interval - (time.monotonic() - t0))
        if stop is not None:
            if stop.wait(delay):
                break
        else:
            time.sleep(delay)
    return Watched(n, summary)
