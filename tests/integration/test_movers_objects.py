"""Object sync against real servers: moto (boto3 adapter) -> s3rver (libcloud adapter), and `liferaft sync`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import CheckFailed
from liferaft.lab.servers import MotoServer, S3rverServer
from liferaft.movers.objects import MANIFEST_FILE, Endpoint, SyncOptions, sync, verify_sync
from liferaft.providers.aws import AwsAdapter
from liferaft.providers.libcloud_ import LibcloudAdapter

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _aws(moto: MotoServer) -> Any:
    return AwsAdapter("aws", endpoint=moto.url, access_key_id=moto.access_key,
                      secret_access_key=moto.secret_key).objects


def _s3rver(s3r: S3rverServer) -> Any:
    return LibcloudAdapter("objstore", storage={"driver": "s3", "host": s3r.address, "port": s3r.port,
                                                "secure": False}, key=s3r.access_key, secret=s3r.secret_key).objects


@pytest.fixture
def pair(moto_server: MotoServer, s3rver_server: S3rverServer) -> tuple[Endpoint, Endpoint]:
    """A fresh source bucket at moto and a fresh target bucket at s3rver (one libcloud client per thread)."""
    name = "b-" + uuid.uuid4().hex[:12]
    src = Endpoint("aws", _aws(moto_server), name)
    dst = Endpoint("objstore", _s3rver(s3rver_server), name, factory=lambda: _s3rver(s3rver_server))
    src.objects.create_bucket(name)
    dst.objects.create_bucket(name)
    return src, dst


def _fill(ep: Endpoint, n: int, size: int, prefix: str = "o/") -> dict[str, bytes]:
    bodies = {f"{prefix}{i:04d}": os.urandom(size + i) for i in range(n)}
    for k, v in bodies.items():
        ep.objects.put_object(ep.bucket, k, [v])
    return bodies


def _sha(objects: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    for chunk in objects.get_object(bucket, key):
        h.update(chunk)
    return h.hexdigest()


def test_sync_is_incremental_and_copies_content_exactly(pair: tuple[Endpoint, Endpoint], tmp_path: Path) -> None:
    """First run copies all (a 9 MiB object streams through too); second copies 0; a changed object recopies."""
    src, dst = pair
    bodies = _fill(src, 40, 3000)
    big = os.urandom(9 * 1024 * 1024 + 17)
    src.objects.put_object(src.bucket, "big/blob", [big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)])
    seen: list[Any] = []
    r1 = sync(src, dst, tmp_path, SyncOptions(workers=8, progress_interval=0.05), events=seen.append)
    assert (r1.copied, r1.skipped) == (41, 0)
    assert r1.bytes_copied == sum(map(len, bodies.values())) + len(big)
    assert any(e.kind == "objects.progress" and "objects_per_s" in e.data for e in seen)
    assert _sha(dst.objects, dst.bucket, "big/blob") == hashlib.sha256(big).hexdigest()
    assert verify_sync(src, dst).ok

    r2 = sync(src, dst, tmp_path)
    assert (r2.copied, r2.skipped, r2.bytes_copied) == (0, 41, 0)

    src.objects.put_object(src.bucket, "o/0003", [b"new content of another size"])
    r3 = sync(src, dst, tmp_path)
    assert r3.copied_keys == ("o/0003",)
    assert b"".join(dst.objects.get_object(dst.bucket, "o/0003")) == b"new content of another size"


def test_verify_catches_corrupted_and_missing_objects_and_resync_repairs(pair: tuple[Endpoint, Endpoint],
                                                                         tmp_path: Path) -> None:
    """Different bytes of the same size at the target, and a deleted object, are both named; sync repairs them."""
    src, dst = pair
    bodies = _fill(src, 12, 2048)
    sync(src, dst, tmp_path)
    corrupt = bytes(b ^ 0xFF for b in bodies["o/0005"])  # same size, different content
    dst.objects.put_object(dst.bucket, "o/0005", [corrupt])
    dst.objects.delete_object(dst.bucket, "o/0009")
    with pytest.raises(CheckFailed) as err:
        verify_sync(src, dst)
    assert "missing at the target: o/0009" in str(err.value)
    assert "differs (sha256): o/0005" in str(err.value)
    report = verify_sync(src, dst, raise_on_difference=False)
    assert (report.missing, report.differing, report.extra) == (("o/0009",), ("o/0005",), ())

    r = sync(src, dst, tmp_path)  # the target's ETag moved and one object is gone: both copied again
    assert set(r.copied_keys) == {"o/0005", "o/0009"}
    assert verify_sync(src, dst).ok


def test_delete_only_when_asked(pair: tuple[Endpoint, Endpoint], tmp_path: Path) -> None:
    """An object only at the target survives a plain sync and is removed with delete=True."""
    src, dst = pair
    _fill(src, 5, 100)
    dst.objects.put_object(dst.bucket, "stray", [b"only here"])
    r = sync(src, dst, tmp_path)
    assert r.deleted == 0
    report = verify_sync(src, dst)  # extras allowed without delete
    assert report.extra == ("stray",)
    with pytest.raises(CheckFailed, match="only at the target: stray"):
        verify_sync(src, dst, allow_extra=False)
    r = sync(src, dst, tmp_path, SyncOptions(delete=True))
    assert (r.copied, r.deleted) == (0, 1)
    assert [o.key for o in dst.objects.list_objects(dst.bucket)] == [f"o/{i:04d}" for i in range(5)]


def _stack(tmp_path: Path, moto: MotoServer, s3r: S3rverServer, bucket: str) -> Path:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("aws_id", moto.access_key), ("aws_secret", moto.secret_key), ("s3r_key", s3r.access_key),
                        ("s3r_secret", s3r.secret_key)):
        (secrets / name).write_text(value)
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(f"""\
version: 1
name: synctest
providers:
  aws:
    type: aws
    endpoint: {moto.url}
    credentials: {{access_key_id: "file:secrets/aws_id", secret_access_key: "file:secrets/aws_secret"}}
  objstore:
    type: libcloud
    storage: {{driver: s3, host: {s3r.address}, port: {s3r.port}, secure: false}}
    credentials: {{key: "file:secrets/s3r_key", secret: "file:secrets/s3r_secret"}}
