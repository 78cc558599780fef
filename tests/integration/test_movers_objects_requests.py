"""Object sync's request budget on real servers behind counting proxies: what each copied object costs.

rclone makes two requests per object (GET at the source, PUT at the target); so must liferaft: no HEAD after a PUT,
no bucket HEAD per object, no second read of an object whose sha256 the source does not know (up to the
in-memory limit). The proxies count every request the servers receive.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from liferaft.movers.objects import Endpoint, SyncOptions, manifest_for, sync, verify_sync
from liferaft.providers.aws import AwsAdapter
from liferaft.providers.base import CHUNK_SIZE
from liferaft.providers.libcloud_ import LibcloudAdapter
from tests.fixtures_servers import Endpoint as LabEndpoint

pytestmark = pytest.mark.lab


def _aws(ep: LabEndpoint) -> Any:
    return AwsAdapter("aws-" + ep.name, endpoint=ep.url, access_key_id=ep.access_key,
                      secret_access_key=ep.secret_key).objects


def _libcloud(ep: LabEndpoint) -> Any:
    return LibcloudAdapter("lc-" + ep.name, storage={"driver": "s3", "host": ep.address, "port": ep.port,
                                                     "secure": False},
                           key=ep.access_key, secret=ep.secret_key).objects


def _pair(source: LabEndpoint, target: LabEndpoint, target_kind: str) -> tuple[str, Endpoint, Endpoint]:
    """A fresh bucket of one name on both servers: moto through the aws adapter, s3rver through `target_kind`."""
    name = "rq-" + uuid.uuid4().hex[:10]
    src = Endpoint("aws", _aws(source), name)
    make_target = (lambda: _aws(target)) if target_kind == "aws" else (lambda: _libcloud(target))
    dst = Endpoint("objstore", make_target(), name, factory=make_target if target_kind == "libcloud" else None)
    src.objects.create_bucket(name)
    dst.objects.create_bucket(name)
    return name, src, dst


@pytest.mark.parametrize("target_kind", ["aws", "libcloud"])
def test_sync_costs_one_get_and_one_put_per_object(aws_endpoint: LabEndpoint, s3rver_endpoint: LabEndpoint,
                                                   tmp_path: Path, target_kind: str) -> None:
    """20 small objects and one 12 MiB object of unknown sha256: one GET each at the source, one PUT each at the
    target, and no HEAD anywhere; the bytes and the stored sha256 are right (verify reads both sides)."""
    name, src, dst = _pair(aws_endpoint, s3rver_endpoint, target_kind)
    raw = aws_endpoint.client("s3", direct=True)  # filled without liferaft: no sha256 metadata at the source
    bodies = {f"o/{i:03d}": os.urandom(4096 + i) for i in range(20)}
    bodies["big/one"] = os.urandom(CHUNK_SIZE + 4 * 1024 * 1024)
    for key, body in bodies.items():
        raw.put_object(Bucket=name, Key=key, Body=body)
    aws_endpoint.proxy.reset_stats()
    s3rver_endpoint.proxy.reset_stats()

    result = sync(src, dst, tmp_path / "state", SyncOptions(workers=4))

    assert result.copied == len(bodies) and not result.failed
    at_source = aws_endpoint.proxy.stats()["by_method"]
    at_target = s3rver_endpoint.proxy.stats()["by_method"]
    listings = 1  # one page each side (< 1000 keys)
    assert at_source == {"GET": len(bodies) + listings}, at_source
    assert at_target.get("HEAD", 0) <= 1 and at_target.get("PUT") == len(bodies), at_target  # libcloud: 1 bucket HEAD
    # GETs at the target: the listing, plus (libcloud) one bucket-list per driver to learn s3rver's XML namespace:
    # a cost per worker thread, never per object. POST would mean a multipart upload: 12 MiB goes in one PUT.
    per_driver = 0 if target_kind == "aws" else 4 + 1
    assert at_target.get("GET", 0) <= listings + per_driver and at_target.get("POST", 0) == 0, at_target
    for key, body in bodies.items():
        assert dst.objects.head_object(name, key).sha256 == hashlib.sha256(body).hexdigest()
    assert verify_sync(src, dst).ok


@pytest.mark.parametrize("target_kind", ["aws", "libcloud"])
def test_a_large_object_of_unknown_sha256_is_read_once(aws_endpoint: LabEndpoint, s3rver_endpoint: LabEndpoint,
                                                       tmp_path: Path, target_kind: str) -> None:
    """Over the in-memory limit and without a sha256 at the source: one HEAD (does the source declare one?) and
    ONE GET at the source, a multipart upload at the target as it streams; the manifest holds the sha256 of the
    bytes; the target object goes without the sha256 metadata. `unknown_hash="prehash"` reads it twice and
    stores it."""
    name, src, dst = _pair(aws_endpoint, s3rver_endpoint, target_kind)
    body = os.urandom(2 * CHUNK_SIZE + 1024 * 1024 + 17)  # three parts
    digest = hashlib.sha256(body).hexdigest()
    aws_endpoint.client("s3", direct=True).put_object(Bucket=name, Key="big", Body=body)
    options = SyncOptions(workers=2, buffer_limit=CHUNK_SIZE)

    for mode, reads, stored in (("stream", 1, None), ("prehash", 2, digest)):
        aws_endpoint.proxy.reset_stats()
        s3rver_endpoint.proxy.reset_stats()
        result = sync(src, dst, tmp_path / mode, SyncOptions(**{**options.__dict__, "unknown_hash": mode}))
        assert result.copied == 1 and result.bytes_copied == len(body) and not result.failed
        at_source = aws_endpoint.proxy.stats()["by_method"]
        assert at_source == {"HEAD": 1, "GET": reads + 1}, (mode, at_source)  # + the listing
        at_target = s3rver_endpoint.proxy.stats()["by_method"]
        if target_kind == "aws":  # three parts, plus the upload's start and end
            assert at_target.get("PUT") == 3 and at_target.get("POST") == 2, (mode, at_target)
        else:  # libcloud's driver streams it in one request of its choosing
            assert at_target.get("PUT", 0) + at_target.get("POST", 0) >= 1, (mode, at_target)
        assert _sha_of(dst, name, "big") == digest
        assert dst.objects.head_object(name, "big").sha256 == stored, mode
        with manifest_for(tmp_path / mode, src, dst) as manifest:
            entry = manifest.load()["big"]
        assert (entry.src_sha256, entry.tgt_sha256, entry.size) == (digest, digest, len(body))
        dst.objects.delete_object(name, "big")


def _sha_of(ep: Endpoint, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    for chunk in ep.client().get_object(bucket, key):
        h.update(chunk)
    return h.hexdigest()
