"""The bucket dataset kind (stack file: `data.buckets.<key>`): objects copied by the movers' manifest-driven sync.

Live move, verification and drills here; keeping a standby and using it in `bucket_standby`.

- plan: the source bucket listed (GET only); estimate 100 objects/s for small objects, 150 MB/s for large ones,
  twice (copy, then read back);
- prepare: the target bucket made (the service's health check HEADs it);
- seed: bulk copy (many threads), incremental by the per-stack manifest, then every object read back by sha256;
- freeze: the final delta (one thread, warm clients), run once every database froze: every object an acknowledged
  write refers to exists by then;
- verify: both listings compared, objects changed since they were copied and the final delta read back by sha256
  (everything when the delta is not known); as of a drill's cut, objects missing at the target are notes;
- cut (drills): one more incremental sync.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import NoServer, data_path
from liferaft.datasets.base import Dataset, LedgerVerdict, Size, Verdict, Where
from liferaft.datasets.bucket_standby import BucketStandby

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack

OBJECTS_PER_S = 100.0
OBJECT_BYTES_PER_S = 150e6
DELTA_KEYS_MAX = 1000  # a final delta larger than this is verified in full at the gate


def endpoints(ctx: RunContext, ds: Dataset, *, per_thread: bool = True) -> tuple[Any, Any]:
    """Both sides of the bucket (the plan's source and target sites). `per_thread`: one Objects client per worker
    thread (SDK clients are not all thread-safe); without it, the run's clients are shared and must be used one
    thread per side (no set-up cost: what the write freeze wants)."""
    from liferaft.engine.observe import open_provider
    from liferaft.movers.objects import Endpoint

    stack = ctx.require_stack()

    def side(site: str) -> Any:
        provider = stack.site(site).objects

        def make() -> Any:
            return open_provider(stack, provider, ctx.state_dir, resolve=ctx.secret).require("objects")
        return Endpoint(provider, ctx.provider(provider).require("objects"), ds.spec.name,
                        factory=make if per_thread else None)

    return side(ctx.plan.source), side(ctx.plan.target)


def remote_movers(ctx: RunContext, ds: Dataset) -> Any:
    """Where the bucket's bytes flow for this run: a `Remote` (liferaft's mover on each of the target's hosts),
    or None (through this controller: `data_path: controller`, or `auto` with no target host in the run)."""
    from liferaft.configure.remote import ssh_process
    from liferaft.datasets._util import target_hosts
    from liferaft.engine.journal import stack_dir
    from liferaft.movers import remote as rm
    from liferaft.movers.objects import Remote

    stack = ctx.require_stack()
    how = data_path(stack, ctx.plan.target)
    if how == "controller":
        return None
    hosts = target_hosts(ctx)
    if not hosts:
        if how == "target":
            from liferaft.errors import RunFailed

            raise RunFailed(f"site {ctx.plan.target} has `data_path: target` but the run has no target host yet")
        return None

    def side(site: str) -> dict[str, Any]:
        name = stack.site(site).objects
        config = stack.provider(name)
        plain = config.model_dump(mode="json", exclude_none=True) if hasattr(config, "model_dump") else dict(config)
        return {"provider": name, "config": plain, "bucket": str(ds.spec.name), "prefix": ""}

    def launcher(host: Any) -> Any:
        return lambda command: ssh_process(host, command)

    return Remote(tuple(rm.Host(f"{h.name} ({h.address})", launcher(h)) for h in hosts),
                  stack_dir(ctx.state_dir, ctx.plan.stack) / "movers", side(ctx.plan.source), side(ctx.plan.target),
                  ctx.secret)


def _remote_or_fallback(ctx: RunContext, ds: Dataset, run: Any) -> Any:
    """run(remote) at the target's hosts; under `auto`, a mover that could not start or reach both stores (it never
    said hello: nothing copied by it) falls back to this controller, said in an event."""
    from liferaft.movers.remote import MoverFailed

    remote = remote_movers(ctx, ds)
    if remote is None:
        return run(None)
    try:
        return run(remote)
    except MoverFailed as e:
        if data_path(ctx.require_stack(), ctx.plan.target) != "auto" or e.started:
            raise
        ctx.emit("objects.remote.fallback", f"the mover at {remote.where()} did not run ({str(e)[:300]}): the "
                 "bytes go through this machine", hosts=remote.where())
        return run(None)


RATES_FILE = "objects-rates.json"
RATE_MIN_BYTES = 1_000_000  # a copy smaller than this measures set-up, not bandwidth: not kept


def flow_text(where: Where, source: str, target: str) -> str:
    """Where the plan's bucket bytes will flow: through the target's host(s), or through this controller."""
    how = data_path(where.stack, where.target)
    if how == "controller":
        return f"bytes flow {source} -> this controller -> {target} (data_path: controller)"
    hosts = where.stack.site(where.target).hosts
    host = (f"host {where.target_host.name} ({where.target_host.address})" if where.target_host is not None
            else "the site's first host")
    more = f" and {hosts - 1} more host(s), by key range" if hosts > 1 else ""
    return (f"bytes flow {source} -> {host}{more} at site {where.target} -> {target}, not through this controller"
            + (" (data_path: auto: through this controller if the mover cannot run there)" if how == "auto" else ""))


def last_rate(state_dir: Any, stack: str, at_target: bool) -> dict[str, Any] | None:
    """The rate this stack's last bulk copy measured along the same path (kept by `sync_bucket`), or None."""
    import json

    from liferaft.engine.journal import stack_dir

    try:
        rates = json.loads((stack_dir(state_dir, stack) / RATES_FILE).read_text())
    except (OSError, ValueError):
        return None
    got = rates.get("target" if at_target else "controller")
    return got if isinstance(got, dict) and got.get("bytes_per_s") else None


