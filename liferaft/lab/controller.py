"""The lab's long-lived controlling process: `python -m liferaft.lab.controller --dir LABDIR`.

Started detached by `Lab.up()`. It starts the hosts, the provider servers and their fault proxies (all die with it:
pdeathsig), creates the DNS zone, writes secrets (0600) and the ready stack file, deploys the example app when
`liferaft.lab.example` exists, then writes `<labdir>/lab.json` and waits. SIGTERM makes it tear everything down and
exit; SIGKILL makes the kernel kill its children, and the next `up` sweeps the namespaces and links left behind.

Progress goes to `<labdir>/events.jsonl` (one JSON object a line) for `Lab.up()` to render; never a secret.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from liferaft.lab.hosts import LabHosts, proc_start_time

ZONE = "microblog.test."
APP_FQDN = "www.microblog.test"
APP_PORT = 8080
HOST_NAMES = ("a", "b", "c")
# provider name in the stack file -> (proxy flavour, server kind)
PROVIDERS = {"aws": "aws", "objstore": "s3", "dnshost": "powerdns", "hcloud": "hcloud",
             "digitalocean": "digitalocean", "aws-registry": "registry", "registry-b": "registry"}
# A fault proxy that belongs to a provider: cutting the provider cuts it too (the primary's image registry is
# part of "aws", as ECR goes with the AWS account).
PART_OF = {"aws-registry": "aws"}
EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "app"
# The example's second service, the worker (app/worker.py): its Redis on its host and its media folder.
WORKER_REDIS_PORT = 6379
WORKER_MEDIA = "/var/lib/liferaft/worker/media"
WORKER_STOP = ("[ -d /run/systemd/system ] && systemctl stop liferaft-worker.service || start-stop-daemon --stop "
               "--pidfile /run/liferaft/worker/worker.pid --retry TERM/10/KILL/5 --remove-pidfile --oknodo")
WORKER_START = "[ -d /run/systemd/system ] && systemctl start liferaft-worker.service || /etc/liferaft/worker/start"


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class Controller:
    def __init__(self, directory: Path, *, example: bool = True) -> None:
        self.dir = directory
        self.example = example
        self.events_file = directory / "events.jsonl"
        self.state_file = directory / "lab.json"
        self.secrets_dir = directory / "secrets"
        self.hosts = LabHosts(directory=directory / "hosts", names=HOST_NAMES)
        self.servers: dict[str, Any] = {}
        self.proxies: dict[str, Any] = {}
        self.stop = threading.Event()
        self.state: dict[str, Any] = {}
        self.t0 = time.monotonic()

    def emit(self, kind: str, message: str = "", **data: Any) -> None:
        line = {"ts": round(time.time(), 3), "elapsed": round(time.monotonic() - self.t0, 2), "kind": kind,
                "message": message, **data}
        with open(self.events_file, "a") as f:
            f.write(json.dumps(line) + "\n")

    # ------------------------------------------------------------------ up
    def up(self) -> None:
        from liferaft.lab.clouds.server import DigitalOceanCloudServer, HetznerCloudServer
        from liferaft.lab.proxy import FaultProxy
        from liferaft.lab.registries import RegistryServer, publish_image
        from liferaft.lab.servers import MotoServer, PebbleServer, PowerDNSServer, S3rverServer

        for sub in ("hosts", "servers", "proxies", "secrets", "state"):  # every up starts from a clean slate
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        for f in ("liferaft.yaml", "example-deploy.err"):
            (self.dir / f).unlink(missing_ok=True)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        self.emit("lab.step", "starting hosts a, b, c")
        self.hosts.up(timeout=30)
        bridge = self.hosts.bridge_address
        self.emit("lab.step", f"hosts up on {self.hosts.subnet}", bridge=bridge)

        pdns_key = secrets.token_urlsafe(24)
        self._write_secrets(pdns_key)
        work = self.dir / "servers"
        self.servers = {
            "aws": MotoServer(work, bridge, name="moto"),
            "objstore": S3rverServer(work, bridge, name="s3rver"),
            "dnshost": PowerDNSServer(work, bridge, api_key=pdns_key, name="pdns"),
            # A Hetzner-compatible cloud that starts with no servers; each server it creates is a real host on the
            # lab bridge (not in the stack file: stacks that move there name it themselves).
            "hcloud": HetznerCloudServer(work, bridge, bridge=self.hosts.bridge, bridge_address=bridge,
                                         lab_id=self.hosts.id, token=(self.secrets_dir / "hcloud_token").read_text(),
                                         name="hcloud"),
            # The same for DigitalOcean's API v2 (droplets, firewalls, tags): also not in the stack file.
            "digitalocean": DigitalOceanCloudServer(
                work, bridge, bridge=self.hosts.bridge, bridge_address=bridge, lab_id=self.hosts.id,
                token=(self.secrets_dir / "do_token").read_text(), name="digitalocean"),
            # Container registries (liferaft.lab.registries): the primary vendor's, and the alternate's.
            "aws-registry": RegistryServer(work, bridge, name="aws-registry"),
            "registry-b": RegistryServer(work, bridge, name="registry-b"),
        }
        for name, server in self.servers.items():
            self.emit("lab.step", f"starting {server.kind} ({name})")
            server.start()
            proxy = FaultProxy(name, self.dir / "proxies", bridge, server.url, PROVIDERS[name])
            proxy.start()
            self.proxies[name] = proxy
            self.emit("lab.step", f"{name}: {server.kind} at {server.url}, fault proxy at {proxy.url}")

        # The example's container image (liferaft.lab.app_image: built once per machine) is pushed beside the rest.
        app_image: dict[str, Any] = {}
        app_push = threading.Thread(target=_publish_app_image, args=(work, self.servers["aws-registry"].url,
                                                                     app_image), daemon=True)
        app_push.start()
        image = publish_image(work, self.servers["aws-registry"].url)
        self.emit("lab.step", f"image {image['reference']} built (busybox httpd) and pushed to aws-registry")
        pdns = self.servers["dnshost"]
        a = self.hosts["a"]
        pdns.create_zone(ZONE, {("ns1", "A"): [bridge], ("www", "A"): [a.address]}, ttl=30,
                         nameservers=[f"ns1.{ZONE}"])
        self.emit("lab.step", f"zone {ZONE} served at {bridge}:{pdns.dns_port}; www -> host a ({a.address})")
        # The ACME CA (pebble, < 1 s to start): DNS-01 answered through the zone above. Not a provider of the stack
        # file (no fault proxy); stacks name its directory in `services.<name>.tls.acme`.
        acme = PebbleServer(work, bridge, dns_server=f"{bridge}:{pdns.dns_port}", name="acme")
        acme.start()
        self.servers["acme"] = acme
        self.emit("lab.step", f"acme: pebble at {acme.url}, issuing under {acme.issuer_ca}")

        stack_file = self.dir / "liferaft.yaml"
        stack_file.write_text(render_stack(self.hosts, self.proxies, f"{bridge}:{pdns.dns_port}", self.dir))
        self.state = self._state(app={"deployed": False, "reason": "deploying"})
        self.state["image"] = image
        app_push.join()
        self._write_container_example(stack_file, app_image)
        infra_s = round(time.monotonic() - self.t0, 2)
        self.state["timings"] = {"infrastructure_s": infra_s}
        _write_json(self.state_file, self.state)
        self.emit("lab.step", f"stack file written: {stack_file} (infrastructure up in {infra_s} s)")
        self.state["app"] = self._deploy_example()
        self.state["timings"].update(example_s=round(time.monotonic() - self.t0 - infra_s, 2),
                                     total_s=round(time.monotonic() - self.t0, 2))
        self.state["status"] = "ready"
        _write_json(self.state_file, self.state)
        self.emit("lab.ready", "lab ready", app=self.state["app"])

    def _write_container_example(self, stack_file: Path, app_image: dict[str, Any]) -> None:
        """The example's container variant beside liferaft.yaml (liferaft.lab.container_example), once its image is
        in the primary's registry."""
        from liferaft.lab.container_example import FILE_NAME, container_example_stack

        target = stack_file.with_name(FILE_NAME)
        target.unlink(missing_ok=True)
        if "error" in app_image:
            self.emit("lab.warning", f"the example's container image: {app_image['error']}"[:500])
            return
        self.state["app_image"] = app_image
        target.write_text(container_example_stack(stack_file.read_text(), self.state))
        self.emit("lab.step", f"example app image {app_image['reference']} ({'built' if app_image['built'] else 'cached'}"
                  f") pushed to aws-registry; container variant: {target}")

    def _write_secrets(self, pdns_key: str) -> None:
        from liferaft.lab.servers import S3rverServer

        s = self.secrets_dir
        _write_secret(s / "aws_access_key_id", "AKIA" + secrets.token_hex(8).upper())
        _write_secret(s / "aws_secret_access_key", secrets.token_urlsafe(30))
        _write_secret(s / "s3rver_key", S3rverServer.access_key)
        _write_secret(s / "s3rver_secret", S3rverServer.secret_key)
        _write_secret(s / "pdns_api_key", pdns_key)
        _write_secret(s / "hcloud_token", secrets.token_urlsafe(48))
        _write_secret(s / "do_token", "dop_v1_" + secrets.token_hex(32))
        _write_secret(s / "db_password", secrets.token_urlsafe(18))
        _write_secret(s / "worker_redis_password", secrets.token_urlsafe(18))
        _write_secret(s / "id_ed25519", self.hosts.client_key.read_text())
        (s / "id_ed25519.pub").write_text(Path(str(self.hosts.client_key) + ".pub").read_text())

    def _deploy_example(self) -> dict[str, Any]:
        if not self.example:
            return {"deployed": False, "reason": "example app not deployed: skipped (--no-example)"}
        if importlib.util.find_spec("liferaft.lab.example") is None:
            reason = "example app not deployed: liferaft.lab.example missing"
            self.emit("lab.warning", reason)
            return {"deployed": False, "reason": reason}
        from liferaft.lab.core import LabInfo

        self.emit("lab.step", "deploying the example app at site primary (host a) with the deploy engine "
                  "(`liferaft deploy`), then seeding it")
        t = time.monotonic()
        try:
            from liferaft.lab import example

            result = example.deploy_and_seed(LabInfo.from_state(self.state), on_event=self._on_task)
        except Exception as e:  # noqa: BLE001 - the lab stays up for debugging; status shows why
            self.emit("lab.warning", f"example app deploy failed: {e}")
            (self.dir / "example-deploy.err").write_text(traceback.format_exc())
            return {"deployed": False, "reason": f"deploy failed: {e}"[:2000]}
        took = round(time.monotonic() - t, 1)
        self.emit("lab.step", f"example app deployed (run {result.get('run')}, journaled in {result.get('state_dir')})"
                  f" and seeded in {took} s")
        extra = result if isinstance(result, dict) else {}
        return {"deployed": True, "seconds": took, **{k: v for k, v in extra.items() if _json_safe(v)}}

    def _on_task(self, ev: Any) -> None:
        kind = getattr(ev, "kind", "")
        if kind == "task.start":
            self.emit("lab.deploy", f"{ev.task}", host=ev.host)
        elif kind in ("task.failed", "unreachable"):
            self.emit("lab.warning", f"{kind} {ev.host}: {ev.task}: {ev.message}"[:500])

    def _state(self, app: dict[str, Any]) -> dict[str, Any]:
        pdns = self.servers["dnshost"]
        a = self.hosts["a"]
        return {
            "version": 1, "status": "starting", "directory": str(self.dir),
            "controller": {"pid": os.getpid(), "start_time": proc_start_time(os.getpid()),
                           "log": str(self.dir / "controller.log")},
            "stack_file": str(self.dir / "liferaft.yaml"), "secrets_dir": str(self.secrets_dir),
            "bridge_address": self.hosts.bridge_address,
            "hosts": self.hosts.to_dict(),
            "servers": {n: {**s.to_dict(), "start_time": proc_start_time(s.pid) if s.pid else None}
                        for n, s in self.servers.items()},
            "proxies": {n: {**p.to_dict(), "start_time": proc_start_time(p.pid) if p.pid else None,
                            "workdir": str(p.workdir), **({"part_of": PART_OF[n]} if n in PART_OF else {})}
                        for n, p in self.proxies.items()},
            "registries": {n: {"url": self.proxies[n].url, "direct": s.url, "vendor": PART_OF.get(n, n)}
                           for n, s in self.servers.items() if s.kind == "registry" and n in self.proxies},
            "dns_server": f"{pdns.address}:{pdns.dns_port}", "zone": ZONE, "app_fqdn": APP_FQDN,
            "app_port": APP_PORT, "primary_address": a.address, "alternate_sites": ["alt-b"],
            "primary_site": "primary", "artifact": str(EXAMPLE_APP), "app": app,
            "modes": {n: "forward" for n in self.proxies}, "cut_hosts": [],
            **({"acme": {"directory": acme.url, "ca_bundle": str(acme.ca_bundle), "issuer_ca": str(acme.issuer_ca)}}
               if (acme := self.servers.get("acme")) is not None else {}),
        }

    # ------------------------------------------------------------------ down
    def down(self) -> None:
        self.emit("lab.step", "controller stopping")
        for proxy in self.proxies.values():
            _quietly(proxy.stop)
        for server in self.servers.values():
            _quietly(server.stop)
        problems = self.hosts.down()
        self.emit("lab.stopped", "controller stopped", problems=problems)


