"""Files on hosts: manifests (sha256 per file), host-to-host rsync over SSH, and SQLite files copied with the online
backup API and digested per table.

Nothing here knows how a host is reached: every function takes a `Shell` (run one command on one host, host key
checked, `stdin` for anything secret) given by the dataset kinds. Scripts that run on a host use only `python3`'s
standard library, `rsync` and `sqlite3` there.

- `manifest(shell, path)`: every entry below `path` (the root included): type, mode, owner, size, sha256 of each
  regular file, the target of each symlink, which paths are hard links of one file. Never an mtime.
- `compare(src, tgt)`: what differs, by path (missing, extra, content, mode/owner, link, hard links).
- `push(...)`: `rsync -aH --numeric-ids --delete` (`-AX` on request) run on the source host, pushing to the target host over SSH with
  a key liferaft installed for this (`grant` / `revoke`) and the target's pinned host key.
- `sqlite_snapshot` / `sqlite_digest` / `sqlite_install`: `sqlite3 FILE ".backup SNAPSHOT"` (a consistent copy of a
  live file), per table count + order-independent content hash, `PRAGMA integrity_check`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import RunFailed

# run `command` on a host (stdin: text for the command) and return its stdout; raises on a non-zero exit
Shell = Callable[..., str]

PARTIAL_DIR = ".liferaft-partial"  # rsync's --partial-dir (resumable transfers), left out of manifests

_MANIFEST_PY = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
skip = sys.argv[2]
try:
    st = os.lstat(root)
except FileNotFoundError:
    print(json.dumps({"error": "missing"})); sys.exit(0)
if not stat.S_ISDIR(st.st_mode):
    print(json.dumps({"error": "not a directory"})); sys.exit(0)
entries = {".": ["d", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0, None, None]}
files = []
groups = {}
S_IMODE, S_ISLNK, S_ISDIR, S_ISREG, S_IFMT = stat.S_IMODE, stat.S_ISLNK, stat.S_ISDIR, stat.S_ISREG, stat.S_IFMT
todo = [("", root)]
while todo:
    rel_dir, full_dir = todo.pop()
    with os.scandir(full_dir) as it:
        listed = list(it)
    for e in listed:
        name = e.name
        if not rel_dir and name == skip and e.is_dir(follow_symlinks=False):
            continue
        rel = rel_dir + name
        s = e.stat(follow_symlinks=False)
        m = s.st_mode
        if S_ISREG(m):
            entries[rel] = ["f", S_IMODE(m), s.st_uid, s.st_gid, s.st_size, None, None]
            files.append((s.st_size, rel, e.path))
            if s.st_nlink > 1:
                groups.setdefault((s.st_dev, s.st_ino), []).append(rel)
        elif S_ISDIR(m):
            entries[rel] = ["d", S_IMODE(m), s.st_uid, s.st_gid, 0, None, None]
            todo.append((rel + "/", e.path))
        elif S_ISLNK(m):
            entries[rel] = ["l", S_IMODE(m), s.st_uid, s.st_gid, 0, os.readlink(e.path), None]
        else:
            entries[rel] = ["o", S_IMODE(m), s.st_uid, s.st_gid, 0, oct(S_IFMT(m)), None]
for paths in groups.values():
    first = min(paths)
    for p in paths:
        entries[p][6] = first


def digest_all(items):
    # sha256 of each file (OpenSSL's, through hashlib), read with raw os calls (no file object per file)
    sha256, o_open, o_read, o_close = hashlib.sha256, os.open, os.read, os.close
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOATIME", 0)
    for size, rel, full in items:
        try:
            fd = o_open(full, flags)
        except PermissionError:  # O_NOATIME on a file root does not own under a non-root user
            fd = o_open(full, flags & ~getattr(os, "O_NOATIME", 0))
        try:
            h = sha256()
            while True:
                b = o_read(fd, 1 << 20)
                if not b:
                    break
                h.update(b)
        finally:
            o_close(fd)
        yield h.hexdigest()


workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
if workers == 1 or len(files) < 256:
    for f, sha in zip(files, digest_all(files)):
        entries[f[1]][5] = sha
else:
    # Several processes (fork), each hashing a share of the files balanced by bytes (and a page per file), each
    # writing its digests, 64 hex characters per file in its share's order, into its own pipe.
    order = sorted(range(len(files)), key=lambda i: -files[i][0])
    shares = [[] for _ in range(workers)]
    loads = [0] * workers
    for i in order:
        k = loads.index(min(loads))
        shares[k].append(files[i])
        loads[k] += files[i][0] + 4096
    kids = []
    for share in shares:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                with os.fdopen(w, "w", encoding="ascii", buffering=1 << 16) as pipe:
                    for sha in digest_all(share):
                        pipe.write(sha)
            except BaseException as exc:
                sys.stderr.write("manifest: %s\n" % exc)
                code = 1
            os._exit(code)
        os.close(w)
        kids.append((pid, r, share))
    failed = False
    for pid, r, share in kids:
        with os.fdopen(r, "r", encoding="ascii") as pipe:
            for f in share:
                sha = pipe.read(64)
                if len(sha) != 64:
                    failed = True
                    break
                entries[f[1]][5] = sha
        if os.waitpid(pid, 0)[1] != 0:
            failed = True
    if failed:
        sys.exit(1)
sys.stdout.write(json.dumps({"entries": entries}, separators=(",", ":")))  # dumps: the C encoder (dump streams through the Python one, ~1 s per 50,000 entries)
"""

