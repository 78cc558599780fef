"""The bucket's half of the standby contract (`StandbyCopy`).

- keep: an incremental sync source -> standby bucket with the movers' manifest (the same one failover uses, per stack,
  so a later failover copies only what changed);
- lag: a write just after the previous listing waited until the last listing: now minus the previous sync's start;
- promote: the standby bucket used as is, after reading back (sha256) every object the manifest says was copied (a
  gate: a difference stops the run before DNS);
- loss: the start of the last sync (what was written after it may be missing).
Nothing to install at the standby host, nothing left at the source by a promotion, no access to release.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.errors import CheckFailed
from liferaft.movers.bounded import bounded

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack


class BucketStandby:
    promote_step: ClassVar[tuple[str, str]] = ("standby.objects", "standby")

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return bool(entry.get("last_sync_at"))

    def source_ports(self, ds: Dataset) -> list[int]:
        return []  # an objects provider has no port at the source host

    def standby_place(self, stack: Stack, ds: Dataset, target: str) -> str:
        return str(stack.site(target).objects)

    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return None

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        return {}

    def _endpoint(self, ctx: RunContext, ds: Dataset, provider: str, *, client: Any = None) -> Any:
        from liferaft.engine.observe import open_provider
        from liferaft.movers.objects import Endpoint

        stack = ctx.require_stack()

        def make() -> Any:
            return open_provider(stack, provider, ctx.state_dir, resolve=ctx.secret).require("objects")

        return Endpoint(provider, client if client is not None else ctx.provider(provider).require("objects"),
                        ds.spec.name, factory=make)

    def _providers(self, ctx: RunContext, sides: StandbySides) -> tuple[str, str]:
        stack = ctx.require_stack()
        return stack.site(sides.source).objects, stack.site(sides.target).objects

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.engine.journal import stack_dir
        from liferaft.movers.objects import SyncOptions, sync

        src_p, tgt_p = self._providers(ctx, sides)
        src, tgt = self._endpoint(ctx, ds, src_p), self._endpoint(ctx, ds, tgt_p)
        t = sides.source_timeout
        bounded(lambda: src.objects.bucket_exists(src.bucket), t, provider=src_p,
                what=f"bucket {src.bucket} at the source")
        started = time.time()
        tgt.objects.create_bucket(tgt.bucket)
        res = sync(src, tgt, stack_dir(ctx.state_dir, ctx.plan.stack), SyncOptions(progress_interval=1.0),
                   events=None)
        return {"name": ds.spec.name, "source": src_p, "target": tgt_p,
                "prev_sync_started_at": entry.get("last_sync_started_at"), "last_sync_started_at": started,
                "last_sync_at": time.time(), "caught_up_at": started, "listed": res.listed, "copied": res.copied,
                "lag_bytes": res.bytes_total, "sync_seconds": round(res.seconds, 3)}

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        # a write just after the previous listing waited until the last listing: the exposure
        since = entry.get("prev_sync_started_at") or entry.get("last_sync_started_at") or now
        return {"lag_bytes": entry.get("lag_bytes"), "lag_seconds": round(now - float(since), 3), "measured_at": now}

    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        return (f"use the standby bucket {ds.spec.name} at {stack.site(sides.target).objects} as is, checked against "
                "the manifest")

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        return {f"bucket {key} objects": int(promoted.get("verified", 0))}, []

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """Every object the manifest says was copied must be at the standby with the same sha256."""
        from liferaft.engine.journal import stack_dir
        from liferaft.movers.manifest import Manifest
        from liferaft.movers.objects import MANIFEST_FILE, Endpoint, pair_id, sha256_of

        src_p, tgt_p = self._providers(ctx, sides)
        bucket = ds.spec.name
        tgt_objects = ctx.provider(tgt_p).require("objects")
        # The manifest's pair identity names both sides; the source side is only a label here, never contacted.
        pair = pair_id(Endpoint(src_p, tgt_objects, bucket), Endpoint(tgt_p, tgt_objects, bucket))
        with Manifest(stack_dir(ctx.state_dir, ctx.plan.stack) / MANIFEST_FILE, pair) as man:
            entries = man.load()
        if not entries:
            raise CheckFailed(f"bucket {bucket}: the sync manifest records no object copied to {tgt_p}; the "
                              "standby bucket cannot be trusted",
                              hint=f"run `liferaft replicate --to {sides.target}` while the source answers")
        listed = {o.key: o for o in tgt_objects.list_objects(bucket)}
        problems = [f"missing at the standby: {k}" for k in sorted(set(entries) - set(listed))]
        problems += [f"size differs ({listed[k].size} != {e.size}): {k}" for k, e in sorted(entries.items())
                     if k in listed and listed[k].size != e.size]
        ok_keys = [k for k in sorted(entries) if k in listed and listed[k].size == entries[k].size]
        reader = self._endpoint(ctx, ds, tgt_p, client=tgt_objects)

        def check(k: str) -> str | None:
            got = sha256_of(reader.client(), bucket, k)
            return None if got == entries[k].tgt_sha256 else f"sha256 differs from the manifest: {k}"

        with ThreadPoolExecutor(max_workers=8) as pool:
            problems += [p for p in pool.map(check, ok_keys) if p]
        if problems:
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise CheckFailed(f"bucket {bucket} at {tgt_p} is not what replicate copied; DNS was not touched:\n  "
                              + "\n  ".join(problems[:10]) + more)
        last = max(e.copied_at for e in entries.values())
        out = {"bucket": bucket, "manifest_objects": len(entries), "verified": len(ok_keys),
               "extra_at_standby": len(set(listed) - set(entries)), "last_copied_at": last}
        ctx.emit("standby.objects", f"bucket {bucket}: {len(ok_keys)} objects verified by sha256 against the "
                 "manifest", **out)
        return out

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        return None

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        return {}

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        return {"last_replicated_at": entry.get("last_sync_started_at"), "last_lag_bytes": entry.get("lag_bytes"),
                "last_lag_seconds": entry.get("lag_seconds")}

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return None

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        return False
