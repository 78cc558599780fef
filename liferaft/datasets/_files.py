"""What the file kinds (`directory`, `sqlite`) share: a shell on a host, the push key liferaft installs so the
source host can rsync to the target host, the writers' stop and start lines, files kept in the state dir, the parts
of the contract that are the same for both (`FilesKind`, `FilesStandby`) and the fence.

The fence (a site the stack left by a cold failover, at the first contact: `fence_lines`): the stack's
`writers.stop` where it names writers (`writers`: the fence script runs each distinct command once, before any
kind's lines), then every file and folder of the dataset made read-only (the write bits taken off; the previous
modes recorded first on the host, `/var/lib/liferaft/fence/<kind>-<key>.json`, and put back exactly by
`unfence_lines`; the fence's undo runs `writers.start` after every kind's data is writable again). The services
were stopped before (the workload kinds' fence runs first); a process that still held a file open for writing keeps its descriptor, which is why the
writers are stopped too. Root still writes (a read-only mode binds every other user: the services' users).

The push key is one ed25519 key per stack, made on the controller in the stack's state folder (0700). `grant`
puts its public half, `restrict`ed and tagged `liferaft-push-<stack>`, in the target user's authorized_keys, and
its private half plus the target's *pinned* host keys on the source host (never a keyscan, never
StrictHostKeyChecking=no); `revoke` removes both (the release step, a drill's teardown, `replicate --stop`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import HostedKind, HostedStandby, NoServer, source_host, target_host
from liferaft.errors import LiferaftError, RunFailed, ToolMissing

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, Size, StandbySides, Where, Writers
    from liferaft.engine.runner import RunContext
    from liferaft.movers.files import PushAccess, Shell
    from liferaft.stack import Stack


def shell(host: TargetHost, what: str = "ssh") -> Shell:
    """Run one command on `host` over SSH with its pinned host key (stdin for anything secret)."""
    from liferaft.configure.remote import ssh

    def run(command: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        return ssh(host, command, stdin=stdin, timeout=timeout, what=what)

    return run


def reach_source(sides: StandbySides, ds: Dataset) -> TargetHost:
    """The source host, once its SSH port accepted a connection within the standby's source timeout: a `replicate`
    round after a cut-off fails here in that time (Unreachable) rather than in ssh's own connect timeout, so the
    round ends, says the source is unreachable, and lets a failover take the site in time."""
    from liferaft.errors import Unreachable
    from liferaft.movers.bounded import tcp_answers

    src = sides.need_source()
    ok, detail = tcp_answers(src.address, int(src.port), sides.source_timeout)
    if not ok:
        raise Unreachable(sides.source, f"reach {label(ds)} at {src.name}",
                          f"{src.address}:{src.port} did not answer within {sides.source_timeout:g} s ({detail})")
    return src


def label(ds: Dataset) -> str:
    from liferaft.datasets.base import kind_of

    return f"{kind_of(ds).noun} {ds.key}"


def spec_key(ds: Dataset) -> str:
    from liferaft.datasets.base import kind_of

    return f"data.{kind_of(ds).group}.{ds.key}"


def _safe(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:60] or "host"


def push_key(state_dir: Path, stack: str) -> tuple[str, str]:
    """(private key text, public key line) of the stack's push key, made once."""
    from liferaft.engine.journal import stack_dir

    d = stack_dir(Path(state_dir), stack) / "push-key"
    d.mkdir(mode=0o700, exist_ok=True)
    key = d / "id_ed25519"
    if not key.exists():
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"liferaft-push-{stack}",
                            "-f", str(key)], check=True, capture_output=True, timeout=30)
        except FileNotFoundError:
            raise ToolMissing("ssh-keygen is not installed", hint="install openssh-client") from None
    (d / "id_ed25519.pub").chmod(0o600)  # ssh-keygen writes it 0644; every file in the state dir is owner-only
    return key.read_text(), (d / "id_ed25519.pub").read_text().strip()


