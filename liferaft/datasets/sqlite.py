"""The SQLite dataset kind (stack file: `data.sqlite.<key>`): a database file on the service's host, copied with
SQLite's online backup API, never as a raw copy of a live file.

- plan: the file's size (its WAL included) at the source host, read-only (lstat); a path the host does not have
  stops the plan, naming the dataset and the fix;
- prepare: sqlite3, rsync and python3 at both ends, the push key granted (source -> target, host key pinned);
- seed: `sqlite3 FILE ".backup SNAPSHOT"` on the source host (a consistent snapshot while the service writes),
  pushed with rsync to the target host (a delta against the previous copy there), and installed at the same path
  in one rename, with the source file's owner and mode (a stale WAL of an older file removed first);
- freeze: the writers stopped (`writers.stop`), then one more snapshot, push and install; the snapshot's digest is
  the freeze's result;
- verify: `PRAGMA integrity_check` at the target, the schema, and per table the row count and an order-independent
  content hash (sha256 of every row), source vs target; as of a drill's cut, the target against the cut's
  snapshot, the source's later rows as notes;
- release: the push key removed; teardown: the copied file and the key removed at the drill's target;
- set aside (a failback's `replicate --to` the old primary, before the standby's file is installed over it): an
  online backup of the old file (its -wal included) at `<path>.before_<run>`, owned as it was, write bits off.
Standby: `replicate` does the same snapshot, push and install to the standby host and records the standby's digest;
a cold failover runs `integrity_check` there and compares the digest.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets import _files as F
from liferaft.datasets._util import source_host, target_host
from liferaft.datasets.base import Dataset, Size, Verdict
from liferaft.errors import CheckFailed, LiferaftError, RunFailed

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import StandbySides
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack

BACKUP_BYTES_PER_S = 150e6
COPY_BYTES_PER_S = 80e6
HASH_BYTES_PER_S = 50e6
TOOLS = ("sqlite3", "rsync", "python3")


def snapshot_path(stack: str, ds: Dataset) -> str:
    return f"/var/tmp/liferaft-sqlite/{F._safe(stack)}-{ds.key}.db"


def incoming_path(ds: Dataset) -> str:
    d, _, base = ds.spec.path.rpartition("/")
    return f"{d}/.{base}.liferaft-incoming"


def _missing(ds: Dataset, host: TargetHost, detail: str) -> LiferaftError:
    return LiferaftError(f"{F.label(ds)}: {ds.spec.path} is not on the source host {host.name} ({host.address}): "
                         f"{detail}", hint=f"fix `{F.spec_key(ds)}.path` in the stack file (the database file the "
                                           "service opens)")


def copy(ctx: RunContext, ds: Dataset, src: TargetHost, tgt: TargetHost) -> dict[str, Any]:
    """Snapshot on the source (backup API), its digest, push to the target, install at the path. Idempotent."""
    from liferaft.movers import files

    t0 = time.monotonic()
    snap = snapshot_path(ctx.plan.stack, ds)
    try:
        owner = files.sqlite_snapshot(F.shell(src, "sqlite3 .backup"), ds.spec.path, snap)
    except LiferaftError as e:
        if "no such file" in str(e):
            raise _missing(ds, src, "no such file") from None
        raise RunFailed(f"{F.label(ds)}: the online backup at the source failed: {e}") from None
    digest = files.sqlite_digest(F.shell(src, "digest"), snap)
    free = files.free_bytes(F.shell(tgt, "df"), ds.spec.path)
    if 2 * int(owner["snapshot_bytes"]) > free:  # the received file and the installed one
        raise F.disk_full(ds, tgt, f"{2 * int(owner['snapshot_bytes'])} bytes needed, {free} free")
    acc = F.access(ctx.plan.stack, tgt)
    try:
        stats = files.push(F.shell(src, "rsync"), acc, snap, incoming_path(ds), directory=False)
    except files.DiskFull as e:
        raise F.disk_full(ds, tgt, str(e)) from None
    try:
        files.sqlite_install(F.shell(tgt, "install"), incoming_path(ds), ds.spec.path, owner)
    except LiferaftError as e:
        if "No space left" in str(e):
            raise F.disk_full(ds, tgt, str(e)) from None
        raise
    out = {"snapshot_bytes": owner["snapshot_bytes"], "bytes_copied": stats.get("bytes_copied"),
           "tables": {k: v[0] for k, v in digest["tables"].items()}, "digest": digest,
           "seconds": round(time.monotonic() - t0, 3)}
    ctx.emit("files.sqlite.copied", f"{F.label(ds)}: snapshot of {owner['snapshot_bytes']} bytes copied "
             f"({len(digest['tables'])} tables) in {out['seconds']} s", dataset=ds.key,
             snapshot_bytes=owner["snapshot_bytes"], seconds=out["seconds"])
    return out


def _later(lab: str, cut: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What the source wrote after the cut, per table (notes, not problems)."""
    out = []
    a, b = cut.get("tables") or {}, now.get("tables") or {}
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            was, is_ = (a.get(name) or [0])[0] or 0, (b.get(name) or [0])[0] or 0
            out.append(f"{lab}: table {name}: {is_ - was:+d} rows, content changed at the source after the cut")
    if cut.get("schema") != now.get("schema"):
        out.append(f"{lab}: the schema changed at the source after the cut")
    return out


