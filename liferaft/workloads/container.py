"""The container workload kind: a service that runs an OCI image with podman on the target host.

In the stack file a service gives `image` (a path inside the site's registry, pinned by digest or by tag),
optionally `command` (the container's argv, default the image's), `env` and `secrets` (its environment), `ports`
(what it listens on) and `health`. Deploy pulls the image from the registry the TARGET site names
(`sites.<site>.registry`), so a failover pulls from the alternate's copy, never from the primary vendor's.

Why podman, through plain commands over SSH: it is daemonless (a container is a process under `conmon`, nothing to
install or keep running), Debian ships it, it reads the same images as docker, and a few commands say all it needs;
Ansible's containers.podman collection would add a second dependency for the same commands.

On the host (how stop and teardown find things):
- the container `liferaft-<service>`, labelled `liferaft.service=<service>`, on the host's network; its named
  volumes `liferaft-<service>-<name>` (same label: a drill's teardown removes them);
- in the service's config root (`liferaft.configure.paths`), which a teardown or a rollback removes whole:
  `/etc/liferaft/<service>/env` (0600): the environment, settings and secrets (podman `--env-file`: secrets never
  reach a command line); `/etc/liferaft/<service>/auth.json` (0600): the registry's credentials, if it has any;
  `/etc/liferaft/<service>/images`: every image reference liferaft pulled for it (a teardown removes them).
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
import shlex
import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.configure.paths import service_paths
from liferaft.errors import RunFailed, UsageError
from liferaft.workloads.base import Workload, entry_json, start_on_host, stop_on_host
from liferaft.workloads.probe import health_url, http_check

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.engine.runner import RunContext
    from liferaft.providers.registry_oci import Image, Registry
    from liferaft.stack import Stack
    from liferaft.stack.model import HealthCheck

PULL_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
SILENT_TIMEOUT_S = 15.0
START_TIMEOUT_S = 60.0


def container_name(service: str) -> str:
    return f"liferaft-{service}"


def volume_name(service: str, name: str) -> str:
    return f"liferaft-{service}-{name}"


def files(service: str) -> dict[str, str]:
    etc = service_paths(service).etc
    return {"etc": etc, "env": f"{etc}/env", "auth": f"{etc}/auth.json", "images": f"{etc}/images",
            "standby": f"{etc}/standby-digest"}


def site_registry(stack: Stack, site: str) -> Registry:
    """The registry `site` names, logged in (see `liferaft.providers.registry_oci.site_registry`)."""
    from liferaft.providers.registry_oci import site_registry as _site_registry

    return _site_registry(stack, site)


def _heredoc(path: str, text: str, mode: str = "600") -> list[str]:
    """Shell lines that write `text` to `path` (mode `mode`, never world-readable while written); the text travels on
    the script's stdin, never on a command line."""
    end = "LIFERAFT_" + _secrets.token_hex(8).upper()
    return [f"(umask 077; cat > {path}.tmp <<'{end}'", text.rstrip("\n"), end, ")",
            f"chmod {mode} {path}.tmp && mv -f {path}.tmp {path}"]