def tag(stack: str) -> str:
    """How the push key is named in a target's authorized_keys."""
    return f"liferaft-push-{_safe(stack)}"


def access(stack: str, target: TargetHost) -> PushAccess:
    from liferaft.movers.files import PushAccess

    return PushAccess(tag=tag(stack), key_file=f".liferaft/push-{_safe(stack)}.key",
                      known_hosts_file=f".liferaft/push-{_safe(stack)}-{_safe(target.name)}.known_hosts",
                      address=target.address, port=int(target.port), user=target.user)


def grant(ctx: RunContext, source: TargetHost, target: TargetHost, *, once: bool = False) -> PushAccess:
    """The source host may push to the target host (idempotent). `once`: not again in this run context when an
    earlier dataset granted it already (the `prepare` step over several datasets)."""
    from liferaft.movers import files

    acc = access(ctx.plan.stack, target)
    memo = f"files:granted:{source.address}:{target.address}:{target.port}"
    if once and ctx.cache.get(memo):
        return acc
    private, public = push_key(ctx.state_dir, ctx.plan.stack)
    ctx.add_secret(private.strip())  # never journaled (it travels on stdin only)
    files.grant(shell(source, "push key"), shell(target, "push key"), acc, private, public,
                target.known_hosts_lines())
    ctx.cache[memo] = True
    return acc


def revoke(ctx: RunContext, source: TargetHost | None, target: TargetHost) -> None:
    from liferaft.movers import files

    files.revoke(shell(source, "push key") if source is not None else None, shell(target, "push key"),
                 access(ctx.plan.stack, target))
    for k in [k for k in ctx.cache if str(k).startswith("files:granted:")]:
        ctx.cache.pop(k, None)


def check_tools(host: TargetHost, where: str, tools: tuple[str, ...], ctx: RunContext | None = None) -> None:
    """Each tool on the host's PATH, else ToolMissing naming the host and how to install them. With `ctx`, once per
    run context and host."""
    memo = f"files:tools:{host.address}:{','.join(tools)}"
    if ctx is not None and ctx.cache.get(memo):
        return
    out = shell(host, "tools")("for t in " + " ".join(tools) + "; do command -v $t >/dev/null || echo $t; done")
    missing = out.split()
    if missing:
        raise ToolMissing(f"{where} host {host.name} ({host.address}) lacks {', '.join(missing)}",
                          hint=f"install {' '.join(missing)} there (Debian: apt-get install {' '.join(missing)})")
    if ctx is not None:
        ctx.cache[memo] = True


def frozen_now(ctx: RunContext) -> None:
    if "writes_frozen_at" not in ctx.memo:
        ctx.remember(writes_frozen_at=time.time())


def stop_writers(ctx: RunContext, ds: Dataset, source: TargetHost) -> bool:
    """Run the dataset's `writers.stop` on the source host. False: the stack names no writers."""
    writers = ds.spec.writers
    if writers is None:
        return False
    try:
        shell(source, "writers.stop")(writers.stop, timeout=120.0)
    except LiferaftError as e:
        raise RunFailed(f"{label(ds)}: the freeze could not stop its writers on {source.name}: {e}",
                        hint=f"check `{spec_key(ds)}.writers.stop` (run it by hand on the source host)") from None
    frozen_now(ctx)
    ctx.emit("files.writers.stopped", f"{label(ds)}: writers stopped at the source", dataset=ds.key)
    return True


def start_writers(ctx: RunContext, ds: Dataset, source: TargetHost) -> None:
    writers = ds.spec.writers
    if writers is not None and writers.start:
        shell(source, "writers.start")(writers.start, timeout=120.0)
        ctx.emit("files.writers.started", f"{label(ds)}: writers started again at the source", dataset=ds.key)


def saved_path(state_dir: Path, stack: str, ds: Dataset, what: str) -> Path:
    from liferaft.engine.journal import stack_dir

    d = stack_dir(Path(state_dir), stack) / "files"
    d.mkdir(mode=0o700, exist_ok=True)
    return d / f"{ds.kind}-{ds.key}-{what}.json"


