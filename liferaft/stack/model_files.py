"""The stack file's entries for data that lives in files on the service's hosts: `data.directories.<key>` (a tree
of files copied with rsync) and `data.sqlite.<key>` (a SQLite database file copied with its online backup API).

Both name an absolute path on the source site's host, copied to the same path at the target host, and optionally
how the writers are stopped for the write freeze (`writers.stop`, a shell line run on the source host, and
`writers.start`, run when a freeze is undone: a rollback). Without `writers` the freeze copies the final delta
without stopping anything, and the plan says so.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

HOST_PATH_RE = r"^/[A-Za-z0-9._@+-][A-Za-z0-9._@+/-]{0,1023}$"
# Paths a copy with --delete (and a drill's teardown, rm -rf) must never be pointed at.
SYSTEM_PATHS = frozenset({"/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                          "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/log",
                          "/usr/local", "/mnt", "/media"})


def _check_host_path(value: str) -> str:
    parts = value.split("/")
    if value != "/" + "/".join(p for p in parts if p) or any(p in (".", "..") for p in parts):
        raise ValueError("a normalized absolute path without '.', '..', '//' or a trailing '/' "
                         "(e.g. /srv/app/uploads)")
    if value in SYSTEM_PATHS:
        raise ValueError(f"{value} is a system folder: name the application's own folder under it "
                         f"(e.g. {value}/app)")
    return value


HostPath = Annotated[str, StringConstraints(pattern=HOST_PATH_RE), AfterValidator(_check_host_path)]


def _check_shell_line(value: str) -> str:
    if re.search(r"[\x00\n\r]", value):
        raise ValueError("one shell line: no newline or NUL")
    return value


ShellLine = Annotated[str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_check_shell_line)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Writers(_Model):
    """How the freeze stops what writes the data at the source host (a service, a worker), and starts it again
    when the freeze is undone. Shell lines run on the source host as the SSH user; each must be idempotent."""

    stop: ShellLine
    start: ShellLine | None = None


class DirectoryData(_Model):
    """A directory tree on the service's host (uploads, media, a container's volume). Owners (numeric), modes,
    symlinks and hard links are always kept; `acls_xattrs` keeps POSIX ACLs and extended attributes too (rsync -AX:
    both filesystems must support them; measurably slower on many small files)."""

    path: HostPath
    writers: Writers | None = None
    acls_xattrs: bool = False

    @property
    def name(self) -> str:
        """What plans and reports call it (every kind's entry has a `name`)."""
        return self.path


class SqliteData(_Model):
    """A SQLite database file on the service's host."""

    path: HostPath
    writers: Writers | None = None

    @property
    def name(self) -> str:
        """What plans and reports call it (every kind's entry has a `name`)."""
        return self.path
