"""Container services in the lab (liferaft.workloads.container, liferaft.lab.registries): podman on the lab hosts, the
primary vendor's registry behind the "aws" fault proxy and the alternate's registry, the lab's busybox image built
offline. A container service's failover stops before DNS, naming the image, while the alternate's registry lacks it;
`replicate` mirrors it by digest (lag 0); a no-notice cold failover with "aws" (its registry too) cut pulls the
alternate's copy and serves by DNS; rollback and a drill's teardown leave no container, image or file on the target.
The example app's container variant (the `liferaft.containers.yaml` `lab up` writes: the microblog image built
offline, a `status` sidecar that depends on it, alt-b a warm standby) goes through `deploy`, `replicate` (images
mirrored, containers created and stopped at b), a no-notice `drill`, and a no-notice cold failover with the primary's
registry cut, serving from b by DNS with every post intact (counted and content-hashed).
One lab (without the playbook example app) for the module.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def clab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.fixtures_lab import _require_lab_hosts

    _require_lab_hosts()
    from liferaft.lab.core import Lab

    the_lab = Lab(tmp_path_factory.mktemp("containers-lab"))
    try:
        the_lab.up(timeout=120, example=False, die_with_caller=True)
        yield the_lab
    finally:
        the_lab.down()


def cli(stack_file: Path, state: Path, *args: str, timeout: float = 300,
        **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


def registries(lab: Any) -> tuple[Any, Any, Any]:
    from liferaft.providers.registry_oci import Image, Registry

    state = lab.read_state()
    regs = state["registries"]
    return (Registry(regs["aws-registry"]["url"], "aws"), Registry(regs["registry-b"]["url"], "registry-b"),
            Image.parse(state["image"]["reference"]))


def www(lab: Any) -> list[str]:
    from liferaft.lab.core import _dns_answers

    info = lab.info
    return _dns_answers(info.dns_server, info.app_fqdn)


def on_host(host: Any) -> dict[str, list[str]]:
    """What of the container service is on a lab host: containers, images, files."""
    out = host.run("podman ps -a --format '{{.Names}}'; echo --; podman images -q; echo --; "
                   "podman volume ls -q; echo --; ls /etc/liferaft/ 2>/dev/null; true").stdout
    containers, images, volumes, files = (part.split() for part in out.split("--\n"))
    return {"containers": containers, "images": images, "volumes": volumes, "files": files}


def test_the_lab_has_two_registries_and_cutting_aws_takes_its_registry(clab: Any) -> None:
    """The registries answer the distribution API; `lab cut aws` takes the primary's down with "aws" (down: gone,
    deny: refused), and `health` judges each site's registry: terminated / unreachable / degraded (image missing)."""
    from liferaft.errors import AuthRejected, Unreachable
    from liferaft.health.report import check_health
    from liferaft.lab.registries import container_stack
    from liferaft.stack import load_stack

    info = clab.info
    stack_file = info.stack_file.with_name("liferaft-registries.yaml")
    stack_file.write_text(container_stack(info.stack_file.read_text(), clab.read_state()))
    stack = load_stack(stack_file)

    def verdicts() -> dict[str, str]:
        report = check_health(stack, timeout=15.0).to_dict()["providers"]
        return {k: v["verdict"] for k, v in report.items() if k.startswith("registry@")}

    primary, alternate, image = registries(clab)
    assert image.pinned
    primary.ping()
    alternate.ping()
    assert primary.digest(image) == image.digest  # built offline and pushed at `lab up`
    assert primary.digest(image, "1") == image.digest  # tagged too
    assert alternate.digest(image) is None  # nothing mirrored yet
    assert verdicts() == {"registry@primary": "healthy", "registry@alt-b": "degraded"}  # alt-b lacks the image
    try:
        clab.cut("aws", "down")
        with pytest.raises(Unreachable):
            primary.ping()
        alternate.ping()
        assert clab.status()["modes"]["aws-registry"] == "down"
        assert verdicts()["registry@primary"] == "unreachable"
        clab.cut("aws", "deny")
        with pytest.raises(AuthRejected) as denied:
            primary.digest(image)
        assert denied.value.status == 401  # a suspended account, as the distribution API says it
        assert verdicts()["registry@primary"] == "terminated"
    finally:
        clab.heal_provider("aws")
    primary.ping()
    assert clab.status()["modes"]["aws-registry"] == "forward"


