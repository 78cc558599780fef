"""Object sync between any two Objects adapters (liferaft.providers.base.Objects), by content hash.

- Streaming, one read per object: an object up to `buffer_limit` is read into memory (within a byte budget) and
  written with one PUT that carries its sha256; a larger one flows get_object() chunks -> put_object() part by
  part. Every byte is hashed once on the way; large objects are never held whole. The sha256 of a large object
  reaches the target's metadata only when the source declared it (`unknown_hash`); the manifest always has it.
- Concurrent: both listings run at once; transfers run on a thread pool.
- Incremental: a manifest (SQLite, see manifest.py) records size and sha256 at source and target of every copied
  object, plus both sides' ETags at copy time. An object is skipped when the manifest says it was copied, its size
  is unchanged and neither side's same-provider ETag moved. ETags are never compared across providers.
- Resumable: the manifest row is committed right after each object, so a killed sync recopies only what was in
  flight.
- Deletions at the target only when asked (`delete=True`).
- Verification (`verify_sync`): missing / extra / differing by sha256 of the bytes actually read from both sides.
  Given the state dir, it feeds back into the manifest: an object found missing or differing (e.g. corrupted at
  rest at the target, its ETag kept) is marked stale, so the next sync copies it again.
- The target bucket is created when missing (`SyncOptions.create_target`; never in a dry run).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import CheckFailed, LiferaftError, ProviderError, RunFailed, Throttled, Unreachable
from liferaft.events import Events, as_events
from liferaft.movers.manifest import Entry, Manifest, new_entry
from liferaft.providers._body import HashedBytes, HashingStream
from liferaft.providers.base import CHUNK_SIZE, ObjectInfo, Objects

MANIFEST_FILE = "objects-manifest.sqlite"


@dataclass(frozen=True)
class Endpoint:
    """One side of a sync: a provider's Objects capability and a bucket (optionally a key prefix)."""

    provider: str  # the provider's name in the stack file: part of the manifest's identity of the pair
    objects: Objects
    bucket: str
    prefix: str = ""
    # For adapters whose client is not thread-safe: makes one Objects per worker thread (else `objects` is shared).
    factory: Callable[[], Objects] | None = field(default=None, compare=False, repr=False)
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    def client(self) -> Objects:
        """The Objects to use on this thread."""
        if self.factory is None:
            return self.objects
        obj = getattr(self._local, "objects", None)
        if obj is None:
            obj = self._local.objects = self.factory()
        return obj

    def label(self) -> str:
        return f"{self.provider}:{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass(frozen=True)
class SyncOptions:
    workers: int = 16
    delete: bool = False
    dry_run: bool = False
    progress_interval: float = 0.5
    # Large objects (over `buffer_limit`) whose sha256 the source does not know: "stream" reads them once and
    # uploads them part by part as they stream, hashing on the way; the manifest keeps the sha256, the target
    # object goes without the sha256 metadata (S3-style stores take it before the body). "prehash" reads them
    # twice (hash, then copy with the hash declared and stored); "spool" lets the target adapter stage them.
    unknown_hash: str = "stream"
    retries: int = 3  # per object, on transient provider errors
    # Objects up to `buffer_limit` bytes whose sha256 the source does not declare are read into memory once while
    # hashing, then written with one PUT that carries the hash: one read, one hash pass, two requests (rclone's
    # count). Bodies held at once are capped by `memory_budget` bytes (None: workers x CHUNK_SIZE), so memory stays
    # bounded by workers x part size whatever the object sizes.
    buffer_limit: int = 4 * CHUNK_SIZE
    memory_budget: int | None = None
    # Create the target bucket first if it does not exist (the same idempotent `create_bucket` failover and
    # replicate use); a dry run only looks and plans against an empty target.
    create_target: bool = False


@dataclass(frozen=True)
class SyncResult:
    source: str
    target: str
    listed: int
    copied: int
    skipped: int
    deleted: int
    bytes_copied: int
    bytes_total: int
    seconds: float
    copied_keys: tuple[str, ...] = field(default=(), repr=False)
    failed: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False

    @property
    def objects_per_s(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_copied / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "listed": self.listed, "copied": self.copied,
                "skipped": self.skipped, "deleted": self.deleted, "bytes_copied": self.bytes_copied,
                "bytes_total": self.bytes_total, "seconds": round(self.seconds, 3),
                "objects_per_s": round(self.objects_per_s, 1), "mb_per_s": round(self.mb_per_s, 2),
                "failed": [{"key": k, "error": e} for k, e in self.failed], "dry_run": self.dry_run}


def pair_id(source: Endpoint, target: Endpoint) -> str:
    return f"{source.label()} -> {target.label()}"


