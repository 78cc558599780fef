"""The directory dataset kind (stack file: `data.directories.<key>`): a tree of files on the service's host, copied
host to host with rsync and verified by a manifest of sha256 per file.

- plan: files and bytes below the path at the source host (read-only: a walk with lstat); a path the host does not
  have stops the plan, naming the dataset and the fix;
- prepare: rsync and python3 at both ends, the push key granted (source -> target, host key pinned);
- seed: the free space at the target checked against the tree's size, then `rsync -aH --numeric-ids --delete`
  run on the source host, pushing to the same path at the target (owners, modes, symlinks, hard links kept; ACLs
  and xattrs with `acls_xattrs: true`; an interrupted transfer resumes from its partial files; a second pass copies only what changed);
- freeze: the writers stopped (`writers.stop` on the source host), then the final delta;
- verify: both manifests (type, mode, owner, sha256 of every file, symlink targets, hard-link groups; never an
  mtime) compared, with the file count; as of a drill's cut, against the source's manifest taken at the cut;
- cut (drills): the source's manifest saved, then one more incremental pass;
- release: the push key removed at both ends; teardown: the copied tree and the key removed at the drill's target;
- set aside (a failback's `replicate --to` the old primary, before the standby's push with --delete): the old tree
  copied to `<path>.before_<run>` (`cp -a`, reflinked where the filesystem can; not hard links), write bits off.
Standby: `replicate` pushes the same way to the standby host and saves the standby's manifest after each round; a
cold failover checks the standby's tree against it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets import _files as F
from liferaft.datasets._util import source_host, target_host
from liferaft.datasets.base import Dataset, Size, Verdict
from liferaft.errors import CheckFailed, LiferaftError, RunFailed

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.movers.files import Manifest
    from liferaft.stack import Stack

FILES_PER_S = 1500.0  # rsync of small files between two lab hosts
BYTES_PER_S = 80e6
HASH_BYTES_PER_S = 200e6  # both manifests, in parallel
TOOLS = ("rsync", "python3")


def _missing(ds: Dataset, host: TargetHost, detail: str) -> LiferaftError:
    return LiferaftError(f"{F.label(ds)}: {ds.spec.path} is not on the source host {host.name} ({host.address}): "
                         f"{detail}", hint=f"fix `{F.spec_key(ds)}.path` in the stack file (the folder the service "
                                           "writes to), or create it on the host")


def _manifests(src: TargetHost, tgt: TargetHost, path: str) -> tuple[Manifest, Manifest | None]:
    """Both manifests, computed on both hosts at once (None: the path is not at the target)."""
    from liferaft.movers.files import PathMissing, manifest

    with ThreadPoolExecutor(max_workers=2) as pool:
        fs = pool.submit(manifest, F.shell(src, "manifest"), path)
        ft = pool.submit(manifest, F.shell(tgt, "manifest"), path)
        s = fs.result()
        try:
            t: Manifest | None = ft.result()
        except PathMissing:
            t = None
    return s, t


def push(ctx: RunContext, ds: Dataset, src: TargetHost, tgt: TargetHost, *, live: bool) -> dict[str, Any]:
    from liferaft.movers import files

    acc = F.access(ctx.plan.stack, tgt)
    t0 = time.monotonic()
    try:
        out = files.push(F.shell(src, "rsync"), acc, ds.spec.path, ds.spec.path, allow_vanished=live,
                         acls_xattrs=ds.spec.acls_xattrs)
    except files.DiskFull as e:
        raise F.disk_full(ds, tgt, str(e)) from None
    except RunFailed as e:
        raise RunFailed(f"{F.label(ds)}: {e}", hint="resume the run: rsync keeps what it copied") from None
    out["seconds"] = round(time.monotonic() - t0, 3)
    ctx.emit("files.copied", f"{F.label(ds)}: {out.get('files_copied', 0)} file(s) copied, "
             f"{out.get('bytes_copied', 0)} bytes, in {out['seconds']} s", dataset=ds.key, **out)
    return out


class DirectoryStandby(F.FilesStandby):
    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return "rsync at the standby host, liferaft's push key from the source host"

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        src, tgt = sides.need_source(), sides.need_standby()
        F.check_tools(src, "the source", TOOLS)
        F.check_tools(tgt, "the standby", TOOLS)
        acc = F.grant(ctx, src, tgt)
        return {"push": acc.tag}

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers.files import manifest

        src, tgt = F.reach_source(sides, ds), sides.need_standby()
        started = time.time()
        F.grant(ctx, src, tgt)
        out = push(ctx, ds, src, tgt, live=True)
        # What the standby holds now, saved: a cold failover checks the standby's tree against it.
        held = manifest(F.shell(tgt, "manifest"), ds.spec.path)
        F.save(ctx.state_dir, ctx.plan.stack, ds, "standby", {"host": tgt.name, **held.to_json()})
        return {"path": ds.spec.path, "host": tgt.name, "prev_sync_started_at": entry.get("last_sync_started_at"),
                "last_sync_started_at": started, "last_sync_at": time.time(), "caught_up_at": started,
                "files": held.files, "bytes": held.bytes, "copied": out.get("files_copied", 0),
                "lag_bytes": out.get("bytes_copied", 0), "sync_seconds": out["seconds"]}

    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        return f"use the standby's copy of {ds.spec.path} as is, checked against the manifest of the last copy"

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers.files import Manifest, PathMissing, compare, manifest

        tgt = sides.need_standby()
        saved = F.load(ctx.state_dir, ctx.plan.stack, ds, "standby")
        if not saved:
            raise CheckFailed(f"{F.label(ds)}: no manifest of a standby copy is recorded; the standby's "
                              f"{ds.spec.path} cannot be trusted",
                              hint=f"run `liferaft replicate --to {sides.target}` while the source answers")
        try:
            now = manifest(F.shell(tgt, "manifest"), ds.spec.path)
        except PathMissing as e:
            raise CheckFailed(f"{F.label(ds)}: the standby copy is gone ({e}); DNS was not touched") from None
        diff = compare(Manifest.from_json(saved), now)
        if not diff.ok:
            raise CheckFailed(f"{F.label(ds)} at {tgt.name} is not what replicate copied; DNS was not touched:\n  "
                              + "\n  ".join(diff.problems(10)))
        out = {"path": ds.spec.path, "files": now.files, "bytes": now.bytes, "manifest_sha256": now.digest()}
        ctx.emit("standby.files", f"{F.label(ds)}: {now.files} files verified by sha256 against the manifest", **out)
        return out

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        return {f"folder {key} files": int(promoted.get("files", 0))}, []


class Directory(DirectoryStandby, F.FilesKind):
    name: ClassVar[str] = "directory"
    noun: ClassVar[str] = "folder"
    group: ClassVar[str] = "directories"
    seed_verb: ClassVar[str] = "copy"
    tree: ClassVar[bool] = True
    tools: ClassVar[tuple[str, ...]] = TOOLS
    no_writers: ClassVar[str] = "no `writers`: the freeze copies the final delta without stopping anyone"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.directories)

    # ---- plan -----------------------------------------------------------------------------------------------
    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        return {"seed": f"copy folder {ds.spec.path} host to host (rsync, then verified by sha256)",
                "prepare": f"folder {ds.key}: liferaft's push key from the source host to the target"}

    def missing(self, ds: Dataset, host: TargetHost, detail: str) -> LiferaftError:
        return _missing(ds, host, detail)

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        return size.items / FILES_PER_S + size.bytes / BYTES_PER_S + size.bytes / HASH_BYTES_PER_S

    # ---- live move ------------------------------------------------------------------------------------------
    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers.files import free_bytes, size_of

        src, tgt = source_host(ctx), target_host(ctx)
        have = size_of(F.shell(src, "observe"), ds.spec.path, directory=True)
        free = free_bytes(F.shell(tgt, "df"), ds.spec.path)
        need = int(have["bytes"])
        if need > free:
            raise F.disk_full(ds, tgt, f"{need} bytes to copy, {free} bytes free at {ds.spec.path}")
        return push(ctx, ds, src, tgt, live=True)

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        from liferaft.movers.files import manifest

        src, tgt = source_host(ctx), target_host(ctx)
        stopped = F.stop_writers(ctx, ds, src)
        if on_frozen is not None:
            on_frozen()
        if not stopped:  # nobody stopped: the gate then checks as of this instant, like a drill's cut
            F.save(ctx.state_dir, ctx.plan.stack, ds, "cut", manifest(F.shell(src, "manifest"), ds.spec.path).to_json())
        out = push(ctx, ds, src, tgt, live=not stopped)
        return {"writers_stopped": stopped, **out}

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        from liferaft.movers.files import Manifest, compare

        t0 = time.monotonic()
        lab = F.label(ds)
        s, t = _manifests(source_host(ctx), target_host(ctx), ds.spec.path)
        if t is None:
            return Verdict(checked={f"{lab} files": s.files}, problems=(f"{lab}: {ds.spec.path} missing at the target",),
                           seconds=round(time.monotonic() - t0, 3))
        diff = compare(s, t)
        figures = {"files": t.files, "bytes": t.bytes, "manifest_sha256": t.digest()}
        # Without writers to stop, the source kept changing through the final pass: checked as of the freeze.
        as_of_cut = as_of_cut or (prior is not None and prior.get("writers_stopped") is False)
        if not as_of_cut:
            return Verdict(checked={lab + " files": s.files}, problems=tuple(f"{lab}: {p}" for p in diff.problems()),
                           seconds=round(time.monotonic() - t0, 3), figures=figures)
        # As of the cut: what differs from the source now is a problem only where the source has not changed since
        # the cut (its manifest then was saved) and the target does not hold the cut's content either.
        saved = F.load(ctx.state_dir, ctx.plan.stack, ds, "cut")
        at_cut = Manifest.from_json(saved) if saved else s
        problems, notes = [], []
        changed = set(_changed(at_cut, s))
        for p in [*diff.missing, *diff.content, *diff.extra, *(m.rsplit(": ", 1)[-1] for m in diff.meta)]:
            if p in changed or (p in at_cut.entries and p in t.entries and at_cut.entries[p] == t.entries[p]):
                notes.append(p)
            else:
                problems.append(p)
        figures["caught_up"] = True
        out_notes = (f"{lab}: {len(notes)} path(s) changed at the source after the cut",) if notes else ()
        return Verdict(checked={f"{lab} files": t.files}, problems=tuple(f"{lab}: differs: {p}" for p in problems[:20]),
                       notes=out_notes, seconds=round(time.monotonic() - t0, 3), figures=figures)

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers.files import manifest

        src, tgt = source_host(ctx), target_host(ctx)
        at_cut = manifest(F.shell(src, "manifest"), ds.spec.path)
        F.save(ctx.state_dir, ctx.plan.stack, ds, "cut", at_cut.to_json())
        out = push(ctx, ds, src, tgt, live=True)
        return {"caught_up": True, "files_at_cut": at_cut.files, **out}

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        import shlex

        tag = F.tag(stack.model.name)
        return [*(f"rm -rf -- {shlex.quote(d.spec.path)}" for d in datasets),
                f"if [ -f ~/.ssh/authorized_keys ]; then sed -i '/ {tag}$/d' ~/.ssh/authorized_keys; fi"]


def _changed(a: Manifest, b: Manifest) -> list[str]:
    from liferaft.movers.files import compare

    d = compare(a, b)
    return [*d.missing, *d.content, *d.extra, *(m.rsplit(": ", 1)[-1] for m in d.meta)]
