"""Terraform: shipped modules are well-formed; export writes a ready root module; the AWS module really applies
against moto, re-plans to no changes, and destroys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.errors import InvalidInput, ToolMissing, UsageError
from liferaft.stack import load_stack
from liferaft.terraform import Terraform, export_site, find_terraform
from liferaft.terraform.provision import provision_site, site_workdir
from tests.cli_helpers import invoke

MODULES = Path(__file__).resolve().parents[2] / "liferaft" / "terraform" / "modules"
needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed here")

STACK = """\
version: 1
name: shop
providers:
  old:
    type: aws
    endpoint: {endpoint}
    credentials: {{access_key_id: file:secrets/key, secret_access_key: file:secrets/secret}}
  new:
    type: aws
    endpoint: {endpoint}
    image: {ami}
    instance_type: t3.micro
    private_key: file:secrets/id_ed25519
    credentials: {{access_key_id: file:secrets/key, secret_access_key: file:secrets/secret}}
  colo:
    type: ssh
    hosts: [{{name: h1, address: 10.255.255.1, host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA/ugkVGSOctNgI54jGZg2AY4iSHYxzkbPrw/BdRwxD9"]}}]
sites:
  main: {{compute: colo, objects: old}}
  refuge: {{compute: new, objects: new, provision: terraform, hosts: 2}}
primary: main
alternates: [refuge]
services:
  web: {{playbook: microblog.yml, ports: [8080]}}
data:
  buckets:
    media: {{name: shop-media}}
"""

AWS_SECRET = "liferaft-test-secret-value-0123456789"


def _write_stack(tmp: Path, endpoint: str = "http://127.0.0.1:1", ami: str = "ami-12c6146b",
                 old_endpoint: str | None = None) -> Path:
    (tmp / "secrets").mkdir(exist_ok=True)
    (tmp / "secrets" / "key").write_text("testing\n")
    (tmp / "secrets" / "secret").write_text(AWS_SECRET + "\n")
    key = tmp / "secrets" / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = tmp / "liferaft.yaml"
    text = STACK.format(endpoint=endpoint, ami=ami)
    if old_endpoint:  # the primary vendor on a server of its own
        text = text.replace(f"  old:\n    type: aws\n    endpoint: {endpoint}", f"  old:\n    type: aws\n    endpoint: {old_endpoint}")
    path.write_text(text)
    return path


def test_export_writes_a_root_module_without_secrets(tmp_path: Path) -> None:
    stack = load_stack(_write_stack(tmp_path))
    out = tmp_path / "tf"
    result = export_site(stack, "refuge", out, tmp_path / "state")
    assert result.module == "aws-site" and result.backend == "local"
    tfvars = json.loads((out / "terraform.tfvars.json").read_text())
    assert tfvars["host_count"] == 2 and tfvars["ingress_ports"] == [22, 8080]
    assert tfvars["buckets"] == ["shop-media"] and tfvars["ami"] == "ami-12c6146b"
    pub = (tmp_path / "secrets" / "id_ed25519.pub").read_text().split()
    assert tfvars["ssh_public_key"].split()[:2] == pub[:2]
    main = (out / "main.tf").read_text()
    assert 'backend "local"' in main and str(tmp_path / "state") in main
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert AWS_SECRET not in everything and "PRIVATE KEY" not in everything


def test_export_refuses_the_primary_and_unsupported_sites(tmp_path: Path) -> None:
    stack = load_stack(_write_stack(tmp_path))
    with pytest.raises(UsageError, match="primary site"):
        export_site(stack, "main", tmp_path / "tf", tmp_path / "state")


def test_state_backend_at_the_primary_is_rejected(tmp_path: Path) -> None:
    path = _write_stack(tmp_path)
    path.write_text(path.read_text().replace(
        "provision: terraform, hosts: 2}",
        "provision: terraform, hosts: 2, terraform: {backend: s3, provider: old, bucket: tf-state}}"))
    with pytest.raises(InvalidInput, match="Terraform state at the primary provider"):
        load_stack(path)


def test_export_cli_json(tmp_path: Path) -> None:
    stack = _write_stack(tmp_path)
    result = invoke("--stack", str(stack), "--state-dir", str(tmp_path / "state"), "export", "terraform",
                    "--to", "refuge", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["module"] == "aws-site" and "ssh_public_key" not in body["variables"]


def test_missing_terraform_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("LIFERAFT_TERRAFORM", raising=False)
    with pytest.raises(ToolMissing, match="terraform is not installed"):
        find_terraform()


@needs_terraform
def test_modules_are_formatted() -> None:
    out = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(MODULES)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_terraform
def test_aws_module_validates(tmp_path: Path) -> None:
    """`terraform validate` with the AWS provider's schema (from the local mirror when there is one)."""
    shutil.copytree(MODULES / "aws-site", tmp_path / "m")
    tf = Terraform(tmp_path / "m")
    tf.init()
    cli_config = str(tmp_path / "m" / ".terraformrc.liferaft")
    out = subprocess.run(["terraform", f"-chdir={tmp_path / 'm'}", "validate", "-json"], capture_output=True,
                         text=True, env={**os.environ, "TF_CLI_CONFIG_FILE": cli_config}, check=False)
    assert json.loads(out.stdout)["valid"] is True, out.stdout


@needs_terraform
def test_missing_provider_plugin_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DigitalOcean provider is in no mirror here and the registry is unreachable: say so plainly."""
    shutil.copytree(MODULES / "digitalocean-site", tmp_path / "m")
    with pytest.raises(ToolMissing, match="provider plugin"):
        Terraform(tmp_path / "m").init()


def _moto(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[str]:
    from liferaft.lab.servers import MotoServer

    server = MotoServer(tmp_path_factory.mktemp(name))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The target vendor (an AWS account Terraform provisions)."""
    yield from _moto(tmp_path_factory, "tf-moto")


@pytest.fixture(scope="module")
def moto_old(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The primary vendor, a separate account and server."""
    yield from _moto(tmp_path_factory, "tf-moto-old")


def _running(ec2, stack_tag: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [i for r in ec2.describe_instances(Filters=[{"Name": "tag:liferaft:stack", "Values": [stack_tag]},
                                                       {"Name": "instance-state-name", "Values": ["running"]}]
                                              )["Reservations"] for i in r["Instances"]]


@needs_terraform
@pytest.mark.lab
@pytest.mark.slow
def test_provision_terraform_through_plan_failover_and_rollback(tmp_path: Path, moto: str, moto_old: str) -> None:
    """`provision: terraform`: `plan` shows the terraform plan, `failover` applies the AWS module for real (checked
    with boto3), a second plan of the module is empty, and `rollback` destroys what it made."""
    import boto3

    kw = {"endpoint_url": moto, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": AWS_SECRET}
    ec2, s3 = boto3.client("ec2", **kw), boto3.client("s3", **kw)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    stack_file = _write_stack(tmp_path, endpoint=moto, ami=ami, old_endpoint=moto_old)
    boto3.client("s3", **{**kw, "endpoint_url": moto_old}).create_bucket(Bucket="shop-media")  # the source bucket
    state = tmp_path / "state"
    cli = ("--stack", str(stack_file), "--state-dir", str(state))

    planned = invoke(*cli, "plan", "--to", "refuge", "--json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert [s["id"] for s in plan["steps"]][:2] == ["provision", "allocate"]
    tf_resources = {r["name"] for r in plan["resources"] if r["kind"] == "terraform"}
    assert {"module.site.aws_instance.host[0]", "module.site.aws_instance.host[1]",
            "module.site.aws_key_pair.deploy", "module.site.aws_security_group.hosts"} <= tf_resources
    assert _running(ec2, "shop-refuge") == []  # plan created nothing

    moved = invoke(*cli, "failover", "--to", "refuge", "--yes", "--stop-before", "allocate")
    assert moved.exit_code in (0, 4), moved.output
    running = _running(ec2, "shop-refuge")
    assert len(running) == 2
    assert ec2.describe_key_pairs(KeyNames=["shop-refuge-deploy"])["KeyPairs"]
    assert "shop-media" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert sorted(t["Value"] for i in running for t in i["Tags"] if t["Key"] == "Name") == \
        ["shop-refuge-0", "shop-refuge-1"]

    again = provision_site(load_stack(stack_file), "refuge", state)
    assert again.plan.no_changes, again.plan.to_dict()
    state_file = state / "terraform" / "shop-refuge.tfstate"
    assert state_file.exists() and AWS_SECRET not in state_file.read_text()
    assert not (site_workdir(load_stack(stack_file), "refuge", state) / "terraform.tfstate").exists()

    undone = invoke(*cli, "rollback", "last", "--yes")
    assert undone.exit_code == 0, undone.output
    assert _running(ec2, "shop-refuge") == []
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["shop-refuge-deploy"]}])["KeyPairs"] == []
    assert "shop-media" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
