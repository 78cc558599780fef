"""What the file kinds (`directory`, `sqlite`) share: a shell on a host, the push key liferaft installs so the
source host can rsync to the target host, the writers' stop and start lines, and files kept in the state dir.

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
from typing import TYPE_CHECKING, Any

from liferaft.errors import LiferaftError, RunFailed, ToolMissing

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset
    from liferaft.engine.runner import RunContext
    from liferaft.movers.files import PushAccess, Shell


def shell(host: TargetHost, what: str = "ssh") -> Shell:
    """Run one command on `host` over SSH with its pinned host key (stdin for anything secret)."""
    from liferaft.configure.remote import ssh

    def run(command: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        return ssh(host, command, stdin=stdin, timeout=timeout, what=what)

    return run


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
