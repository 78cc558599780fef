"""Movers that run at a host of the target site, so the data moves site to site and not through the controller.

What runs there: liferaft's own object mover, shipped by the controller at each run as one zip file (a "bundle":
the running liferaft package without its lab, plus the pure-Python parts of the libraries the object adapters use:
boto3/botocore with only the S3 model, libcloud, requests, urllib3, ...), unpacked there (botocore reads its
models from files). The host needs only `python3` (3.9+);
nothing is downloaded there. The bundle lands in a private temporary directory (`/tmp/liferaft-mover-*`, 0700)
that the mover removes when it ends; a mover killed with SIGKILL leaves it, and the next mover on that host
removes the directories of dead movers.

The wire (one SSH session per mover, see `launch` below: the caller opens it with the host's pinned key):
  controller -> host (stdin): a JSON header line {"size", "sha256"} and the bundle's bytes (read by `BOOT`), then
    one JSON line with the request -- the operation, both stores' provider settings and the secrets they
    reference (resolved values: they travel on stdin only, never on a command line) -- then one JSON line per
    object ([key, size, sha256, etag, modified]) and a final {"end": true}.
  host -> controller (stdout): JSON lines: "hello" (pid, the liferaft file the mover imported, the bundle's
    sha256), "copied" per object (what the manifest records), "hashed" per object (verification), "failed",
    "progress", "done". The controller records the manifest; the host keeps nothing.

Sharding: the objects to move are split into N contiguous key ranges of about equal bytes (`key_ranges`), one per
target host, so N movers work at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from liferaft.errors import RunFailed

# Run on the host by `python3 -c`: reads the bundle from stdin into a private directory, checks its sha256, runs
# the mover from it (the rest of stdin is the mover's), removes the directory. No secret in it.
BOOT = """\
import hashlib, json, os, shutil, sys, tempfile
t = tempfile.gettempdir()
for n in os.listdir(t):
    if n.startswith('liferaft-mover-'):
        try:
            pid = int(open(os.path.join(t, n, 'pid')).read())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(t, n), True)
        except Exception:
            pass
i = sys.stdin.buffer
h = json.loads(i.readline())
d = tempfile.mkdtemp(prefix='liferaft-mover-')
try:
    open(os.path.join(d, 'pid'), 'w').write(str(os.getpid()))
    p = os.path.join(d, 'liferaft-mover.pyz')
    s = hashlib.sha256()
    n = h['size']
    with open(p, 'wb') as f:
        while n:
            b = i.read(min(n, 1 << 20))
            if not b:
                sys.exit('liferaft mover: the bundle was cut short')
            f.write(b)
            s.update(b)
            n -= len(b)
    if s.hexdigest() != h['sha256']:
        sys.exit('liferaft mover: the bundle arrived corrupted')
    import zipfile
    lib = os.path.join(d, 'lib')
    zipfile.ZipFile(p).extractall(lib)
    os.unlink(p)
    sys.path.insert(0, lib)
    from liferaft.movers.remote_main import main
    rc = main(i, sys.stdout.buffer, lib, h['sha256'])
finally:
    shutil.rmtree(d, True)
