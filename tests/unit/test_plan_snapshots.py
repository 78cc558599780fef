"""The plans every mode produces, pinned: live, cold (pilot-light, warm, warm but stale), the standby set-up (pilot,
warm, host already installed), the notice drill and the no-notice drill (pilot-light, warm), for the example stack
(with and without a TLS certificate) and the toy dataset kind of test_dataset_kinds; and the first deployment
(`liferaft deploy`: at the primary, at an alternate, again where it is deployed).

Step ids, kinds, titles, parameters and dependencies, resources, notes and DNS diffs: journals resume a run only if
its plan's hash is unchanged and tests and drills name steps, so a refactor of the planners must leave all of this as
it is. The snapshot lives in tests/unit/snapshots/plans.json; `python -m tests.unit.test_plan_snapshots [CASE...]`
rewrites it (only when a plan is meant to change, and the diff is then reviewed; with CASEs, only those).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.engine.observe import Observed
from liferaft.engine.plan import Plan
from liferaft.stack import Stack, load_stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = REPO / "examples" / "microblog"
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "plans.json"
HEALTH = "    health:\n      path: /healthz\n      port: 8080\n      expect_status: 200\n"
TLS = "    tls:\n      certificate: file:secrets/web.crt\n      key: file:secrets/web.key\n"
SOURCE_HOST = {"name": "a", "address": "10.0.0.11", "port": 22, "user": "root", "host_keys": ["ssh-ed25519 AAAA"],
               "private_key_file": "/k"}


def _example(d: Path, *, tier: str | None = None, tls: bool = False, dump: bool = False) -> Stack:
    shutil.copytree(EXAMPLE_DIR, d, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "secrets").mkdir(exist_ok=True)
    for name in ("aws_access_key_id", "aws_secret_access_key", "db_password", "worker_redis_password", "id_ed25519",
                 "pdns_api_key",
                 "s3rver_key", "s3rver_secret", "web.crt", "web.key"):
        (d / "secrets" / name).write_text("not-a-real-secret\n")
    f = d / "liferaft.yaml"
    text = f.read_text()
    if tier is not None:
        assert "  alt-b:\n    compute: colo-b\n" in text
        text = text.replace("  alt-b:\n    compute: colo-b\n", f"  alt-b:\n    compute: colo-b\n    standby: {tier}\n")
    if tls:
        assert HEALTH in text
        text = text.replace(HEALTH, HEALTH + TLS, 1)
    if dump:
        text = text.replace("migrate: logical", "migrate: dump")
    f.write_text(text)
    return load_stack(f)


def _observed(**kw: Any) -> Observed:
    base: dict[str, Any] = {
        "source_host": SOURCE_HOST, "target_host_preview": "10.0.0.12", "target_free": ("b", "c"),
        "sizes": {"blog": {"bytes": 9_000_000, "items": 0, "detail": ""},
                  "images": {"bytes": 8_000_000, "items": 60, "detail": ""}},
        "dns_current": {"www.microblog.test.": {"type": "A", "ttl": 30, "values": ["10.0.0.11"]}}}
    base.update(kw)
    return Observed(**base)


def _live(stack: Stack, **kw: Any) -> Plan:
    from liferaft.failover.planner import make_plan

    return make_plan(stack, "primary", "alt-b", "live", _observed(), **kw)


def _drill_dns(stack: Stack) -> dict[str, Any]:
    from liferaft.drill.run import _drill_dns as dns

    return dns(stack)


def _record(stack: Stack, services: dict[str, Any] | None = None) -> dict[str, Any]:
    m = stack.model
    rec: dict[str, Any] = {
        "source": m.primary, "target": "alt-b", "source_host": {"name": "a", "address": "127.0.0.1", "port": 1},
        "source_address": "127.0.0.1",
        "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": "microblog-alt-b",
                         "provider": "colo-b"},
        "databases": {k: {"method": d.migrate, "subscription": "liferaft_x"} for k, d in m.data.databases.items()},
        "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
        "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
        "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}}
    if services is not None:
        rec["services"] = services
    return rec


def _warm_record(stack: Stack, **entry: Any) -> dict[str, Any]:
    from liferaft.standby.setup import warm_services

    digest = warm_services(stack, "alt-b")["web"]
    return _record(stack, {"web": {"digest": digest, "address": "127.0.0.2", "state": "stopped", "ok": True,
                                   **entry}})


def _cold(stack: Stack, state: Path, rec: dict[str, Any], ledger: str | None = None) -> Plan:
    from liferaft.engine.standby_state import save_standby
    from liferaft.failover.cold import build_cold_plan

    save_standby(state, stack.model.name, "alt-b", rec)
    return build_cold_plan(stack, "alt-b", state_dir=state, probe_source=False, ledger=ledger)


def _no_notice(stack: Stack, state: Path, rec: dict[str, Any]) -> Plan:
    from liferaft.drill.run import DrillOptions, build_no_notice_plan
    from liferaft.engine.standby_state import save_standby
    from liferaft.events import Events

    save_standby(state, stack.model.name, "alt-b", rec)
    return build_no_notice_plan(stack, DrillOptions("alt-b", "no-notice", ledger="/x/l.sqlite"), state, Events())


def _setup(stack: Stack, record: dict[str, Any] | None = None) -> Plan:
    from liferaft.standby.setup import plan_setup

    return plan_setup(stack, "alt-b", {"name": "a", "address": "127.0.0.1"}, record or {}, source_timeout=1.0,
                      interval=2.0)


def _toy_live(tmp: Path) -> Plan:
    from liferaft.failover.planner import make_plan
    from tests.unit.test_dataset_kinds import observed, toy

    gen = toy.__wrapped__(tmp)  # type: ignore[attr-defined]
    stack, _, _ = next(gen)
    try:
        return make_plan(stack, "primary", "alt", "live", observed(stack))
    finally:
        gen.close()


def _toy_drill(tmp: Path) -> Plan:
    from liferaft.drill.plan import to_drill
    from liferaft.failover.planner import make_plan
    from tests.unit.test_dataset_kinds import observed, toy

    gen = toy.__wrapped__(tmp)  # type: ignore[attr-defined]
    stack, _, _ = next(gen)
    try:
        return to_drill(make_plan(stack, "primary", "alt", "live", observed(stack)), drill_record=None,
                        dns_provider=None, zone=None)
    finally:
        gen.close()


def _deploy(stack: Stack, site: str = "primary", **kw: Any) -> Plan:
    from liferaft.failover.deploy import declared_peers
    from liferaft.planner.builder import Deploy, build

    inputs = {"allow_from": tuple(declared_peers(stack, site)), "free": ("a",), "preview": "10.0.0.11",
              "dns_current": {}, **kw}
    return build(stack, site, site, Deploy(**inputs))


def _to_drill(plan: Plan, stack: Stack, **kw: Any) -> Plan:
    from liferaft.drill.plan import to_drill

    return to_drill(plan, **_drill_dns(stack), **kw)


CASES: dict[str, Callable[[Path], Plan]] = {
    "live": lambda t: _live(_example(t / "s")),
    "live-ledger-dump": lambda t: _live(_example(t / "s", dump=True), ledger="/x/l.sqlite"),
    "live-tls": lambda t: _live(_example(t / "s", tls=True)),
    "live-toy-kind": _toy_live,
    "cold-pilot-light": lambda t: _cold(s := _example(t / "s"), t / "state", _record(s)),
    "cold-pilot-light-tls-ledger": lambda t: _cold(s := _example(t / "s", tls=True), t / "state", _record(s),
                                                   ledger="/x/l.sqlite"),
    "cold-warm": lambda t: _cold(s := _example(t / "s", tier="warm"), t / "state", _warm_record(s)),
    "cold-warm-tls": lambda t: _cold(s := _example(t / "s", tier="warm", tls=True), t / "state", _warm_record(s)),
    "cold-warm-stale": lambda t: _cold(s := _example(t / "s", tier="warm"), t / "state",
                                       _warm_record(s, digest="0" * 32)),
    "standby-setup-pilot-light": lambda t: _setup(_example(t / "s")),
    "standby-setup-warm": lambda t: _setup(_example(t / "s", tier="warm")),
    "standby-setup-installed": lambda t: _setup(_example(t / "s"), {"standby_host": {"address": "127.0.0.2"},
                                                                    "installed_on": "127.0.0.2"}),
    "drill-notice": lambda t: _to_drill(_live(s := _example(t / "s")), s),
    "drill-notice-tls-ledger": lambda t: _to_drill(_live(s := _example(t / "s", tls=True)), s,
                                                   ledger="/x/l.sqlite"),
    "drill-notice-toy-kind": _toy_drill,
    "drill-no-notice-pilot-light": lambda t: _no_notice(s := _example(t / "s"), t / "state", _record(s)),
    "drill-no-notice-warm": lambda t: _no_notice(s := _example(t / "s", tier="warm"), t / "state",
                                                 _warm_record(s)),
    "deploy-primary": lambda t: _deploy(_example(t / "s")),
    "deploy-alternate-tls-dns-current": lambda t: _deploy(
        _example(t / "s", tls=True), "alt-b", free=("b", "c"), preview="10.0.0.12",
        dns_current={"www.microblog.test.": {"type": "A", "ttl": 300, "values": ["10.0.0.11"]}}),
    "deploy-again": lambda t: _deploy(_example(t / "s"), free=(),
                                      dns_current={"www.microblog.test.": {"type": "A", "ttl": 30,
                                                                           "values": ["10.0.0.11"]}}),
}


def _normalised(plan: Plan, tmp: Path) -> Any:
    """The plan as JSON with what differs between machines and runs named instead: paths and service digests."""
    text = json.dumps(plan.to_dict(), sort_keys=True, indent=1)
    text = text.replace(str(tmp), "<tmp>").replace(str(REPO), "<repo>")
    for step in plan.steps:
        digest = step.params.get("digest")
        if isinstance(digest, str) and len(digest) >= 12:
            text = text.replace(digest, "<digest>").replace(digest[:12], "<digest12>")
    if "<tmp>" in text or "<digest>" in text:
        data = json.loads(text)
        data.pop("hash")  # a hash of what held a path or a digest differs between machines
        return data
    return json.loads(text)


@pytest.fixture()
def no_source_wait(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV

    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    yield


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_mode_builds_the_plan_it_built_before(case: str, tmp_path: Path, no_source_wait: None) -> None:
    """Each case's plan equals the pinned one: same steps in the same order, with the same ids, kinds, titles,
    parameters and dependencies; same resources, notes, DNS diff and hash."""
    expected = json.loads(SNAPSHOT.read_text())[case]
    got = _normalised(CASES[case](tmp_path), tmp_path)
    assert [(s["id"], s["kind"], s["title"], s["depends_on"]) for s in got["steps"]] == \
        [(s["id"], s["kind"], s["title"], s["depends_on"]) for s in expected["steps"]]
    assert got == expected


def _write(only: list[str] | None = None) -> None:
    """Rewrite the snapshot (`only`: just these cases, the others kept as pinned)."""
    import tempfile

    os.environ["LIFERAFT_SOURCE_TIMEOUT"] = "0.5"
    out: dict[str, Any] = json.loads(SNAPSHOT.read_text()) if only and SNAPSHOT.exists() else {}
    for case, build in sorted(CASES.items()):
        if only and case not in only:
            continue
        with tempfile.TemporaryDirectory() as d:
            out[case] = _normalised(build(Path(d)), Path(d))
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(out, sort_keys=True, indent=1) + "\n")
    print(f"wrote {len(out)} plans to {SNAPSHOT}", file=sys.stderr)


if __name__ == "__main__":
    _write(sys.argv[1:] or None)