def manifest_for(state_dir: str | Path, source: Endpoint, target: Endpoint) -> Manifest:
    return Manifest(Path(state_dir) / MANIFEST_FILE, pair_id(source, target))


def _target_key(source: Endpoint, target: Endpoint, key: str) -> str:
    return target.prefix + key[len(source.prefix):]


def list_both(source: Endpoint, target: Endpoint) -> tuple[dict[str, ObjectInfo], dict[str, ObjectInfo]]:
    """List both sides concurrently. Target keys are mapped back into source key space."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        fs = pool.submit(lambda: {o.key: o for o in source.client().list_objects(source.bucket, source.prefix)})
        ft = pool.submit(lambda: {source.prefix + o.key[len(target.prefix):]: o
                                  for o in target.client().list_objects(target.bucket, target.prefix)})
        return fs.result(), ft.result()


def is_current(src: ObjectInfo, tgt: ObjectInfo | None, entry: Entry | None) -> bool:
    """Did a previous sync copy exactly this source object, and is the target still what it stored?"""
    if entry is None or tgt is None:
        return False
    if entry.size != src.size or tgt.size != src.size:
        return False
    if src.sha256 is not None and src.sha256 != entry.src_sha256:
        return False
    if tgt.sha256 is not None and tgt.sha256 != entry.tgt_sha256:
        return False
    # same-provider change detection: an ETag that moved means the object was rewritten on that side
    if entry.src_etag is not None and src.etag is not None and src.etag != entry.src_etag:
        return False
    return not (entry.tgt_etag is not None and tgt.etag is not None and tgt.etag != entry.tgt_etag)


class _Budget:
    """A byte budget for bodies held in memory: acquire(n) waits until n more bytes fit (or nothing is held)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class _Counters:
    def __init__(self, budget: int = 16 * CHUNK_SIZE) -> None:
        self.lock = threading.Lock()
        self.objects = 0
        self.bytes = 0
        self.budget = _Budget(budget)

    def add_bytes(self, n: int) -> None:
        with self.lock:
            self.bytes += n

    def add_object(self) -> None:
        with self.lock:
            self.objects += 1


