"""The example app (examples/microblog) against a real local PostgreSQL 15 and a real moto server.

The app runs as a subprocess of Debian's /usr/bin/python3 (psycopg2, boto3), exactly as on a lab host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from liferaft.lab import example
from liferaft.lab._proc import free_port
from liferaft.lab.servers import MotoServer

PG_BIN = Path("/usr/lib/postgresql/15/bin")
APP = example.EXAMPLE_DIR / "app" / "microblog.py"


@dataclass
class LocalPg:
    root: Path
    port: int
    password: str

    @property
    def dsn(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "dbname": "microblog", "user": "microblog",
                "password": self.password}

    def psql(self, sql: str, db: str = "postgres") -> str:
        cp = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                             str(PG_BIN / "psql"), "-h", str(self.root), "-p", str(self.port), "-d", db,
                             "-Atqc", sql], capture_output=True, text=True, check=True)
        return cp.stdout.strip()


def _as_postgres(argv: list[str]) -> None:
    subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv],
                   check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def local_pg() -> Iterator[LocalPg]:
    pw = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix=f"lr-mb-pg-{os.getpid()}-"))
    os.chown(root, pw.pw_uid, pw.pw_gid)
    port = free_port()
    _as_postgres([str(PG_BIN / "initdb"), "-D", str(root / "data"), "--auth-local=peer",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
    _as_postgres([str(PG_BIN / "pg_ctl"), "start", "-D", str(root / "data"), "-w", "-l", str(root / "log"),
                  "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"])
    pg = LocalPg(root, port, secrets.token_urlsafe(16))
    try:
        pg.psql(f"CREATE ROLE microblog LOGIN PASSWORD '{pg.password}'")
        pg.psql("CREATE DATABASE microblog OWNER microblog")
        yield pg
    finally:
        subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                        str(PG_BIN / "pg_ctl"), "stop", "-D", str(root / "data"), "-m", "immediate"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RunningApp:
    url: str
    proc: subprocess.Popen[bytes]
    config_path: Path
    bucket: str


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post_json(url: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def app(local_pg: LocalPg, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    bucket = "microblog-images"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="AKIDTEST",
                      aws_secret_access_key="x" * 20, config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=bucket)
    port = free_port()
    cfg = {"listen_host": "127.0.0.1", "listen_port": port,
           "db": {"host": "127.0.0.1", "port": local_pg.port, "name": "microblog", "user": "microblog",
                  "password": local_pg.password},
           "s3": {"endpoint_url": moto.url, "region": "us-east-1", "access_key_id": "AKIDTEST",
                  "secret_access_key": "x" * 20, "bucket": bucket}}
    d = tmp_path_factory.mktemp("app")
    path = d / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    with open(d / "app.log", "wb") as log:
        proc = subprocess.Popen(["/usr/bin/python3", "-B", str(APP), "--config", str(path)],
                                stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(url + "/healthz", 2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("app did not become healthy: " + (d / "app.log").read_text()[-2000:])
            time.sleep(0.1)
        yield RunningApp(url, proc, path, bucket)
    finally:
        proc.terminate()
        proc.wait(10)


def test_post_with_image_roundtrips_through_db_and_bucket(app: RunningApp, local_pg: LocalPg,
                                                          moto: MotoServer) -> None:
    """A post's body lands in PostgreSQL and its image in the bucket, and both read back equal."""
    image = os.urandom(70_000)
    status, post = _post_json(app.url + "/posts", {"author": "ada", "body": "hello",
                                                   "image": base64.b64encode(image).decode(),
                                                   "image_type": "image/png"})
    assert status == 201, post
    assert post["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    status, body = _get(f"{app.url}/posts/{post['id']}")
    assert status == 200 and json.loads(body)["author"] == "ada"
    status, got = _get(f"{app.url}/{post['image_key']}")
    assert status == 200 and got == image
    assert local_pg.psql(f"SELECT body FROM posts WHERE id = {post['id']}", "microblog") == "hello"
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="AKIDTEST",
                      aws_secret_access_key="x" * 20, config=Config(s3={"addressing_style": "path"}))
    head = s3.head_object(Bucket=app.bucket, Key=post["image_key"])
    assert head["Metadata"]["sha256"] == hashlib.sha256(image).hexdigest()