def save(state_dir: Path, stack: str, ds: Dataset, what: str, data: dict[str, Any]) -> None:
    p = saved_path(state_dir, stack, ds, what)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    tmp.replace(p)


def load(state_dir: Path, stack: str, ds: Dataset, what: str) -> dict[str, Any] | None:
    p = saved_path(state_dir, stack, ds, what)
    try:
        return dict(json.loads(p.read_text()))
    except FileNotFoundError:
        return None


def disk_full(ds: Dataset, target: TargetHost, detail: str) -> RunFailed:
    return RunFailed(f"{label(ds)}: the target host {target.name} ({target.address}) ran out of space: {detail}; "
                     "nothing was changed at the source and DNS was not touched",
                     hint=f"free space at {ds.spec.path} on the target (or give the target site a bigger disk), "
                          "then resume the run")


# ------------------------------------------------------------------------------------------------------ the fence
FENCE_DIR = "/var/lib/liferaft/fence"

# Run on the host by python3 (each file kind needs it there): argv = record, "fence" | "unfence", paths. Fence: the
# modes of every entry below the paths that has a write bit recorded (merged into an earlier record: a second fence
# never records a mode it set itself), the record written, then the write bits taken off. Unfence: every recorded
# mode put back, the record removed. Symlinks are left alone (their mode means nothing). Prints the entries changed.
_FENCE_PY = r"""
import json, os, stat, sys
rec, act, tops = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    with open(rec) as f:
        modes = json.load(f)
except FileNotFoundError:
    modes = {}
if act == "unfence":
    n = 0
    for p, m in modes.items():
        if os.path.lexists(p) and not os.path.islink(p):
            os.chmod(p, m)
            n += 1
    if os.path.exists(rec):
        os.remove(rec)
    print(n)
    sys.exit(0)
found = []
def visit(p):
    st = os.lstat(p)
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o222:
        found.append((p, stat.S_IMODE(st.st_mode)))
for top in tops:
    if not os.path.lexists(top):
        continue
    visit(top)
    if os.path.isdir(top) and not os.path.islink(top):
        for d, dirs, files in os.walk(top):
            for name in dirs + files:
                visit(os.path.join(d, name))
for p, m in found:
    modes.setdefault(p, m)
os.makedirs(os.path.dirname(rec), mode=0o700, exist_ok=True)
with open(rec + ".tmp", "w") as f:
    json.dump(modes, f)
os.replace(rec + ".tmp", rec)
for p, m in found:
    os.chmod(p, m & ~0o222)
print(len(found))
"""


def fence_record(ds: Dataset) -> str:
    return f"{FENCE_DIR}/{ds.kind}-{ds.key}.json"


def fence_lines(datasets: list[Dataset], paths: Any, *, undo: bool = False) -> list[str]:
    """Shell lines that fence (`undo`: unfence) the file datasets: `paths(ds)` made read-only with their modes
    recorded; undone: the modes put back. Their writers are stopped before and started after by the fence script
    (`writers`), once for every kind."""
    import shlex

    lines: list[str] = []
    for ds in datasets:
        args = " ".join(shlex.quote(p) for p in paths(ds))
        what = "writable again (modes put back)" if undo else "read-only (modes recorded)"
        lines.append(f"if n=$(python3 - {fence_record(ds)} {'unfence' if undo else 'fence'} {args} <<'LIFERAFT_PY'"
                     f"\n{_FENCE_PY.strip()}\nLIFERAFT_PY\n)\nthen echo \"liferaft-fence: done: {label(ds)} {what}: "
                     f"$n entries\"; else echo 'liferaft-fence: failed: {label(ds)} (its modes could not be "
                     f"{'restored' if undo else 'changed'})'; fi")
    return lines


def writers(datasets: list[Dataset]) -> list[Writers]:
    from liferaft.datasets.base import Writers

    return [Writers(w.stop, w.start, label(ds)) for ds in datasets if (w := ds.spec.writers) is not None]