sites:
  primary: {{compute: aws, objects: aws}}
  alt: {{compute: aws, objects: objstore}}
primary: primary
alternates: [alt]
data:
  buckets:
    images: {{name: {bucket}}}
""")
    return stack


def _cli(stack: Path, state: Path, *args: str, **kw: Any) -> Any:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack), "--state-dir", str(state), "sync", *args]
    if kw.pop("popen", False):
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def _manifest_keys(state: Path) -> set[str]:
    path = state / MANIFEST_FILE
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return {r[0] for r in db.execute("SELECT key FROM copied")}
    except sqlite3.OperationalError:
        return set()


@pytest.mark.slow
def test_cli_sync_resumes_after_sigkill_without_recopying(pair: tuple[Endpoint, Endpoint], tmp_path: Path,
                                                          moto_server: MotoServer,
                                                          s3rver_server: S3rverServer) -> None:
    """`liferaft sync` killed with SIGKILL mid-copy; the rerun copies exactly the objects not yet recorded."""
    src, _ = pair
    bodies = _fill(src, 200, 8192)
    stack = _stack(tmp_path, moto_server, s3rver_server, src.bucket)
    state = tmp_path / "state"
    child = _cli(stack, state, "--bucket", "images", "--to", "alt", "--workers", "2", "--json", popen=True)
    deadline = time.monotonic() + 120
    while len(_manifest_keys(state)) < 50:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    finished = _manifest_keys(state)
    assert 50 <= len(finished) < 200, len(finished)

    done = _cli(stack, state, "--bucket", "images", "--to", "alt", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    copied_again = out["sync"]["copied"]
    assert out["sync"]["skipped"] == len(finished)
    assert copied_again == 200 - len(finished)  # nothing finished was copied twice
    assert out["sync"]["bytes_copied"] == sum(len(v) for k, v in bodies.items() if k not in finished)
    assert out["verify"]["ok"] and out["verify"]["checked"] == 200
    # JSON-lines progress on stderr carries the rates
    progress = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert any(p["kind"] == "objects.done" and "mb_per_s" in p for p in progress)


def test_cli_sync_repairs_a_corrupted_and_a_missing_target_object(pair: tuple[Endpoint, Endpoint], tmp_path: Path,
                                                                   moto_server: MotoServer,
                                                                   s3rver_server: S3rverServer) -> None:
    """PROVIDER:BUCKET form; objects changed or removed at the target behind liferaft's back are copied again."""
    src, dst = pair
    bodies = _fill(src, 6, 500)
    stack = _stack(tmp_path, moto_server, s3rver_server, src.bucket)
    state = tmp_path / "state"
    a, b = f"aws:{src.bucket}", f"objstore:{dst.bucket}"
    first = _cli(stack, state, a, b, "--verify")
    assert first.returncode == 0, first.stderr
    assert "copied 6" in first.stdout and "verify: 6 objects, ok" in first.stdout
    dst.objects.put_object(dst.bucket, "o/0002", [bytes(len(bodies["o/0002"]))])  # same size, other bytes
    dst.objects.delete_object(dst.bucket, "o/0004")
    dry = _cli(stack, state, a, b, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["sync"]["dry_run"] is True
    assert _sha(dst.objects, dst.bucket, "o/0002") != hashlib.sha256(bodies["o/0002"]).hexdigest()
    second = _cli(stack, state, a, b, "--verify", "--json")
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert (out["sync"]["copied"], out["verify"]["ok"]) == (2, True)
    assert _sha(dst.objects, dst.bucket, "o/0002") == hashlib.sha256(bodies["o/0002"]).hexdigest()


def test_cli_sync_rejects_a_malformed_side(tmp_path: Path, moto_server: MotoServer,
                                          s3rver_server: S3rverServer) -> None:
    """A side without PROVIDER:BUCKET is a usage error (exit 2) that says the expected form."""
    stack = _stack(tmp_path, moto_server, s3rver_server, "whatever")
    r = _cli(stack, tmp_path / "state", "aws", "objstore:x")
    assert r.returncode == 2 and "PROVIDER:BUCKET" in r.stderr


def _corrupt_at_rest(s3r: S3rverServer, bucket: str, key: str) -> None:
    """Change an object's bytes in s3rver's store on disk, same size, ETag (its .md5 file) and mtime kept: rot."""
    path = s3r.store_dir / bucket / f"{key}._S3rver_object"
    st = path.stat()
    path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cli_verify_marks_an_object_corrupted_at_rest_stale_and_its_named_command_repairs_it(
        pair: tuple[Endpoint, Endpoint], tmp_path: Path, moto_server: MotoServer, s3rver_server: S3rverServer) -> None:
    """Bytes changed at the target behind liferaft's back, ETag kept: `sync --verify` exits 1 and names the exact
    command that repairs it; that command copies the object again (the manifest no longer calls it current) and
    verifies: exit 0, content hashes equal."""
    src, dst = pair
    bodies = _fill(src, 5, 700)
    stack = _stack(tmp_path, moto_server, s3rver_server, src.bucket)
    state = tmp_path / "state"
    a, b = f"aws:{src.bucket}", f"objstore:{dst.bucket}"
    assert _cli(stack, state, a, b, "--verify").returncode == 0
    etags = {o.key: o.etag for o in dst.objects.list_objects(dst.bucket)}
    _corrupt_at_rest(s3rver_server, dst.bucket, "o/0003")
    assert {o.key: o.etag for o in dst.objects.list_objects(dst.bucket)} == etags  # nothing a listing can see
    assert _sha(dst.objects, dst.bucket, "o/0003") != hashlib.sha256(bodies["o/0003"]).hexdigest()

    found = _cli(stack, state, a, b, "--verify")
    assert found.returncode == 1, found.stderr
    assert "differs (sha256): o/0003" in found.stdout
    command = f"liferaft --stack {stack} --state-dir {state} sync {a} {b} --verify"
    assert "marked stale" in found.stderr and command in found.stderr.replace("\n", " "), found.stderr
    repaired = subprocess.run([sys.executable, "-m", *command.split(), "--json"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
    assert repaired.returncode == 0, repaired.stderr
    out = json.loads(repaired.stdout)
    assert (out["sync"]["copied"], out["verify"]["ok"]) == (1, True)
    assert _sha(dst.objects, dst.bucket, "o/0003") == hashlib.sha256(bodies["o/0003"]).hexdigest()


def test_cli_sync_creates_a_missing_target_bucket(moto_server: MotoServer, s3rver_server: S3rverServer,
                                                 tmp_path: Path) -> None:
    """Sync into a bucket that does not exist creates it (as failover and replicate do); --dry-run creates
    nothing and plans against an empty target."""
    name = "b-" + uuid.uuid4().hex[:12]
    src = Endpoint("aws", _aws(moto_server), name)
    src.objects.create_bucket(name)
    bodies = _fill(src, 3, 300)
    target = _s3rver(s3rver_server)
    new = "new-" + uuid.uuid4().hex[:10]
    stack = _stack(tmp_path, moto_server, s3rver_server, name)
    state = tmp_path / "state"
    dry = _cli(stack, state, f"aws:{name}", f"objstore:{new}", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["sync"]["dry_run"] is True and not target.bucket_exists(new)
    done = _cli(stack, state, f"aws:{name}", f"objstore:{new}", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verify"]["ok"] and target.bucket_exists(new)
    assert {k: _sha(target, new, k) for k in bodies} == {k: hashlib.sha256(v).hexdigest() for k, v in bodies.items()}
