"""Object body preparation: re-chunking, hashing, spooling, declared-hash verification."""

from __future__ import annotations

import hashlib
import os

import pytest

from liferaft.errors import CheckFailed
from liferaft.providers._body import HashedBytes, HashingStream, prepare, rechunk


def test_rechunk_gives_exact_blocks() -> None:
    """Whatever the input sizes, blocks are exactly `size` bytes except the last."""
    blocks = list(rechunk([b"a" * 3, b"", b"b" * 10, b"c"], size=4))
    assert [len(b) for b in blocks] == [4, 4, 4, 2] and b"".join(blocks) == b"aaa" + b"b" * 10 + b"c"


def test_small_body_is_held_in_memory_with_its_hash() -> None:
    """A body under one chunk is kept in memory and hashed."""
    body = prepare([b"hello ", b"world"], None)
    assert body.small == b"hello world" and body.sha256 == hashlib.sha256(b"hello world").hexdigest()


def test_large_body_of_unknown_hash_is_spooled() -> None:
    """A large body without a declared hash is spooled once to learn its sha256, then replayed."""
    data = os.urandom(9 * 1024 * 1024)
    body = prepare([data[i:i + 100_000] for i in range(0, len(data), 100_000)], None)
    try:
        assert body.file is not None and body.size == len(data)
        assert body.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join(body.blocks()) == data
    finally:
        body.close()


def test_large_body_of_unknown_hash_streams_when_its_hash_need_not_be_stored() -> None:
    """store_sha256=False: the same large body passes through as it streams (nothing spooled, no hash pass
    here): its sha256 is unknown up front, so the upload cannot store it; the caller's HashingStream has it."""
    data = os.urandom(20 * 1024 * 1024)  # three parts
    stream = HashingStream([data[i:i + 100_000] for i in range(0, len(data), 100_000)])
    body = prepare(stream, None, len(data), store_sha256=False)
    assert body.file is None and body.small is None and body.sha256 is None
    assert stream.size < len(data)  # read ahead by two parts at most, not to the end
    assert b"".join(body.blocks()) == data and stream.hexdigest() == hashlib.sha256(data).hexdigest()
    body.verify("p", "k")  # nothing declared: nothing to refuse


def test_declared_hash_is_verified() -> None:
    """A wrong declared sha256 fails for small bodies at once and for streamed ones after the last byte."""
    with pytest.raises(CheckFailed):
        prepare([b"abc"], "0" * 64)
    data = os.urandom(9 * 1024 * 1024)
    halves = [data[:5_000_000], data[5_000_000:]]
    body = prepare(halves, "f" * 64)
    assert body.stream is not None
    assert b"".join(body.blocks()) == data
    with pytest.raises(CheckFailed):
        body.verify("p", "k")
    good = prepare(halves, hashlib.sha256(data).hexdigest())
    b"".join(good.blocks())
    good.verify("p", "k")
    with pytest.raises(CheckFailed):  # one in-memory chunk: checked at once (it goes up in one PUT)
        prepare([data], "f" * 64)


def test_rechunk_passes_right_sized_chunks_through_uncopied() -> None:
    """Chunks of exactly the part size are yielded as the same objects (no copy); odd sizes are re-cut."""
    a, b = os.urandom(1024), os.urandom(1024)
    out = list(rechunk([a, b], size=1024))
    assert out[0] is a and out[1] is b
    out = list(rechunk([a[:100], a[100:] + b, b"z"], size=1024))
    assert [len(x) for x in out] == [1024, 1024, 1] and b"".join(out) == a + b + b"z"


def test_one_in_memory_chunk_is_one_put() -> None:
    """A body handed over as one chunk larger than a part stays as it is (one PUT, no spool, no copy)."""
    data = os.urandom(9 * 1024 * 1024)
    body = prepare([data], None)
    assert body.small is data and body.sha256 == hashlib.sha256(data).hexdigest()


def test_hashing_stream_digest_is_used_not_recomputed() -> None:
    """prepare trusts the caller's HashingStream / HashedBytes digest: a wrong declared hash is caught with it,
    and a HashedBytes body is taken with its hash as given (the producer hashed exactly those bytes)."""
    data = os.urandom(9 * 1024 * 1024)
    stream = HashingStream([data[:4_000_000], data[4_000_000:]])
    body = prepare(stream, "e" * 64)
    assert b"".join(body.blocks()) == data and stream.done and stream.size == len(data)
    assert stream.hexdigest() == hashlib.sha256(data).hexdigest()
    with pytest.raises(CheckFailed):
        body.verify("p", "k")
    small = prepare(HashingStream([b"abc", b"def"]), None)
    assert small.small == b"abcdef" and small.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    given = prepare(HashedBytes(b"xyz", "a" * 64), None)
    assert given.small == b"xyz" and given.sha256 == "a" * 64
    with pytest.raises(CheckFailed):
        prepare(HashedBytes(b"xyz", "a" * 64), "b" * 64)
