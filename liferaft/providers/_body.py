"""Streaming helpers for object bodies: re-chunking, hashing, spooling when the hash must be known up front.

S3-style stores take user metadata (where liferaft keeps the sha256) in the request headers, i.e. BEFORE the body.
When the caller does not know the sha256 of a large stream, the body is either spooled to a temporary file once
while hashing, then uploaded from there (`store_sha256=True`: the stored object carries its sha256), or uploaded as
it streams without that metadata (`store_sha256=False`: one read, nothing staged; the caller hashes the stream and
keeps the digest itself, as the object-sync manifest does). Small bodies (< one chunk) are held in memory; so is a
body the caller hands over as ONE in-memory chunk of up to SINGLE_PUT_MAX bytes (in memory already: one PUT, no
copy).

Hash passes are counted: a body wrapped in `HashingStream` (the movers do this while streaming) is hashed once,
by that wrapper, and `prepare` uses its digest instead of hashing the same bytes again; `HashedBytes` is a body
in memory whose sha256 the caller computed over exactly those bytes.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from liferaft.errors import CheckFailed
from liferaft.providers.base import CHUNK_SIZE

SHA256_META = "liferaft-sha256"  # stored as x-amz-meta-liferaft-sha256 on S3-style stores
SINGLE_PUT_MAX = 64 * 1024 * 1024  # one in-memory chunk up to this size goes up in one PUT (S3 allows 5 GB)


def sha256_metadata(sha256: str | None) -> dict[str, str]:
    """The user metadata that carries a body's sha256 on S3-style stores; none when it is not known up front."""
    return {SHA256_META: sha256} if sha256 else {}


class HashingStream:
    """An iterator over a body's chunks that computes sha256 and size as they pass: one hash pass, no copies.
    `on_chunk(n)` is called per chunk (progress counters)."""

    def __init__(self, chunks: Iterable[bytes], on_chunk: Callable[[int], None] | None = None) -> None:
        self._it = iter(chunks)
        self._hasher = hashlib.sha256()
        self._on_chunk = on_chunk
        self.size = 0
        self.done = False  # True once the source is exhausted: the digest covers the whole body

    def __iter__(self) -> HashingStream:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._it)
        except StopIteration:
            self.done = True
            raise
        self._hasher.update(chunk)
        self.size += len(chunk)
        if self._on_chunk is not None:
            self._on_chunk(len(chunk))
        return chunk

    def hexdigest(self) -> str:
        return self._hasher.hexdigest()


@dataclass(frozen=True)
class HashedBytes:
    """A whole body in memory with the sha256 its producer computed over exactly these bytes."""

    data: bytes
    sha256: str

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