_SIZE_PY = r"""
import json, os, stat, sys
root = sys.argv[1]
try:
    st = os.lstat(root)
except FileNotFoundError:
    print(json.dumps({"error": "missing"})); sys.exit(0)
if not stat.S_ISDIR(st.st_mode) if sys.argv[2] == "dir" else not stat.S_ISREG(st.st_mode):
    print(json.dumps({"error": "not a directory" if sys.argv[2] == "dir" else "not a regular file"})); sys.exit(0)
n = size = 0
if sys.argv[2] == "dir":
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            s = os.lstat(os.path.join(dirpath, name))
            n += 1
            size += s.st_size if stat.S_ISREG(s.st_mode) else 0
else:
    n, size = 1, st.st_size
    for extra in ("-wal",):
        try:
            size += os.lstat(root + extra).st_size
        except FileNotFoundError:
            pass
print(json.dumps({"files": n, "bytes": size, "uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode)}))
"""

_FREE_PY = r"""
import json, os, sys
p = sys.argv[1]
while not os.path.isdir(p):
    p = os.path.dirname(p) or "/"
v = os.statvfs(p)
print(json.dumps({"free": v.f_bavail * v.f_frsize, "at": p}))
"""

_SQLITE_PY = r"""
import hashlib, json, sqlite3, sys, urllib.parse
path, integrity = sys.argv[1], sys.argv[2] == "1"
c = sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=ro", uri=True, timeout=10, isolation_level=None)
c.execute("BEGIN")  # one read snapshot over every table
out = {"integrity": None, "tables": {}}
if integrity:
    out["integrity"] = [str(r[0]) for r in c.execute("PRAGMA integrity_check(20)")]
schema = sorted((t, n, s or "") for t, n, s in c.execute("SELECT type, name, sql FROM sqlite_master"))
out["schema"] = hashlib.sha256(json.dumps(schema).encode()).hexdigest()
names = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%'"
                                 " ORDER BY name")]
for name in names:
    n = acc = 0
    try:
        for row in c.execute('SELECT * FROM "' + name.replace('"', '""') + '"'):
            acc = (acc + int.from_bytes(hashlib.sha256(repr(row).encode()).digest()[:8], "big")) % (1 << 64)
            n += 1
    except sqlite3.Error as e:
        out["tables"][name] = [None, "error: " + str(e)]
        continue
    out["tables"][name] = [n, format(acc, "016x")]
c.execute("COMMIT")
print(json.dumps(out))
"""


def _py(shell: Shell, script: str, *args: str, timeout: float) -> Any:
    out = shell("python3 - " + " ".join(shlex.quote(a) for a in args), stdin=script, timeout=timeout)
    return json.loads(out)


