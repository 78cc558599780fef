"""The lab's container registries and its image, built offline.

Two `docker-registry` processes (Debian's CNCF distribution registry, serving the OCI distribution API over HTTP):
"aws-registry" stands in for the primary vendor's registry (ECR) and sits behind a fault proxy that is part of the
"aws" provider (`liferaft lab cut aws` takes it down with the rest of "aws"); "registry-b" is the alternate's.

No public registry is reachable, so the lab's image is built here from files this machine has: a busybox-static
root filesystem whose httpd serves `/healthz` (the example app's own image, Python with psycopg2 and boto3, is
built by liferaft.lab.app_image and pushed beside it). The image is written as
an OCI image layout with fixed timestamps, so its digest is the same on every machine with the same busybox, and
pushed with skopeo to the primary's registry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, ClassVar

from liferaft.errors import RunFailed, ToolMissing
from liferaft.lab._proc import http_status
from liferaft.lab.servers import LabServer

BUSYBOX = Path("/bin/busybox")
IMAGE_REPOSITORY = "microblog/web"
IMAGE_TAG = "1"
IMAGE_PORT = 8080
# PID 1 of the container: sh, which ends on TERM (busybox httpd as PID 1 ignores it, and `podman stop` would wait).
ENTRYPOINT = ["/bin/sh", "-c", "trap 'exit 0' TERM; \"$@\" & wait", "web"]


class RegistryServer(LabServer):
    """`docker-registry serve CONFIG`: a distribution registry on HTTP, its blobs under its data directory."""

    kind: ClassVar[str] = "registry"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.yml"

    def _prepare(self) -> None:
        self.config_path.write_text("\n".join([
            "version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true", "storage:",
            "  filesystem:", f"    rootdirectory: {self.data_dir}", "  delete:", "    enabled: true",
            "http:", f"  addr: {self.address}:{self.port}", "  relativeurls: true", ""]))

    def _argv(self) -> list[str]:
        exe = shutil.which("docker-registry")
        if exe is None:
            raise ToolMissing("docker-registry is not installed", hint="apt-get install docker-registry")
        return [exe, "serve", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            return http_status(self.url + "/v2/", timeout=1) == 200
        except OSError:
            return False

    def reset(self) -> None:
        raise NotImplementedError("restart the registry with an empty data directory instead")


# ------------------------------------------------------------------------------------------------- the image
def _tar_rootfs(files: dict[str, bytes], links: dict[str, str], dirs: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755, 0
            t.addfile(ti)
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o755 if name.startswith("bin/") else 0o644, 0
            t.addfile(ti, io.BytesIO(data))
        for name, target in sorted(links.items()):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, target, 0
            t.addfile(ti)
    return buf.getvalue()


def build_image(layout: Path, *, tag: str = IMAGE_TAG, port: int = IMAGE_PORT, version: str = "1") -> str:
    """Write the lab's image (busybox httpd serving /healthz and /version on `port`) as an OCI image layout in
    `layout`; returns its manifest digest. Deterministic: the same inputs give the same digest."""
    if not BUSYBOX.exists():
        raise ToolMissing(f"{BUSYBOX} is missing", hint="apt-get install busybox-static")
    raw = _tar_rootfs({"bin/busybox": BUSYBOX.read_bytes(), "www/healthz": b"ok\n",
                       "www/version": f"{version}\n".encode()},
                      {f"bin/{tool}": "busybox" for tool in ("sh", "httpd", "cat", "env", "ls", "sleep", "wget")},
                      ["bin", "www", "tmp", "etc"])
    return write_layout(layout, raw, {"Entrypoint": ENTRYPOINT, "Cmd": ["/bin/httpd", "-f", "-p", str(port), "-h", "/www"],
                                      "Env": ["PATH=/bin"], "ExposedPorts": {f"{port}/tcp": {}}},
                        "liferaft lab: busybox-static httpd serving /healthz", tag)


def write_layout(layout: Path, raw: bytes, config: dict[str, Any], created_by: str, tag: str, *,
                 compresslevel: int = 9) -> str:
    """An OCI image layout in `layout` of one layer (`raw`, an uncompressed tar) with the image `config` (the OCI
    config's "config" part), tagged `tag`: blobs, index.json, oci-layout. Returns the manifest digest;
    deterministic (the same inputs give the same digest)."""
    layout.mkdir(parents=True, exist_ok=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    layer, layer_size = blob(gzip.compress(raw, compresslevel=compresslevel, mtime=0))
    image = {"architecture": "amd64", "os": "linux", "config": config,
             "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
             "history": [{"created_by": created_by}]}
    cfg, cfg_size = blob(json.dumps(image, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer,
                            "size": layer_size}]}
    man, man_size = blob(json.dumps(manifest, sort_keys=True).encode())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man, "size": man_size,
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return man


def push(layout: Path, tag: str, registry_url: str, repository: str, *, timeout: float = 120.0) -> None:
    """Push the layout's image `tag` to `registry_url` (http://host:port) as `repository:tag` with skopeo."""
    exe = shutil.which("skopeo")
    if exe is None:
        raise ToolMissing("skopeo is not installed", hint="apt-get install skopeo")
    host = registry_url.split("://", 1)[1].rstrip("/")
    cp = subprocess.run([exe, "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
                         f"docker://{host}/{repository}:{tag}"], capture_output=True, text=True, timeout=timeout,
                        check=False, stdin=subprocess.DEVNULL)
    if cp.returncode != 0:
        raise RunFailed(f"pushing {repository}:{tag} to {host} failed: {cp.stderr.strip()[-500:]}")


def publish_image(work: Path, registry_url: str, *, tag: str = IMAGE_TAG, version: str = "1") -> dict[str, Any]:
    """Build the lab's image and push it to `registry_url`; returns {repository, tag, digest, reference}."""
    layout = work / f"image-{tag}"
    shutil.rmtree(layout, ignore_errors=True)
    digest = build_image(layout, tag=tag, version=version)
    push(layout, tag, registry_url, IMAGE_REPOSITORY)
    return {"repository": IMAGE_REPOSITORY, "tag": tag, "digest": digest,
            "reference": f"{IMAGE_REPOSITORY}@{digest}"}


# ------------------------------------------------------------------------------------------ the stack variant
def container_stack(stack_text: str, state: dict[str, Any], *, image: str | None = None,
                    service: str = "web") -> str:
    """The lab's stack file turned into its container variant: each site names its registry (the primary: the
    "aws" registry behind its fault proxy; alt-b: registry-b), and service `service` runs the lab's image (pinned
    by digest unless `image` says otherwise) instead of the example's playbook. No datasets: the busybox image
    keeps no data."""
    import yaml

    doc: dict[str, Any] = yaml.safe_load(stack_text)
    regs = state["registries"]
    # ECR's way: the "aws" provider's credentials log in (GetAuthorizationToken at moto, through the aws proxy).
    doc["sites"]["primary"]["registry"] = {"url": regs["aws-registry"]["url"], "vendor": "aws", "provider": "aws"}
    doc["sites"]["alt-b"]["registry"] = {"url": regs["registry-b"]["url"], "vendor": "registry-b"}
    img = state["image"]
    doc["services"] = {service: {"image": image or img["reference"], "ports": [IMAGE_PORT], "volumes": ["data:/data"],
                                 "env": {"MICROBLOG_TITLE": "containers"},
                                 "health": {"path": "/healthz", "port": IMAGE_PORT, "expect_status": 200}}}
    doc.pop("data", None)
    for rec in doc.get("dns", {}).get("records", []):
        rec["service"] = service
    text: str = yaml.safe_dump(doc, sort_keys=False)
    return "# The lab's container variant (liferaft.lab.registries.container_stack).\n" + text