def _quietly(fn: Any) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - teardown continues; leftovers are swept by pid
        traceback.print_exc()


def _json_safe(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _q(value: str) -> str:
    return json.dumps(value)


def render_stack(hosts: LabHosts, proxies: dict[str, Any], nameserver: str, lab_dir: Path | None = None) -> str:
    """The lab's stack file, in exactly the shape of the documented example; secrets by `file:` reference."""
    aws, obj, dns = proxies["aws"], proxies["objstore"], proxies["dnshost"]

    def host_entry(name: str) -> str:
        h = hosts[name]
        return (f"      - name: {name}\n        address: {h.address}\n        port: {h.port}\n"
                f"        host_keys:\n          - {_q(h.host_public_key)}\n")

    return f"""# Written by `liferaft lab up`: the example microblog stack pointed at the local lab.
# Secrets are references to files (mode 0600) in ./secrets, never inline.
version: 1
name: microblog

providers:
  aws:
    type: aws
    region: us-east-1
    endpoint: {aws.url}
    credentials:
      access_key_id: file:secrets/aws_access_key_id
      secret_access_key: file:secrets/aws_secret_access_key

  colo-a:
    type: ssh
    user: root
    private_key: file:secrets/id_ed25519
    hosts:
{host_entry("a")}
  colo-b:
    type: ssh
    user: root
    private_key: file:secrets/id_ed25519
    hosts:
{host_entry("b")}{host_entry("c")}
  objstore:
    type: libcloud
    storage:
      driver: s3
      host: {obj.address}
      port: {obj.port}
      secure: false
    credentials:
      key: file:secrets/s3rver_key
      secret: file:secrets/s3rver_secret

  dnshost:
    type: libcloud
    dns:
      driver: powerdns
      host: {dns.address}
      port: {dns.port}
      secure: false
      api_version: v1
    credentials:
      key: file:secrets/pdns_api_key

sites:
  primary:
    compute: colo-a
    objects: aws
  alt-b:
    compute: colo-b
    objects: objstore

primary: primary
alternates: [alt-b]

services:
  web:
    playbook: microblog.yml
    artifact: {_q(str(EXAMPLE_APP))}
    ports: [{APP_PORT}]
    health:
      path: /healthz
      port: {APP_PORT}
      expect_status: 200
    databases: [blog]
    buckets: [images]
  worker:
    playbook: microblog-worker.yml
    artifact: {_q(str(EXAMPLE_APP))}
    env:
      MICROBLOG_WEB_URL: "http://127.0.0.1:{APP_PORT}"
      MICROBLOG_WORKER_REDIS: "127.0.0.1:{WORKER_REDIS_PORT}"
      MICROBLOG_WORKER_MEDIA: {WORKER_MEDIA}
    secrets:
      MICROBLOG_WORKER_REDIS_PASSWORD: file:secrets/worker_redis_password

data:
  databases:
    blog:
      engine: postgresql
      version: 15
      name: microblog
      owner: microblog
      password: file:secrets/db_password
      port: 5432
      migrate: logical
      ledger: {{table: posts, key: id, value: body}}
  buckets:
    images:
      name: microblog-images
  redis:
    worker:
      port: {WORKER_REDIS_PORT}
      password: file:secrets/worker_redis_password
  directories:
    media:
      path: {WORKER_MEDIA}
      writers:
        stop: {_q(WORKER_STOP)}
        start: {_q(WORKER_START)}

dns:
  provider: dnshost
  zone: {ZONE}
  records:
    - name: www
      type: A
      ttl: 30
      service: web
  drill_record: drill
  nameserver: {_q(nameserver)}

objectives:
  rto: 5m
  rpo: 0s
{_drill_hooks(lab_dir)}"""


def _drill_hooks(lab_dir: Path | None) -> str:
    """The lab registers its cut for no-notice drills as the stack's drill hooks (protocol: liferaft.drill.cut)."""
    if lab_dir is None:
        return ""
    base = [sys.executable, "-m", "liferaft", "lab", "--lab-dir", str(lab_dir)]
    return ("\n# No-notice drills cut the primary off through the lab's fault proxies and host cuts.\n"
            f"drill:\n  cut: {json.dumps([*base, 'drill-cut'])}\n  heal: {json.dumps([*base, 'drill-heal'])}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.lab.controller")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--no-example", action="store_true", help="do not deploy the example app")
    args = p.parse_args(argv)
    ctl = Controller(args.dir.resolve(), example=not args.no_example)
    def abort_startup(signum: int, frame: Any) -> None:
        ctl.stop.set()
        raise SystemExit(f"signal {signum} while starting")

    signal.signal(signal.SIGTERM, abort_startup)  # stop promptly even in the middle of up()
    signal.signal(signal.SIGINT, abort_startup)
    try:
        ctl.up()
    except BaseException as e:  # noqa: BLE001 - report, tear down, exit non-zero
        traceback.print_exc()
        ctl.emit("lab.failed", f"lab up failed: {e}")
        ctl.down()
        return 1
    signal.signal(signal.SIGTERM, lambda *_: ctl.stop.set())
    signal.signal(signal.SIGINT, lambda *_: ctl.stop.set())
    print(f"lab ready after {time.monotonic() - ctl.t0:.1f} s", flush=True)
    while not ctl.stop.wait(1.0):
        pass
    ctl.down()
    return 0


def _publish_app_image(work: Path, registry_url: str, out: dict[str, Any]) -> None:
    """Thread: the example's container image pushed to `registry_url`; `out` gets its reference, or the error."""
    from liferaft.lab import app_image

    try:
        out.update(app_image.publish(work, registry_url))
    except Exception as e:  # noqa: BLE001 - the lab runs without the container variant; status says why
        out["error"] = f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main())