def _stream_sha256(objects: Objects, bucket: str, key: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for chunk in objects.get_object(bucket, key):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def sha256_of(objects: Objects, bucket: str, key: str) -> str:
    """The sha256 of one object's content, streamed (what verification compares; never an ETag)."""
    return _stream_sha256(objects, bucket, key)[0]


def copy_with_retries(source: Endpoint, target: Endpoint, info: ObjectInfo, manifest: Manifest,
                      counters: _Counters, options: SyncOptions) -> int:
    """copy_object, retried a few times on transient provider errors (5xx, throttling, dropped connections)."""
    for attempt in range(options.retries + 1):
        try:
            return copy_object(source, target, info, manifest, counters, options)
        except (Throttled, Unreachable, ProviderError) as exc:
            transient = isinstance(exc, (Throttled, Unreachable)) or (exc.status or 0) >= 500
            if not transient or attempt >= options.retries:
                raise
            time.sleep(min(2.0, 0.1 * 2 ** attempt))
    raise AssertionError("unreachable")


def copy_object(source: Endpoint, target: Endpoint, info: ObjectInfo, manifest: Manifest, counters: _Counters,
                options: SyncOptions) -> int:
    """Stream one object across, hashing as it goes; record it in the manifest. Returns bytes sent."""
    declared = info.sha256
    src_objects, tgt_objects = source.client(), target.client()
    tkey = _target_key(source, target, info.key)
    if declared is None and info.size <= options.buffer_limit:
        # One read into memory, hashing as it arrives; one PUT that carries the hash (see SyncOptions).
        counters.budget.acquire(info.size)
        try:
            # The body is budgeted whole: asked for in one chunk (no join copy where the adapter can do that).
            stream = HashingStream(src_objects.get_object(source.bucket, info.key, chunk_size=max(1, info.size)),
                                   counters.add_bytes)
            parts = list(stream)
            _check_size(info, stream.size)
            digest = stream.hexdigest()
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            del parts
            stored = tgt_objects.put_object(target.bucket, tkey, HashedBytes(data, digest), size=info.size)
            del data
        finally:
            counters.budget.release(info.size)
    else:
        if declared is None:
            head = src_objects.head_object(source.bucket, info.key)
            declared = head.sha256
            if declared is None and options.unknown_hash == "prehash":
                declared, _ = _stream_sha256(src_objects, source.bucket, info.key)
        # Streamed part by part; the stream hashes every byte once and the adapter verifies with that digest.
        stream = HashingStream(src_objects.get_object(source.bucket, info.key), counters.add_bytes)
        stored = tgt_objects.put_object(target.bucket, tkey, stream, size=info.size, sha256=declared,
                                        store_sha256=declared is not None or options.unknown_hash != "stream")
        _check_size(info, stream.size)
        digest = stream.hexdigest()
    if declared is not None and declared != digest:
        raise CheckFailed(f"{info.key}: the source's bytes hash to {digest[:12]}..., not the {declared[:12]}... "
                          "it declares")
    if stored.sha256 is not None and stored.sha256 != digest:
        raise CheckFailed(f"{info.key}: the target stored sha256 {stored.sha256[:12]}..., sent {digest[:12]}...")
    manifest.record(new_entry(info.key, info.size, digest, stored.sha256 or digest, info.etag, stored.etag))
    counters.add_object()
    return info.size


def _check_size(info: ObjectInfo, read: int) -> None:
    if read != info.size:
        raise CheckFailed(f"{info.key}: read {read} bytes but the source listed {info.size}; it changed while "
                          "being copied", hint="run the sync again")


def sync(source: Endpoint, target: Endpoint, state_dir: str | Path, options: SyncOptions | None = None,
         events: Events | Callable[..., None] | None = None) -> SyncResult:
    """Make the target bucket hold every source object (and, with delete, nothing else). See the module doc."""
    options = options or SyncOptions()
    ev = as_events(events)
    t0 = time.monotonic()
    ev.emit("objects.listing", f"listing {source.label()} and {target.label()}", source=source.label(),
            target=target.label())
    target_exists = True
    if options.create_target and options.dry_run:
        target_exists = target.objects.bucket_exists(target.bucket)
    elif options.create_target:
        target.objects.create_bucket(target.bucket)
    if target_exists:
        src, tgt = list_both(source, target)
    else:
        src, tgt = {o.key: o for o in source.client().list_objects(source.bucket, source.prefix)}, {}
        ev.emit("objects.create_bucket", f"{target.label()} does not exist: a sync would create it",
                bucket=target.bucket)
    with manifest_for(state_dir, source, target) as manifest:
        entries = manifest.load()
        todo = [o for k, o in sorted(src.items()) if not is_current(o, tgt.get(k), entries.get(k))]
        extra = sorted(set(tgt) - set(src)) if options.delete else []
        total_bytes = sum(o.size for o in todo)
        ev.emit("objects.plan", f"{len(todo)} to copy ({total_bytes} bytes), {len(src) - len(todo)} current"
                + (f", {len(extra)} to delete" if extra else ""), listed=len(src), to_copy=len(todo),
                bytes=total_bytes, to_delete=len(extra), current=len(src) - len(todo))
        if options.dry_run:
            return SyncResult(source.label(), target.label(), len(src), 0, len(src) - len(todo), 0, 0, total_bytes,
                              time.monotonic() - t0, tuple(o.key for o in todo), dry_run=True)
        counters = _Counters(options.memory_budget or max(1, options.workers) * CHUNK_SIZE)
        copied: list[str] = []
        failed: list[tuple[str, str]] = []
        t_copy = time.monotonic()
        _run_pool(todo, lambda o: copy_with_retries(source, target, o, manifest, counters, options), options.workers,
                  copied, failed, lambda: _progress(ev, counters, len(todo), total_bytes, t_copy),
                  options.progress_interval)
        deleted = 0
        for key in extra:
            target.objects.delete_object(target.bucket, _target_key(source, target, key))
            manifest.forget(key)
            deleted += 1
        if extra:
            ev.emit("objects.deleted", f"deleted {deleted} objects absent from the source", deleted=deleted)
    seconds = time.monotonic() - t0
    result = SyncResult(source.label(), target.label(), len(src), len(copied), len(src) - len(todo), deleted,
                        counters.bytes, total_bytes, seconds, tuple(sorted(copied)), tuple(failed))
    ev.emit("objects.done", f"copied {result.copied}, skipped {result.skipped}, deleted {deleted} in {seconds:.2f} s"
            f" ({result.objects_per_s:.0f} objects/s, {result.mb_per_s:.1f} MB/s)", **result.to_dict())
    if failed:
        first = "\n  ".join(f"{k}: {e}" for k, e in failed[:5])
        raise RunFailed(f"{len(failed)} of {len(todo)} objects failed to copy:\n  {first}",
                        hint="run the sync again: finished objects are not copied twice")
    return result


def _progress(ev: Events, counters: _Counters, total: int, total_bytes: int, t0: float) -> None:
    dt = max(time.monotonic() - t0, 1e-6)
    with counters.lock:
        n, b = counters.objects, counters.bytes
    ev.emit("objects.progress", f"{n}/{total} objects, {b / 1e6:.1f}/{total_bytes / 1e6:.1f} MB, "
            f"{n / dt:.0f} objects/s, {b / 1e6 / dt:.1f} MB/s", done=n, total=total, bytes=b,
            total_bytes=total_bytes, objects_per_s=round(n / dt, 1), mb_per_s=round(b / 1e6 / dt, 2))


def _run_pool(items: list[ObjectInfo], fn: Callable[[ObjectInfo], int], workers: int, done: list[str],
              failed: list[tuple[str, str]], tick: Callable[[], None], interval: float) -> None:
    """Run fn over items with at most 2*workers in flight; collect keys done and failures; tick periodically."""
    it = iter(items)
    inflight: dict[Future[int], str] = {}
    last = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="liferaft-sync") as pool:
        while True:
            while len(inflight) < 2 * max(1, workers):
                o = next(it, None)
                if o is None:
                    break
                inflight[pool.submit(fn, o)] = o.key
            if not inflight:
                break
            finished, _ = wait(list(inflight), timeout=interval, return_when=FIRST_COMPLETED)
            for f in finished:
                key = inflight.pop(f)
                exc = f.exception()
                if exc is None:
                    done.append(key)
                else:
                    failed.append((key, str(exc) if isinstance(exc, LiferaftError) else f"{type(exc).__name__}: {exc}"))
            if time.monotonic() - last >= interval:
                tick()
                last = time.monotonic()
    tick()


