"""ansible-runner adapter and shipped playbooks against real lab hosts (netns + sshd), real PostgreSQL, real moto.

Proves: PostgreSQL + the microblog deploy to a host and /healthz answers 200 from the root namespace; a re-run changes
nothing; a host whose key does not match the pinned key is refused; secret values never appear on any process's
command line, in Ansible's events, in its artifacts or in errors; no ssh mux process or private data dir is left.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.configure import PlaybookFailed, TargetHost, TaskEvent, run_playbook
from liferaft.configure.deploy import deploy_service
from liferaft.lab import example
from liferaft.lab.servers import MotoServer
from liferaft.stack import load_stack

pytestmark = pytest.mark.lab

DB_PASSWORD = "dbpw-" + os.urandom(9).hex()
AWS_SECRET = "awssecret-" + os.urandom(12).hex()
AWS_KEY_ID = "AKIA" + os.urandom(8).hex().upper()


def _target(lab_hosts: Any, name: str, *, key_of: str | None = None) -> TargetHost:
    h = lab_hosts[name]
    key = lab_hosts[key_of or name].host_public_key
    return TargetHost(name=name, address=h.address, port=h.port, user=h.user, host_keys=(key,),
                      private_key_file=str(lab_hosts.client_key))


class CmdlineWatch:
    """Samples every process's command line while a run is in flight, looking for secret values."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = needles
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for p in Path("/proc").iterdir():
                if not p.name.isdigit():
                    continue
                try:
                    cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                for n in self.needles:
                    if n in cmd:
                        self.hits.append(cmd[:200].replace(n, "<SECRET>"))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> CmdlineWatch:  # noqa: PYI034 - plain class, not subclassed
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