def rechunk(chunks: Iterable[bytes], size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield blocks of exactly `size` bytes (the last may be shorter), whatever sizes the input has.

    Right-sized input chunks pass through untouched; otherwise pieces are sliced with memoryview and joined once
    (one copy per block). Input chunks must not be mutated by their producer after they are yielded."""
    pieces: list[Any] = []
    have = 0
    for chunk in chunks:
        n = len(chunk)
        if not n:
            continue
        if not have and n == size:
            yield chunk if isinstance(chunk, bytes) else bytes(chunk)
            continue
        view = memoryview(chunk)
        pos = 0
        while have + (n - pos) >= size:
            take = size - have
            pieces.append(view[pos:pos + take])
            pos += take
            block = b"".join(pieces)
            pieces, have = [], 0  # the input chunks are released before the block is used
            yield block
            del block
        if pos < n:
            pieces.append(view[pos:])
            have += n - pos
    if pieces:
        yield b"".join(pieces)


@dataclass
class PreparedBody:
    """A body ready for upload: either in memory (`small`) or spooled to `file`, with size and sha256 known,
    or a pass-through stream: verified as it is read when the caller supplied the sha256, else (store_sha256=False)
    with `sha256` None — not known before the upload, so not stored with the object."""

    sha256: str | None
    size: int | None
    small: bytes | None = None
    file: IO[bytes] | None = None
    stream: Iterator[bytes] | None = None
    _hasher: Any = None  # anything with hexdigest(): the hash of the bytes the stream yielded

    def blocks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        if self.small is not None:
            yield self.small
        elif self.file is not None:
            self.file.seek(0)
            while block := self.file.read(size):
                yield block
                del block
        elif self.stream is not None:
            yield from self.stream

    def verify(self, provider: str, key: str) -> None:
        """After a pass-through upload: the bytes sent must hash to the declared sha256."""
        hasher = self._hasher
        if hasher is not None and self.sha256 is not None and hasher.hexdigest() != self.sha256:
            raise CheckFailed(
                f"provider {provider!r}: body of {key!r} does not match the declared sha256 "
                f"(declared {self.sha256[:12]}..., got {hasher.hexdigest()[:12]}...)",
                hint="the source changed while it was read, or the caller's hash is wrong",
            )

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def prepare(chunks: Iterable[bytes], sha256: str | None, size: int | None = None,
            part_size: int = CHUNK_SIZE, *, store_sha256: bool = True) -> PreparedBody:
    """Read ahead; small bodies stay in memory, large ones are spooled unless sha256 is declared or the caller
    gives up storing it (`store_sha256=False`: streamed, `sha256` None).

    Each byte is hashed once: by the caller's HashingStream / HashedBytes where given, else here."""
    if isinstance(chunks, HashedBytes):
        _check_declared(sha256, chunks.sha256)
        if len(chunks.data) <= SINGLE_PUT_MAX:
            return PreparedBody(sha256=chunks.sha256, size=len(chunks.data), small=chunks.data)
        return PreparedBody(sha256=chunks.sha256, size=len(chunks.data), stream=rechunk([chunks.data], part_size))
    tracker = chunks if isinstance(chunks, HashingStream) else None
    raw = iter(chunks)
    head = next(raw, b"")
    nxt = next(raw, None)
    if nxt is None and len(head) <= max(SINGLE_PUT_MAX, part_size):
        data = head if isinstance(head, bytes) else bytes(head)
        digest = tracker.hexdigest() if tracker is not None and tracker.done else hashlib.sha256(data).hexdigest()
        _check_declared(sha256, digest)
        return PreparedBody(sha256=digest, size=len(data), small=data)
    blocks = rechunk(_chain(head, nxt, raw), part_size)
    first = next(blocks, b"")
    second = next(blocks, None)
    if second is None:  # several input chunks that add up to less than a part
        digest = tracker.hexdigest() if tracker is not None and tracker.done else hashlib.sha256(first).hexdigest()
        _check_declared(sha256, digest)
        return PreparedBody(sha256=digest, size=len(first), small=first)
    if sha256 is not None:
        stream = _chain(first, second, blocks)
        del first, second
        if tracker is not None:  # the caller's stream hashes every byte it yields: verify with its digest
            return PreparedBody(sha256=sha256, size=size, stream=stream, _hasher=tracker)
        hasher = hashlib.sha256()
        return PreparedBody(sha256=sha256, size=size, stream=_hashed(stream, hasher), _hasher=hasher)
    if not store_sha256:  # streamed as it comes; the caller's own hash of it is the record
        return PreparedBody(sha256=None, size=size, stream=_chain(first, second, blocks))
    hasher = hashlib.sha256()
    spool = tempfile.TemporaryFile(prefix="liferaft-body-")  # noqa: SIM115 - closed by PreparedBody.close()
    total = 0
    for block in _chain(first, second, blocks):
        if tracker is None:
            hasher.update(block)
        spool.write(block)
        total += len(block)
    digest = tracker.hexdigest() if tracker is not None else hasher.hexdigest()
    return PreparedBody(sha256=digest, size=total, file=spool)


def _hashed(blocks: Iterator[bytes], hasher: Any) -> Iterator[bytes]:
    for block in blocks:
        hasher.update(block)
        yield block


def _check_declared(declared: str | None, digest: str) -> None:
    if declared is not None and declared != digest:
        raise CheckFailed(f"object body does not match the declared sha256 ({declared[:12]}... != {digest[:12]}...)")


def _chain(first: bytes, second: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    """first, second, then rest; holds no reference to a block once it is yielded (parts are megabytes)."""
    ahead = [first] if second is None else [first, second]
    del first, second
    while ahead:
        yield ahead.pop(0)
    yield from rest