def _keep_rate(ctx: RunContext, res: Any, remote: bool) -> None:
    import json

    from liferaft.engine.journal import stack_dir
    from liferaft.statedir import write_atomic

    if res.bytes_copied < RATE_MIN_BYTES or res.seconds <= 0:
        return
    path = stack_dir(ctx.state_dir, ctx.plan.stack) / RATES_FILE
    try:
        rates = json.loads(path.read_text())
    except (OSError, ValueError):
        rates = {}
    rates["target" if remote else "controller"] = {
        "bytes_per_s": round(res.bytes_copied / res.seconds, 1), "items_per_s": round(res.copied / res.seconds, 2),
        "at": time.time(), "where": "at the target's hosts" if remote else "through the controller"}
    write_atomic(path, json.dumps(rates), 0o600)  # owner-only, as everything in the state dir


def sync_bucket(ctx: RunContext, ds: Dataset, *, final_delta: bool = False) -> dict[str, Any]:
    """Bulk copy (many threads; at the target's hosts, see `remote_movers`), or the final delta inside the freeze
    (here: one thread, warm clients, usually tiny -- starting movers would lengthen the freeze)."""
    from liferaft.engine.journal import stack_dir
    from liferaft.movers.objects import SyncOptions, sync

    src, tgt = endpoints(ctx, ds, per_thread=not final_delta)
    if not final_delta:
        tgt.objects.create_bucket(tgt.bucket)
    # The manifest is per stack (not per run): a later failover or a retry copies only what changed.
    options = SyncOptions(progress_interval=0.2, workers=1 if final_delta else SyncOptions.workers)
    if final_delta:
        res = sync(src, tgt, stack_dir(ctx.state_dir, ctx.plan.stack), options, events=ctx.events)
    else:
        used: list[bool] = []

        def run(remote: Any) -> Any:
            used.append(remote is not None)
            return sync(src, tgt, stack_dir(ctx.state_dir, ctx.plan.stack), options, events=ctx.events,
                        remote=remote)

        res = _remote_or_fallback(ctx, ds, run)
        _keep_rate(ctx, res, used[-1])
    d = res.to_dict()
    out = {k: d[k] for k in ("listed", "copied", "skipped", "bytes_copied", "seconds", "objects_per_s")}
    out["copied_keys"] = list(res.copied_keys) if res.copied <= DELTA_KEYS_MAX else None
    return out