# ----------------------------------------------------------------------------------------------- manifests
@dataclass(frozen=True)
class Entry:
    type: str  # f (file), d (directory), l (symlink), o (other)
    mode: int
    uid: int
    gid: int
    size: int
    value: str | None  # sha256 of a file, target of a symlink
    link: str | None  # hard links: the first path of the file's group (None: a single link)

    @classmethod
    def of(cls, row: list[Any]) -> Entry:
        return cls(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), row[5], row[6])

    def to_row(self) -> list[Any]:
        return [self.type, self.mode, self.uid, self.gid, self.size, self.value, self.link]


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry] = field(default_factory=dict)

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries.values() if e.type == "f")

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries.values() if e.type == "f")

    def digest(self) -> str:
        """One sha256 over the whole manifest (paths, types, modes, owners, contents, links)."""
        body = json.dumps({k: self.entries[k].to_row() for k in sorted(self.entries)}, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"entries": {k: e.to_row() for k, e in self.entries.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        return cls({k: Entry.of(v) for k, v in (d.get("entries") or {}).items()})


class PathMissing(RunFailed):
    """The path is not on the host (or not of the expected type)."""


def manifest(shell: Shell, path: str, *, timeout: float = 3600.0) -> Manifest:
    d = _py(shell, _MANIFEST_PY, path, PARTIAL_DIR, timeout=timeout)
    if "error" in d:
        raise PathMissing(f"{path}: {d['error']}")
    return Manifest.from_json(d)


def size_of(shell: Shell, path: str, *, directory: bool, timeout: float = 600.0) -> dict[str, Any]:
    """Files and bytes below a directory (or of one file, its WAL included); read-only. PathMissing if absent."""
    d = _py(shell, _SIZE_PY, path, "dir" if directory else "file", timeout=timeout)
    if "error" in d:
        raise PathMissing(f"{path}: {d['error']}")
    return dict(d)


def free_bytes(shell: Shell, path: str, *, timeout: float = 60.0) -> int:
    """Free bytes (for root) at `path`'s nearest existing folder."""
    return int(_py(shell, _FREE_PY, path, timeout=timeout)["free"])


@dataclass(frozen=True)
class Diff:
    missing: tuple[str, ...] = ()  # at the source, not at the target
    extra: tuple[str, ...] = ()  # at the target only
    content: tuple[str, ...] = ()  # a file's sha256 (or size) differs
    meta: tuple[str, ...] = ()  # type, mode, owner, symlink target, hard-link grouping

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.content or self.meta)

    def problems(self, limit: int = 20) -> list[str]:
        out = [f"missing at the target: {p}" for p in self.missing]
        out += [f"differs (sha256): {p}" for p in self.content]
        out += [f"differs ({p})" for p in self.meta]
        out += [f"only at the target: {p}" for p in self.extra]
        return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])

    def count(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.content) + len(self.meta)


def compare(src: Manifest, tgt: Manifest) -> Diff:
    s, t = src.entries, tgt.entries
    missing = tuple(sorted(set(s) - set(t)))
    extra = tuple(sorted(set(t) - set(s)))
    content, meta = [], []
    for p in sorted(set(s) & set(t)):
        a, b = s[p], t[p]
        if a.type != b.type:
            meta.append(f"type {a.type} -> {b.type}: {p}")
            continue
        if a.type == "f" and (a.value != b.value or a.size != b.size):
            content.append(p)
        if a.type == "l" and a.value != b.value:
            meta.append(f"symlink target {a.value} -> {b.value}: {p}")
        if a.type != "l" and a.mode != b.mode:
            meta.append(f"mode {a.mode:o} -> {b.mode:o}: {p}")
        if (a.uid, a.gid) != (b.uid, b.gid):
            meta.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}: {p}")
        if a.type == "f" and a.link != b.link:
            meta.append(f"hard links {a.link or 'none'} -> {b.link or 'none'}: {p}")
    return Diff(missing, extra, tuple(content), tuple(meta))


# ---------------------------------------------------------------------------------------- host-to-host push
@dataclass(frozen=True)
class PushAccess:
    """Where the push key and the target's pinned host keys live on the source host, and who receives."""

    tag: str  # names the key in the target's authorized_keys ("liferaft-push-<stack>")
    key_file: str  # on the source host
    known_hosts_file: str  # on the source host: the target's pinned keys only
    address: str  # the target host as the source reaches it
    port: int
    user: str

    def ssh_command(self) -> str:
        return " ".join(["ssh", "-F", "/dev/null", "-i", shlex.quote(self.key_file), "-o", "IdentitiesOnly=yes",
                         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                         "-o", f"UserKnownHostsFile={shlex.quote(self.known_hosts_file)}",
                         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                         "-p", str(self.port)])

    def remote(self, path: str) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}:{path}"


