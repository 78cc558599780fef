"""A drill's teardown and a failover's rollback leave nothing of the stack on the target (issue 20 item 7).

In a lab of the module's own, the files of the drill's target (host b) are listed before the drill and after its
teardown: path, type, size, and for files up to 1 MiB the sha256 of the content. The lab host's filesystem is an
overlay (liferaft.lab.hosts): its upper dirs, and its own /root /run /tmp, hold exactly what the host changed, so the
listing reads those from the controller. Whatever is new or changed after the teardown must be named below with a
reason; none of it may name the stack or a service, and no file anywhere the host changed may hold one of the stack's
secret values (read from the lab's secrets). The same after `failover --to alt-b` + `rollback`, which keeps the data
and the servers holding it (ROLLBACK_KEEPS: the PostgreSQL cluster; the Redis server, whose config holds the
keyspace's own password).

Before the service roots (liferaft.configure.paths), the teardown left the app's user in /etc/passwd, /etc/group,
/etc/shadow, /etc/gshadow, and a rollback left the whole service deployed at the target, its 0600 config with the
database password and the bucket keys included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from liferaft.lab.hosts import BOUND, OVERLAID
from liferaft.stack import load_stack

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HASH_MAX = 1 << 20  # files up to 1 MiB: hashed; larger ones by size and mtime
SCAN_MAX = 64 << 20  # files up to 64 MiB: searched for secret values


class Entry(NamedTuple):
    kind: str  # "file" | "dir" | "link" | "other"
    size: int
    digest: str  # sha256 of a small file's content, the target of a link, else ""


# What the teardown and the rollback leave on purpose: (path pattern, kind, reason). Everything else that is new or
# changed after them (compared with what the host had before, or with the lower layer for a path the host never had
# in its upper dir) fails the test.
ALLOWED: list[tuple[str, str, str]] = [
    (r"/(opt|etc|var/lib|var/log|run)/liferaft", "dir",
     ("the shared roots prepare.yml creates: every liferaft stack's service roots live in them, so a stack's teardown "
     "keeps them (empty)")),
    (r"/etc/(passwd|group|shadow|gshadow)-", "file",
     ("the backup copies useradd/userdel keep of the account files: the previous version, with the line of the app "
     "user the teardown removed (no secret: a system user without a password)")),
    (r"/etc/\.pwd\.lock", "file", "the empty lock file of the shadow tools (useradd/userdel)"),
    (r"/var/log/(lastlog|wtmp)", "file", "the lab host's sshd records every SSH login (liferaft logs in to deploy)"),
    (r"/(root|var/lib/postgresql)/\.ansible(/tmp)?", "dir",
     ("Ansible's remote temp dir of the SSH user and of the postgres become user (empty: Ansible removes each "
     "task's files)")),
]


# What a failover's rollback keeps on purpose besides: the data. A rollback undoes the move (DNS back, the source
# writable, the services deployed at the target stopped and their files removed), not the copy of the data.
ROLLBACK_KEEPS: list[tuple[str, str, str]] = [
    (r"/var/lib/postgresql/\d+/liferaft(/.*)?", "*",
     ("the PostgreSQL cluster postgresql.yml made at the target, with the copy of the data: a rollback keeps the "
      "data (and the server running); it holds no secret value (the owner's password is a SCRAM verifier)")),
    (r"/run/postgresql/\.s\.PGSQL\.\d+(\.lock)?", "*", "that running cluster's socket and its lock file"),
    (r"/var/lib/liferaft/redis-\d+(/.*)?", "*",
     ("the Redis server redis.yml made at the target, with its copy of the keyspace (dump.rdb): kept with the data, "
      "and running, as the PostgreSQL cluster is")),
    (r"/etc/liferaft/redis-\d+\.conf", "file",
     "that server's config (its one secret, below: the keyspace's own password, which Redis reads in plain text)"),
    (r"/var/log/liferaft/redis-\d+\.log", "file", "that server's log"),
    (r"/run/liferaft-redis-\d+\.pid", "file", "that running server's pid file"),
]

# The secrets a kept copy needs to serve (path pattern -> the lab secret's name): a Redis server's `requirepass`
# is its keyspace's password, in plain text (Redis has no hashed form for it in a config file that also replicates
# with `masterauth`). Only after a rollback, which keeps the data; a drill's teardown removes the server.
ROLLBACK_KEEPS_SECRETS: dict[str, set[str]] = {r"/etc/liferaft/redis-\d+\.conf": {"worker_redis_password"}}


def listing(host: Any) -> dict[str, Entry]:
    """What the lab host changed, as host paths: its overlay upper dirs and its own bound dirs. Overlay whiteouts
    (a deleted lower file) are not files of the host: skipped."""
    roots = [(host.directory / "upper" / d, f"/{d}") for d in OVERLAID]
    roots += [(host.directory / d, f"/{d}") for d in BOUND]
    out: dict[str, Entry] = {}
    for base, prefix in roots:
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                path = prefix + "/" + str(p.relative_to(base))
                st = p.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    continue  # a whiteout
                if stat.S_ISDIR(st.st_mode):
                    out[path] = Entry("dir", 0, "")
                elif stat.S_ISLNK(st.st_mode):
                    out[path] = Entry("link", 0, os.readlink(p))
                elif stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size <= HASH_MAX else \
                        f"mtime:{st.st_mtime_ns}"
                    out[path] = Entry("file", st.st_size, digest)
                else:
                    out[path] = Entry("other", 0, "")
    return out


def host_file(host: Any, path: str) -> Path:
    top, _, rest = path.lstrip("/").partition("/")
    return (host.directory / "upper" / top / rest) if top in OVERLAID else (host.directory / top / rest)


def holding_secrets(host: Any, files: dict[str, Entry], secrets: dict[str, str]) -> dict[str, list[str]]:
    """path -> names of the secrets whose value the file holds (the values are never printed)."""
    found: dict[str, list[str]] = {}
    needles = {name: value.encode() for name, value in secrets.items()}
    for path, e in files.items():
        if e.kind != "file" or e.size > SCAN_MAX:
            continue
        try:
            data = host_file(host, path).read_bytes()
        except OSError:
            continue
        hits = [name for name, v in needles.items() if v in data]
        if hits:
            found[path] = hits
    return found


def stack_secrets(info: Any) -> dict[str, str]:
    """The lab secrets the stack's deploy hands to its target (database password, bucket keys), and every other
    lab secret long enough to be told apart (a token that appears is a leak all the same)."""
    out = {}
    for f in sorted(info.secrets_dir.iterdir()):
        if f.name.endswith(".pub"):
            continue
        value = f.read_text().strip()
        if len(value) >= 8 and "\n" not in value:
            out[f.name] = value
    stack = load_stack(info.stack_file)
    for key, db in stack.model.data.databases.items():
        out.setdefault(f"databases.{key}.password", stack.secret(db.password))
    return out


def names_of(info: Any) -> list[str]:
    stack = load_stack(info.stack_file)
    return [stack.model.name, *stack.model.services]


def naming(path: str, names: list[str]) -> bool:
    """A path component that is one of the names, or one joined to it by '-', '.' or '_' (`web.json`,
    `liferaft-web.service`, `redis-6379`-like names aside)."""
    for comp in path.strip("/").split("/"):
        for n in names:
            if re.search(rf"(^|[-._]){re.escape(n)}($|[-._])", comp):
                return True
    return False


def lower(path: str) -> Entry | None:
    """The lower layer's entry for an overlaid path (the controller's own filesystem: the lab's host image)."""
    if path.lstrip("/").partition("/")[0] not in OVERLAID:
        return None
    p = Path(path)
    if p.is_symlink():
        return Entry("link", 0, os.readlink(p))
    if p.is_dir():
        return Entry("dir", 0, "")
    if p.is_file():
        size = p.stat().st_size
        return Entry("file", size, hashlib.sha256(p.read_bytes()).hexdigest()) if size <= HASH_MAX else None
    return None


