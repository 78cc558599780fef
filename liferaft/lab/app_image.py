"""The example app's container image (the microblog, examples/microblog/app), built offline from this machine's files.

No public registry is reachable and a Debian root filesystem takes minutes to build, so the image carries what the
app runs on here, copied as it is: /usr/bin/python3 (Debian's), its standard library (without tests, IDLE, Tk,
ensurepip, lib2to3), the dist-packages the app imports (psycopg2, boto3 and what they import: found by importing the
app and making one S3 client, then copied whole; botocore with only the S3 and STS models), every shared library
those need (by `ldd`), the app and its container entrypoint (examples/microblog/container/entrypoint.py: the app's
config written from the environment liferaft gives a container service). The same Debian packages the playbook
variant runs on, so a drill compares the two ways of shipping one app.

Built once per machine into `CACHE` (an OCI image layout, keyed by a hash of the recipe, the app's files and the
copied packages' versions: a changed app builds a new image), then pushed at every `lab up` (skopeo, about a
second). Deterministic: fixed timestamps and order, so the same machine gives the same digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from liferaft.errors import RunFailed, ToolMissing

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "microblog" / "app" / "microblog.py"
ENTRYPOINT_FILE = REPO / "examples" / "microblog" / "container" / "entrypoint.py"
PYTHON = Path("/usr/bin/python3")
DIST = Path("/usr/lib/python3/dist-packages")
CACHE = Path(os.environ.get("LIFERAFT_IMAGE_CACHE", "/var/cache/liferaft/images"))
REPOSITORY = "microblog/app"
TAG = "1"
PORT = 8080
RECIPE = "liferaft-microblog-image-4"
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "venv"}
# The dist-packages the app imports, found at build time; these name the cache key (their versions).
KEY_PACKAGES = ("boto3", "botocore", "psycopg2", "s3transfer", "urllib3")
BOTOCORE_MODELS = ("s3", "sts")
OSSL_MODULES = Path("/usr/lib/x86_64-linux-gnu/ossl-modules")

# What the app imports, and what an S3 call and a PostgreSQL connect load lazily: run by /usr/bin/python3.
_FIND = """
import sys, json
sys.path.insert(0, sys.argv[1])
import microblog, boto3, psycopg2
c = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y",
                 endpoint_url="http://127.0.0.1:9")
try:
    c.head_bucket(Bucket="x")
except Exception:
    pass
try:
    psycopg2.connect(host="127.0.0.1", port=9, user="u", password="p", dbname="d", connect_timeout=1)
except Exception:
    pass
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if "/dist-packages/" in f:
        tops.add(f.split("/dist-packages/", 1)[1].split("/", 1)[0])
import sysconfig
print(json.dumps({"tops": sorted(t for t in tops if not t.startswith("_distutils")),
                  "stdlib": sysconfig.get_paths()["stdlib"], "executable": sys.executable}))
"""


def cache_key() -> str:
    """A hash of the recipe, the app's files and the copied packages (their files' sizes and times): cheap."""
    h = hashlib.sha256(RECIPE.encode())
    for f in (APP, ENTRYPOINT_FILE, Path(__file__)):
        h.update(f.read_bytes())
    for p in (PYTHON.resolve(), *(DIST / name / "__init__.py" for name in KEY_PACKAGES)):
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _libs(paths: list[Path]) -> set[str]:
    """The shared libraries (as ldd names them) the binaries and extension modules `paths` load."""
    found: set[str] = set()
    for chunk in range(0, len(paths), 200):
        out = subprocess.run(["ldd", *map(str, paths[chunk:chunk + 200])], capture_output=True, text=True,
                             check=False, timeout=120).stdout
        for line in out.splitlines():
            parts = line.split()
            for part in parts:
                if part.startswith("/") and not part.endswith(":"):
                    found.add(part)
    return found


class _Tree:
    """A root filesystem as tar entries, added once each, written sorted with fixed timestamps."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, Any]] = {}  # path -> ("dir"|"file"|"link", mode|(src, mode)|target)

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:i]), ("dir", 0o755))

    def dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path] = ("dir", mode)

    def link(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path] = ("link", target)

    def file(self, path: str, src: Path | bytes, mode: int | None = None) -> None:
        self._parents(path)
        if mode is None:
            mode = 0o755 if isinstance(src, Path) and os.access(src, os.X_OK) else 0o644
        self.entries[path] = ("file", (src, mode))

    def host_path(self, path: str) -> None:
        """A file of this machine at its own path (merged /usr: /lib/x -> usr/lib/x), symlinks followed and kept."""
        p = Path(path)
        rel = os.path.normpath(path).lstrip("/")
        for short in ("lib/", "lib64/", "bin/", "sbin/"):
            if rel.startswith(short) and Path("/" + short.rstrip("/")).is_symlink():
                rel = "usr/" + rel
        real = p.resolve()
        real_rel = str(real).lstrip("/")
        if real_rel != rel:
            self.link(rel, os.path.relpath(real_rel, os.path.dirname(rel) or "."))
        self.file(real_rel, real)

    def tree(self, src: Path, dest: str, skip: set[str] = frozenset()) -> list[Path]:  # type: ignore[assignment]
        """Copy the directory `src` to `dest`; returns the extension modules (.so) copied."""
        sos: list[Path] = []
        for root, dirs, names in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in skip or Path(root) != src)
            rel_root = os.path.relpath(root, src)
            base = dest if rel_root == "." else f"{dest}/{rel_root}"
            self.dir(base)
            for name in sorted(names):
                f = Path(root) / name
                if f.is_symlink():
                    self.link(f"{base}/{name}", os.readlink(f))
                elif f.is_file():
                    self.file(f"{base}/{name}", f)
                    if name.endswith(".so") or ".so." in name:
                        sos.append(f)
        return sos

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                kind, what = self.entries[path]
                ti = tarfile.TarInfo(path)
                ti.mtime = 0
                if kind == "dir":
                    ti.type, ti.mode = tarfile.DIRTYPE, what
                    t.addfile(ti)
                elif kind == "link":
                    ti.type, ti.linkname = tarfile.SYMTYPE, what
                    t.addfile(ti)
                else:
                    src, mode = what
                    data = src.read_bytes() if isinstance(src, Path) else src
                    ti.size, ti.mode = len(data), mode
                    t.addfile(ti, io.BytesIO(data))
        return buf.getvalue()