def test_a_container_service_fails_over_from_the_alternates_registry_and_leaves_nothing(clab: Any,
                                                                                     tmp_path: Path) -> None:
    from liferaft.lab.registries import container_stack

    info = clab.info
    a, b = info.hosts["a"], info.hosts["b"]
    _primary, alternate, image = registries(clab)
    secret = "sk-" + secrets.token_hex(16)
    (tmp_path / "signing_key").write_text(secret + "\n")
    text = container_stack(info.stack_file.read_text(), clab.read_state())
    text = text.replace("      MICROBLOG_TITLE: containers\n", "      MICROBLOG_TITLE: containers\n    secrets:\n"
                        f"      SIGNING_KEY: file:{tmp_path / 'signing_key'}\n")
    stack_file = info.stack_file.with_name("liferaft-containers.yaml")
    stack_file.write_text(text)
    state = tmp_path / "state"
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = cli(stack_file, state, *args)
        outputs.extend([out.stdout, out.stderr])
        return out

    checked = run("validate", "--check-secrets")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert www(clab) == [a.address]

    # The primary vendor is gone (its registry too) and the image was never mirrored: the run stops at the deploy,
    # before DNS, naming the image.
    clab.cut("aws", "down")
    try:
        failed = run("failover", "--to", "alt-b", "--yes", "--json")
        assert failed.returncode != 0
        assert f"does not hold microblog/web@{image.digest}" in failed.stdout + failed.stderr
        assert www(clab) == [a.address]
        back = run("rollback", "last", "--yes")
        assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
    finally:
        clab.heal_provider("aws")

    # `replicate` mirrors the image by digest to the alternate's registry and reports its lag.
    rep = run("replicate", "--to", "alt-b", "--json")
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    mirrored = json.loads(rep.stdout)["images"]["web"]
    assert mirrored["digest"] == image.digest and mirrored["lag_images"] == 0 and mirrored["ok"] is True
    assert alternate.digest(image) == image.digest

    # No notice: "aws" (its registry too) is cut; the cold failover pulls the alternate's copy and serves by DNS.
    clab.cut("aws", "down")
    try:
        out = run("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert www(clab) == [b.address]
        assert b.run("wget -qO- http://127.0.0.1:8080/healthz").stdout == "ok\n"
        running = b.run("podman ps --format '{{.Names}} {{.Image}}'").stdout.split()
        assert running == ["liferaft-web", alternate.pull_ref(image)]
        env = b.run("stat -c %a /etc/liferaft/web/env && cat /etc/liferaft/web/env").stdout
        assert env == f"600\nMICROBLOG_TITLE=containers\nSIGNING_KEY={secret}\n"
        assert secret not in b.run("ps -eo args").stdout  # never on a command line
        shown = run("show", "last", "--json")
        deploy = next(s for s in json.loads(shown.stdout)["steps"] if s["step"] == "deploy-web")
        assert deploy["result"]["digest"] == image.digest and deploy["result"]["vendor"] == "registry-b"

        back = run("rollback", "last", "--yes")
        assert back.returncode == 0, back.stdout[-2000:] + back.stderr[-2000:]
        assert www(clab) == [a.address]
        assert b.run("podman ps -q").stdout == ""  # stopped (and removed: rollback undoes the deploy)
    finally:
        clab.heal_provider("aws")
    stopped = run("replicate", "--to", "alt-b", "--stop")
    assert stopped.returncode == 0, stopped.stdout[-2000:] + stopped.stderr[-2000:]

    # A drill runs the container at b and its teardown removes everything: container, image, env file.
    drill = run("drill", "--to", "alt-b", "--keep", "--json")
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
    doc = json.loads(drill.stdout)
    assert doc["passed"] is True
    assert {k: v for k, v in on_host(b).items() if k in ("containers", "volumes")} == {
        "containers": ["liferaft-web"], "volumes": ["liferaft-web-data"]}
    down = run("drill", "--teardown", doc["run_id"], "--json")
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert on_host(b) == {"containers": [], "images": [], "volumes": [], "files": []}
    assert www(clab) == [a.address]

    for text in outputs:
        assert secret not in text
    for f in state.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def posts_digest(info: Any, address: str) -> tuple[int, str]:
    """(count, md5 of every post row as text in id order) of the example database at `address`."""
    import psycopg

    from tests.lab_checks import owner_dsn

    with psycopg.connect(**owner_dsn(info, address), connect_timeout=5) as c:
        row = c.execute("SELECT count(*), md5(coalesce(string_agg(p::text, '|' ORDER BY p.id), '')) "
                        "FROM posts p").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def images_digest(url: str, keys: list[str]) -> dict[str, str]:
    """sha256 of each image as the app at `url` serves it."""
    import hashlib
    import urllib.request

    out = {}
    for key in keys:
        with urllib.request.urlopen(f"{url}/images/{key.removeprefix('images/')}", timeout=10) as r:
            out[key] = hashlib.sha256(r.read()).hexdigest()
    return out


def test_the_example_container_variant_deploys_replicates_drills_and_fails_over_with_the_registry_cut(
        clab: Any, tmp_path: Path) -> None:
    import psycopg

    from liferaft.lab.example import seed
    from tests.lab_checks import owner_dsn

    info = clab.info
    a, b = info.hosts["a"], info.hosts["b"]
    lab_state = clab.read_state()
    app_image = lab_state["app_image"]
    _primary, alternate, status_image = registries(clab)
    from liferaft.providers.registry_oci import Image

    app = Image.parse(app_image["reference"])
    stack_file = info.stack_file.with_name("liferaft.containers.yaml")
    assert f"image: {app_image['reference']}" in stack_file.read_text()
    state = tmp_path / "state"

    took: dict[str, float] = {}

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        out = cli(stack_file, state, *args, timeout=600, **env)
        took[args[0]] = took.get(args[0], 0.0) + round(time.monotonic() - t0, 1)
        assert out.returncode == 0, f"{args}: " + out.stdout[-3000:] + out.stderr[-3000:]
        return out

    def show(run_id: str) -> dict[str, Any]:
        return {s["step"]: s for s in json.loads(run("show", run_id, "--json").stdout)["steps"]}

    run("validate", "--check-secrets")

    # deploy at the primary (host a): database, bucket, then web, then status (it depends on web)
    deployed = json.loads(run("deploy", "--yes", "--json").stdout)
    steps = show(deployed.get("run") or deployed.get("run_id") or "last")
    assert steps["deploy-web"]["result"]["digest"] == app.digest
    assert steps["deploy-status"]["result"]["digest"] == status_image.digest
    assert steps["deploy-status"]["finished"] >= steps["deploy-web"]["finished"]
    assert a.run("wget -qO- http://127.0.0.1:8080/healthz").stdout.strip()
    assert sorted(a.run("podman ps --format '{{.Names}}'").stdout.split()) == ["liferaft-status", "liferaft-web"]
    report = seed(f"http://{a.address}:8080", posts=150, images=4, max_image_bytes=64 * 1024)
    assert report.to_dict()
    before = posts_digest(info, a.address)
    assert before[0] == 150
    with psycopg.connect(**owner_dsn(info, a.address), connect_timeout=5) as c:
        keys = [r[0] for r in c.execute("SELECT image_key FROM posts WHERE image_key IS NOT NULL ORDER BY id")]
    assert keys
    images = images_digest(f"http://{a.address}:8080", keys)

    # replicate: the database and bucket kept at b, both images mirrored by digest, both containers created and
    # stopped at b (warm tier): nothing answers there
    # (a generous source timeout: the standby pulls and unpacks the image while the bucket is compared, on a shared
    # 2-core machine)
    rep = json.loads(run("replicate", "--to", "alt-b", "--source-timeout", "30", "--json").stdout)
    assert {k: (v["digest"], v["lag_images"]) for k, v in rep["images"].items()} == {
        "web": (app.digest, 0), "status": (status_image.digest, 0)}
    assert alternate.digest(app) == app.digest
    assert {k: v["state"] for k, v in rep["services"].items()} == {"web": "stopped", "status": "stopped"}
    created = b.run("podman ps -a --format '{{.Names}} {{.State}}'").stdout.split("\n")
    assert sorted(line.split()[0] for line in created if line) == ["liferaft-status", "liferaft-web"]
    assert b.run("podman ps -q").stdout == ""  # created, not running
    assert b.run("wget -qO- -T 2 http://127.0.0.1:8080/healthz 2>&1 || true").stdout.strip() != "ok"

    # a no-notice drill into b starts the kept containers (no deploy), checks the data, tears down, heals
    t0 = time.monotonic()
    drill = cli(stack_file, state, "drill", "--to", "alt-b", "--scenario", "no-notice", "--report",
                str(tmp_path / "reports"), "--json", timeout=900)
    took["drill"] = round(time.monotonic() - t0, 1)
    result = json.loads(drill.stdout)
    assert drill.returncode in (0, 1) and result["error"] is None and result["data"]["ok"], drill.stderr[-3000:]
    assert result["tier"] == "warm" and result["torn_down"]
    kinds = {k: v["kind"] for k, v in show(result["run_id"]).items()}
    assert kinds["start-web"] == kinds["start-status"] == "service.start" and "service.deploy" not in kinds.values()
    assert www(clab) == [a.address]

    # the standby made warm again, then no notice: "aws" (its registry too) down and host a cut off
    rep = json.loads(run("replicate", "--to", "alt-b", "--source-timeout", "30", "--json").stdout)
    assert {k: v["state"] for k, v in rep["services"].items()} == {"web": "stopped", "status": "stopped"}
    clab.cut("aws", "down")
    clab.cut_host("a")
    try:
        out = json.loads(run("failover", "--mode", "cold", "--to", "alt-b", "--yes", "--json",
                             LIFERAFT_SOURCE_TIMEOUT="2").stdout)
        steps = show(out["run"])
        assert steps["start-web"]["result"]["deployed"] is False and steps["start-status"]["result"]["deployed"] is False
        assert steps["start-status"]["finished"] >= steps["start-web"]["finished"]
        assert www(clab) == [b.address]
        fqdn_url = f"http://{www(clab)[0]}:8080"
        assert posts_digest(info, b.address) == before
        assert images_digest(fqdn_url, keys) == images
        running = sorted(b.run("podman ps --format '{{.Names}} {{.Image}}'").stdout.split("\n"))
        assert f"liferaft-web {alternate.pull_ref(app)}" in running
        print(f"\ncontainer variant: seconds per command {took}; drill RTO {result['rto_s']} s; failover "
              f"start-web {steps['start-web']['duration_s']} s")
    finally:
        clab.heal()
