"""`liferaft providers check` through the real CLI, against lab servers behind their fault proxies and lab hosts:
every probe passes with latencies; a denied and a downed endpoint fail with their error class and exit 3."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.cli_helpers import invoke

pytestmark = [pytest.mark.lab, pytest.mark.contract]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


@pytest.fixture
def stack_file(tmp_path: Path, aws_endpoint: Any, s3rver_endpoint: Any, pdns_endpoint: Any,
               lab_hosts: Any) -> Path:
    """The example stack with its providers pointed at this session's lab; secrets by env: refs."""
    yaml = YAML()
    doc = yaml.load(EXAMPLE.read_text())
    (tmp_path / "app").mkdir()
    p = doc["providers"]
    p["aws"]["endpoint"] = aws_endpoint.url
    p["aws"]["credentials"] = {"access_key_id": "env:LR_AWS_KEY", "secret_access_key": "env:LR_AWS_SECRET"}
    for name, hosts in (("colo-a", ("a",)), ("colo-b", ("b", "c"))):
        p[name]["private_key"] = f"file:{lab_hosts.client_key}"
        p[name]["hosts"] = [{"name": h, "address": lab_hosts[h].address, "port": lab_hosts[h].port,
                             "host_keys": [lab_hosts[h].host_public_key]} for h in hosts]
    p["objstore"]["storage"].update(host=s3rver_endpoint.address, port=s3rver_endpoint.port)
    p["objstore"]["credentials"] = {"key": "env:LR_S3_KEY", "secret": "env:LR_S3_SECRET"}
    p["dnshost"]["dns"].update(host=pdns_endpoint.address, port=pdns_endpoint.port)
    p["dnshost"]["credentials"] = {"key": "env:LR_PDNS_KEY"}
    path = tmp_path / "liferaft.yaml"
    with path.open("w") as f:
        yaml.dump(doc, f)
    return path


@pytest.fixture
def env(aws_endpoint: Any, s3rver_endpoint: Any, pdns_endpoint: Any, tmp_path: Path) -> dict[str, str]:
    return {"LR_AWS_KEY": aws_endpoint.access_key, "LR_AWS_SECRET": aws_endpoint.secret_key,
            "LR_S3_KEY": s3rver_endpoint.access_key, "LR_S3_SECRET": s3rver_endpoint.secret_key,
            "LR_PDNS_KEY": pdns_endpoint.api_key, "LIFERAFT_STATE_DIR": str(tmp_path / "state")}


def test_contract_check_all_providers_pass(stack_file: Path, env: dict[str, str]) -> None:
    """All five configured providers answer their probe; JSON has latency per provider; exit 0."""
    r = invoke("--stack", str(stack_file), "providers", "check", "--json", env=env)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ok"] is True
    got = {p["name"]: p for p in data["providers"]}
    assert set(got) == {"aws", "colo-a", "colo-b", "objstore", "dnshost"}
    assert all(p["ok"] and p["latency_s"] >= 0 and p["error"] is None for p in got.values())
    assert got["aws"]["account"] == "123456789012"
    human = invoke("--stack", str(stack_file), "providers", "check", env=env)
    assert human.exit_code == 0 and "ok" in human.stdout
    for secret in env.values():
        assert secret not in r.output + human.output or secret.startswith("/")


def test_contract_check_reports_denied_and_down(stack_file: Path, env: dict[str, str], aws_endpoint: Any,
                                                pdns_endpoint: Any) -> None:
    """aws denied -> AuthRejected, DNS host down -> Unreachable, the others still ok; exit 3, quickly."""
    aws_endpoint.proxy.set_mode("deny")
    pdns_endpoint.proxy.set_mode("down")
    start = time.monotonic()
    r = invoke("--stack", str(stack_file), "providers", "check", "--json", env=env)
    elapsed = time.monotonic() - start
    assert r.exit_code == 3, r.output
    got = {p["name"]: p for p in json.loads(r.stdout)["providers"]}
    assert got["aws"]["error"] == "AuthRejected" and got["dnshost"]["error"] == "Unreachable"
    assert got["objstore"]["ok"] and got["colo-a"]["ok"]
    assert elapsed < 15, elapsed  # probes run concurrently and dead endpoints fail fast
    human = invoke("--stack", str(stack_file), "providers", "check", env=env)
    assert human.exit_code == 3 and "AuthRejected" in human.stdout and "Unreachable" in human.stdout
