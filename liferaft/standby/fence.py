"""Fencing the site a cold failover left: it must never take writes for the stack again when it comes back.

A cold failover never reaches the old primary (it was gone), so the active-site record (liferaft.engine.active)
marks it `pending`. The first liferaft command that touches it afterwards -- `health`, `replicate --to` it, a
`failover --to` it -- calls `fence_pending_site` before anything else: if the old host answers SSH, one script
runs there, made of each workload kind's and each dataset kind's `fence_lines` (the playbook services stopped and
disabled, the containers stopped with no restart policy; the PostgreSQL databases read-only and their sessions
ended, the MariaDB servers `read_only` with liferaft's account locked, the Redis servers refusing every write
(`min-replicas-to-write` out of reach), the folders and SQLite files read-only with their modes recorded and their
writers stopped; the settings written where a restart keeps them; files and data stay), and the record says
`fenced`, when and what was done. A host that does not answer, or a line that failed, leaves it `pending` with the
error (tried again at the next contact). The engine never branches on a kind here: each kind says its lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.datasets.base import Writers, kind_named, writer_lines
from liferaft.datasets.registry import datasets
from liferaft.engine.active import FENCED, READ_ONLY, fence_pending, load_active, update_fence
from liferaft.errors import LiferaftError
from liferaft.events import Events, as_events
from liferaft.movers.bounded import tcp_answers
from liferaft.workloads.base import kind_of as workload_kind
from liferaft.workloads.registry import stop_order, workloads

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.stack import Stack

FENCE_SSH_TIMEOUT_S = 90.0
DONE, FAILED = "liferaft-fence: done: ", "liferaft-fence: failed: "


def set_aside_old_copies(stack: Stack, state_dir: Path, site: str, events: Events | None = None) -> list[str]:
    """Before `replicate --to` a site the stack left (failback): once it is fenced (or read-only after a live
    failover), each dataset kind sets the old copy aside (`set_aside_lines`: PostgreSQL renames the database, still
    read-only; MariaDB dumps it, Redis copies its snapshot, under /var/lib/liferaft/set_aside/; folders and SQLite
    files are copied beside their paths), once, recorded in the fence; the standby's copy is then made fresh under
    the stack's names. Returns what was done ([] when nothing was to do)."""
    from liferaft.configure import remote
    from liferaft.errors import RunFailed

    ev = as_events(events)
    rec = load_active(state_dir, stack.model.name)
    fence = (rec or {}).get("fence")
    if not isinstance(fence, dict) or fence.get("site") != site or fence.get("set_aside"):
        return []
    if fence.get("state") not in (FENCED, READ_ONLY):
        return []
    host = _host(stack, fence, state_dir)
    if host is None:
        return []
    tag = "before_" + str((rec or {}).get("run") or "move")
    lines: list[str] = []
    by_kind: dict[str, list[Any]] = {}
    for ds in datasets(stack):
        by_kind.setdefault(ds.kind, []).append(ds)
    for name, group in by_kind.items():
        fn = getattr(kind_named(name), "set_aside_lines", None)
        lines += fn(stack, group, tag) if fn else []
    if not lines:
        update_fence(state_dir, stack.model.name, set_aside=[])
        return []
    stop: list[str] = []  # a live failover left the old services running on a read-only database: stopped first
    wl_by_kind: dict[str, list[Any]] = {}
    for wl in stop_order(workloads(stack)):
        wl_by_kind.setdefault(wl.kind, []).append(wl)
    for group in wl_by_kind.values():
        fn = getattr(workload_kind(group[0]), "fence_lines", None)
        stop += fn(stack, group) if fn else []
    script = ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true", *stop, *lines]
    out = remote.ssh(host, "sh -s", stdin="\n".join(script) + "\n", timeout=FENCE_SSH_TIMEOUT_S,
                     what=f"set the old copies at {site} aside")
    done = [line[len(DONE):] for line in out.splitlines() if line.startswith(DONE)]
    failed = [line[len(FAILED):] for line in out.splitlines() if line.startswith(FAILED)]
    if failed:
        raise RunFailed(f"setting the old copies at {site} aside: {'; '.join(failed)}")
    update_fence(state_dir, stack.model.name, set_aside=done, set_aside_at=time.time())
    ev.emit("fence.set_aside", f"old copies at {site} ({host.address}) set aside: " + "; ".join(done),
            site=site, done=done)
    return done


def fence_script(stack: Stack, *, undo: bool = False) -> str:
    """The shell script that fences a host of the stack: every kind's `fence_lines`, services first (they write).
    `undo` (a rollback makes the old site the active one again): every kind's `unfence_lines`, data first."""
    method = "unfence_lines" if undo else "fence_lines"
    service_lines: list[str] = []
    groups: list[list[Any]] = []  # consecutive services of one kind; fenced dependents first, started after deps
    for wl in workloads(stack) if undo else stop_order(workloads(stack)):
        if groups and groups[-1][0].kind == wl.kind:
            groups[-1].append(wl)
        else:
            groups.append([wl])
    for group in groups:
        fn = getattr(workload_kind(group[0]), method, None)
        service_lines += fn(stack, group) if fn else []
    data_lines: list[str] = []
    writers: list[Writers] = []
    ds_by_kind: dict[str, list[Any]] = {}
    for ds in datasets(stack):
        ds_by_kind.setdefault(ds.kind, []).append(ds)
    for name, dgroup in ds_by_kind.items():
        kind = kind_named(name)
        fn = getattr(kind, method, None)
        data_lines += fn(stack, dgroup) if fn else []
        who = getattr(kind, "writers", None)
        writers += who(stack, dgroup) if who else []
    # writers stop after the services and before any data is fenced; they start once all of it is writable again
    writer = writer_lines(writers, undo=undo)
    body = data_lines + writer + service_lines if undo else service_lines + writer + data_lines
    return "\n".join(["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true", *body]) + "\n"


