"""`liferaft audit`: the bad example fails with the right findings, the good one passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liferaft.audit import audit, ns_vendor
from liferaft.stack import load_stack
from tests.cli_helpers import invoke

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "microblog"
GOOD, BAD = EXAMPLES / "liferaft.yaml", EXAMPLES / "liferaft-bad.yaml"


def test_bad_example_fails_with_each_concentration() -> None:
    report = audit(load_stack(BAD), check_ns=False)
    critical = {f.layer for f in report.findings if f.severity == "critical"}
    assert {"compute", "standby copies", "DNS hosting", "backups", "IaC state"} <= critical
    assert any("encrypted with keys held by a primary vendor" in f.message for f in report.findings)
    assert report.score == 0 and all(f.fix for f in report.findings)


def test_good_example_passes() -> None:
    report = audit(load_stack(GOOD), check_ns=False)
    assert report.critical == 0 and report.score >= 90
    layers = {x.name: x.vendors for x in report.layers}
    assert layers["DNS hosting"] == ("powerdns@10.213.7.1",)
    assert layers["object storage"] == ("aws", "s3@10.213.7.1")


def test_ns_delegation_at_the_primary_is_critical() -> None:
    report = audit(load_stack(GOOD), ns_records=["ns-1.awsdns-01.org.", "ns-2.awsdns-02.net."])
    (finding,) = [f for f in report.findings if f.layer == "NS delegation"]
    assert finding.severity == "critical" and finding.vendor == "aws"


def test_ns_vendor_mapping() -> None:
    assert ns_vendor("ns1.microblog.test.", "microblog.test.", "powerdns@x") == "powerdns@x"
    assert ns_vendor("lola.ns.cloudflare.com.", "example.org.", "x") == "cloudflare"
    assert ns_vendor("ns1.example.net.", "example.org.", "x") == "example.net"


def test_no_alternate_is_critical(tmp_path: Path) -> None:
    text = GOOD.read_text().replace("alternates: [alt-b]", "alternates: []")
    (tmp_path / "liferaft.yaml").write_text(text)
    (tmp_path / "app").mkdir()
    report = audit(load_stack(tmp_path / "liferaft.yaml"), check_ns=False)
    assert any(f.layer == "sites" and f.severity == "critical" for f in report.findings)


@pytest.mark.parametrize(("stack", "code"), [(GOOD, 0), (BAD, 1)])
def test_cli_exit_codes_and_json(stack: Path, code: int, tmp_path: Path) -> None:
    result = invoke("--stack", str(stack), "--state-dir", str(tmp_path), "audit", "--no-dns", "--json")
    assert result.exit_code == code, result.output
    body = json.loads(result.stdout)
    assert body["ok"] is (code == 0) and isinstance(body["score"], int) and body["layers"]
