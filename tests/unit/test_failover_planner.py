"""The plan for the example stack as a pure function of what was observed (no lab needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.engine.observe import Observed
from liferaft.engine.plan import Plan
from liferaft.errors import UsageError
from liferaft.failover.planner import build_plan, make_plan
from liferaft.stack import load_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


def copy_example(tmp_path: Path, text: str | None = None) -> Path:
    text = text if text is not None else EXAMPLE.read_text()
    (tmp_path / "liferaft.yaml").write_text(text.replace("artifact: app ", f"artifact: {EXAMPLE.parent / 'app'} "))
    return tmp_path / "liferaft.yaml"


@pytest.fixture()
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_stack(copy_example(tmp_path))


def sizes(blog: int = 9_000_000) -> dict[str, dict[str, int]]:
    """What the kinds measured at the source, by dataset id: the database's bytes, the bucket's objects and bytes."""
    return {"blog": {"bytes": blog}, "images": {"items": 60, "bytes": 8_000_000}}


def observed(**kw: object) -> Observed:
    base: dict[str, object] = {
        "source_host": {"name": "a", "address": "10.0.0.11", "port": 22, "user": "root",
                        "host_keys": ["ssh-ed25519 AAAA"], "private_key_file": "/k"},
        "target_host_preview": "10.0.0.12", "target_free": ("b", "c"),
        "sizes": sizes(),
        "dns_current": {"www.microblog.test.": {"type": "A", "ttl": 30, "values": ["10.0.0.11"]}}}
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def test_example_plan_orders_data_before_the_gate_and_dns_last(stack) -> None:  # type: ignore[no-untyped-def]
    plan = make_plan(stack, "primary", "alt-b", "live", observed())
    ids = list(plan.step_ids)
    assert ids[0] == "allocate" and ids[-4:] == ["dns", "verify-service", "db-release", "files-release"]
    assert ids.index("migrate-blog") < ids.index("freeze") < ids.index("verify-data") < ids.index("dns")
    assert ids.index("sync-images") < ids.index("freeze")
    # the worker's Redis and media folder (the example's second service) are moved before the gate too
    assert ids.index("redis") < ids.index("redis-worker") < ids.index("freeze")
    assert ids.index("copy-media") < ids.index("freeze") and "deploy-worker" in ids
    assert plan.step("verify-data").depends_on == ("freeze",) and plan.step("dns").depends_on == ("verify-data",)
    assert plan.bytes_to_move == 17_000_000
    assert plan.dns_diff == ({"name": "www.microblog.test.", "type": "A", "ttl": 30, "old": ["10.0.0.11"],
                              "new": ["10.0.0.12"]},)
    assert Plan.from_dict(plan.to_dict()) == plan


def test_plan_params_hold_references_not_secrets(stack) -> None:  # type: ignore[no-untyped-def]
    """Steps name databases and providers; no credential field (password, key, secret, token) is in the plan."""
    import json

    plan = make_plan(stack, "primary", "alt-b", "live", observed())

    def keys(v: object) -> set[str]:
        if isinstance(v, dict):
            return set(v) | {k for x in v.values() for k in keys(x)}
        if isinstance(v, list):
            return {k for x in v for k in keys(x)}
        return set()

    names = keys(plan.to_dict())
    assert not {n for n in names if any(w in n.lower() for w in ("password", "secret", "token", "access_key"))}
    assert "file:secrets" not in json.dumps(plan.to_dict())


def test_estimate_grows_with_bytes(stack) -> None:  # type: ignore[no-untyped-def]
    small = make_plan(stack, "primary", "alt-b", "live", observed())
    big = make_plan(stack, "primary", "alt-b", "live", observed(sizes=sizes(blog=10_000_000_000)))
    assert big.estimate_s > small.estimate_s + 300
    assert big.hash == small.hash  # measurements do not change what the plan does


def test_dump_migration_is_planned_inside_the_freeze(tmp_path: Path) -> None:
    path = copy_example(tmp_path, EXAMPLE.read_text().replace("migrate: logical", "migrate: dump"))
    plan = make_plan(load_stack(path), "primary", "alt-b", "live", observed())
    assert plan.step("migrate-blog").params["method"] == "dump"
    assert plan.step("freeze").params["databases"] == {"blog": "dump"}


def test_cold_mode_and_bad_targets_are_refused(stack) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="cold mode"):
        build_plan(stack, "alt-b", "cold")
    with pytest.raises(UsageError, match="no site named"):
        build_plan(stack, "nowhere", "live")
    with pytest.raises(UsageError, match="already the source"):
        build_plan(stack, "primary", "live")


def test_a_ttl_above_the_rto_share_for_dns_is_a_plan_warning(stack) -> None:  # type: ignore[no-untyped-def]
    """Resolvers keep the cached record for its TTL: the plan warns when that is over a quarter of the RTO (5m)."""
    long = observed(dns_current={"www.microblog.test.": {"type": "A", "ttl": 3600, "values": ["10.0.0.11"]}})
    notes = make_plan(stack, "primary", "alt-b", "live", long).notes
    assert any("www.microblog.test. has a TTL of 3600 s" in n and "old address for up to 3600 s" in n for n in notes)
    assert not any("TTL" in n for n in make_plan(stack, "primary", "alt-b", "live", observed()).notes)  # 30 s