TAG_RE = re.compile(r"^[a-z0-9-]{1,80}$")


def grant(src: Shell, tgt: Shell, access: PushAccess, private_key: str, public_key: str,
          known_hosts_lines: list[str], *, timeout: float = 60.0) -> None:
    """Install the push key: its public half in the target user's authorized_keys (`restrict`ed, tagged), its
    private half and the target's pinned host keys on the source host (0600). Idempotent."""
    if not TAG_RE.match(access.tag):
        raise ValueError(f"bad tag {access.tag!r}")
    line = f"restrict {' '.join(public_key.split()[:2])} {access.tag}"
    # Under a lock (two datasets may grant at once) on the .ssh folder itself (a lock file would stay behind after
    # the revoke), rewritten through a temporary file in one rename: the file never lacks the lines it had.
    # Unchanged when the exact line is there already.
    tgt("umask 077; mkdir -p $HOME/.ssh && touch $HOME/.ssh/authorized_keys && exec 9<$HOME/.ssh && flock 9 && "
        "line=$(cat) && if ! grep -qxF \"$line\" $HOME/.ssh/authorized_keys; then t=$(mktemp $HOME/.ssh/.liferaft-ak.XXXXXX) "
        f"&& {{ grep -v ' {access.tag}$' $HOME/.ssh/authorized_keys || true; printf '%s\\n' \"$line\"; }} > \"$t\" "
        "&& mv \"$t\" $HOME/.ssh/authorized_keys; fi",
        stdin=line + "\n", timeout=timeout)
    key, kh = shlex.quote(access.key_file), shlex.quote(access.known_hosts_file)
    for dest, text in ((key, private_key if private_key.endswith("\n") else private_key + "\n"),
                       (kh, "".join(x + "\n" for x in known_hosts_lines))):
        src(f"umask 077; mkdir -p \"$(dirname {dest})\" && t=$(mktemp {dest}.XXXXXX) && cat > \"$t\" && "
            f"mv \"$t\" {dest}", stdin=text, timeout=timeout)


def revoke(src: Shell | None, tgt: Shell | None, access: PushAccess, *, timeout: float = 60.0) -> None:
    """Remove the push key from the target's authorized_keys and from the source host. Idempotent."""
    if tgt is not None:
        tgt(f"if grep -q ' {access.tag}$' $HOME/.ssh/authorized_keys 2>/dev/null; then umask 077 && "
            "exec 9<$HOME/.ssh && flock 9 && t=$(mktemp $HOME/.ssh/.liferaft-ak.XXXXXX) && "
            f"{{ grep -v ' {access.tag}$' $HOME/.ssh/authorized_keys || true; }} > \"$t\" && mv \"$t\" $HOME/.ssh/authorized_keys; "
            "fi", timeout=timeout)
    if src is not None:
        src(f"rm -f {shlex.quote(access.key_file)} {shlex.quote(access.known_hosts_file)}", timeout=timeout)


class DiskFull(RunFailed):
    """The target ran out of space during a copy."""


_STATS = {"Number of files": "entries", "Number of regular files transferred": "files_copied",
          "Total file size": "bytes_total", "Total transferred file size": "bytes_copied",
          "Number of deleted files": "deleted"}


