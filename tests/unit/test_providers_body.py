"""Object body preparation: re-chunking, hashing, spooling, declared-hash verification."""

from __future__ import annotations

import hashlib
import os

import pytest

from liferaft.errors import CheckFailed
from liferaft.providers._body import prepare, rechunk


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


def test_declared_hash_is_verified() -> None:
    """A wrong declared sha256 fails for small bodies at once and for streamed ones after the last byte."""
    with pytest.raises(CheckFailed):
        prepare([b"abc"], "0" * 64)
    data = os.urandom(9 * 1024 * 1024)
    body = prepare([data], "f" * 64)
    assert body.stream is not None
    assert b"".join(body.blocks()) == data
    with pytest.raises(CheckFailed):
        body.verify("p", "k")
    good = prepare([data], hashlib.sha256(data).hexdigest())
    b"".join(good.blocks())
    good.verify("p", "k")
