"""Object sync between any two Objects adapters (liferaft.providers.base.Objects), by content hash.

- Streaming, one read per object: an object up to `buffer_limit` is read into memory (within a byte budget) and
  written with one PUT that carries its sha256; a larger one flows get_object() chunks -> put_object() part by
  part. Every byte is hashed once on the way; large objects are never held whole. The sha256 of a large object
  reaches the target's metadata only when the source declared it (`unknown_hash`); the manifest always has it.
- Concurrent: both listings run at once; transfers run on a thread pool.
- Memory flat in the number of objects: both listings (each in key order, checked) and the manifest (read a page
  at a time) are joined in one pass in key order, never held whole; what to copy is spooled (a temporary file
  beyond SPOOL_IN_MEMORY objects); SyncResult keeps at most `keys_limit` keys. One pass, no lookup per object.
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
- At the target site (`Remote`): the listings and the manifest stay here, the bytes do not: the objects to copy are
  split into key ranges, one per target host, and liferaft's mover copies them there (liferaft.movers.remote),
  reporting each object it finished, which is recorded here as it arrives. Verification hashes there too.
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import CheckFailed, LiferaftError, ProviderError, RunFailed, Throttled, Unreachable
from liferaft.events import Events, as_events
from liferaft.movers import remote as rm
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
    # SyncResult.copied_keys keeps at most this many keys (None: all): a million keys would be ~80 MB.
    keys_limit: int | None = 10_000


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
    # the keys copied (a dry run: to copy), sorted, at most SyncOptions.keys_limit of them; `copied` counts all
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


@dataclass(frozen=True)
class Remote:
    """Move the bytes at the target site: one mover per host (the objects split into key ranges among them).
    `source`/`target`: {"provider", "config" (the provider's settings as a plain dict), "bucket", "prefix"};
    `resolve` turns the secret references they hold into values (sent on the movers' stdin only)."""

    hosts: tuple[rm.Host, ...]
    bundle_dir: Path
    source: dict[str, Any] = field(hash=False)
    target: dict[str, Any] = field(hash=False)
    resolve: Callable[[str], str] = field(compare=False, repr=False)
    workers: int = 8

    def where(self) -> str:
        return ", ".join(h.name for h in self.hosts)


def pair_id(source: Endpoint, target: Endpoint) -> str:
    return f"{source.label()} -> {target.label()}"


def manifest_for(state_dir: str | Path, source: Endpoint, target: Endpoint) -> Manifest:
    return Manifest(Path(state_dir) / MANIFEST_FILE, pair_id(source, target))


def _target_key(source: Endpoint, target: Endpoint, key: str) -> str:
    return target.prefix + key[len(source.prefix):]


LISTING_BATCH = 500  # objects a listing thread hands over at once; it runs at most LISTING_BATCHES batches ahead
LISTING_BATCHES = 4
SPOOL_IN_MEMORY = 10_000  # objects to copy kept in memory; more go to an unnamed temporary file


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _read_ahead(make: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """Iterate make() on its own thread, at most LISTING_BATCHES x LISTING_BATCH items ahead of the consumer: both
    listings run at once, and neither is ever held whole. The thread stops when the consumer does."""
    q: queue.Queue[Any] = queue.Queue(maxsize=LISTING_BATCHES)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            batch: list[Any] = []
            for x in make():
                batch.append(x)
                if len(batch) >= LISTING_BATCH:
                    if not put(batch):
                        return
                    batch = []
            if put(batch):
                put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failed(exc))

    threading.Thread(target=run, name="liferaft-list", daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield from item
    finally:
        stop.set()


def _in_key_order(infos: Iterable[ObjectInfo], label: str, strip: str = "", add: str = ""
                  ) -> Iterator[tuple[str, ObjectInfo]]:
    """(key in the source's key space, info), checking that the listing is in strictly ascending key order (what
    S3-style stores and liferaft's adapters give): the join below relies on it, and a wrong join could make
    `delete` remove objects the source has."""
    last: str | None = None
    for o in infos:
        key = add + o.key[len(strip):]
        if last is not None and key <= last:
            raise ProviderError(label, "list objects", f"the listing is not in key order ({key!r} came after "
                                f"{last!r}); liferaft joins both sides' listings in key order",
                                hint="report this with the provider's name: its adapter must list in key order")
        last = key
        yield key, o


def merge_listings(source: Endpoint, target: Endpoint, *, target_exists: bool = True
                   ) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Both listings, joined in key order: (key in the source's key space, source info, target info), one side None
    where the object is on one side only. Both sides are listed at once, each a bounded distance ahead of the join;
    memory stays flat whatever the number of objects."""
    src = _read_ahead(lambda: _in_key_order(source.client().list_objects(source.bucket, source.prefix),
                                            source.label()))
    tgt: Iterator[tuple[str, ObjectInfo]] = iter(())
    if target_exists:
        tgt = _read_ahead(lambda: _in_key_order(target.client().list_objects(target.bucket, target.prefix),
                                                target.label(), target.prefix, source.prefix))
    x, y = next(src, None), next(tgt, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            assert x is not None
            yield x[0], x[1], None
            x = next(src, None)
        elif x is None or y[0] < x[0]:
            yield y[0], None, y[1]
            y = next(tgt, None)
        else:
            yield x[0], x[1], y[1]
            x, y = next(src, None), next(tgt, None)


def joined(source: Endpoint, target: Endpoint, manifest: Manifest, *, target_exists: bool = True
           ) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None, Entry | None]]:
    """merge_listings with each key's manifest row (None if it has none), the manifest read in key order a page at
    a time alongside: no lookup per object, nothing held whole."""
    rows = manifest.rows()
    e = next(rows, None)
    for key, s, t in merge_listings(source, target, target_exists=target_exists):
        while e is not None and e.key < key:
            e = next(rows, None)
        yield key, s, t, (e if e is not None and e.key == key else None)


class _Spool:
    """The objects to copy, in key order: in memory up to SPOOL_IN_MEMORY, beyond that in an unnamed temporary
    file (marshal records), so a million objects to copy cost disk, not memory."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = SPOOL_IN_MEMORY if limit is None else limit
        self.items: list[ObjectInfo] = []
        self.file: Any = None
        self.count = 0

    def add(self, o: ObjectInfo) -> None:
        self.count += 1
        if self.file is None and len(self.items) < self.limit:
            self.items.append(o)
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="liferaft-sync-")  # noqa: SIM115 - closed by close()
            for held in self.items:
                self._dump(held)
            self.items = []
        self._dump(o)

    def _dump(self, o: ObjectInfo) -> None:
        marshal.dump((o.key, o.size, o.sha256, o.etag, o.modified), self.file)

    def __iter__(self) -> Iterator[ObjectInfo]:
        if self.file is None:
            yield from self.items
            return
        self.file.seek(0)
        while True:
            try:
                fields = marshal.load(self.file)
            except EOFError:
                return
            yield ObjectInfo(*fields)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Keys:
    """Keys done: counted all, kept up to `limit` (None: all) for the result."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.keys: list[str] = []
        self.count = 0

    def append(self, key: str) -> None:
        self.count += 1
        if self.limit is None or len(self.keys) < self.limit:
            self.keys.append(key)


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
         events: Events | Callable[..., None] | None = None, remote: Remote | None = None) -> SyncResult:
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
    if not target_exists:
        ev.emit("objects.create_bucket", f"{target.label()} does not exist: a sync would create it",
                bucket=target.bucket)
    with manifest_for(state_dir, source, target) as manifest:
        todo = _Spool()
        try:
            return _sync(source, target, manifest, todo, options, ev, t0, target_exists, remote)
        finally:
            todo.close()


def _sync(source: Endpoint, target: Endpoint, manifest: Manifest, todo: _Spool, options: SyncOptions, ev: Events,
          t0: float, target_exists: bool, remote: Remote | None = None) -> SyncResult:
    # One pass over both listings and the manifest, joined in key order: what to copy goes to the spool (then
    # the copy reads it back), so the plan's counts are known before the first copy and nothing is held whole.
    listed = total_bytes = 0
    extra: list[str] = []  # target objects absent from the source (kept only with delete)
    for key, s, t, e in joined(source, target, manifest, target_exists=target_exists):
        if s is None:
            if options.delete:
                extra.append(key)
            continue
        listed += 1
        if not is_current(s, t, e):
            todo.add(s)
            total_bytes += s.size
    current = listed - todo.count
    ev.emit("objects.plan", f"{todo.count} to copy ({total_bytes} bytes), {current} current"
            + (f", {len(extra)} to delete" if extra else ""), listed=listed, to_copy=todo.count,
            bytes=total_bytes, to_delete=len(extra), current=current)
    if options.dry_run:
        return SyncResult(source.label(), target.label(), listed, 0, current, 0, 0, total_bytes,
                          time.monotonic() - t0, tuple(itertools.islice((o.key for o in todo),
                                                                        options.keys_limit)), dry_run=True)
    counters = _Counters(options.memory_budget or max(1, options.workers) * CHUNK_SIZE)
    copied = _Keys(options.keys_limit)
    failed: list[tuple[str, str]] = []
    t_copy = time.monotonic()
    if remote is not None and todo.count:
        _copy_remote(remote, todo, manifest, counters, copied, failed, ev, total_bytes, options)
    else:
        _run_pool(iter(todo), lambda o: copy_with_retries(source, target, o, manifest, counters, options),
                  options.workers, copied, failed, lambda: _progress(ev, counters, todo.count, total_bytes, t_copy),
                  options.progress_interval)
    deleted = 0
    for key in extra:
        target.objects.delete_object(target.bucket, _target_key(source, target, key))
        manifest.forget(key)
        deleted += 1
    if extra:
        ev.emit("objects.deleted", f"deleted {deleted} objects absent from the source", deleted=deleted)
    seconds = time.monotonic() - t0
    result = SyncResult(source.label(), target.label(), listed, copied.count, current, deleted,
                        counters.bytes, total_bytes, seconds, tuple(sorted(copied.keys)), tuple(failed))
    ev.emit("objects.done", f"copied {result.copied}, skipped {result.skipped}, deleted {deleted} in {seconds:.2f} s"
            f" ({result.objects_per_s:.0f} objects/s, {result.mb_per_s:.1f} MB/s)", **result.to_dict())
    if failed:
        first = "\n  ".join(f"{k}: {e}" for k, e in failed[:5])
        raise RunFailed(f"{len(failed)} of {todo.count} objects failed to copy:\n  {first}",
                        hint="run the sync again: finished objects are not copied twice")
    return result


def _split(todo: Iterable[ObjectInfo], n: int) -> tuple[list[str], list[_Spool]]:
    """The objects to copy in `n` key ranges of about equal bytes: (each range's first key, a spool per range)."""
    weight = sum(max(1, o.size) for o in todo)
    starts = rm.key_ranges(((o.key, o.size) for o in todo), n, weight)
    shards = [_Spool() for _ in starts]
    for o in todo:
        shards[rm.shard_of(o.key, starts)].add(o)
    return starts, shards


def _item(o: ObjectInfo) -> list[Any]:
    return [o.key, o.size, o.sha256, o.etag, o.modified]


def _hello(ev: Events, remote: Remote, host: str, line: dict[str, Any]) -> None:
    ev.emit("objects.remote", f"mover on {host}: pid {line.get('pid')}, liferaft {line.get('version')} from "
            f"{line.get('liferaft')}", host=host, pid=line.get("pid"), liferaft=line.get("liferaft"),
            bundle_sha256=line.get("bundle_sha256"), python=line.get("python"))


def _copy_remote(remote: Remote, todo: _Spool, manifest: Manifest, counters: _Counters, copied: _Keys,
                 failed: list[tuple[str, str]], ev: Events, total_bytes: int, options: SyncOptions) -> None:
    """Copy `todo` at the target site: one mover per key range and host; each object a mover reports copied is
    recorded in the manifest here as its line arrives (a kill of either side loses at most what was in flight)."""
    hosts = list(remote.hosts)
    starts, shards = _split(todo, len(hosts))
    bundle = rm.build_bundle(remote.bundle_dir)
    request, secrets = rm.request_for("copy", remote.source, remote.target, remote.resolve,
                                      {"workers": remote.workers, "retries": options.retries,
                                       "progress_interval": options.progress_interval})
    ev.emit("objects.remote.plan", f"copying at {remote.where()} in {len(shards)} key range(s): the bytes flow "
            f"{remote.source['provider']} -> {remote.where()} -> {remote.target['provider']}, not through this "
            f"machine", hosts=[h.name for h in hosts[:len(shards)]], ranges=starts,
            objects=[s.count for s in shards], bundle_bytes=bundle.size, bundle_sha256=bundle.sha256)
    lock = threading.Lock()
    sent: dict[int, int] = {}
    t_copy = time.monotonic()
    last = [t_copy]  # the first progress report after an interval of copying

    def on_line(i: int, line: dict[str, Any]) -> None:
        kind = line.get("t")
        if kind == "hello":
            _hello(ev, remote, hosts[i].name, line)
        elif kind == "copied":
            manifest.record(new_entry(line["key"], int(line["size"]), line["src_sha256"], line["tgt_sha256"],
                                      line.get("src_etag"), line.get("tgt_etag")))
            counters.add_object()
            with lock:
                copied.append(line["key"])
        elif kind == "failed":
            with lock:
                failed.append((line["key"], str(line.get("error"))))
        elif kind == "error":
            ev.emit("objects.remote.error", f"mover on {hosts[i].name}: {line.get('message')}", host=hosts[i].name)
        if kind in ("progress", "done") and "bytes" in line:
            with lock:
                sent[i] = int(line["bytes"])
                counters.bytes = sum(sent.values())
        if time.monotonic() - last[0] >= options.progress_interval:
            last[0] = time.monotonic()
            _progress(ev, counters, todo.count, total_bytes, t_copy)

    try:
        _run_each(hosts, bundle, request, shards, on_line, secrets)
    finally:
        for shard in shards:
            shard.close()
    _progress(ev, counters, todo.count, total_bytes, t_copy)


def _run_each(hosts: list[rm.Host], bundle: rm.Bundle, request: dict[str, Any], shards: list[_Spool],
              on_line: Callable[[int, dict[str, Any]], None], secrets: list[str]) -> None:
    def one(i: int) -> Callable[[dict[str, Any]], None]:
        return lambda line: on_line(i, line)

    rm.run_sharded(hosts[:len(shards)], bundle, request, [(_item(o) for o in shard) for shard in shards],
                   [one(i) for i in range(len(shards))], secrets)


def _progress(ev: Events, counters: _Counters, total: int, total_bytes: int, t0: float) -> None:
    dt = max(time.monotonic() - t0, 1e-6)
    with counters.lock:
        n, b = counters.objects, counters.bytes
    ev.emit("objects.progress", f"{n}/{total} objects, {b / 1e6:.1f}/{total_bytes / 1e6:.1f} MB, "
            f"{n / dt:.0f} objects/s, {b / 1e6 / dt:.1f} MB/s", done=n, total=total, bytes=b,
            total_bytes=total_bytes, objects_per_s=round(n / dt, 1), mb_per_s=round(b / 1e6 / dt, 2))


def _run_pool(items: Iterator[ObjectInfo], fn: Callable[[ObjectInfo], int], workers: int, done: _Keys,
              failed: list[tuple[str, str]], tick: Callable[[], None], interval: float) -> None:
    """Run fn over items with at most 2*workers in flight; collect keys done and failures; tick periodically."""
    it = items
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
def _bounded_map(fn: Callable[[Any], Any], items: Iterator[Any], workers: int, name: str) -> Iterator[Any]:
    """fn over items on a thread pool, at most 2*workers in flight (items are drawn as they are needed, never
    all submitted at once); results as they finish. The first exception is raised."""
    n = max(1, workers)
    inflight: set[Future[Any]] = set()
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix=name) as pool:
        while True:
            while len(inflight) < 2 * n:
                item = next(items, _END)
                if item is _END:
                    break
                inflight.add(pool.submit(fn, item))
            if not inflight:
                return
            finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()


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
                state_dir: str | Path | None = None, remote: Remote | None = None) -> ObjectsVerifyReport:
    """Read every object on both sides and compare sha256 of the bytes. Extra target objects fail only if
    `allow_extra` is False (a sync without --delete leaves them on purpose). With `state_dir` (where the sync's
    manifest is), missing and differing objects are marked stale there: the next sync copies them again. With
    `remote`, the objects are read and hashed at the target site's hosts (only the hashes come back)."""
    ev = as_events(events)
    missing: list[str] = []
    extra: list[str] = []
    differing: list[str] = []
    checked = 0

    def both() -> Iterator[tuple[str, ObjectInfo, ObjectInfo]]:
        nonlocal checked
        for key, s, t in merge_listings(source, target):
            checked += 1
            if t is None:
                missing.append(key)
            elif s is None:
                extra.append(key)
            else:
                yield key, s, t

    def check(item: tuple[str, ObjectInfo, ObjectInfo]) -> str | None:
        key, s, t = item
        if s.size != t.size:
            return key
        sh = _stream_sha256(source.client(), source.bucket, key)[0]
        th = _stream_sha256(target.client(), target.bucket, _target_key(source, target, key))[0]
        return key if sh != th else None

    if remote is None:
        for key in _bounded_map(check, both(), workers, "liferaft-verify"):
            if key is not None:
                differing.append(key)
    else:
        differing += _hash_remote(remote, both(), ev)
    report = ObjectsVerifyReport(source.label(), target.label(), checked, tuple(missing), tuple(extra),
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


def _hash_remote(remote: Remote, items: Iterator[tuple[str, ObjectInfo, ObjectInfo]], ev: Events) -> list[str]:
    """The keys whose bytes differ, both sides read and hashed by the movers at the target site."""
    differing: list[str] = []
    todo = _Spool()
    try:
        for key, s, t in items:
            if s.size != t.size:
                differing.append(key)
            else:
                todo.add(s)
        if not todo.count:
            return differing
        starts, shards = _split(todo, len(remote.hosts))
        bundle = rm.build_bundle(remote.bundle_dir)
        request, secrets = rm.request_for("hash", remote.source, remote.target, remote.resolve,
                                          {"workers": remote.workers})
        ev.emit("objects.remote.verify", f"reading back {todo.count} objects at {remote.where()} (sha256 of both "
                "sides there)", hosts=[h.name for h in remote.hosts[:len(shards)]], ranges=starts)
        lock = threading.Lock()

        def on_line(i: int, line: dict[str, Any]) -> None:
            if line.get("t") == "hello":
                _hello(ev, remote, remote.hosts[i].name, line)
            elif line.get("t") == "hashed" and line.get("src") != line.get("tgt"):
                with lock:
                    differing.append(str(line["key"]))

        try:
            _run_each(list(remote.hosts), bundle, request, shards, on_line, secrets)
        finally:
            for shard in shards:
                shard.close()
    finally:
        todo.close()
    return differing