class SqliteStandby(F.FilesStandby):
    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        return "sqlite3 and rsync at the standby host, liferaft's push key from the source host"

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        src, tgt = sides.need_source(), sides.need_standby()
        F.check_tools(src, "the source", TOOLS)
        F.check_tools(tgt, "the standby", TOOLS)
        return {"push": F.grant(ctx, src, tgt).tag}

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        src, tgt = F.reach_source(sides, ds), sides.need_standby()
        started = time.time()
        F.grant(ctx, src, tgt)
        out = copy(ctx, ds, src, tgt)
        # What the standby holds now, saved: a cold failover checks the standby's file against it.
        F.save(ctx.state_dir, ctx.plan.stack, ds, "standby", {"host": tgt.name, **out["digest"]})
        return {"path": ds.spec.path, "host": tgt.name, "prev_sync_started_at": entry.get("last_sync_started_at"),
                "last_sync_started_at": started, "last_sync_at": time.time(), "caught_up_at": started,
                "tables": out["tables"], "lag_bytes": out["bytes_copied"],
                "sync_seconds": out["seconds"]}

    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str:
        return f"use the standby's {ds.spec.path} as is: integrity_check, tables against the last copy's digest"

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        from liferaft.movers.files import sqlite_compare, sqlite_digest

        tgt = sides.need_standby()
        saved = F.load(ctx.state_dir, ctx.plan.stack, ds, "standby")
        if not saved:
            raise CheckFailed(f"{F.label(ds)}: no standby copy is recorded; it cannot be trusted",
                              hint=f"run `liferaft replicate --to {sides.target}` while the source answers")
        try:
            now = sqlite_digest(F.shell(tgt, "digest"), ds.spec.path, integrity=True)
        except LiferaftError as e:
            raise CheckFailed(f"{F.label(ds)}: the standby copy cannot be read ({e}); DNS was not touched") from None
        problems, tables = sqlite_compare(saved, now)
        if problems:
            raise CheckFailed(f"{F.label(ds)} at {tgt.name} is not what replicate copied; DNS was not touched:\n  "
                              + "\n  ".join(problems[:10]))
        out = {"path": ds.spec.path, "tables": len(tables), "integrity": "ok"}
        ctx.emit("standby.files", f"{F.label(ds)}: integrity ok, {len(tables)} tables equal to the last copy", **out)
        return out

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        return {f"SQLite file {key} tables": int(promoted.get("tables", 0))}, []