def left_over(before: dict[str, Entry], after: dict[str, Entry]) -> dict[str, Entry]:
    """What is new or changed in `after`: a path the host's upper dir did not have before counts when it differs
    from the lower layer (a directory copied up, a file written back as it was, are not changes)."""
    return {p: e for p, e in after.items() if before.get(p) != e and (p in before or lower(p) != e)}


def unexplained(left: dict[str, Entry], allowed: list[tuple[str, str, str]]) -> dict[str, Entry]:
    return {p: e for p, e in left.items()
            if not any(re.fullmatch(rx, p) and k in (e.kind, "*") for rx, k, _ in allowed)}


def cli(info: Any, state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
    argv = [sys.executable, "-m", "liferaft", "--stack", str(info.stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, check=False)


def deployed(info: Any, host: Any, before: dict[str, Entry]) -> dict[str, Entry]:
    """The listing while the stack is deployed there; checks that the deploy wrote the stack's files and secrets
    (the checks after the teardown would prove nothing otherwise)."""
    during = listing(host)
    wrote = [p for p in left_over(before, during) if naming(p, names_of(info))]
    assert any(p.startswith("/etc/liferaft/") for p in wrote), f"nothing of the stack was deployed: {wrote}"
    held = holding_secrets(host, left_over(before, during), stack_secrets(info))
    assert held, "no file held a secret while deployed (the secret check would prove nothing)"
    print(f"\ndeployed on {host.name}: {len(left_over(before, during))} paths new or changed, secrets in "
          f"{sorted(held)}")
    return during


def check_clean(info: Any, host: Any, before: dict[str, Entry], what: str,
                allowed: list[tuple[str, str, str]], kept_secrets: dict[str, set[str]] | None = None) -> None:
    after = listing(host)
    left = left_over(before, after)
    names, secrets = names_of(info), stack_secrets(info)
    problems = []
    named = sorted(p for p in left if naming(p, names))
    if named:
        problems.append(f"paths naming the stack or a service left: {named}")
    held = holding_secrets(host, after, secrets)  # anywhere the host changed, not only what changed since
    for rx, names_kept in (kept_secrets or {}).items():
        held = {p: [h for h in hits if not (re.fullmatch(rx, p) and h in names_kept)] for p, hits in held.items()}
    held = {p: hits for p, hits in held.items() if hits}
    if held:
        problems.append(f"files holding secret values left: {held}")
    other = unexplained(left, allowed)
    if other:
        shown = [f"{p} ({e.kind} {e.size})" for p, e in sorted(other.items())]
        problems.append(f"{len(shown)} new or changed and not allowed: " + ", ".join(shown[:40])
                        + (", ..." if len(shown) > 40 else ""))
    assert not problems, f"{what}:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teardown-state")


def test_drill_teardown_leaves_nothing_of_the_stack_on_the_target(own_lab: Any, state: Path) -> None:
    info = own_lab.info
    host = info.hosts["b"]
    before = listing(host)
    assert not holding_secrets(host, before, stack_secrets(info)), "the target holds a secret before the drill"
    # --keep: list what the drill deployed, then tear it down as a drill's teardown does.
    t0 = time.monotonic()
    out = cli(info, state, "drill", "--to", "alt-b", "--keep", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    deployed(info, host, before)
    run = json.loads(out.stdout)
    down = cli(info, state, "drill", "--teardown", str(run.get("run_id") or run["id"]))
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-5000:]
    print(f"drill and teardown: {time.monotonic() - t0:.1f} s")
    check_clean(info, host, before, "after the drill's teardown", ALLOWED)


def test_failover_rollback_leaves_nothing_of_the_stack_on_the_target(own_lab: Any, state: Path) -> None:
    info = own_lab.info
    host = info.hosts["b"]
    before = listing(host)
    t0 = time.monotonic()
    out = cli(info, state, "failover", "--to", "alt-b", "--yes", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    deployed(info, host, before)
    runs = cli(info, state, "runs", "--json")
    run = json.loads(runs.stdout)[0]
    assert run["drill"] is False and run["status"] == "done", run
    back = cli(info, state, "rollback", run["run"], "--yes")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-5000:]
    print(f"failover and rollback: {time.monotonic() - t0:.1f} s")
    check_clean(info, host, before, "after the failover's rollback", ALLOWED + ROLLBACK_KEEPS, ROLLBACK_KEEPS_SECRETS)