def aside_path(ds: Dataset, tag: str) -> str:
    """Where a failback keeps the old primary's copy of a file dataset: beside it, `<path>.before_<run>`."""
    from liferaft.datasets._util import set_aside_name

    return f"{ds.spec.path}.{set_aside_name(tag)}"


def enclosing_folder(stack: Stack, ds: Dataset) -> tuple[str, str] | None:
    """(key, path) of another folder dataset of the stack whose tree holds `ds`'s path, the outermost; None if none."""
    folders = getattr(getattr(getattr(stack, "model", None), "data", None), "directories", None) or {}
    outer = [(k, str(f.path)) for k, f in folders.items()
             if (k, "directory") != (ds.key, ds.kind) and str(ds.spec.path).startswith(str(f.path).rstrip("/") + "/")]
    return min(outer, key=lambda kp: len(kp[1])) if outer else None


def set_aside_lines(datasets: list[Dataset], tag: str, copy: Any, how: str,
                    stack: Stack | None = None) -> list[str]:
    """Shell lines that keep each file dataset of a (fenced) old primary beside it, at `aside_path`, before a
    failback's standby copy is pushed over it (rsync --delete, or a SQLite file installed by rename, its -wal
    removed): `copy(src, dst)` (shell) makes a complete copy at `dst`, here a temporary name renamed when complete;
    then every write bit is taken off it. A copy, not hard links: the service writes its files in place once it
    runs there again, and a hard-linked file would change with it. Idempotent (a copy already there is kept).
    Not removed by a teardown (it removes the stack's paths only). A dataset inside another folder dataset's tree
    is kept within that folder's copy (its own copy beside it would be in the tree the standby's push makes equal
    to the active site's). Nothing is deleted."""
    import shlex

    from liferaft.datasets._util import set_aside_name

    lines: list[str] = []
    for ds in datasets:
        p, a = shlex.quote(ds.spec.path), aside_path(ds, tag)
        qa, qt = shlex.quote(a), shlex.quote(a + ".partial")
        what = label(ds)
        outer = enclosing_folder(stack, ds) if stack is not None else None
        if outer is not None:  # a copy beside it would be inside that folder's tree, which the standby's push empties
            key, path = outer
            lines.append(f"echo {shlex.quote(f'liferaft-fence: done: {what} kept within the copy of folder {key} ')}"
                         f"{shlex.quote('(' + path + '.' + set_aside_name(tag) + ')')}")
            continue
        lines.append(
            f"if [ -e {qa} ]; then echo {shlex.quote(f'liferaft-fence: done: {what} kept as {a} ({how}, read-only)')}; "
            f"elif [ ! -e {p} ]; then echo {shlex.quote(f'liferaft-fence: done: {what}: nothing at {ds.spec.path} to keep')}; "
            f"elif rm -rf -- {qt} && {copy(p, qt)} && chmod -R a-w -- {qt} && mv -- {qt} {qa}; then "
            f"echo {shlex.quote(f'liferaft-fence: done: {what} kept as {a} ({how}, read-only)')}; "
            f"else rm -rf -- {qt}; echo {shlex.quote(f'liferaft-fence: failed: {what} could not be copied to {a}')}; fi")
    return lines