class Sqlite(SqliteStandby, F.FilesKind):
    name: ClassVar[str] = "sqlite"
    noun: ClassVar[str] = "sqlite file"
    group: ClassVar[str] = "sqlite"
    seed_verb: ClassVar[str] = "snapshot"
    tree: ClassVar[bool] = False
    tools: ClassVar[tuple[str, ...]] = TOOLS
    no_writers: ClassVar[str] = "no `writers`: the freeze snapshots again without stopping anyone"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.sqlite)

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        return {"seed": f"copy SQLite file {ds.spec.path} (online backup, then rsync host to host)",
                "prepare": f"sqlite file {ds.key}: liferaft's push key from the source host to the target"}

    def missing(self, ds: Dataset, host: TargetHost, detail: str) -> LiferaftError:
        return _missing(ds, host, detail)

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        return 2 * size.bytes / BACKUP_BYTES_PER_S + size.bytes / COPY_BYTES_PER_S + 2 * size.bytes / HASH_BYTES_PER_S

    # ---- live move ------------------------------------------------------------------------------------------
    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        out = copy(ctx, ds, source_host(ctx), target_host(ctx))
        out.pop("digest", None)
        return out

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        src, tgt = source_host(ctx), target_host(ctx)
        stopped = F.stop_writers(ctx, ds, src)
        if on_frozen is not None:
            on_frozen()
        return {"writers_stopped": stopped, **copy(ctx, ds, src, tgt)}

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        from concurrent.futures import ThreadPoolExecutor

        from liferaft.movers.files import sqlite_compare, sqlite_digest

        t0 = time.monotonic()
        lab = F.label(ds)
        src, tgt = source_host(ctx), target_host(ctx)
        with ThreadPoolExecutor(max_workers=2) as pool:
            fs = pool.submit(sqlite_digest, F.shell(src, "digest"), ds.spec.path)
            ft = pool.submit(sqlite_digest, F.shell(tgt, "digest"), ds.spec.path, integrity=True)
            s = fs.result()
            try:
                t = ft.result()
            except LiferaftError as e:
                return Verdict(checked={f"{lab} tables": 0}, problems=(f"{lab}: cannot read the target copy: {e}",),
                               seconds=round(time.monotonic() - t0, 3))
        problems, tables = sqlite_compare(s, t)
        # Without writers to stop, the source kept changing after the freeze's snapshot: checked against it.
        as_of_cut = as_of_cut or (prior is not None and prior.get("writers_stopped") is False)
        if not as_of_cut:
            return Verdict(checked={f"{lab} tables": len(tables)}, problems=tuple(f"{lab}: {p}" for p in problems),
                           seconds=round(time.monotonic() - t0, 3), figures={"integrity": t.get("integrity")})
        cut = (prior or {}).get("digest")
        notes: list[str] = []
        if cut:  # the target must equal the cut's snapshot; the source's changes since are notes
            problems, tables = sqlite_compare(cut, t)
            notes = _later(lab, cut, s)
        return Verdict(checked={f"{lab} tables": len(tables)}, problems=tuple(f"{lab}: {p}" for p in problems),
                       notes=tuple(notes), seconds=round(time.monotonic() - t0, 3), figures={"caught_up": True})

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        return {"caught_up": True, **copy(ctx, ds, source_host(ctx), target_host(ctx))}

    def paths(self, ds: Dataset) -> list[str]:
        """The database file and the files SQLite keeps beside it (what the fence makes read-only)."""
        return [ds.spec.path + suffix for suffix in ("", "-wal", "-shm", "-journal")]

    aside_how: ClassVar[str] = "an online backup"

    def aside_copy(self, src: str, dst: str) -> str:
        """The backup API (what is still in the -wal included: a raw copy of the file alone would miss it), owned
        as the file is."""
        return (f"sqlite3 -bail -cmd '.timeout 20000' {src} \".backup '\"{dst}\"'\" && "
                f"chown --reference={src} -- {dst} && chmod --reference={src} -- {dst}")

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        tag = F.tag(stack.model.name)
        return [*(f"rm -f -- {shlex.quote(d.spec.path)} {shlex.quote(d.spec.path + '-wal')} "
                  f"{shlex.quote(d.spec.path + '-shm')} {shlex.quote(incoming_path(d))}" for d in datasets),
                f"if [ -f ~/.ssh/authorized_keys ]; then sed -i '/ {tag}$/d' ~/.ssh/authorized_keys; fi"]