sys.exit(rc)
"""


def remote_command(python: str = "python3") -> str:
    """The command line the SSH session runs on the host (no secret in it)."""
    return f"{python} -u -c {shlex.quote(BOOT)}"


# ------------------------------------------------------------------------------------------------------ bundle
# Libraries the object adapters import (liferaft.providers.aws / libcloud_), with what of them is left out.
BUNDLED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3", "libcloud", "requests",
           "certifi", "idna", "charset_normalizer", "typing_extensions", "fasteners")
_SKIP_DIRS = {"__pycache__", "tests", "test", "lab"}
_BOTOCORE_DATA_KEEP = ("s3", "sts")  # service models the object adapters use (the rest is ~25 MB)


def _files(root: Path, arc: str) -> Iterator[tuple[Path, str]]:
    if root.is_file():
        yield root, arc
        return
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                             and not (arc == "botocore" and rel == Path("data") and d not in _BOTOCORE_DATA_KEEP))
        for f in sorted(filenames):
            if f.endswith((".pyc", ".so", ".pyd")):
                continue
            if arc == "libcloud" and rel == Path("data") and f == "pricing.json":
                continue
            yield Path(dirpath) / f, f"{arc}/{rel / f}" if str(rel) != "." else f"{arc}/{f}"


def _sources() -> list[tuple[Path, str]]:
    import importlib.util

    import liferaft

    out = list(_files(Path(liferaft.__file__).parent, "liferaft"))
    for name in BUNDLED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            out += _files(origin.parent, name)
        else:
            out.append((origin, origin.name))
    return out


@dataclass(frozen=True)
class Bundle:
    path: Path
    sha256: str
    size: int


def build_bundle(cache_dir: str | Path) -> Bundle:
    """The mover's zip, built from the running install (cached in `cache_dir` by the sources' names, sizes and
    times: a changed liferaft or library builds a new one)."""
    import liferaft

    sources = _sources()
    ident = hashlib.sha256(liferaft.__version__.encode())
    for path, arc in sources:
        st = path.stat()
        ident.update(f"{arc}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = cache / f"mover-{ident.hexdigest()[:16]}.pyz"
    if not target.exists():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
            for path, arc in sources:
                z.write(path, arc)
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the state dir is owner-only, files too
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(buf.getvalue())
        tmp.replace(target)
        for old in cache.glob("mover-*.pyz"):  # one bundle kept
            if old != target:
                old.unlink(missing_ok=True)
    os.chmod(target, 0o600)  # a bundle kept by an older liferaft was 0644
    data = target.read_bytes()
    return Bundle(target, hashlib.sha256(data).hexdigest(), len(data))


# ------------------------------------------------------------------------------------------------------ sharding
def key_ranges(items: Iterable[tuple[str, int]], n: int, total_bytes: int | None = None) -> list[str]:
    """Split objects given in key order as (key, size) into at most `n` contiguous key ranges of about equal
    bytes (each object counted at least 1 byte, so many empty objects spread too). Returns each range's first key;
    range i holds the keys from starts[i] up to (not including) starts[i+1]."""
    items = list(items) if total_bytes is None else items
    if total_bytes is None:
        total_bytes = sum(max(1, s) for _, s in items)
    total = max(1, total_bytes)
    starts: list[str] = []
    done = 0
    for key, size in items:
        shard = min(n - 1, done * n // total)
        if shard >= len(starts):
            starts.append(key)
        done += max(1, size)
    return starts


def shard_of(key: str, starts: list[str]) -> int:
    """The index of the range (from `key_ranges`) that holds `key`."""
    import bisect

    return max(0, bisect.bisect_right(starts, key) - 1)


# ------------------------------------------------------------------------------------------------------ running
class MoverFailed(RunFailed):
    """A mover ended without finishing; `started`: it had said hello (it ran and reached both stores)."""

    def __init__(self, message: str, *, hint: str | None = None, started: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.started = started


class Launch(Protocol):
    """Opens the mover's session on one host (`remote_command` run over SSH with the host's pinned key)."""

    def __call__(self, command: str) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class Host:
    name: str
    launch: Launch


def _send(proc: Any, bundle: Bundle, request: dict[str, Any], items: Iterable[list[Any]],
          errors: list[BaseException]) -> None:
    stdin: IO[bytes] = proc.stdin
    try:
        stdin.write(json.dumps({"size": bundle.size, "sha256": bundle.sha256}).encode() + b"\n")
        with open(bundle.path, "rb") as f:
            while chunk := f.read(1 << 20):
                stdin.write(chunk)
        stdin.write(json.dumps(request).encode() + b"\n")
        for item in items:
            stdin.write(json.dumps(item).encode() + b"\n")
        stdin.write(b'{"end": true}\n')
        stdin.flush()
        stdin.close()
    except (BrokenPipeError, OSError) as e:  # the mover ended early: its stderr says why
        errors.append(e)


def run(host: Host, bundle: Bundle, request: dict[str, Any], items: Iterable[list[Any]],
        on_line: Callable[[dict[str, Any]], None], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Run one mover on `host`: send the bundle, the request (with its secrets) and the items; hand every line it
    prints to `on_line`; return its "done" line. A mover that ends without one raises RunFailed with its stderr
    (secrets scrubbed)."""
    done: dict[str, Any] = {}
    started = False
    with host.launch(remote_command()) as proc:
        errors: list[BaseException] = []
        writer = threading.Thread(target=_send, args=(proc, bundle, request, items, errors), daemon=True,
                                  name="liferaft-mover-send")
        writer.start()
        err_tail: list[bytes] = []
        reader = threading.Thread(target=lambda: err_tail.append(proc.stderr.read()), daemon=True)
        reader.start()
        for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("t") == "done":
                done = line
            started = started or line.get("t") == "hello"
            on_line(line)
        rc = proc.wait()
        writer.join(5)
        reader.join(5)
    if rc != 0 or not done:
        text = b"".join(err_tail).decode(errors="replace").strip()
        for s in secrets:
            if s:
                text = text.replace(s, "***")
        tail = "\n    ".join(text.splitlines()[-12:])
        raise MoverFailed(f"the mover on {host.name} ended with exit {rc}" + (f":\n    {tail}" if tail else ""),
                          hint="run again: objects it finished are recorded and not copied twice", started=started)
    return done


def run_sharded(hosts: list[Host], bundle: Bundle, request: dict[str, Any], shards: list[Iterable[list[Any]]],
                on_lines: list[Callable[[dict[str, Any]], None]], secrets: Iterable[str] = ()
                ) -> list[dict[str, Any]]:
    """One mover per shard, shard i on hosts[i], all at once; mover i's lines go to on_lines[i] (on its thread).
    The first failure is raised once all movers ended."""
    results: list[dict[str, Any]] = [{} for _ in shards]
    failures: list[BaseException] = []
    secrets = list(secrets)

    def one(i: int) -> None:
        try:
            results[i] = run(hosts[i], bundle, request, shards[i], on_lines[i], secrets)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others ended
            failures.append(e)

    threads = [threading.Thread(target=one, args=(i,), name=f"liferaft-mover-{i}", daemon=True)
               for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return results


def secret_refs(config: Any) -> list[str]:
    """The secret references (`env:`/`file:`) a provider's settings hold under `credentials`."""
    creds = config.get("credentials") if isinstance(config, dict) else None
    return [str(v) for v in (creds or {}).values() if isinstance(v, str) and v.partition(":")[0] in ("env", "file")]


def request_for(op: str, source: dict[str, Any], target: dict[str, Any], resolve: Callable[[str], str],
                options: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The mover's request: `source`/`target` are {"provider", "config" (plain dict), "bucket", "prefix"}; the
    secrets they reference are resolved here and ride along (stdin only). Returns (request, secret values)."""
    secrets = {ref: resolve(ref) for side in (source, target) for ref in secret_refs(side["config"])}
    return ({"op": op, "source": source, "target": target, "secrets": secrets, "options": options or {},
             "sent_at": time.time()}, list(secrets.values()))
