"""The example microblog in the lab: deploy it on host a, seed it, and drive/verify writes against it.

The example's own code lives in `examples/microblog/` of a source checkout (`app/` is the deploy artifact; `seed.py`
and `writer.py` are standard-library scripts). This module loads those two by path (the examples are not part of the
installed package) and re-exports what the engine and tests use:

    seed(url, posts=..., images=..., max_image_bytes=...)   -> SeedReport
    run_writer(url, ledger_path, rate=..., duration=...)    -> WriterReport (every acknowledged write in the ledger)
    verify_ledger(ledger_path, dsn)                         -> LedgerCheck (missing / mismatched post ids)

`deploy_and_seed(info)` is what `liferaft lab up` calls: the example stack deployed by the deploy engine (the same
function `liferaft deploy` runs), then seeded; when the stack has the example's worker (`services.worker`, its Redis
`data.redis.worker`), it waits until the worker has made a card for every seeded image (`wait_worker`).
Set LIFERAFT_EXAMPLES_DIR to use examples from elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from liferaft.configure import TargetHost
from liferaft.errors import UsageError

EXAMPLE_DIR = Path(os.environ.get("LIFERAFT_EXAMPLES_DIR")
                   or Path(__file__).resolve().parents[2] / "examples").resolve() / "microblog"
LAB_POSTS = 2000
LAB_IMAGES = 60
LAB_MAX_IMAGE_BYTES = 512 * 1024
WORKER = "worker"  # the example's second service, and its Redis dataset (`data.redis.worker`)


def _load(name: str) -> ModuleType:
    modname = f"liferaft_example_microblog_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = EXAMPLE_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None or not path.exists():
        raise UsageError(f"example code not found: {path}",
                         hint="the example app ships in the source checkout; set LIFERAFT_EXAMPLES_DIR")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod  # dataclasses need the module registered while it executes
    spec.loader.exec_module(mod)
    return mod


def seed(url: str, **kw: Any) -> Any:
    """Seed the app at `url` through its API (see examples/microblog/seed.py)."""
    return _load("seed").seed(url, **kw)


def run_writer(url: str, ledger_path: str, **kw: Any) -> Any:
    """Write at a fixed rate for a bounded time; every acknowledged write goes to the SQLite ledger."""
    return _load("writer").run_writer(url, ledger_path, **kw)


def verify_ledger(ledger_path: str, dsn: Any) -> Any:
    """Check every acknowledged write of the ledger at the database `dsn` (libpq string or connect kwargs)."""
    return _load("writer").verify_ledger(ledger_path, dsn)


def lab_target_host(info: Any, name: str) -> TargetHost:
    """A lab host (from `LabInfo.hosts`) as a TargetHost, its key pinned from the lab's generated host key."""
    h = info.hosts[name]
    return TargetHost(name=name, address=h.address, port=h.port, user=h.user, host_keys=(h.host_public_key,),
                      private_key_file=str(info.client_key))


def _create_bucket(settings: Any, bucket: str) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
                      aws_access_key_id=settings.access_key_id, aws_secret_access_key=settings.secret_access_key,
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}))
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def deploy_and_seed(info: Any, *, posts: int = LAB_POSTS, images: int = LAB_IMAGES,
                    max_image_bytes: int = LAB_MAX_IMAGE_BYTES, service: str = "web", site: str | None = None,
                    on_event: Callable[[Any], None] | None = None,
                    state_dir: str | Path | None = None) -> dict[str, Any]:
    """Deploy the example stack at `site` (default: its primary, host a) with the deploy engine -- the function
    `liferaft deploy` runs, journaled in the lab's own state dir (`<labdir>/state`, unless `state_dir`) -- then
    seed a small dataset through the app's API. The databases admit the other sites' hosts (the deploy's own
    rules) and the lab's bridge network (hosts the lab's clouds create get addresses there; a failover to them does
    not open the source first). Returns timings (JSON-safe)."""
    from types import SimpleNamespace

    from liferaft.engine.active import load_active
    from liferaft.events import Events
    from liferaft.failover.deploy import run_deploy
    from liferaft.stack import load_stack

    t0 = time.monotonic()
    stack = load_stack(info.stack_file)
    site = site or stack.model.primary
    events = Events()
    if on_event is not None:
        def ansible_task(ev: Any) -> None:
            if ev.kind == "step.started":
                on_event(SimpleNamespace(kind="task.start", task=ev.message, host="", message=""))
            elif ev.kind.startswith("ansible."):
                on_event(SimpleNamespace(kind=ev.kind.removeprefix("ansible."), task=ev.data.get("task", ""),
                                         host=ev.data.get("host", ""), message=ev.message))
        events.subscribe(ansible_task)
    state = Path(state_dir) if state_dir is not None else Path(info.directory) / "state"
    done = run_deploy(stack, site, state, events=events, extra_networks=[f"{info.bridge_address}/24"])
    t_deploy = time.monotonic()
    svc = stack.services[service]
    rec = load_active(state, stack.model.name) or {}
    address = str((rec.get("hosts") or [{}])[0].get("address") or info.primary_address)
    port = svc.health.port if svc.health else (svc.ports[0] if svc.ports else 8080)
    url = f"http://{address}:{port}"
    report = seed(url, posts=posts, images=images, max_image_bytes=max_image_bytes)
    t_seed = time.monotonic()
    worker = wait_worker(stack, address, report.images) if WORKER in stack.model.services else None
    t_worker = time.monotonic()
    host = next((n for n, h in info.hosts.items() if h.address == address), address)
    return {
        "url": url, "host": host, "site": site, "run": done.outcome.run_id, "state_dir": str(state),
        "deploy_s": round(t_deploy - t0, 2), "changed": done.changed, "seed_s": round(t_seed - t_deploy, 2),
        "seed": report.to_dict(), **({"worker": worker, "worker_wait_s": round(t_worker - t_seed, 2)} if worker else {}),
        "total_s": round(t_worker - t0, 2),
    }


def worker_redis(stack: Any, address: str) -> Any:
    """A client of the worker's Redis (`data.redis.worker`) at `address` (the host it runs on)."""
    import redis

    spec = stack.model.data.redis[WORKER]
    return redis.Redis(host=address, port=int(spec.port), db=int(spec.db),
                       password=stack.secret(spec.password) if spec.password else None, socket_timeout=30,
                       socket_connect_timeout=5)


def wait_worker(stack: Any, address: str, images: int, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the example's worker has processed `images` posts with an image (it runs beside the seed: a
    card per post in its Redis, the image and the card in its folder). Its figures: keys, processed, bytes."""
    r = worker_redis(stack, address)
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = int(r.hget("mb:stats", "processed") or 0)
        if done >= images:
            return {"keys": int(r.dbsize()), "processed": done, "bytes": int(r.hget("mb:stats", "bytes") or 0)}
        time.sleep(0.2)
    raise UsageError(f"the example's worker processed {done} of {images} image posts in {timeout:.0f} s",
                     hint="see /var/log/liferaft/worker/worker.log on the host")
