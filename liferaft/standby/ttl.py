"""Lower the service records' TTLs ahead of a move, and put them back.

A record's TTL is how long resolvers keep sending clients to the old address after the DNS cut. A standby kept for a
no-notice day is only as useful as that TTL is short, so `replicate --lower-ttl S` lowers each production record's
TTL to S (values untouched) and remembers the original in the standby record; `replicate --stop` restores it (on the
record's values at that time, so a failover's new address is kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liferaft.engine.observe import open_provider
from liferaft.stack import Stack


def _records(stack: Stack, state_dir: Path) -> tuple[Any, str, list[tuple[str, str]]]:
    cfg = stack.model.dns
    if cfg is None:
        return None, "", []
    dns = open_provider(stack, cfg.provider, state_dir).require("dns")
    return dns, cfg.zone, [(cfg.fqdn(r.name), r.type) for r in cfg.records]


def _set_ttl(dns: Any, zone: str, fqdn: str, rtype: str, ttl: int, *, only_lower: bool = False) -> int | None:
    """Upsert the record with `ttl` and its current values (with `only_lower`, only when that lowers it); the TTL it
    had (None when there is no such record)."""
    from liferaft.providers.base import RecordSet

    found = [r for r in dns.get_records(zone, fqdn, rtype) if r.type == rtype]
    if not found:
        return None
    old = int(found[0].ttl)
    if old != ttl and not (only_lower and old < ttl):
        dns.upsert_record(zone, RecordSet(fqdn, rtype, ttl, tuple(sorted(v for r in found for v in r.values))))
    return old


def lower_ttls(stack: Stack, state_dir: Path, ttl: int, remembered: dict[str, Any]) -> dict[str, Any]:
    """Lower every service record above `ttl` to `ttl`. `remembered` (fqdn -> {type, ttl}) holds originals from an
    earlier call, kept as they are; returns it with the records lowered now added."""
    dns, zone, records = _records(stack, state_dir)
    out = dict(remembered)
    for fqdn, rtype in records:
        old = _set_ttl(dns, zone, fqdn, rtype, ttl, only_lower=True)
        if old is not None and old > ttl:
            out.setdefault(fqdn, {"type": rtype, "ttl": old})
    return out


def restore_ttls(stack: Stack, state_dir: Path, remembered: dict[str, Any]) -> dict[str, int]:
    """Put each remembered TTL back (current values kept); fqdn -> the TTL restored."""
    if not remembered:
        return {}
    dns, zone, _ = _records(stack, state_dir)
    out: dict[str, int] = {}
    for fqdn, rec in sorted(remembered.items()):
        if _set_ttl(dns, zone, fqdn, str(rec["type"]), int(rec["ttl"])) is not None:
            out[fqdn] = int(rec["ttl"])
    return out
