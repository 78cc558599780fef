"""DNS contract, written once, run against every DNS adapter on a real lab server:
aws Route53 on moto, libcloud PowerDNS (answers real DNS queries too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.errors import NotFound
from liferaft.providers.base import DNS, RecordSet
from tests.contract_shims.targets import Target, aws_provider, libcloud_pdns_provider, uid

pytestmark = [pytest.mark.lab, pytest.mark.contract]


@pytest.fixture(params=["aws-route53@moto", "libcloud-powerdns"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "aws-route53@moto":
        ep = request.getfixturevalue("aws_endpoint")
        return Target(request.param, aws_provider(ep, tmp_path), ep.proxy)
    ep = request.getfixturevalue("pdns_endpoint")
    return Target(request.param, libcloud_pdns_provider(ep, tmp_path), ep.proxy, extra={"dns": ep.dns})


@pytest.fixture
def zone(target: Target) -> Iterator[tuple[DNS, str]]:
    dns: DNS = target.provider.require("dns")
    name = f"{uid('contract')}.test."
    dns.create_zone(name)  # type: ignore[attr-defined]
    try:
        yield dns, name
    finally:
        dns.delete_zone(name)  # type: ignore[attr-defined]


def _query(server: tuple[str, int], name: str, rtype: str) -> tuple[int, set[str]]:
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [server[0]]
    r.port = server[1]
    answer = r.resolve(name, rtype)
    return answer.rrset.ttl, {a.to_text() for a in answer}


def test_contract_zones_are_listed_with_trailing_dot(zone: tuple[DNS, str]) -> None:
    """A created zone is listed by its fully qualified name; creating it again is fine."""
    dns, name = zone
    dns.create_zone(name.rstrip("."))  # type: ignore[attr-defined]
    assert name in dns.list_zones()
    assert dns.get_records(name) == []  # apex SOA/NS are provider-managed: never listed


def test_contract_upsert_get_replace_delete(target: Target, zone: tuple[DNS, str]) -> None:
    """A multi-value set with its TTL is created, read back, replaced as a whole, and deleted."""
    dns, name = zone
    www = f"www.{name}"
    dns.upsert_record(name, RecordSet(www, "A", 30, ("10.0.0.1", "10.0.0.2")))
    dns.upsert_record(name, RecordSet(f"txt.{name}", "TXT", 120, ('"hello"',)))
    [got] = dns.get_records(name, www, "A")
    assert (got.name, got.type, got.ttl, set(got.values)) == (www, "A", 30, {"10.0.0.1", "10.0.0.2"})
    if "dns" in target.extra:  # PowerDNS answers real queries: the change is live at once
        assert _query(target.extra["dns"], www, "A") == (30, {"10.0.0.1", "10.0.0.2"})

    dns.upsert_record(name, RecordSet(www, "A", 60, ("10.0.0.3",)))
    assert dns.get_records(name, www, "A") == [RecordSet(www, "A", 60, ("10.0.0.3",))]
    assert {(r.name, r.type) for r in dns.get_records(name)} == {(www, "A"), (f"txt.{name}", "TXT")}
    if "dns" in target.extra:
        assert _query(target.extra["dns"], www, "A") == (60, {"10.0.0.3"})

    dns.delete_record(name, www, "A")
    dns.delete_record(name, www, "A")  # a missing set is not an error
    assert dns.get_records(name, www, "A") == []
    assert [r.type for r in dns.get_records(name)] == ["TXT"]


def test_contract_missing_zone_is_not_found(target: Target) -> None:
    """Reading or writing records of a zone that does not exist raises NotFound."""
    dns: DNS = target.provider.require("dns")
    missing = f"{uid('absent')}.test."
    with pytest.raises(NotFound):
        dns.get_records(missing)
    with pytest.raises(NotFound):
        dns.upsert_record(missing, RecordSet(f"x.{missing}", "A", 30, ("10.0.0.1",)))