def test_raw_upload_list_and_errors(app: RunningApp) -> None:
    """Raw image upload works; listing is newest first; bad input is a 400, unknown ids a 404."""
    req = urllib.request.Request(f"{app.url}/posts?author=bob&body=raw", data=b"\x89PNG" + b"z" * 100,
                                 method="POST", headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
        pid = json.loads(r.read())["id"]
    status, body = _get(f"{app.url}/posts?limit=1")
    assert status == 200 and json.loads(body)["posts"][0]["id"] == pid
    assert _post_json(app.url + "/posts", {"body": "no author"})[0] == 400
    assert _get(f"{app.url}/posts/999999999")[0] == 404
    assert _get(f"{app.url}/images/../../etc/passwd")[0] == 404


def test_config_readable_by_others_is_refused(app: RunningApp, tmp_path: Path) -> None:
    """The app refuses a config file others can read (it holds secrets)."""
    bad = tmp_path / "config.json"
    shutil.copy(app.config_path, bad)
    os.chmod(bad, 0o644)
    cp = subprocess.run(["/usr/bin/python3", "-B", str(APP), "--config", str(bad)], capture_output=True,
                        text=True, timeout=20, check=False)
    assert cp.returncode == 2 and "readable by others" in cp.stderr


def test_healthz_says_which_part_failed(app: RunningApp, local_pg: LocalPg, moto: MotoServer) -> None:
    """/healthz is 503 naming the bucket when the bucket is gone, and 200 again when it is back."""
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="AKIDTEST",
                      aws_secret_access_key="x" * 20, config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="mb-health")
    cfg = json.loads(app.config_path.read_text())
    cfg["s3"]["bucket"] = "mb-health-missing"
    cfg["listen_port"] = port = free_port()
    path = app.config_path.parent / "health.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    proc = subprocess.Popen(["/usr/bin/python3", "-B", str(APP), "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        for _ in range(100):
            try:
                status, body = _get(url, 5)
                break
            except OSError:
                time.sleep(0.1)
        assert status == 503
        doc = json.loads(body)
        assert doc["database"] == "ok" and doc["bucket"].startswith("error")
        s3.create_bucket(Bucket="mb-health-missing")
        assert _get(url)[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_seed_and_ledger_prove_acknowledged_writes(app: RunningApp, local_pg: LocalPg, tmp_path: Path) -> None:
    """The seeder fills the app; every write the writer saw acknowledged is found; a deleted one is reported."""
    report = example.seed(app.url, posts=300, images=12, max_image_bytes=256 * 1024)
    assert report.posts == 300 and report.images == 12 and report.image_bytes > 12 * 2048
    assert int(local_pg.psql("SELECT count(*) FROM posts WHERE image_key IS NOT NULL", "microblog")) >= 12
    ledger = str(tmp_path / "ledger.sqlite")
    w = example.run_writer(app.url, ledger, rate=40, duration=2.0)
    assert w.acknowledged >= 60 and w.failed == 0
    check = example.verify_ledger(ledger, local_pg.dsn)
    assert check.ok and check.acknowledged == w.acknowledged
    victim = int(local_pg.psql("SELECT max(id) FROM posts", "microblog"))  # the last write of that run
    # Writes follow a URL lookup per write; failed lookups are failed (unacknowledged) writes in a measured window.
    lock, calls = threading.Lock(), [0]

    def flaky_url() -> str:
        with lock:
            calls[0] += 1
            n = calls[0]
        if 5 <= n < 15:
            raise OSError("name lookup failed")
        return app.url

    w2 = example.run_writer(flaky_url, str(tmp_path / "ledger2.sqlite"), rate=40, duration=1.0)
    assert w2.failed == 10 and w2.failure_windows and w2.max_unavailable_s > 0
    assert example.verify_ledger(str(tmp_path / "ledger2.sqlite"), local_pg.dsn).acknowledged == w2.acknowledged
    # Remove one acknowledged write at the "target": the ledger check must name it.
    local_pg.psql(f"DELETE FROM posts WHERE id = {victim}", "microblog")
    local_pg.psql(f"UPDATE posts SET body = body || 'x' WHERE id = {victim - 1}", "microblog")
    check = example.verify_ledger(ledger, local_pg.dsn)
    assert not check.ok and check.missing == (victim,) and check.mismatched == (victim - 1,)


@pytest.mark.lab
@pytest.mark.slow
def test_lab_up_deploys_and_seeds_the_example(lab: Any, tmp_path: Path) -> None:
    """`lab up` leaves the app on host a healthy from the root namespace, seeded, its images in the aws bucket,
    and a write run against it verifiable through the ledger at host a's database."""
    info = lab.info
    state = json.loads(lab.state_file.read_text())
    assert state["app"]["deployed"] is True, state["app"]
    print(f"\nlab example deploy: {json.dumps({k: v for k, v in state['app'].items() if k != 'seed'})}")
    url = f"http://{info.primary_address}:{info.app_port}"
    status, body = _get(url + "/healthz")
    assert status == 200, body
    status, body = _get(url + "/posts?limit=1")
    assert json.loads(body)["posts"][0]["id"] >= example.LAB_POSTS
    s3 = boto3.client("s3", endpoint_url=info.direct["aws"], region_name="us-east-1",
                      aws_access_key_id=info.secret("aws_access_key_id"),
                      aws_secret_access_key=info.secret("aws_secret_access_key"),
                      config=Config(s3={"addressing_style": "path"}))
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="microblog-images")
            for o in p.get("Contents", [])]
    assert len(keys) >= example.LAB_IMAGES
    ledger = str(tmp_path / "ledger.sqlite")
    w = example.run_writer(url, ledger, rate=20, duration=1.5)
    assert w.acknowledged > 0
    dsn = {"host": info.primary_address, "port": 5432, "dbname": "microblog", "user": "microblog",
           "password": info.secret("db_password")}
    assert example.verify_ledger(ledger, dsn).ok
