"""The object mover's side at the target host: runs from the bundle (see liferaft.movers.remote), reads its request
and objects from stdin, prints JSON lines. Only the standard library and liferaft's providers/movers are imported.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any


class _Out:
    """JSON lines to the controller; a controller that went away (the pipe broke) ends this process at once."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, **line: Any) -> None:
        data = json.dumps(line, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            try:
                self.out.write(data)
                self.out.flush()
            except (BrokenPipeError, OSError):
                os._exit(3)


class _Recorder:
    """Stands in for the manifest: each copied object is reported; the controller records it."""

    def __init__(self, out: _Out) -> None:
        self.out = out

    def record(self, e: Any) -> None:
        self.out(t="copied", key=e.key, size=e.size, src_sha256=e.src_sha256, tgt_sha256=e.tgt_sha256,
                 src_etag=e.src_etag, tgt_etag=e.tgt_etag)


def _items(inp: IO[bytes]) -> Iterator[Any]:
    from liferaft.providers.base import ObjectInfo

    for raw in inp:
        item = json.loads(raw)
        if isinstance(item, dict):
            return
        yield ObjectInfo(*item)


def main(inp: IO[bytes], out_stream: IO[bytes], bundle: str, sha256: str) -> int:
    import liferaft
    from liferaft.errors import LiferaftError
    from liferaft.movers import objects as mo
    from liferaft.providers.base import CHUNK_SIZE
    from liferaft.providers.registry import open_provider

    out = _Out(out_stream)
    req = json.loads(inp.readline())
    secrets: dict[str, str] = req.get("secrets") or {}
    state = tempfile.mkdtemp(prefix="liferaft-mover-state-", dir=os.path.dirname(bundle))

    def resolve(ref: str) -> str:
        if ref not in secrets:
            raise LiferaftError(f"the mover was given no value for {ref.partition(':')[0]}: reference")
        return secrets[ref]

    def endpoint(side: dict[str, Any]) -> Any:
        def make() -> Any:
            return open_provider(side["provider"], side["config"], resolve, state_dir=state).require("objects")
        return mo.Endpoint(side["provider"], make(), side["bucket"], side.get("prefix") or "", factory=make)

    try:  # both stores reachable from here, or no hello (the controller may then move the bytes itself)
        src, tgt = endpoint(req["source"]), endpoint(req["target"])
        for side in (src, tgt):
            if not side.objects.bucket_exists(side.bucket):
                raise LiferaftError(f"bucket {side.label()} does not exist")
    except LiferaftError as e:
        sys.stderr.write(f"liferaft mover: {e}\n")
        return 2
    out(t="hello", pid=os.getpid(), liferaft=liferaft.__file__, version=liferaft.__version__, bundle=bundle,
        bundle_sha256=sha256, python=sys.version.split()[0])
    opts = req.get("options") or {}
    workers = int(opts.get("workers") or 8)
    interval = float(opts.get("progress_interval") or 0.5)
    t0 = time.monotonic()
    if req["op"] == "copy":
        options = mo.SyncOptions(workers=workers, retries=int(opts.get("retries", 3)))
        counters = mo._Counters(max(1, workers) * CHUNK_SIZE)
        keys = mo._Keys(0)
        failed: list[tuple[str, str]] = []
        recorder = _Recorder(out)

        def tick() -> None:
            with counters.lock:
                out(t="progress", objects=counters.objects, bytes=counters.bytes)

        mo._run_pool(_items(inp), lambda o: mo.copy_with_retries(src, tgt, o, recorder, counters,  # type: ignore[arg-type]
                                                                  options),
                     workers, keys, failed, tick, interval)
        for key, error in failed:
            out(t="failed", key=key, error=error)
        out(t="done", copied=keys.count, failed=len(failed), bytes=counters.bytes,
            seconds=round(time.monotonic() - t0, 3))
        return 0
    if req["op"] == "hash":
        n = 0

        def both(o: Any) -> tuple[str, str, str]:
            return (o.key, mo.sha256_of(src.client(), src.bucket, o.key),
                    mo.sha256_of(tgt.client(), tgt.bucket, mo._target_key(src, tgt, o.key)))

        for key, sh, th in mo._bounded_map(both, _items(inp), workers, "liferaft-hash"):
            n += 1
            out(t="hashed", key=key, src=sh, tgt=th)
        out(t="done", hashed=n, seconds=round(time.monotonic() - t0, 3))
        return 0
    out(t="error", message=f"unknown operation {req['op']!r}")
    return 2