def rootfs() -> _Tree:
    """The image's root filesystem (see the module's docstring)."""
    if not PYTHON.exists():
        raise ToolMissing(f"{PYTHON} is missing", hint="apt-get install python3 python3-psycopg2 python3-boto3")
    cp = subprocess.run([str(PYTHON), "-c", _FIND, str(APP.parent)], capture_output=True, text=True, check=False,
                        timeout=120, env={"PATH": "/usr/bin:/bin"})
    if cp.returncode != 0:
        raise ToolMissing("the example app's modules do not import with /usr/bin/python3: "
                          f"{cp.stderr.strip()[-300:]}", hint="apt-get install python3-psycopg2 python3-boto3")
    found = json.loads(cp.stdout)
    t = _Tree()
    for d in ("tmp", "var/tmp"):
        t.dir(d, 0o1777)
    for d in ("root", "run", "proc", "sys", "dev", "etc"):
        t.dir(d, 0o700 if d == "root" else 0o755)
    for short in ("bin", "lib", "lib64", "sbin"):
        if Path("/" + short).is_symlink():
            t.link(short, f"usr/{short}")
    t.file("etc/passwd", b"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:"
                         b"/usr/sbin/nologin\n")
    t.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    exe = Path(found["executable"]).resolve()
    binaries = [exe]
    t.host_path(str(exe))
    t.link("usr/bin/python3", exe.name)
    stdlib = Path(found["stdlib"])
    binaries += t.tree(stdlib, str(stdlib).lstrip("/"),
                       STDLIB_SKIP | {d.name for d in stdlib.glob("config-*")} | {"site-packages"})
    for top in found["tops"]:
        src = DIST / top
        dest = f"{str(DIST).lstrip('/')}/{top}"
        if src.is_dir():
            skip = {"data"} if top == "botocore" else set()
            binaries += t.tree(src, dest, skip)
        elif src.is_file():
            t.file(dest, src)
            if top.endswith(".so"):
                binaries.append(src)
    data = DIST / "botocore" / "data"
    data_dest = f"{str(data).lstrip('/')}"
    t.dir(data_dest)
    for f in sorted(data.iterdir()):
        if f.is_file():
            t.file(f"{data_dest}/{f.name}", f)
        elif f.name in BOTOCORE_MODELS:
            t.tree(f, f"{data_dest}/{f.name}")
    for mod in sorted(OSSL_MODULES.glob("*.so")):  # OpenSSL's providers (cryptography loads the legacy one)
        t.host_path(str(mod))
        binaries.append(mod)
    for lib in sorted(_libs(binaries)):
        t.host_path(lib)
    t.file("app/microblog.py", APP, 0o644)
    t.file("app/entrypoint.py", ENTRYPOINT_FILE, 0o755)
    return t


def build(layout: Path, *, tag: str = TAG) -> str:
    """Write the image as an OCI image layout in `layout` (replaced); returns its manifest digest."""
    from liferaft.lab.registries import write_layout

    tmp = layout.with_name(layout.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    man = write_layout(tmp, rootfs().tar(),
                       {"Entrypoint": ["/usr/bin/python3", "/app/entrypoint.py"], "Cmd": [],
                        "Env": ["PATH=/usr/bin:/bin", "HOME=/root", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"],
                        "WorkingDir": "/app", "ExposedPorts": {f"{PORT}/tcp": {}}, "StopSignal": "SIGTERM"},
                       f"liferaft lab: {RECIPE} (the microblog on this machine's python3, psycopg2, boto3)", tag,
                       compresslevel=6)
    (tmp / "digest").write_text(man + "\n")
    shutil.rmtree(layout, ignore_errors=True)
    tmp.rename(layout)
    return man


def cached_layout(fallback: Path) -> tuple[Path, str, bool]:
    """The image's layout, built once per machine under `CACHE` (or `fallback` when that is not writable):
    (layout, manifest digest, built now)."""
    key = cache_key()
    for base in (CACHE, fallback):
        layout = base / f"microblog-{key}"
        if (layout / "digest").is_file() and (layout / "index.json").is_file():
            return layout, (layout / "digest").read_text().strip(), False
    for base in (CACHE, fallback):
        try:
            base.mkdir(parents=True, exist_ok=True)
            for old in base.glob("microblog-*"):  # images of older recipes or app versions
                shutil.rmtree(old, ignore_errors=True)
            layout = base / f"microblog-{key}"
            return layout, build(layout), True
        except PermissionError:
            continue
    raise RunFailed(f"cannot write the example app's image under {CACHE} or {fallback}")


def publish(work: Path, registry_url: str) -> dict[str, Any]:
    """The example app's image (cached build) pushed to `registry_url` as REPOSITORY:TAG; returns {repository, tag,
    digest, reference, built}."""
    from liferaft.lab.registries import push

    layout, digest, built = cached_layout(work / "image-cache")
    push(layout, TAG, registry_url, REPOSITORY)
    return {"repository": REPOSITORY, "tag": TAG, "digest": digest, "reference": f"{REPOSITORY}@{digest}",
            "built": built}