# ---------------------------------------------------------------------------------------------------- verify
def mark_stale(state_dir: str | Path, source: Endpoint, target: Endpoint, keys: tuple[str, ...]) -> None:
    """Forget the manifest rows of `keys` (source key space): the next sync treats them as not copied."""
    with manifest_for(state_dir, source, target) as manifest:
        for key in keys:
            manifest.forget(key)


@dataclass(frozen=True)
class ObjectsVerifyReport:
    source: str
    target: str
    checked: int
    missing: tuple[str, ...]  # at the source, not at the target
    extra: tuple[str, ...]  # at the target, not at the source
    differing: tuple[str, ...]  # both sides, different sha256 (or size)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.differing)

    def problems(self) -> list[str]:
        out = [f"missing at the target: {k}" for k in self.missing]
        out += [f"differs (sha256): {k}" for k in self.differing]
        out += [f"only at the target: {k}" for k in self.extra]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "ok": self.ok, "checked": self.checked,
                "missing": list(self.missing), "extra": list(self.extra), "differing": list(self.differing)}


def verify_sync(source: Endpoint, target: Endpoint, *, workers: int = 16, allow_extra: bool = True,
                raise_on_difference: bool = True, events: Events | Callable[..., None] | None = None,
                state_dir: str | Path | None = None) -> ObjectsVerifyReport:
    """Read every object on both sides and compare sha256 of the bytes. Extra target objects fail only if
    `allow_extra` is False (a sync without --delete leaves them on purpose). With `state_dir` (where the sync's
    manifest is), missing and differing objects are marked stale there: the next sync copies them again."""
    ev = as_events(events)
    src, tgt = list_both(source, target)
    both = sorted(set(src) & set(tgt))
    differing: list[str] = []
    lock = threading.Lock()

    def check(key: str) -> None:
        s, t = src[key], tgt[key]
        if s.size != t.size:
            different = True
        else:
            sh = _stream_sha256(source.client(), source.bucket, key)[0]
            th = _stream_sha256(target.client(), target.bucket, _target_key(source, target, key))[0]
            different = sh != th
        if different:
            with lock:
                differing.append(key)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="liferaft-verify") as pool:
        list(pool.map(check, both))
    report = ObjectsVerifyReport(source.label(), target.label(), len(set(src) | set(tgt)),
                                 tuple(sorted(set(src) - set(tgt))), tuple(sorted(set(tgt) - set(src))),
                                 tuple(sorted(differing)))
    if state_dir is not None and (report.missing or report.differing):
        mark_stale(state_dir, source, target, report.missing + report.differing)
    ev.emit("objects.verified", "objects verified" if report.ok else "objects differ", **report.to_dict())
    bad = report.missing or report.differing or (report.extra and not allow_extra)
    if raise_on_difference and bad:
        problems = [p for p in report.problems() if allow_extra is False or not p.startswith("only at")]
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckFailed(f"{target.label()} is not a copy of {source.label()}:\n  " + "\n  ".join(problems[:10])
                          + more, hint="run `liferaft sync` again; verification compares content hashes")
    return report
