"""NS delegation is read from the real authoritative server."""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.audit import audit, lookup_ns
from liferaft.stack import load_stack

GOOD = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


@pytest.mark.lab
def test_ns_records_come_from_powerdns(tmp_path: Path, pdns_endpoint) -> None:  # type: ignore[no-untyped-def]
    server = pdns_endpoint.server
    zone = "audit-ns.test."
    server.create_zone(zone, nameservers=["ns1.awsdns-07.com.", "ns2.awsdns-07.net."])
    host, port = pdns_endpoint.dns
    text = GOOD.read_text().replace("zone: microblog.test.", f"zone: {zone}")
    text = text.replace("nameserver: 10.213.7.1:5353", f"nameserver: {host}:{port}")
    (tmp_path / "liferaft.yaml").write_text(text)
    (tmp_path / "app").mkdir()
    stack = load_stack(tmp_path / "liferaft.yaml")
    try:
        assert lookup_ns(stack) == ["ns1.awsdns-07.com.", "ns2.awsdns-07.net."]
        report = audit(stack)
        assert [f.vendor for f in report.findings if f.layer == "NS delegation"] == ["aws"]
    finally:
        server.delete_zone(zone)
