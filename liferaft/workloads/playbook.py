"""The playbook workload kind: an Ansible playbook (plus an artifact directory) that installs and starts a service.

Deploy runs `services.<name>.playbook` on the target host with the variables every service playbook receives
(`liferaft.configure.deploy.service_vars`, documented in liferaft/playbooks/README.md): the secret ones (database
passwords, bucket keys, the service's own `secrets`) only through the run's 0600 secret-variables file, never on a
command line, in events or in the journal.

The contract with the playbook (the shipped `microblog.yml` keeps it; so must yours) is where things go, because
that is how stop, rollback and a drill's teardown find them (`liferaft.configure.paths`, given to the playbook as
`liferaft_paths`):
- the process: a systemd unit `liferaft-<service>.service`, else `start-stop-daemon` with the pidfile
  `/run/liferaft/<service>/<service>.pid`;
- files: only under the service's roots `/etc/liferaft/<service>/` (config: it holds secrets), `/opt/liferaft/<service>/`
  (code), `/var/lib/liferaft/<service>/`, `/var/log/liferaft/<service>/`, `/run/liferaft/<service>/`; a system user
  made for the service has `/opt/liferaft/<service>` as its home.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.configure import ansible_events
from liferaft.configure.paths import service_paths
from liferaft.engine.plan import DEPLOY_MODE
from liferaft.errors import RunFailed
from liferaft.workloads.base import Workload, entry_json, refuse_source_host, start_on_host, stop_on_host
from liferaft.workloads.probe import health_url, wait_silent

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack
    from liferaft.stack.model import HealthCheck

STOP_TIMEOUT_S = 120.0
SILENT_TIMEOUT_S = 15.0
START_TIMEOUT_S = 30.0


def marker_path(service: str) -> str:
    """Where a warm standby's host says which digest of the service it holds (in its config root: a teardown
    removes it with the config, so a torn-down standby is deployed again)."""
    return service_paths(service).standby_marker


def start_lines(service: str) -> list[str]:
    """Shell lines that start a deployed playbook service without a playbook run: the systemd unit, else the start
    command the playbook wrote (`/etc/liferaft/<service>/start`). Exit 3 when neither is there."""
    p = service_paths(service)
    return ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true",
            (f"if $sd; then systemctl enable --now {p.unit_name}; "
            f"elif [ -x {p.start} ]; then {p.start}; "
            f"else echo 'no {p.start} and no systemd' >&2; exit 3; fi")]


def tree_digest(h: Any, root: Path) -> None:
    """Feed every file under `root` (path and content, sorted) into hash `h`."""
    if root.is_file():
        h.update(root.read_bytes())
        return
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())


def data_host(ctx: Any) -> str | None:
    """Where the run's databases are: its (first) target host, whichever of a site's hosts the service runs on
    (None when the run allocated no host: the service's own host then)."""
    from liferaft.engine.results import target_host

    try:
        return target_host(ctx).address
    except RunFailed:
        return None


def secret_leaves(value: Any) -> list[str]:
    """Every string in a secret-variables structure (long enough to be matched: the journal ignores shorter)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in secret_leaves(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in secret_leaves(v)]
    return [value] if isinstance(value, str) and len(value) >= 4 else []


def stop_lines(services: list[str]) -> list[str]:
    """Shell lines that stop services the way the shipped playbooks start them: the systemd unit
    `liferaft-<service>.service`, else the start-stop-daemon pidfile `/run/liferaft/<service>/<service>.pid` (and
    the one earlier versions used, `/run/liferaft-<service>.pid`). Idempotent. Service names are validated by the
    stack model (no shell metacharacters)."""
    lines = ["set -u", "sd=false; [ -d /run/systemd/system ] && sd=true"]
    for svc in services:
        p = service_paths(svc)
        stops = "; ".join(f"start-stop-daemon --stop --pidfile {pid} --retry TERM/10/KILL/5 --remove-pidfile "
                          "--oknodo >/dev/null" for pid in (p.pidfile, p.legacy_pidfile))
        lines.append(f"if $sd; then systemctl disable --now {p.unit_name} 2>/dev/null || true; else {stops}; fi")
    return lines


def remove_lines(services: list[str]) -> list[str]:
    """Shell lines that remove what a service's deploy wrote (after `stop_lines`): its unit, a system user whose
    home is its code root, and its roots (`liferaft.configure.paths`): config (it holds secrets), code, state,
    logs, pidfiles."""
    lines: list[str] = []
    for svc in services:
        p = service_paths(svc)
        lines += [f"rm -f {p.unit} {p.legacy_pidfile}",
                  (f"awk -F: '$6 == \"{p.app}\" {{print $1}}' /etc/passwd | while read -r u; do "
                   "userdel \"$u\" >/dev/null 2>&1 || true; done"),
                  f"rm -rf {' '.join(p.roots)}"]
    if services:
        lines.append("if $sd; then systemctl daemon-reload 2>/dev/null || true; fi")
    return lines


class Playbook:
    name: ClassVar[str] = "playbook"

    def entries(self, model: Any) -> dict[str, Any]:
        return {name: svc for name, svc in model.services.items() if svc.playbook is not None}

    # ------------------------------------------------------------------------------------------------- deploy
    def deploy(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        from liferaft.configure import run_playbook
        from liferaft.configure.deploy import service_vars
        from liferaft.configure.remote import controller_address

        stack = ctx.require_stack()
        # a first deployment's service makes its schema; a failover's gets it with the data
        sv = service_vars(stack, wl.name, ctx.plan.target, host, create_schema=ctx.plan.mode == DEPLOY_MODE,
                          db_host=data_host(ctx),
                          allowed_networks=[f"{controller_address(host.address)}/32"])
        for value in secret_leaves(sv.secret_variables):
            ctx.add_secret(value)  # before anything can print or journal it
        res = run_playbook([stack.playbook_path(wl.name)], [host], variables=sv.variables,
                           secret_variables=sv.secret_variables, on_event=ansible_events(ctx),
                           base_dir=stack.base_dir, state_dir=ctx.state_dir)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed, "host": host.name}

    # --------------------------------------------------------------------------------------------- warm tier
    def digest(self, stack: Stack, wl: Workload, site: str) -> str:
        """sha256 of the service's entry (secret references, not values), the site's config, the playbook file
        and the artifact tree: what deploy uses, the host aside (the record says which host holds it)."""
        h = hashlib.sha256(b"liferaft-warm-1\0")
        h.update(entry_json(self.name, stack, wl, site))
        tree_digest(h, stack.playbook_path(wl.name))
        artifact = stack.artifact_path(wl.name)
        if artifact is not None and artifact.exists():
            tree_digest(h, artifact)
        return h.hexdigest()[:32]

    def deploy_stopped(self, ctx: RunContext, wl: Workload, host: TargetHost, digest: str) -> dict[str, Any]:
        """The playbook with `liferaft_service_state: stopped`; then stopped for certain (a playbook that ignores
        the variable started it) and the host marked with the digest."""
        from liferaft.configure import remote, run_playbook
        from liferaft.configure.deploy import service_vars
        from liferaft.configure.remote import controller_address

        stack = ctx.require_stack()
        sv = service_vars(stack, wl.name, ctx.plan.target, host, create_schema=False,
                          allowed_networks=[f"{controller_address(host.address)}/32"])
        for value in secret_leaves(sv.secret_variables):
            ctx.add_secret(value)
        refuse_source_host(ctx, host.address)
        res = run_playbook([stack.playbook_path(wl.name)], [host],
                           variables={**sv.variables, "liferaft_service_state": "stopped"},
                           secret_variables=sv.secret_variables, on_event=ansible_events(ctx),
                           base_dir=stack.base_dir, state_dir=ctx.state_dir)
        script = stop_lines([wl.name]) + [f"printf '%s\\n' {digest} > {marker_path(wl.name)}"]
        remote.ssh(host, "sh -s", stdin="\n".join(script) + "\n", timeout=STOP_TIMEOUT_S,
                   what=f"keep service {wl.name} stopped")
        url = self.health_url(wl, host.address)
        if url is not None:
            wait_silent(url, timeout=SILENT_TIMEOUT_S)
        return {"duration_s": round(res.duration_s, 2), "changed": res.changed, "host": host.name,
                "digest": digest, "state": "stopped"}

    def deployed_digest(self, wl: Workload, host: TargetHost) -> str | None:
        from liferaft.configure import remote

        out = remote.ssh(host, f"cat {marker_path(wl.name)} 2>/dev/null || true", timeout=30.0,
                         what=f"read service {wl.name}'s standby marker")
        text = (out or "").strip()
        return text or None

    def start(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        return start_on_host(self, wl, host, start_lines(wl.name), timeout=START_TIMEOUT_S,
                             what=f"start service {wl.name}")

    # --------------------------------------------------------------------------------------------------- stop
    def stop(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        stop_on_host(ctx, self, wl, host, stop_lines([wl.name]), timeout=STOP_TIMEOUT_S,
                     what=f"stop service {wl.name}", silent_timeout=SILENT_TIMEOUT_S)

    def remove(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        stop_on_host(ctx, self, wl, host, stop_lines([wl.name]) + remove_lines([wl.name]), timeout=STOP_TIMEOUT_S,
                     what=f"stop and remove service {wl.name}", silent_timeout=SILENT_TIMEOUT_S)

    # ------------------------------------------------------------------------------------------------- health
    def health(self, wl: Workload) -> HealthCheck | None:
        return getattr(wl.spec, "health", None)

    def health_url(self, wl: Workload, address: str) -> str | None:
        health = self.health(wl)
        return None if health is None else health_url(health, address)

    # ----------------------------------------------------------------------------------------------- teardown
    def teardown_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        names = [w.name for w in workloads]
        return stop_lines(names) + remove_lines(names)

    def fence_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        names = [w.name for w in workloads]
        return stop_lines(names) + [f"echo 'liferaft-fence: done: service {n} stopped'" for n in names]

    def unfence_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        return [(f"if $sd; then systemctl enable --now {service_paths(w.name).unit_name}; "
                 f"elif [ -x {service_paths(w.name).start} ]; then {service_paths(w.name).start}; else false; fi "
                 f"&& echo 'liferaft-fence: done: service {w.name} started' "
                 f"|| echo 'liferaft-fence: failed: service {w.name} (no unit, no start command)'") for w in workloads]
