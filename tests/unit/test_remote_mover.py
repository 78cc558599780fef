"""The object mover that runs at a target host (liferaft.movers.remote): key-range sharding, and the bundle run by
the machine's own /usr/bin/python3 (outside liferaft's virtualenv: it must bring everything it imports) through a
local stand-in for the SSH session, copying between two libcloud `local` stores with the manifest kept here."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import RunFailed
from liferaft.movers import remote as rm
from liferaft.movers.manifest import Manifest
from liferaft.movers.objects import Endpoint, Remote, SyncOptions, manifest_for, pair_id, sync, verify_sync
from liferaft.providers.libcloud_ import LibcloudAdapter

SYSTEM_PYTHON = "/usr/bin/python3"


def test_key_ranges_split_by_bytes_and_cover_every_key() -> None:
    items = [(f"k{i:03d}", 100) for i in range(100)]
    starts = rm.key_ranges(items, 4)
    assert starts == ["k000", "k025", "k050", "k075"]
    shards = [rm.shard_of(k, starts) for k, _ in items]
    assert shards == sorted(shards) and [shards.count(i) for i in range(4)] == [25] * 4
    # one big object takes a range of its own; the small ones share the others
    big = [("a", 10), ("b", 1000), ("c", 10), ("d", 10)]
    starts = rm.key_ranges(big, 3)
    assert starts[0] == "a" and "b" in starts or starts[:2] == ["a", "c"]
    assert rm.shard_of("0", ["a", "m"]) == 0 and rm.shard_of("z", ["a", "m"]) == 1
    # fewer objects than hosts: as many ranges as objects; empty objects still spread
    assert rm.key_ranges([("x", 0), ("y", 0)], 5) == ["x", "y"]
    assert rm.key_ranges([], 3) == []
    # given the total, the items are streamed (an iterator works)
    assert rm.key_ranges(iter(items), 2, 100 * 100) == ["k000", "k050"]


def test_bundle_has_the_s3_model_only_and_no_lab(tmp_path: Path) -> None:
    import zipfile

    b = rm.build_bundle(tmp_path)
    names = zipfile.ZipFile(b.path).namelist()
    assert "liferaft/movers/remote_main.py" in names and "liferaft/providers/aws.py" in names
    assert not any(n.startswith("liferaft/lab/") for n in names)
    assert any(n.startswith("botocore/data/s3/") for n in names)
    assert not any(n.startswith("botocore/data/ec2/") for n in names)
    assert b.size < 30e6, b.size
    assert rm.build_bundle(tmp_path) == b  # cached
    assert hashlib.sha256(b.path.read_bytes()).hexdigest() == b.sha256


@contextlib.contextmanager
def local_session(command: str) -> Iterator[subprocess.Popen[bytes]]:
    """What `ssh host command` gives, without SSH: the command under a shell with a clean environment (no
    PYTHONPATH, no virtualenv), so the mover can import only what the bundle brings."""
    assert command.startswith("python3 ")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.Popen(["/bin/sh", "-c", SYSTEM_PYTHON + command[len("python3"):]], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def store(root: Path, name: str) -> tuple[Endpoint, dict[str, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    config = {"type": "libcloud", "storage": {"driver": "local", "path": str(root)}, "credentials": {}}
    objects = LibcloudAdapter(name, storage={"driver": "local", "path": str(root)}).objects
    objects.create_bucket("media")
    return Endpoint(name, objects, "media"), {"provider": name, "config": config, "bucket": "media", "prefix": ""}


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="no /usr/bin/python3 on this machine")
def test_remote_copy_with_system_python_records_the_manifest_here(tmp_path: Path) -> None:
    src, src_side = store(tmp_path / "a", "left")
    tgt, tgt_side = store(tmp_path / "b", "right")
    data = {f"k/{i:03d}": os.urandom(1000 + i) for i in range(12)}
    for k, v in data.items():
        src.objects.put_object("media", k, [v], size=len(v))
    events: list[tuple[str, dict[str, Any]]] = []
    hosts = (rm.Host("h1", local_session), rm.Host("h2", local_session))
    remote = Remote(hosts, tmp_path / "bundles", src_side, tgt_side, lambda ref: "never", workers=4)
    state = tmp_path / "state"
    res = sync(src, tgt, state, SyncOptions(progress_interval=0.05), events=lambda e: events.append((e.kind, e.data)),
               remote=remote)
    assert res.copied == 12 and not res.failed
    got = {k: b"".join(tgt.objects.get_object("media", k)) for k in data}
    assert got == data
    # the manifest is here, one row per object, and a second sync copies nothing
    with manifest_for(state, src, tgt) as m:
        assert m.count() == 12
    plan = next(d for k, d in events if k == "objects.remote.plan")
    assert len(plan["ranges"]) == 2 and sum(plan["objects"]) == 12
    hellos = [d for k, d in events if k == "objects.remote"]
    assert len(hellos) == 2
    bundle = rm.build_bundle(tmp_path / "bundles")
    for h in hellos:  # the mover imported liferaft from the bundle it was sent, not from this machine's install
        assert h["bundle_sha256"] == bundle.sha256
        assert h["liferaft"].startswith("/tmp/liferaft-mover-") and h["liferaft"].endswith(
            "/lib/liferaft/__init__.py"), h["liferaft"]
    assert not list(Path("/tmp").glob("liferaft-mover-*/pid")) or all(
        not _alive(p) for p in Path("/tmp").glob("liferaft-mover-*/pid"))
    again = sync(src, tgt, state, remote=remote)
    assert again.copied == 0 and again.skipped == 12
    # verification at the "hosts": a corrupted target object is found by its sha256 read there
    tgt.objects.put_object("media", "k/007", [b"x" * len(data["k/007"])], size=len(data["k/007"]))
    rep = verify_sync(src, tgt, raise_on_difference=False, remote=remote, state_dir=state)
    assert rep.differing == ("k/007",) and rep.checked == 12
    assert pair_id(src, tgt) in Manifest(state / "objects-manifest.sqlite", pair_id(src, tgt)).pair


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ProcessLookupError, ValueError, OSError):
        return False


def test_a_mover_that_dies_is_reported_with_its_stderr_and_no_secret(tmp_path: Path) -> None:
    @contextlib.contextmanager
    def broken(command: str) -> Iterator[subprocess.Popen[bytes]]:
        proc = subprocess.Popen(["/bin/sh", "-c", "cat >/dev/null; echo 'boom s3cret-value' >&2; exit 7"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        yield proc
        proc.wait()

    bundle = rm.build_bundle(tmp_path)
    with pytest.raises(RunFailed) as e:
        rm.run(rm.Host("h", broken), bundle, {"op": "copy"}, [], lambda line: None, secrets=["s3cret-value"])
    assert "exit 7" in str(e.value) and "boom ***" in str(e.value) and "s3cret" not in str(e.value)
    shutil.rmtree(tmp_path, ignore_errors=True)