@pytest.fixture(scope="module")
def bridge_moto(lab_hosts: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server on the lab bridge, so the app on a lab host can reach its bucket."""
    server = MotoServer(tmp_path_factory.mktemp("moto-bridge"), address=lab_hosts.bridge_address).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack_file(lab_hosts: Any, bridge_moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stack")
    sec = d / "secrets"
    sec.mkdir(mode=0o700)
    for name, value in (("db_password", DB_PASSWORD), ("aws_key", AWS_KEY_ID), ("aws_secret", AWS_SECRET)):
        (sec / name).write_text(value + "\n")
        os.chmod(sec / name, 0o600)
    a = lab_hosts["a"]
    (d / "liferaft.yaml").write_text(f"""
version: 1
name: microblog
providers:
  aws:
    type: aws
    region: us-east-1
    endpoint: {bridge_moto.url}
    credentials: {{access_key_id: "file:secrets/aws_key", secret_access_key: "file:secrets/aws_secret"}}
  colo-a:
    type: ssh
    user: root
    private_key: "file:{lab_hosts.client_key}"
    hosts:
      - {{name: a, address: {a.address}, port: {a.port}, host_keys: ["{a.host_public_key}"]}}
sites:
  primary: {{compute: colo-a, objects: aws}}
primary: primary
alternates: []
services:
  web:
    playbook: microblog.yml
    artifact: "{example.EXAMPLE_DIR / 'app'}"
    ports: [8080]
    health: {{path: /healthz, port: 8080, expect_status: 200}}
    databases: [blog]
    buckets: [images]
data:
  databases:
    blog: {{engine: postgresql, version: 15, name: microblog, owner: microblog,
            password: "file:secrets/db_password", port: 5432, migrate: logical}}
  buckets:
    images: {{name: microblog-images}}
""")
    return d / "liferaft.yaml"


def _scan_dir(pdd: Path, needles: list[str]) -> list[str]:
    found = []
    for f in pdd.rglob("*"):
        if f.is_file() and f.name != "secret_vars.json":
            data = f.read_bytes()
            found += [f"{f.relative_to(pdd)}" for n in needles if n.encode() in data]
    return found


def _mux_processes(root: str) -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if root in cmd and "ssh" in cmd:
                out.append(cmd.replace("\0", " "))
    return out


@pytest.mark.slow
def test_postgresql_and_app_deploy_healthy_idempotent_and_secret_free(
        lab_hosts: Any, bridge_moto: MotoServer, stack_file: Path) -> None:
    """The shipped playbooks deploy PostgreSQL + the app; /healthz is 200 from here; a re-run changes nothing."""
    import boto3
    from botocore.config import Config

    stack = load_stack(stack_file)
    boto3.client("s3", endpoint_url=bridge_moto.url, region_name="us-east-1", aws_access_key_id=AWS_KEY_ID,
                 aws_secret_access_key=AWS_SECRET, config=Config(s3={"addressing_style": "path"})
                 ).create_bucket(Bucket="microblog-images")
    target = _target(lab_hosts, "a")
    events: list[TaskEvent] = []
    stamps: list[tuple[float, TaskEvent]] = []

    def on_event(e: TaskEvent) -> None:
        events.append(e)
        stamps.append((time.monotonic(), e))

    leaks: list[str] = []
    kept: list[Path] = []

    def inspect(pdd: Path) -> None:
        kept.append(pdd)
        assert (pdd / "secret_vars.json").stat().st_mode & 0o077 == 0
        leaks.extend(_scan_dir(pdd, [DB_PASSWORD, AWS_SECRET]))

    tmp_root = tempfile.mkdtemp(prefix="lrt-")  # only this test's runs make SSH control sockets under it
    opts = {"keep_dir": inspect, "tmp_root": tmp_root}  # look into the private data dir just before deletion
    nets = [f"{lab_hosts.bridge_address}/24"]
    t0 = time.monotonic()
    with CmdlineWatch([DB_PASSWORD, AWS_SECRET]) as watch:
        first = deploy_service(stack, "web", "primary", target, allowed_networks=nets, on_event=on_event,
                               run_options=opts)
    t_first = time.monotonic() - t0
    t0 = time.monotonic()
    second = deploy_service(stack, "web", "primary", target, allowed_networks=nets, run_options=opts)
    t_second = time.monotonic() - t0
    print(f"\nfirst deploy {t_first:.1f} s (changed {first.changed}), re-run {t_second:.1f} s "
          f"(changed {second.changed}), cmdline samples {watch.samples}")
    starts = [(t, e) for t, e in stamps if e.kind == "task.start"]
    slow = sorted(((b[0] - a[0], a[1].task) for a, b in itertools.pairwise(starts)), reverse=True)[:6]
    print("slowest tasks:", ", ".join(f"{name} {d:.1f}s" for d, name in slow))

    assert first.ok and first.changed > 5
    assert second.ok and second.changed == 0, second.to_dict()
    assert watch.samples > 20 and watch.hits == []
    assert leaks == []
    assert all(not p.exists() for p in kept), "private data dirs must be deleted"
    blob = json.dumps([e.to_dict() for e in events])
    assert DB_PASSWORD not in blob and AWS_SECRET not in blob
    kinds = {e.kind for e in events}
    assert {"task.start", "task.ok", "task.changed"} <= kinds
    assert any(e.task == "Wait until the app is healthy" and e.host == "a" for e in events)
    time.sleep(0.3)
    assert _mux_processes(tmp_root) == []
    assert os.listdir(tmp_root) == [], "private data and control dirs must be deleted"
    os.rmdir(tmp_root)

    # Served from host a, reachable from the root namespace, backed by PostgreSQL on a and the bucket at moto.
    with urllib.request.urlopen(f"http://{target.address}:8080/healthz", timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())["ok"] is True
    report = example.seed(f"http://{target.address}:8080", posts=50, images=3, max_image_bytes=64 * 1024)
    assert report.posts == 50
    # PostgreSQL listens on the host address with SCRAM, the owner's password works, wal_level is logical.
    import psycopg

    with psycopg.connect(host=target.address, port=5432, dbname="microblog", user="microblog",
                         password=DB_PASSWORD, connect_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM posts").fetchone()[0] >= 50  # type: ignore[index]
        assert conn.execute("SHOW wal_level").fetchone()[0] == "logical"  # type: ignore[index]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=target.address, port=5432, dbname="microblog", user="microblog",
                        password="wrong-password", connect_timeout=5)
    # The config file on the host is 0600 and owned by the app's user.
    st = lab_hosts["a"].run("stat -c '%a %U' /etc/liferaft/web/config.json").stdout.split()
    assert st == ["600", "microblog"]


def test_swapped_host_key_is_refused(lab_hosts: Any) -> None:
    """A host presenting a key other than the pinned one is refused before any task runs on it."""
    target = _target(lab_hosts, "b", key_of="c")  # b's address, c's key pinned: a man in the middle
    before = lab_hosts["b"].ssh_count()
    events: list[TaskEvent] = []
    with pytest.raises(PlaybookFailed) as ei:
        run_playbook("prepare.yml", [target], on_event=events.append, timeout=120)
    err = ei.value
    assert err.host == "b"
    assert "Host key verification failed" in str(err) or "HOST IDENTIFICATION" in str(err)
    assert "key" in (err.hint or "")
    assert lab_hosts["b"].ssh_count() == before
    assert not any(e.kind in ("task.ok", "task.changed") for e in events)


def test_failure_names_host_and_task_without_secret(lab_hosts: Any, tmp_path: Path) -> None:
    """A failing task raises PlaybookFailed naming host and task; a secret in Ansible's message is scrubbed."""
    secret = "s3cr3t-" + os.urandom(8).hex()
    book = tmp_path / "fails.yml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: Check the widget\n"
                    "      ansible.builtin.fail:\n        msg: \"widget broken, token {{ my_token }}\"\n")
    with pytest.raises(PlaybookFailed) as ei:
        run_playbook(book, [_target(lab_hosts, "c")], secret_variables={"my_token": secret}, timeout=120)
    text = str(ei.value) + json.dumps(ei.value.to_dict())
    assert "host c" in text and "Check the widget" in text and "widget broken" in text
    assert secret not in text


def test_timeout_cancels_the_run(lab_hosts: Any, tmp_path: Path) -> None:
    """A run over its time budget is cancelled and reported as timed out; no SSH master outlives it."""
    book = tmp_path / "slow.yml"
    book.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                    "    - name: Take too long\n      ansible.builtin.command: sleep 60\n")
    tmp_root = tempfile.mkdtemp(prefix="lrt-")
    t0 = time.monotonic()
    with pytest.raises(PlaybookFailed, match="timed out"):
        run_playbook(book, [_target(lab_hosts, "c")], timeout=8, tmp_root=tmp_root)
    assert time.monotonic() - t0 < 40
    time.sleep(0.3)
    assert _mux_processes(tmp_root) == [] and os.listdir(tmp_root) == []
    os.rmdir(tmp_root)