def unfence_site(stack: Stack, state_dir: Path, fence: dict[str, Any], events: Events | None = None) -> list[str]:
    """The rollback of the move that fenced `fence['site']` makes it the active site again: its databases writable,
    its services started. Returns what was done; raises when its host cannot be reached or a part failed (the
    rollback then says so: the site would serve nothing)."""
    from liferaft.configure import remote
    from liferaft.errors import RunFailed

    ev = as_events(events)
    host = _host(stack, fence, state_dir)
    if host is None:
        raise RunFailed(f"the old site {fence.get('site')} was fenced but no host of it is recorded to unfence")
    out = remote.ssh(host, "sh -s", stdin=fence_script(stack, undo=True), timeout=FENCE_SSH_TIMEOUT_S,
                     what=f"unfence the site {fence.get('site')}")
    done = [line[len(DONE):] for line in out.splitlines() if line.startswith(DONE)]
    failed = [line[len(FAILED):] for line in out.splitlines() if line.startswith(FAILED)]
    if failed:
        raise RunFailed(f"unfencing {host.address}: {'; '.join(failed)}",
                        hint="start its services and make its databases writable by hand")
    ev.emit("fence.undone", f"site {fence.get('site')} ({host.address}) active again: " + "; ".join(done),
            site=fence.get("site"), done=done)
    return done


def _host(stack: Stack, fence: dict[str, Any], state_dir: Path) -> TargetHost | None:
    """The old primary's host as the stack pins it now (its key and access from the stack file), found by the
    recorded address among the fenced site's hosts; else as recorded."""
    from liferaft.configure import host_from_dict
    from liferaft.engine.observe import compute_candidates

    recorded = fence.get("host") or {}
    address = recorded.get("address")
    if not address:
        return None
    try:
        for h in compute_candidates(stack, stack.site(str(fence["site"])).compute, state_dir):
            if h.address == address:
                return h
    except LiferaftError:
        pass
    return host_from_dict(recorded) if recorded.get("name") else None


def fence_pending_site(stack: Stack, state_dir: Path, events: Events | None = None, *, site: str | None = None,
                       timeout: float = 5.0) -> dict[str, Any] | None:
    """Fence the site the stack left by a cold failover, if that is still to do (only `site`, when given).
    Returns the fence record after the attempt (state `fenced`, or still `pending` with `error`), None when
    nothing was pending. Never raises for an old host that does not answer: that is its expected state."""
    from liferaft.configure import remote

    ev = as_events(events)
    name = stack.model.name
    fence = fence_pending(load_active(state_dir, name), site)
    if fence is None:
        return None
    host = _host(stack, fence, state_dir)
    now = time.time()
    if host is None:
        rec = update_fence(state_dir, name, tried_at=now, error="no host of the old site is recorded")
        return (rec or {}).get("fence")
    answers, why = tcp_answers(host.address, host.port, timeout)
    if not answers:
        rec = update_fence(state_dir, name, tried_at=now, error=f"{host.address}:{host.port} does not answer ({why})")
        ev.emit("fence.unreachable", f"old site {fence['site']} ({host.address}) does not answer yet: not fenced; "
                "tried again at the next contact", site=fence["site"], address=host.address)
        return (rec or {}).get("fence")
    ev.emit("fence.started", f"fencing the old site {fence['site']} ({host.address}) before anything else: its "
            "services stopped, its databases read-only", site=fence["site"], address=host.address)
    try:
        out = remote.ssh(host, "sh -s", stdin=fence_script(stack), timeout=FENCE_SSH_TIMEOUT_S,
                         what=f"fence the old site {fence['site']}")
    except LiferaftError as e:
        rec = update_fence(state_dir, name, tried_at=now, error=str(e))
        ev.emit("fence.failed", f"fencing {host.address} failed: {e}", site=fence["site"], error=str(e))
        return (rec or {}).get("fence")
    done = [line[len(DONE):] for line in out.splitlines() if line.startswith(DONE)]
    failed = [line[len(FAILED):] for line in out.splitlines() if line.startswith(FAILED)]
    if failed:
        rec = update_fence(state_dir, name, tried_at=now, error="; ".join(failed), detail=done)
        ev.emit("fence.failed", f"fencing {host.address}: {'; '.join(failed)}", site=fence["site"], failed=failed)
        return (rec or {}).get("fence")
    rec = update_fence(state_dir, name, state=FENCED, fenced_at=time.time(), detail=done, error=None)
    ev.emit("fence.done", f"old site {fence['site']} ({host.address}) fenced: " + "; ".join(done),
            site=fence["site"], done=done)
    return (rec or {}).get("fence")
