"""The example microblog in the lab: deploy it on host a, seed it, and drive/verify writes against it.

The example's own code lives in `examples/microblog/` of a source checkout (`app/` is the deploy artifact; `seed.py`
and `writer.py` are standard-library scripts). This module loads those two by path (the examples are not part of the
installed package) and re-exports what the engine and tests use:

    seed(url, posts=..., images=..., max_image_bytes=...)   -> SeedReport
    run_writer(url, ledger_path, rate=..., duration=...)    -> WriterReport (every acknowledged write in the ledger)
    verify_ledger(ledger_path, dsn)                         -> LedgerCheck (missing / mismatched post ids)

`deploy_and_seed(info)` is what `liferaft lab up` calls; `deploy_service` (liferaft.configure.deploy) is the reusable
part. Set LIFERAFT_EXAMPLES_DIR to use examples from elsewhere.
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

from liferaft.configure import TargetHost, TaskEvent
from liferaft.errors import UsageError

EXAMPLE_DIR = Path(os.environ.get("LIFERAFT_EXAMPLES_DIR")
                   or Path(__file__).resolve().parents[2] / "examples").resolve() / "microblog"
LAB_POSTS = 2000
LAB_IMAGES = 60
LAB_MAX_IMAGE_BYTES = 512 * 1024


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
                    host: str = "a", on_event: Callable[[TaskEvent], None] | None = None) -> dict[str, Any]:
    """Deploy PostgreSQL + the app on lab host `host` at the stack's primary site, its bucket at that site's
    objects provider ("aws" = moto behind its fault proxy), then seed a small dataset. Returns timings (JSON-safe)."""
    from liferaft.configure.deploy import deploy_service
    from liferaft.providers.appenv import s3_settings
    from liferaft.stack import load_stack

    t0 = time.monotonic()
    stack = load_stack(info.stack_file)
    site = site or stack.primary
    target = lab_target_host(info, host)
    svc = stack.services[service]
    settings = s3_settings(stack.provider(stack.site(site).objects), stack.secret)
    for key in svc.buckets:
        _create_bucket(settings, stack.data.buckets[key].name)
    t_bucket = time.monotonic()
    result = deploy_service(stack, service, site, target, allowed_networks=[f"{info.bridge_address}/24"],
                            on_event=on_event, run_options={"state_dir": info.directory})
    t_deploy = time.monotonic()
    port = svc.health.port if svc.health else (svc.ports[0] if svc.ports else 8080)
    url = f"http://{target.address}:{port}"
    report = seed(url, posts=posts, images=images, max_image_bytes=max_image_bytes)
    t_seed = time.monotonic()
    return {
        "url": url, "host": host, "site": site,
        "bucket_s": round(t_bucket - t0, 2), "ansible_s": round(t_deploy - t_bucket, 2),
        "ansible_changed": result.changed, "seed_s": round(t_seed - t_deploy, 2),
        "seed": report.to_dict(), "total_s": round(t_seed - t0, 2),
    }