class FilesKind(NoServer, HostedKind):
    """The parts of the contract both file kinds answer alike (their datasets live on the site's compute hosts,
    need no port or playbook, and are reached over SSH with the push key). `paths(ds)`: what the fence makes
    read-only."""

    release_id: ClassVar[str | None] = "files-release"
    summary_name: ClassVar[str] = "path"
    noun: ClassVar[str]
    tree: ClassVar[bool]  # a folder (its files counted), else one file
    tools: ClassVar[tuple[str, ...]]  # needed at both ends
    no_writers: ClassVar[str]  # the plan's note for a dataset without `writers`

    def ports(self, ds: Dataset) -> tuple[int, ...]:
        """SSH (22, what a created host listens on): the source host pushes the files to the target over it, so a
        cloud firewall of a created host opens it to the source host as well as to the controller."""
        return (22,)

    def missing(self, ds: Dataset, host: TargetHost, detail: str) -> LiferaftError:
        """The dataset's path is not on the source host: a stop naming the dataset and the fix."""
        raise NotImplementedError

    def measure(self, host: TargetHost, ds: Dataset) -> dict[str, Any]:
        """The path's bytes (and files) at `host`, read-only; a path it does not have raises `missing`."""
        from liferaft.movers.files import PathMissing, size_of

        try:
            return size_of(shell(host, "observe"), ds.spec.path, directory=self.tree)
        except PathMissing as e:
            raise self.missing(ds, host, str(e).split(": ", 1)[-1]) from None

    def observe(self, where: Where, ds: Dataset) -> Size:
        from liferaft.datasets.base import Size

        d = self.measure(where.source_host, ds)
        return Size(bytes=int(d["bytes"]), items=int(d["files"]) if self.tree else 0,
                    detail="" if ds.spec.writers else self.no_writers)

    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        src, tgt = source_host(ctx), target_host(ctx)
        check_tools(src, "the source", self.tools, ctx)
        check_tools(tgt, "the target", self.tools, ctx)
        self.measure(src, ds)
        return {"path": ds.spec.path, "push": grant(ctx, src, tgt, once=True).tag}

    def paths(self, ds: Dataset) -> list[str]:
        return [str(ds.spec.path)]

    def summary(self, ds: Dataset) -> Any:
        return str(ds.spec.path)

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None:
        try:
            tgt = target_host(ctx)
        except RunFailed:
            return
        revoke(ctx, source_host(ctx), tgt)

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def unseed(self, ctx: RunContext, ds: Dataset) -> None:
        return None  # the copy stays at the target (a retry copies only what changed)

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None:
        start_writers(ctx, ds, source_host(ctx))

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> Any:
        raise NotImplementedError(f"{self.noun}s keep no write ledger")

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        revoke(ctx, source_host(ctx), target_host(ctx))
        return {"push": "revoked"}

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        grant(ctx, source_host(ctx), target_host(ctx))

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets, self.paths)

    def unfence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets, self.paths, undo=True)

    def writers(self, stack: Stack, datasets: list[Dataset]) -> list[Writers]:
        return writers(datasets)

    # how a failback keeps the old primary's copy (`set_aside_lines`): a shell command copying src to dst, and its name
    aside_how: ClassVar[str] = "a copy"

    def aside_copy(self, src: str, dst: str) -> str:
        return f"cp -a --reflink=auto -- {src} {dst}"

    def set_aside_lines(self, stack: Stack, datasets: list[Dataset], tag: str) -> list[str]:
        return set_aside_lines(datasets, tag, self.aside_copy, self.aside_how, stack)


class FilesStandby(HostedStandby):
    """The standby half both file kinds share: a copy pushed to the standby host each `replicate` round, its lag the
    time since the round before, nothing kept at the source; the push key revoked when the standby stops or is
    promoted."""

    promote_step: ClassVar[tuple[str, str]] = ("standby.objects", "standby")

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        return bool(entry.get("last_sync_at"))

    def source_ports(self, ds: Dataset) -> list[int]:
        return []

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        since = entry.get("prev_sync_started_at") or entry.get("last_sync_started_at") or now
        return {"lag_bytes": entry.get("lag_bytes"), "lag_seconds": round(now - float(since), 3), "measured_at": now,
                "caught_up_at": entry.get("last_sync_started_at")}

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        return None

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        return {}

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        revoke(ctx, sides.source_host, sides.need_standby())
        return {"push": "revoked"}

    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        return {"last_replicated_at": entry.get("last_sync_started_at"), "last_lag_bytes": entry.get("lag_bytes"),
                "last_lag_seconds": entry.get("lag_seconds")}

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return "liferaft's push key removed from the promoted standby"

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        if not undo:
            revoke(ctx, None, host)
        return True