def verify_delta(src: Any, tgt: Any, delta_keys: list[str], manifest_dir: Any) -> tuple[list[str], int]:
    """After a full sha256 verification before the freeze: compare both listings (every key present, same size),
    ask the sync manifest whether any object changed on either side since it was copied (same-provider ETags),
    and read back by sha256 the objects the final delta copied. Returns (problems, objects listed)."""
    from liferaft.movers.objects import is_current, joined, manifest_for, sha256_of

    # One pass over both listings and the sync's manifest, joined in key order (memory flat in the number of
    # objects); only the objects to read back are kept.
    delta = set(delta_keys)
    missing: list[str] = []
    sizes: list[str] = []
    keys: list[str] = []
    listed = 0
    with manifest_for(manifest_dir, src, tgt) as manifest:
        for key, s, t, entry in joined(src, tgt, manifest):
            if s is None:
                continue
            listed += 1
            if t is None:
                missing.append(f"missing at the target: {key}")
                continue
            if s.size != t.size:
                sizes.append(f"differs (size {s.size} != {t.size}): {key}")
            # Objects changed on either side since they were copied and verified are read back too.
            if key in delta or not is_current(s, t, entry):
                keys.append(key)
    problems = missing + sizes
    problems += [f"differs (sha256): {k}" for k in keys  # shared clients: one thread per side
                 if sha256_of(src.client(), src.bucket, k) != sha256_of(tgt.client(), tgt.bucket, k)]
    return problems, listed


