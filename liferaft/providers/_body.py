"""Streaming helpers for object bodies: re-chunking, hashing, spooling when the hash must be known up front.

S3-style stores take user metadata (where liferaft keeps the sha256) in the request headers, i.e. BEFORE the body.
When the caller does not know the sha256 of a large stream, the body is spooled to a temporary file once while
hashing, then uploaded from there. Small bodies (< one chunk) are held in memory.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from liferaft.errors import CheckFailed
from liferaft.providers.base import CHUNK_SIZE

SHA256_META = "liferaft-sha256"  # stored as x-amz-meta-liferaft-sha256 on S3-style stores


def rechunk(chunks: Iterable[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield blocks of exactly `size` bytes (the last may be shorter), whatever sizes the input has."""
    buf = bytearray()
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


@dataclass
class PreparedBody:
    """A body ready for upload: either in memory (`small`) or spooled to `file`, with size and sha256 known,
    or (when the caller supplied the sha256) a pass-through stream verified as it is read."""

    sha256: str
    size: int | None
    small: bytes | None = None
    file: IO[bytes] | None = None
    stream: Iterator[bytes] | None = None
    _hasher: object | None = None

    def blocks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if self.small is not None:
            yield self.small
        elif self.file is not None:
            self.file.seek(0)
            while block := self.file.read(size):
                yield block
        elif self.stream is not None:
            yield from self.stream

    def verify(self, provider: str, key: str) -> None:
        """After a pass-through upload: the bytes sent must hash to the declared sha256."""
        hasher = self._hasher
        if hasher is not None and hasher.hexdigest() != self.sha256:  # type: ignore[attr-defined]
            raise CheckFailed(
                f"provider {provider!r}: body of {key!r} does not match the declared sha256 "
                f"(declared {self.sha256[:12]}..., got {hasher.hexdigest()[:12]}...)",  # type: ignore[attr-defined]
                hint="the source changed while it was read, or the caller's hash is wrong",
            )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def prepare(chunks: Iterable[bytes], sha256: str | None, size: int | None = None) -> PreparedBody:
    """Read ahead one chunk; small bodies stay in memory, large ones are spooled unless sha256 is declared."""
    blocks = rechunk(chunks)
    first = next(blocks, b"")
    second = next(blocks, None)
    if second is None:
        digest = hashlib.sha256(first).hexdigest()
        if sha256 is not None and sha256 != digest:
            raise CheckFailed(f"object body does not match the declared sha256 ({sha256[:12]}... != {digest[:12]}...)")
        return PreparedBody(sha256=digest, size=len(first), small=first)
    if sha256 is not None:
        hasher = hashlib.sha256()

        def passthrough() -> Iterator[bytes]:
            for block in _chain(first, second, blocks):
                hasher.update(block)
                yield block

        return PreparedBody(sha256=sha256, size=size, stream=passthrough(), _hasher=hasher)
    hasher = hashlib.sha256()
    spool = tempfile.TemporaryFile(prefix="liferaft-body-")  # noqa: SIM115 - closed by PreparedBody.close()
    total = 0
    for block in _chain(first, second, blocks):
        hasher.update(block)
        spool.write(block)
        total += len(block)
    return PreparedBody(sha256=hasher.hexdigest(), size=total, file=spool)


def _chain(first: bytes, second: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield second
    yield from rest
