"""The Kinto example (examples/kinto) holds together without a lab: its playbook parses and reads only documented
contract variables, and its lab stack template, filled in, is a valid stack that gives Kinto its settings and its
HMAC secret as the playbook expects them (the lab journey itself: tests/integration/test_kinto_lab.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from liferaft.configure import PLAYBOOK_DIR, syntax_check
from liferaft.stack import load_stack
from tests.integration.test_kinto_lab import EXAMPLE, KINTO_VERSION, render_lab_stack

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA/ugkVGSOctNgI54jGZg2AY4iSHYxzkbPrw/BdRwxD9"


def test_the_kinto_playbook_parses() -> None:
    syntax_check(EXAMPLE / "kinto.yml")


def test_the_kinto_playbook_reads_only_documented_variables() -> None:
    readme = (PLAYBOOK_DIR / "README.md").read_text()
    used = set(re.findall(r"\bliferaft_[a-z_]+", (EXAMPLE / "kinto.yml").read_text()))
    assert used and not {v for v in used if f"`{v}`" not in readme}


def _info(tmp_path: Path) -> SimpleNamespace:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("id_ed25519", "aws_access_key_id", "aws_secret_access_key", "s3rver_key", "s3rver_secret",
                 "pdns_api_key"):
        (secrets / name).write_text("x\n")
    hosts = {n: SimpleNamespace(address=f"10.213.9.{11 + i}", port=22, host_public_key=KEY)
             for i, n in enumerate("abc")}
    return SimpleNamespace(
        directory=tmp_path, stack_file=tmp_path / "liferaft.yaml", secrets_dir=secrets, hosts=hosts,
        endpoints={"aws": "http://10.213.9.1:41001", "objstore": "http://10.213.9.1:41002",
                   "dnshost": "http://10.213.9.1:41003"},
        zone="microblog.test.", dns_server="10.213.9.1:5353")


def test_the_lab_stack_template_fills_in_to_a_valid_stack(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    stack = load_stack(render_lab_stack(_info(tmp_path), wheels))
    m = stack.model
    svc = m.services["kinto"]
    assert m.data.databases["kinto"].replica_identity == "full"  # Kinto's `metadata` table has no primary key
    assert svc.env["KINTO_PACKAGE_VERSION"] == KINTO_VERSION
    assert svc.env["MULTIAUTH_POLICIES"] == "basicauth"
    assert svc.secrets == {"KINTO_USERID_HMAC_SECRET": "file:secrets/kinto_userid_hmac_secret"}
    assert svc.health is not None and svc.health.path == "/v1/__heartbeat__"
    assert [m.primary, *m.alternates] == ["primary", "alt"]
    assert len(stack.secret(svc.secrets["KINTO_USERID_HMAC_SECRET"])) >= 24
    assert m.drill.cut and m.drill.cut[-1] == "drill-cut" and m.drill.heal and m.drill.heal[-1] == "drill-heal"