def env_file(env: dict[str, str]) -> str:
    """podman's --env-file: `NAME=value` lines, the value taken as it is (so no newline may be in it)."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise UsageError(f"the value of {name} has a line break, which an environment file cannot hold",
                             hint="a container's settings and secrets are single lines (put a PEM key in a file)")
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def _key(key: str) -> str:
    return key.upper().replace("-", "_")


def data_env(stack: Stack, service: str, site: str, host: TargetHost) -> tuple[dict[str, str], dict[str, str]]:
    """The service's databases and buckets at the target as environment variables, what playbook services get as
    `liferaft_databases` / `liferaft_buckets`: (plain, secret). `LIFERAFT_DB_<KEY>_HOST|PORT|NAME|USER` and
    `_PASSWORD`; `LIFERAFT_BUCKET_<KEY>_NAME|ENDPOINT_URL|REGION` and `_ACCESS_KEY_ID|_SECRET_ACCESS_KEY`."""
    from liferaft.configure.deploy import service_vars

    sv = service_vars(stack, service, site, host, create_schema=False)
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for db in sv.variables["liferaft_databases"]:
        k = f"LIFERAFT_DB_{_key(db['key'])}"
        plain.update({f"{k}_HOST": str(db["host"]), f"{k}_PORT": str(db["port"]), f"{k}_NAME": str(db["name"]),
                      f"{k}_USER": str(db["owner"])})
        secret[f"{k}_PASSWORD"] = str(sv.secret_variables["liferaft_secrets"]["databases"][db["key"]]["password"])
    for b in sv.variables["liferaft_buckets"]:
        k = f"LIFERAFT_BUCKET_{_key(b['key'])}"
        plain.update({f"{k}_NAME": str(b["name"]), f"{k}_ENDPOINT_URL": str(b.get("endpoint_url") or ""),
                      f"{k}_REGION": str(b.get("region") or "")})
        creds = sv.secret_variables["liferaft_secrets"]["buckets"][b["key"]]
        secret.update({f"{k}_ACCESS_KEY_ID": str(creds["access_key_id"]),
                       f"{k}_SECRET_ACCESS_KEY": str(creds["secret_access_key"])})
    return plain, secret


def stop_lines(services: list[str]) -> list[str]:
    """Stop (not remove) the services' containers. Idempotent; nothing to do where podman is not installed."""
    return [f"if command -v podman >/dev/null 2>&1; then podman stop -i -t 10 {container_name(s)} >/dev/null; fi"
            for s in services]


def fence_lines(services: list[str], *, undo: bool = False) -> list[str]:
    """Shell lines that fence the services' containers (`undo`: start them again). Fenced: stopped, and kept from
    starting by themselves: liferaft runs them without a restart policy (podman's default, `no`: neither podman
    nor a reboot starts them), which is checked; a policy someone set by hand is cleared with `podman update
    --restart=no` (podman 5; older podman cannot change it, and says so as a failed fence). The container, its
    image and volumes stay (a rollback starts it as it was)."""
    lines: list[str] = []
    for svc in services:
        c, what = container_name(svc), f"container service {svc}"
        if undo:
            lines.append(f"if command -v podman >/dev/null 2>&1 && podman start {c} >/dev/null 2>&1; then "
                         f"echo 'liferaft-fence: done: {what} started'; "
                         f"else echo 'liferaft-fence: failed: {what} (no container {c} to start)'; fi")
            continue
        lines.append(
            f"if ! command -v podman >/dev/null 2>&1 || ! podman container exists {c}; then "
            f"echo 'liferaft-fence: done: {what}: no container on this host'; "
            f"else podman stop -i -t 10 {c} >/dev/null 2>&1; "
            f"p=$(podman inspect -f '{{{{.HostConfig.RestartPolicy.Name}}}}' {c} 2>/dev/null); "
            f"case \"$p\" in ''|no) ;; *) podman update --restart=no {c} >/dev/null 2>&1 && p=no;; esac; "
            f"r=$(podman inspect -f '{{{{.State.Running}}}}' {c} 2>/dev/null); "
            f"if [ \"$r\" = false ] && [ \"$p\" = no -o -z \"$p\" ]; then "
            f"echo 'liferaft-fence: done: {what} stopped (no restart policy)'; "
            f"else echo \"liferaft-fence: failed: {what} (running: $r, restart policy: $p)\"; fi; fi")
    return lines


def remove_lines(services: list[str]) -> list[str]:
    """Remove the services' containers, every image liferaft pulled for them, their volumes, and their roots (the
    env and auth files, the list of images)."""
    lines: list[str] = []
    for svc in services:
        f = files(svc)
        lines += [
            "if command -v podman >/dev/null 2>&1; then",
            f"  podman rm -f -i -t 5 {container_name(svc)} >/dev/null",
            (f"  if [ -f {f['images']} ]; then while read -r ref; do podman rmi -f \"$ref\" >/dev/null 2>&1 || "
             f"true; done < {f['images']}; fi"),
            (f"  podman volume ls -q --filter label=liferaft.service={svc} | while read -r v; do podman volume rm -f "
             "\"$v\" >/dev/null; done"),
            "fi",
            f"rm -rf {' '.join(service_paths(svc).roots)}",
        ]
    return lines