def push(src: Shell, access: PushAccess, source_path: str, target_path: str, *, directory: bool = True,
         allow_vanished: bool = False, acls_xattrs: bool = False, timeout: float = 24 * 3600.0) -> dict[str, Any]:
    """rsync on the source host: `source_path` -> the target host's `target_path` (a directory's contents, with
    --delete; or one file). Numeric owners, modes, symlinks and hard links kept (`acls_xattrs`: ACLs and extended
    attributes too); an interrupted transfer resumes from its partial files. `allow_vanished`: files that vanished
    while listed (a live source) are fine."""
    s = source_path + "/" if directory else source_path
    t = target_path + "/" if directory else target_path
    argv = ["rsync", "-aHAX" if acls_xattrs else "-aH", "--numeric-ids", "--stats", "--mkpath",
            *([f"--partial-dir={PARTIAL_DIR}", "--delete", "--delete-delay"] if directory else ["--inplace"]),
            "-e", access.ssh_command(), s, access.remote(t)]
    cmd = " ".join(shlex.quote(a) for a in argv)
    out = src(f"{cmd} 2>&1; echo \"@rc=$?\"", timeout=timeout)
    m = re.search(r"@rc=(\d+)\s*$", out)
    rc = int(m.group(1)) if m else -1
    text = out[:m.start()] if m else out
    if rc != 0 and not (rc == 24 and allow_vanished):
        tail = "\n".join(line for line in text.splitlines() if "rsync" in line.lower() or "error" in line.lower())
        tail = tail[-600:] or text[-600:]
        if "No space left on device" in text or "Disk quota exceeded" in text:
            raise DiskFull(f"the target ran out of space writing {target_path}: {tail.strip()}")
        raise RunFailed(f"rsync {source_path} -> {access.address}:{target_path} failed (exit {rc}): {tail.strip()}")
    stats: dict[str, Any] = {"rsync_exit": rc}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in _STATS:
            num = re.match(r"\s*([\d,]+)", v)
            if num:
                stats[_STATS[k.strip()]] = int(num.group(1).replace(",", ""))
    return stats


# ------------------------------------------------------------------------------------------------------ sqlite
def sqlite_snapshot(shell: Shell, path: str, snapshot: str, *, timeout: float = 3600.0) -> dict[str, Any]:
    """A consistent copy of a live SQLite file on its host through the online backup API (`.backup`), and the
    source file's owner and mode."""
    p, snap = shlex.quote(path), shlex.quote(snapshot)
    out = shell(f"test -f {p} || {{ echo 'no such file' >&2; exit 3; }}; umask 077; mkdir -p \"$(dirname {snap})\" "
                f"&& rm -f {snap}.new && sqlite3 -bail -cmd '.timeout 20000' {p} \".backup '{snapshot}.new'\" "
                f"&& mv -f {snap}.new {snap} && stat -c '%u %g %a %s' {p} {snap}", timeout=timeout)
    lines = out.split("\n")
    uid, gid, mode, _ = lines[0].split()
    return {"uid": int(uid), "gid": int(gid), "mode": mode, "snapshot_bytes": int(lines[1].split()[3])}


def sqlite_digest(shell: Shell, path: str, *, integrity: bool = False, timeout: float = 3600.0) -> dict[str, Any]:
    """Per table [rows, order-independent content hash], a hash of the schema, and `PRAGMA integrity_check`."""
    out = shell(f"test -f {shlex.quote(path)} && python3 - {shlex.quote(path)} {'1' if integrity else '0'}",
                stdin=_SQLITE_PY, timeout=timeout)
    return dict(json.loads(out))


def sqlite_compare(src: dict[str, Any], tgt: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, tables checked) between two digests: schema, then per table rows and content hash."""
    problems: list[str] = []
    if tgt.get("integrity") not in (None, ["ok"]):
        problems.append("integrity_check: " + "; ".join(tgt["integrity"][:5]))
    if src.get("schema") != tgt.get("schema"):
        problems.append("schema differs")
    s, t = src.get("tables") or {}, tgt.get("tables") or {}
    for name in sorted(set(s) | set(t)):
        if name not in t:
            problems.append(f"table {name} missing at the target")
        elif name not in s:
            problems.append(f"table {name} only at the target")
        elif s[name][0] != t[name][0]:
            problems.append(f"table {name}: {s[name][0]} rows at the source, {t[name][0]} at the target")
        elif s[name][1] != t[name][1]:
            problems.append(f"table {name}: content differs (hash)")
    return problems, sorted(s)


def sqlite_install(shell: Shell, incoming: str, path: str, owner: dict[str, Any], *,
                   timeout: float = 3600.0) -> None:
    """On the target: the received snapshot becomes `path` (same owner and mode as at the source) in one rename;
    a stale WAL or journal of an older file there is removed first (it would be replayed into the new one).
    The received file stays as the next transfer's delta basis."""
    i, p = shlex.quote(incoming), shlex.quote(path)
    shell(f"cp --sparse=auto {i} {p}.liferaft-new && chown {int(owner['uid'])}:{int(owner['gid'])} {p}.liferaft-new "
          f"&& chmod {shlex.quote(str(owner['mode']))} {p}.liferaft-new && rm -f {p}-wal {p}-shm {p}-journal "
          f"&& mv -f {p}.liferaft-new {p}", timeout=timeout)
