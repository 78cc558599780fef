"""Reading small input files (the stack file, `file:` secrets) safely: regular files only, a hard byte cap.

`st_size` is never trusted (it is 0 for /dev/zero and for FIFOs), a FIFO is opened without blocking, and a symlink
loop is an error naming the path, not a RuntimeError from `Path.resolve()`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class Refused(Exception):
    """The file cannot be read as a small regular file; str() is the reason, never the content."""


class TooLarge(Refused):
    """The file is over the byte cap."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(mode: int) -> Refused:
    return Refused(f"{_kind(mode)}, not a regular file (symlinks are followed; what they lead to must be a file)")


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), refusing more than `limit` bytes.

    Raises FileNotFoundError when nothing is there, Refused for anything else that is not a readable small file.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # refuse devices before opening them (opening one can have effects)
            raise _not_regular(mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _os_refusal(e) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped for something else between stat and open
            raise _not_regular(mode)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:  # never trust st_size: read until EOF or one byte past the cap
            chunk = os.read(fd, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise _os_refusal(e) from None
    finally:
        os.close(fd)
    if total > limit:
        raise TooLarge(f"larger than {limit} bytes")
    return b"".join(chunks)


def _os_refusal(e: OSError) -> Refused:
    if e.errno == errno.ELOOP:
        return Refused("a symlink loop (too many levels of symbolic links)")
    return Refused(f"cannot read ({e.strerror or type(e).__name__})")


def real_path(path: Path) -> Path:
    """`path` with symlinks followed as far as they go; never raises on a loop (unlike Path.resolve() before 3.13)."""
    return Path(os.path.realpath(path))