class Container:
    name: ClassVar[str] = "container"

    def entries(self, model: Any) -> dict[str, Any]:
        return {name: svc for name, svc in model.services.items() if getattr(svc, "image", None) is not None}

    # ------------------------------------------------------------------------------------------------- deploy
    def image(self, wl: Workload) -> Image:
        from liferaft.providers.registry_oci import Image

        return Image.parse(str(wl.spec.image))

    def deploy(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        return self._deploy(ctx, wl, host)

    def _deploy(self, ctx: RunContext, wl: Workload, host: TargetHost, *, stopped_at: str | None = None
                ) -> dict[str, Any]:
        """Pull the image from the target's registry, write the env file, (re)create the container and start it,
        then wait for its health check. `stopped_at` (the warm tier): the container is created, not started, and
        the host marked with that digest."""
        from liferaft.configure import remote

        t0 = time.monotonic()
        stack = ctx.require_stack()
        spec = stack.model.services[wl.name]
        registry = site_registry(stack, ctx.plan.target)
        if registry.password:
            ctx.add_secret(registry.password)
        image = self.image(wl)
        # The image must be at the target's registry before anything runs: a missing one stops the run here, by name.
        digest = registry.require(image)
        if image.digest is not None and digest != image.digest:
            raise RunFailed(f"{registry.host} answered digest {digest} for {image}")
        env, secret_env = data_env(stack, wl.name, ctx.plan.target, host)
        env.update(spec.env)
        secret_env.update({name: stack.secret(ref) for name, ref in sorted(spec.secrets.items())})
        for value in secret_env.values():
            ctx.add_secret(value)
        env.update(secret_env)
        ref = registry.pull_ref(image, digest)
        f, cname, svc = files(wl.name), container_name(wl.name), wl.name
        tls = "" if registry.secure else " --tls-verify=false"
        auth_text = registry.auth_json()
        auth = f" --authfile {f['auth']}" if auth_text else ""
        vols = [v.split(":", 1) for v in spec.volumes]
        run = ["podman", "create" if stopped_at else "run", *([] if stopped_at else ["-d"]), "--name", cname,
               "--network", "host", "--env-file", f["env"],
               "--label", f"liferaft.service={svc}", "--label", f"liferaft.image={image}",
               *[a for name, path in vols for a in ("-v", f"{volume_name(svc, name)}:{path}")], ref, *spec.command]
        script = ["set -eu", "command -v podman >/dev/null || { echo 'podman is not installed' >&2; exit 3; }",
                  f"install -d -m 0700 {f['etc']}", f"rm -f {f['standby']}",
                  *_heredoc(f["env"], env_file(env) or "\n"),
                  *(_heredoc(f["auth"], auth_text) if auth_text else [f"rm -f {f['auth']}"]),
                  f"podman pull -q{tls}{auth} {shlex.quote(ref)} >/dev/null",
                  f"grep -qxF {shlex.quote(ref)} {f['images']} 2>/dev/null || echo {shlex.quote(ref)} >> {f['images']}",
                  f"podman rm -f -i -t 10 {cname} >/dev/null",
                  *[f"podman volume exists {volume_name(svc, name)} || podman volume create --label "
                    f"liferaft.service={svc} {volume_name(svc, name)} >/dev/null" for name, _ in vols],
                  " ".join(shlex.quote(a) for a in run) + " >/dev/null",
                  *([f"printf '%s\\n' {shlex.quote(stopped_at)} > {f['standby']}"] if stopped_at else [])]
        remote.ssh(host, "sh -s", stdin="\n".join(script) + "\n", timeout=PULL_TIMEOUT_S,
                   what=f"{'create' if stopped_at else 'run'} container {svc}")
        t1 = time.monotonic()
        health = self.health(wl)
        if health is not None and not stopped_at:
            http_check(host.address, health, timeout=START_TIMEOUT_S)
        ctx.emit("service.container", f"{svc}: {registry.host}/{registry.repository(image)}@{digest} "
                 f"{'created (stopped)' if stopped_at else 'runs'} on {host.name}", service=svc, digest=digest,
                 registry=registry.host)
        return {"host": host.name, "image": str(image), "digest": digest, "registry": registry.host,
                "vendor": registry.vendor, "pull_run_s": round(t1 - t0, 2),
                "duration_s": round(time.monotonic() - t0, 2),
                **({"state": "stopped", "standby_digest": stopped_at} if stopped_at else {})}

    # --------------------------------------------------------------------------------------------- warm tier
    def digest(self, stack: Stack, wl: Workload, site: str) -> str:
        """sha256 of what deploy uses at `site`: the service's entry (the image reference, pinned by digest or a
        tag; secret references, not values), the site's registry and the entries of its databases and buckets."""
        h = hashlib.sha256(b"liferaft-warm-container-1\0")
        h.update(entry_json(self.name, stack, wl, site))
        return h.hexdigest()[:32]

    def deploy_stopped(self, ctx: RunContext, wl: Workload, host: TargetHost, digest: str) -> dict[str, Any]:
        """Warm standby: the image mirrored to the target's registry when it lacks it (as `replicate` does), pulled
        there, and the container created but not started (nothing answers); the host marked with `digest`."""
        from liferaft.workloads.base import refuse_source_host

        refuse_source_host(ctx, host.address)
        stack = ctx.require_stack()
        if ctx.plan.source != ctx.plan.target and site_registry(stack, ctx.plan.target).digest(
                self.image(wl)) is None:
            self.mirror(stack, wl, ctx.plan.source, ctx.plan.target)
        out = self._deploy(ctx, wl, host, stopped_at=digest)
        url = self.health_url(wl, host.address)
        if url is not None:
            from liferaft.workloads.probe import wait_silent

            wait_silent(url, timeout=SILENT_TIMEOUT_S)
        return out

    def deployed_digest(self, wl: Workload, host: TargetHost) -> str | None:
        from liferaft.configure import remote

        f, c = files(wl.name), container_name(wl.name)
        # The marker counts only while the container it was written for is there.
        out = remote.ssh(host, f"if command -v podman >/dev/null 2>&1 && podman container exists {c}; then "
                         f"cat {f['standby']} 2>/dev/null; fi; true", timeout=30.0,
                         what=f"read container {wl.name}'s standby marker")
        text = (out or "").strip()
        return text or None

    def start(self, ctx: RunContext, wl: Workload, host: TargetHost) -> dict[str, Any]:
        """Start the container `deploy_stopped` created (no pull, no create), and return once it is healthy."""
        return start_on_host(self, wl, host, [f"podman start {container_name(wl.name)} >/dev/null"],
                             timeout=START_TIMEOUT_S, what=f"start container {wl.name}")

    # ------------------------------------------------------------------------------------------ the mirror
    def mirror(self, stack: Stack, wl: Workload, source: str, target: str) -> dict[str, Any]:
        """Keep the image at the target site's registry: copied by digest from the source site's registry when the
        target does not hold that digest (`liferaft replicate`, each round). A pinned image the target already holds
        needs nothing from the source (which may be gone). Returns the image's lag: 0 images behind, or raises."""
        from liferaft.providers.registry_oci import copy

        now = time.time()
        image = self.image(wl)
        dst = site_registry(stack, target)
        copied = False
        want = image.digest if image.pinned and dst.digest(image) == image.digest else None
        if want is None:
            src = site_registry(stack, source)
            want = src.require(image)
            if image.digest is not None and want != image.digest:
                raise RunFailed(f"{src.host} answered digest {want} for {image}")
            if dst.digest(image, want) != want:
                copy(src, dst, image, want)
                copied = True
        return {"image": str(image), "digest": want, "registry": dst.host, "copied": copied, "lag_images": 0,
                "lag_seconds": 0.0, "measured_at": now, "caught_up_at": now}

    # --------------------------------------------------------------------------------------------------- stop
    def stop(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        stop_on_host(ctx, self, wl, host, ["set -u", *stop_lines([wl.name])], timeout=STOP_TIMEOUT_S,
                     what=f"stop container {wl.name}", silent_timeout=SILENT_TIMEOUT_S)

    def remove(self, ctx: RunContext, wl: Workload, host: TargetHost) -> None:
        stop_on_host(ctx, self, wl, host, ["set -u", *self.teardown_lines(ctx.require_stack(), [wl])],
                     timeout=STOP_TIMEOUT_S, what=f"stop and remove container {wl.name}",
                     silent_timeout=SILENT_TIMEOUT_S)

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
        return fence_lines([w.name for w in workloads])

    def unfence_lines(self, stack: Stack, workloads: list[Workload]) -> list[str]:
        return fence_lines([w.name for w in workloads], undo=True)
