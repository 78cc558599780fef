"""Health probes through the real provider adapters on real servers (moto behind its fault proxy): an API compute
provider's hosts, the write canary, resources gone while credentials work, throttling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liferaft.health import check_health
from liferaft.health.probes import CANARY_PREFIX, default_opener, fail_fast_retries, plan_probes
from liferaft.stack import load_stack

pytestmark = pytest.mark.lab


def aws_stack(tmp_path: Path, endpoint: Any, monkeypatch: pytest.MonkeyPatch, *, health_check: bool = False,
              bucket: str = "health-bucket") -> Any:
    monkeypatch.setenv("HEALTH_AWS_KEY", endpoint.access_key)
    monkeypatch.setenv("HEALTH_AWS_SECRET", endpoint.secret_key)
    services = ("services:\n  web:\n    playbook: web.yml\n    health: {path: /healthz, port: 8080}\n"
                if health_check else "")
    (tmp_path / "web.yml").write_text("- hosts: all\n  tasks: []\n")
    path = tmp_path / "liferaft.yaml"
    path.write_text(f"""version: 1
name: health-servers
providers:
  cloud:
    type: aws
    endpoint: {endpoint.url}
    credentials: {{access_key_id: env:HEALTH_AWS_KEY, secret_access_key: env:HEALTH_AWS_SECRET}}
sites:
  primary: {{compute: cloud, objects: cloud}}
primary: primary
{services}data:
  buckets:
    images: {{name: {bucket}}}
health:
  timeout: 5
""")
    return load_stack(path)


def run_instance(endpoint: Any) -> str:
    """An instance in a private subnet (no public address: a probe must never leave the machine)."""
    ec2 = endpoint.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.231.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.231.1.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet,
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": "Name", "Value": "web-1"}]}])
    return str(inst["Instances"][0]["PrivateIpAddress"])


def test_api_compute_lists_running_hosts_and_plans_their_health_endpoints(
        clean_aws_endpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = aws_stack(tmp_path, clean_aws_endpoint, monkeypatch, health_check=True)
    address = run_instance(clean_aws_endpoint)
    tasks = {t.probe: t for t in plan_probes(stack, default_opener(stack, str(tmp_path / "state")), timeout=5)}
    assert "hosts" in tasks and not any(p.startswith("http:") for p in tasks)  # endpoints come from the listing
    found = tasks["hosts"].fn()
    assert found.detail == "1 running"
    assert [(t.probe, t.target) for t in found.then] == [(f"http:web@{address}:8080",
                                                          f"http://{address}:8080/healthz")]
    # (the follow-up is not run here: the address is moto's invention, not a machine of ours)


def test_everything_gone_while_credentials_work_is_terminated(
        clean_aws_endpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No bucket, no running host, but the key is accepted: rule P2."""
    stack = aws_stack(tmp_path, clean_aws_endpoint, monkeypatch)
    report = check_health(stack, state_dir=str(tmp_path / "state"))
    cloud = report.judgement("provider:cloud")
    assert (cloud.verdict.value, cloud.rule) == ("terminated", "P2"), report.to_dict()
    outcomes = {e.probe: (e.outcome, e.code) for e in cloud.evidence}
    assert outcomes == {"account": ("ok", None), "bucket:health-bucket": ("not_found", "NoSuchBucket"),
                        "hosts": ("not_found", "NoRunningHost")}


def test_write_canary_puts_reads_and_deletes(clean_aws_endpoint: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    stack = aws_stack(tmp_path, clean_aws_endpoint, monkeypatch)
    s3 = clean_aws_endpoint.client("s3")
    s3.create_bucket(Bucket="health-bucket")
    run_instance(clean_aws_endpoint)
    report = check_health(stack, canary=True, state_dir=str(tmp_path / "state"))
    (canary,) = [e for e in report.evidence if e.kind == "canary"]
    assert canary.ok and canary.detail.startswith("put/get/delete health-bucket/" + CANARY_PREFIX)
    assert report.verdict.value == "healthy", report.to_dict()
    assert s3.list_objects_v2(Bucket="health-bucket").get("KeyCount") == 0  # nothing left behind
    clean_aws_endpoint.proxy.set_mode("deny")
    report = check_health(stack, canary=True, state_dir=str(tmp_path / "state"))
    (canary,) = [e for e in report.evidence if e.kind == "canary"]
    assert (canary.outcome, canary.status) == ("auth_rejected", 403)


def test_throttling_is_degraded_not_unreachable(clean_aws_endpoint: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider answering 503 SlowDown / Throttling is busy, not gone: with health's fail-fast retries the first
    throttled answer is the evidence, well within the default 5 s deadline, and the verdict is degraded."""
    stack = aws_stack(tmp_path, clean_aws_endpoint, monkeypatch)
    clean_aws_endpoint.client("s3").create_bucket(Bucket="health-bucket")
    run_instance(clean_aws_endpoint)
    clean_aws_endpoint.proxy.set_mode("throttle")
    with fail_fast_retries():
        report = check_health(stack, state_dir=str(tmp_path / "state"))
    cloud = report.judgement("provider:cloud")
    assert {e.outcome for e in cloud.evidence} == {"throttled"}, [e.to_dict() for e in cloud.evidence]
    assert (cloud.verdict.value, cloud.rule) == ("degraded", "P4")


def test_a_provider_that_cannot_be_opened_is_evidence_not_a_crash(clean_aws_endpoint: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stack = aws_stack(tmp_path, clean_aws_endpoint, monkeypatch)
    monkeypatch.delenv("HEALTH_AWS_SECRET")
    report = check_health(stack, state_dir=str(tmp_path / "state"))
    account = next(e for e in report.evidence if e.probe == "account")
    assert (account.outcome, account.error) == ("error", "SecretError")
    assert "HEALTH_AWS_SECRET" in account.detail
    assert report.judgement("provider:cloud").verdict.value == "degraded"  # P4: an error, not a verdict on the vendor