class Bucket(BucketStandby, NoServer):
    name: ClassVar[str] = "bucket"
    noun: ClassVar[str] = "bucket"
    group: ClassVar[str] = "buckets"
    seed_verb: ClassVar[str] = "sync"
    freezes_source: ClassVar[bool] = False
    release_id: ClassVar[str | None] = None
    ledger: ClassVar[bool] = False
    summary_name: ClassVar[str] = "bucket"
    seed_needs_prepare: ClassVar[bool] = False

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.buckets)

    # ---- plan -----------------------------------------------------------------------------------------------
    def summary(self, ds: Dataset) -> Any:
        return str(ds.spec.name)

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        return {"seed": f"copy bucket {ds.spec.name}: {where[0]} -> {where[1]}",
                "prepare": f"bucket {ds.spec.name} made at {where[1]}"}

    def provider(self, stack: Stack, site: str) -> str:
        return str(stack.site(site).objects)

    def observe(self, where: Where, ds: Dataset) -> Size:
        from liferaft.engine.observe import open_provider

        objects = open_provider(where.stack, self.provider(where.stack, where.source), where.state_dir) \
            .require("objects")
        n = size = 0
        for info in objects.list_objects(ds.spec.name):
            n += 1
            size += info.size
        flow = flow_text(where, self.provider(where.stack, where.source), self.provider(where.stack, where.target))
        rate = last_rate(where.state_dir, where.stack.model.name, data_path(where.stack, where.target) != "controller")
        if rate:
            flow += (f"; last copy measured {rate['bytes_per_s'] / 1e6:.1f} MB/s, {rate['items_per_s']:.0f} objects/s"
                     f" ({rate['where']}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime(rate['at']))} UTC)")
        return Size(bytes=size, items=n, detail=flow, bytes_per_s=float((rate or {}).get("bytes_per_s", 0.0)),
                    items_per_s=float((rate or {}).get("items_per_s", 0.0)))

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        """Copy, then read back; at the rates this stack's last copy measured where known (`last_rate`)."""
        bps = size.bytes_per_s or OBJECT_BYTES_PER_S
        ips = size.items_per_s or OBJECTS_PER_S
        return 2 * max(size.items / ips, size.bytes / bps)

    # ---- first deployment (`liferaft deploy`) ---------------------------------------------------------------
    def _objects(self, ctx: RunContext) -> Any:
        return ctx.provider(self.provider(ctx.require_stack(), ctx.plan.target)).require("objects")

    def existing(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        """The buckets already there at the run's site (read-only)."""
        objects = self._objects(ctx)
        return {"buckets": [str(ds.spec.name) for ds in datasets if objects.bucket_exists(str(ds.spec.name))]}

    def create(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> dict[str, Any]:
        """Each bucket made at the site's objects provider if it is missing; `created`: those that were."""
        objects = self._objects(ctx)
        had = set(existing.get("buckets") or [])
        created = []
        for ds in datasets:
            if str(ds.spec.name) not in had:
                objects.create_bucket(str(ds.spec.name))
                created.append(ds.key)
        return {"created": created, "buckets": {ds.key: str(ds.spec.name) for ds in datasets}}

    def uncreate(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> None:
        """Undo `create`: the buckets it made are emptied and deleted (where the provider can delete a bucket);
        buckets that were there before stay as they are."""
        objects = self._objects(ctx)
        had = set(existing.get("buckets") or [])
        for ds in datasets:
            name = str(ds.spec.name)
            if name in had or not objects.bucket_exists(name):
                continue
            for info in list(objects.list_objects(name)):
                objects.delete_object(name, info.key)
            delete = getattr(objects, "delete_bucket", None)
            if delete is not None:
                delete(name)
            ctx.emit("bucket.removed", f"bucket {name} emptied" + (" and deleted" if delete else ""), bucket=name)

    # ---- live move ------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        _, tgt = endpoints(ctx, ds, per_thread=False)
        tgt.objects.create_bucket(tgt.bucket)
        return {"bucket": tgt.bucket}

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None:
        return None  # the bucket stays (it may hold copied objects a retry reuses)

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        out = sync_bucket(ctx, ds)
        out.pop("copied_keys", None)
        return out

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        """Every object read back on both sides and compared by sha256 (before the freeze: the gate after it
        then re-reads only what the final delta copied)."""
        from liferaft.movers.objects import verify_sync

        src, tgt = endpoints(ctx, ds)
        _remote_or_fallback(ctx, ds, lambda remote: verify_sync(src, tgt, allow_extra=True, events=ctx.events,
                                                                remote=remote))

    def unseed(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        for side in endpoints(ctx, ds, per_thread=False):  # open the object clients now, not inside the freeze
            side.objects.bucket_exists(side.bucket)

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        return sync_bucket(ctx, ds, final_delta=True)

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        import time

        from liferaft.engine.journal import stack_dir
        from liferaft.movers.objects import verify_sync

        t0 = time.monotonic()
        label = f"bucket {ds.key}"
        keys = None if prior is None else prior.get("copied_keys")
        if as_of_cut:
            src, tgt = endpoints(ctx, ds)
            rep = verify_sync(src, tgt, raise_on_difference=False, events=ctx.events)
            notes = ((f"{label}: {len(rep.missing)} object(s) at the source are not at the target (written after "
                      "the cut?)"),) if rep.missing else ()
            return Verdict(checked={f"{label} objects": rep.checked},
                           problems=tuple(f"{label}: differs (sha256): {k}" for k in rep.differing[:20]),
                           notes=notes, seconds=round(time.monotonic() - t0, 3))
        if keys is None:  # no bounded delta known: read everything back
            src, tgt = endpoints(ctx, ds)
            rep = _remote_or_fallback(ctx, ds, lambda remote: verify_sync(
                src, tgt, raise_on_difference=False, events=ctx.events, remote=remote))
            problems = [f"{label}: {p}" for p in rep.problems() if not p.startswith("only at")]
            checked = rep.checked
        else:
            src, tgt = endpoints(ctx, ds, per_thread=False)
            found, checked = verify_delta(src, tgt, keys, stack_dir(ctx.state_dir, ctx.plan.stack))
            problems = [f"{label}: {p}" for p in found]
        return Verdict(checked={label: checked}, problems=tuple(problems), seconds=round(time.monotonic() - t0, 3))

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        raise NotImplementedError("buckets keep no write ledger")

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        return {}

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        return None

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        return sync_bucket(ctx, ds)

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return []  # the target bucket stays (the drill's objects are the source's)

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return []  # objects hang off the databases' rows: with those read-only, no service writes new ones
