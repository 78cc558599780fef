"""Objects contract, written once, run against every objects adapter on a real lab server:
aws S3 on moto, libcloud S3 on s3rver, libcloud S3 on moto, libcloud local storage."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from liferaft.errors import CheckFailed, NotFound
from liferaft.providers.base import CHUNK_SIZE, Objects
from tests.contract_shims.targets import (
    Target,
    aws_provider,
    libcloud_local_provider,
    libcloud_s3_provider,
    uid,
)

pytestmark = [pytest.mark.lab, pytest.mark.contract]

OBJECT_TARGETS = ["aws-s3@moto", "libcloud-s3@s3rver", "libcloud-s3@moto", "libcloud-local"]


@pytest.fixture(params=OBJECT_TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    state = tmp_path / "state"
    if request.param == "aws-s3@moto":
        ep = request.getfixturevalue("aws_endpoint")
        provider = aws_provider(ep, state)
        provider.objects.page_size = 50  # type: ignore[union-attr]  # exercise pagination cheaply
        return Target(request.param, provider, ep.proxy, multipart_etag=True)
    if request.param == "libcloud-s3@s3rver":
        ep = request.getfixturevalue("s3rver_endpoint")
        return Target(request.param, libcloud_s3_provider("objstore", ep, state), ep.proxy)
    if request.param == "libcloud-s3@moto":
        ep = request.getfixturevalue("aws_endpoint")
        return Target(request.param, libcloud_s3_provider("lc-moto", ep, state), ep.proxy, multipart_etag=True)
    return Target(request.param, libcloud_local_provider(tmp_path / "store", state))


@pytest.fixture
def bucket(target: Target) -> Iterator[tuple[Objects, str]]:
    objects: Objects = target.provider.require("objects")
    name = uid("contract")
    objects.create_bucket(name)
    try:
        yield objects, name
    finally:
        keys = [info.key for info in objects.list_objects(name)]
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda k: objects.delete_object(name, k), keys))
        objects.delete_bucket(name)  # type: ignore[attr-defined]


def _chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_contract_create_bucket_is_idempotent(target: Target) -> None:
    """Creating a bucket twice is fine; it then exists, and an unknown one does not."""
    objects: Objects = target.provider.require("objects")
    name = uid("contract")
    objects.create_bucket(name)
    objects.create_bucket(name)
    try:
        assert objects.bucket_exists(name)
        assert not objects.bucket_exists(uid("absent"))
    finally:
        objects.delete_bucket(name)  # type: ignore[attr-defined]


def test_contract_streaming_round_trip_keeps_sha256(bucket: tuple[Objects, str]) -> None:
    """A streamed small body comes back byte for byte, with its sha256 known on head."""
    objects, name = bucket
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    info = objects.put_object(name, "dir/small.bin", _chunks(data, 65536))
    assert (info.size, info.sha256) == (len(data), digest)
    got = objects.get_object(name, "dir/small.bin")
    assert not isinstance(got, (bytes, list))  # a stream, not a loaded body
    assert hashlib.sha256(b"".join(got)).hexdigest() == digest
    assert objects.head_object(name, "dir/small.bin").sha256 == digest


def test_contract_large_object_multipart(target: Target, bucket: tuple[Objects, str]) -> None:
    """A > 8 MiB body of unknown hash goes up (multipart where the store supports it) and streams back in
    chunks no larger than CHUNK_SIZE, with the right sha256."""
    objects, name = bucket
    data = os.urandom(CHUNK_SIZE + 3 * 1024 * 1024 + 7)
    digest = hashlib.sha256(data).hexdigest()
    info = objects.put_object(name, "big.bin", _chunks(data))
    assert info.size == len(data) and info.sha256 == digest
    if target.multipart_etag:
        # "<md5>-N" with N >= 2 parts: multipart really happened (boto3 uses 8 MiB parts, libcloud 5 MiB)
        assert info.etag and "-" in info.etag and int(info.etag.rsplit("-", 1)[1]) >= 2, info.etag
    sizes, h = [], hashlib.sha256()
    for block in objects.get_object(name, "big.bin"):
        sizes.append(len(block))
        h.update(block)
    assert h.hexdigest() == digest and sum(sizes) == len(data)
    assert len(sizes) >= 2 and max(sizes) <= CHUNK_SIZE


def test_contract_declared_sha256_is_verified(bucket: tuple[Objects, str]) -> None:
    """A body that does not match the declared sha256 is refused and not left behind (small and large)."""
    objects, name = bucket
    with pytest.raises(CheckFailed):
        objects.put_object(name, "liar.bin", [b"abc"], sha256="0" * 64)
    big = os.urandom(CHUNK_SIZE + 1024)
    with pytest.raises(CheckFailed):
        objects.put_object(name, "liar-big.bin", _chunks(big), sha256="1" * 64)
    assert [i.key for i in objects.list_objects(name)] == []
    good = objects.put_object(name, "honest-big.bin", _chunks(big), sha256=hashlib.sha256(big).hexdigest())
    assert good.sha256 == hashlib.sha256(big).hexdigest()


def test_contract_list_paginates_with_sizes(bucket: tuple[Objects, str]) -> None:
    """150 keys (three pages for boto3 at 50 a page, two for libcloud's fixed 100) all listed once, in key order, with sizes; prefix filters;
    hashes=True fills the sha256 that a plain listing may not know."""
    objects, name = bucket
    keys = [f"k/{i:04d}" for i in range(150)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda k: objects.put_object(name, k, [k.encode() * (1 + int(k[-1]))]), keys))
    objects.put_object(name, "other/x", [b"x"])
    listed = list(objects.list_objects(name, "k/"))
    assert [i.key for i in listed] == keys
    assert all(i.size == len(i.key) * (1 + int(i.key[-1])) for i in listed)
    assert len(list(objects.list_objects(name))) == 151
    hashed = list(objects.list_objects(name, "k/000", hashes=True))  # type: ignore[call-arg]
    assert [i.sha256 for i in hashed] == [hashlib.sha256(k.encode() * (1 + int(k[-1]))).hexdigest()
                                          for k in keys[:10]]


def test_contract_delete_and_not_found(bucket: tuple[Objects, str]) -> None:
    """Delete removes; deleting again is fine; missing objects and buckets raise NotFound."""
    objects, name = bucket
    objects.put_object(name, "gone", [b"x"])
    objects.delete_object(name, "gone")
    objects.delete_object(name, "gone")
    with pytest.raises(NotFound):
        objects.head_object(name, "gone")
    with pytest.raises(NotFound):
        objects.get_object(name, "gone")
    with pytest.raises(NotFound):
        list(objects.list_objects(uid("absent")))
