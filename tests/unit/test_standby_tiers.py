"""Standby tiers (`sites.<alt>.standby: pilot-light | warm`): the setting, the set-up plan that keeps a warm standby's
services deployed and stopped, and the cold plan's shape for each tier (warm: promote + start + DNS, no deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_readiness import example_stack  # noqa: F401  (fixture)


def _with_tier(stack_file: Path, tier: str | None) -> Path:
    """The example stack with `sites.alt-b.standby` set (None: absent)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(stack_file.read_text())
    if tier is not None:
        doc["sites"]["alt-b"]["standby"] = tier
    stack_file.write_text("")
    with open(stack_file, "w") as f:
        yaml.dump(doc, f)
    return stack_file


def _record(stack: Any, services: dict[str, Any] | None = None) -> dict[str, Any]:
    m = stack.model
    rec: dict[str, Any] = {
        "source": m.primary, "target": "alt-b", "source_host": {"name": "a", "address": "127.0.0.1", "port": 1},
        "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": "microblog-alt-b",
                         "provider": "colo-b"},
        "databases": {k: {"method": d.migrate, "subscription": "liferaft_x"} for k, d in m.data.databases.items()},
        "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
        "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
        "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}}
    if services is not None:
        rec["services"] = services
    return rec


def _cold(stack: Any, state: Path, monkeypatch: pytest.MonkeyPatch, rec: dict[str, Any]) -> Any:
    from liferaft.engine.standby_state import save_standby
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV, build_cold_plan

    save_standby(state, stack.model.name, "alt-b", rec)
    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    return build_cold_plan(stack, "alt-b", state_dir=state, probe_source=False)


def test_the_tier_is_pilot_light_by_default_and_warm_when_declared(example_stack: Path) -> None:  # noqa: F811
    from liferaft.errors import InvalidInput, LiferaftError
    from liferaft.stack import load_stack

    assert load_stack(example_stack).site("alt-b").standby == "pilot-light"
    assert load_stack(_with_tier(example_stack, "warm")).site("alt-b").standby == "warm"
    with pytest.raises((InvalidInput, LiferaftError)) as e:
        load_stack(_with_tier(example_stack, "hot"))
    assert "standby" in str(e.value)


def test_a_warm_set_up_deploys_the_services_stopped_at_a_digest_of_what_deploy_uses(
        example_stack: Path) -> None:  # noqa: F811
    from liferaft.stack import load_stack
    from liferaft.standby.setup import plan_setup, warm_services

    pilot = load_stack(example_stack)
    setup = plan_setup(pilot, "alt-b", {"name": "a", "address": "127.0.0.1"}, {}, source_timeout=1.0, interval=1.0)
    assert not [s for s in setup.steps if s.kind == "standby.service"] and warm_services(pilot, "alt-b") == {}

    stack = load_stack(_with_tier(example_stack, "warm"))
    digests = warm_services(stack, "alt-b")
    assert set(digests) == {"web", "worker"} and len(digests["web"]) == 32  # the example's two services
    setup = plan_setup(stack, "alt-b", {"name": "a", "address": "127.0.0.1"}, {}, source_timeout=1.0, interval=1.0)
    step = setup.step("warm-web")
    assert step.kind == "standby.service" and step.params == {"service": "web", "digest": digests["web"]}
    installs = [s.id for s in setup.steps if s.kind == "standby.install"]
    assert "install-postgresql" in installs and "install-redis" in installs
    assert installs[-1] in step.depends_on  # after the installs: playbooks never overlap on the host
    assert {"action": "deploy", "kind": "service", "name": "web", "provider": "colo-b",
            "detail": "stopped (warm standby)"} in setup.resources

    # the digest follows the artifact and the service's entry (not the tier itself, nor secret values)
    app = example_stack.parent / "app" / "microblog.py"
    app.write_text(app.read_text() + "\n# changed\n")
    assert warm_services(load_stack(example_stack), "alt-b")["web"] != digests["web"]
    changed = warm_services(load_stack(example_stack), "alt-b")["web"]
    (example_stack.parent / "secrets" / "db_password").write_text("rotated-value\n")
    assert warm_services(load_stack(example_stack), "alt-b")["web"] == changed


def test_cold_plan_pilot_light_deploys_the_service(example_stack: Path, tmp_path: Path,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.stack import load_stack

    stack = load_stack(example_stack)
    plan = _cold(stack, tmp_path / "state", monkeypatch, _record(stack))
    kinds = {s.id: s.kind for s in plan.steps}
    assert kinds["prepare"] == "host.configure" and kinds["deploy-web"] == "service.deploy"
    assert "service.start" not in kinds.values()
    assert any(n.startswith("standby tier: pilot-light") for n in plan.notes), plan.notes


def test_cold_plan_warm_starts_the_service_and_deploys_nothing(example_stack: Path, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.stack import load_stack
    from liferaft.standby.setup import warm_services

    stack = load_stack(_with_tier(example_stack, "warm"))
    digests = warm_services(stack, "alt-b")
    digest = digests["web"]
    current = {svc: {"digest": d, "address": "127.0.0.2", "state": "stopped", "ok": True} for svc, d in digests.items()}
    plan = _cold(stack, tmp_path / "state", monkeypatch, _record(stack, current))
    kinds = {s.id: s.kind for s in plan.steps}
    assert "service.deploy" not in kinds.values() and "host.configure" not in kinds.values(), kinds
    start = plan.step("start-web")
    assert start.kind == "service.start" and start.params == {"service": "web", "digest": digest}
    assert "promote-blog" in start.depends_on  # started on the promoted copy
    assert "start-web" in plan.step("dns").depends_on and "dns" in plan.step("verify-service").depends_on
    assert {"action": "start", "kind": "service", "name": "web", "provider": "colo-b"} in plan.resources
    assert any(n == "standby tier: warm (services web, worker started, not deployed)" for n in plan.notes), plan.notes
    pilot_estimate = _cold(load_stack(_with_tier(example_stack, "pilot-light")), tmp_path / "s2", monkeypatch,
                           _record(stack)).estimate_s
    assert plan.estimate_s < pilot_estimate

    # what the standby holds is not the stack's current service (or its deploy failed): deployed instead, and said so
    for entry, why in (({**current["web"], "digest": "0" * 32}, "changed since"),
                       ({**current["web"], "ok": False, "error": "boom"}, "failed (boom)"),
                       ({**current["web"], "address": "127.0.0.9"}, "another host"), (None, "not deployed")):
        held = {"worker": current["worker"], **({"web": entry} if entry else {})}
        plan = _cold(stack, tmp_path / "state", monkeypatch, _record(stack, held))
        assert plan.step("deploy-web").kind == "service.deploy" and "start-web" not in {s.id for s in plan.steps}
        assert any(n.startswith("standby tier: warm (services worker started, not deployed; service web deployed: ")
                   and why in n for n in plan.notes), plan.notes


def test_a_no_notice_drill_into_a_warm_site_keeps_the_start_and_tears_the_service_down(
        example_stack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from liferaft.drill.run import DrillOptions, build_no_notice_plan
    from liferaft.engine.standby_state import save_standby
    from liferaft.events import Events
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV
    from liferaft.stack import load_stack
    from liferaft.standby.setup import warm_services

    stack = load_stack(_with_tier(example_stack, "warm"))
    digests = warm_services(stack, "alt-b")
    digest = digests["web"]
    state = tmp_path / "state"
    save_standby(state, stack.model.name, "alt-b",
                 _record(stack, {svc: {"digest": d, "address": "127.0.0.2", "ok": True} for svc, d in digests.items()}))
    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    plan = build_no_notice_plan(stack, DrillOptions("alt-b", "no-notice"), state, Events())
    kinds = {s.id: s.kind for s in plan.steps}
    assert kinds["start-web"] == "service.start" and plan.step("start-web").params["digest"] == digest
    assert "service.deploy" not in kinds.values()
    assert plan.step("drill-teardown").params["services"] == ["web", "worker"]  # the drill still removes what it started


def test_start_undo_stops_and_the_step_kinds_are_registered() -> None:
    import liferaft.steps  # noqa: F401
    from liferaft.engine.kinds import get_kind

    start = get_kind("service.start")
    assert start.undoable and start.serial == "ansible"
    assert get_kind("standby.service").serial == "ansible"


def test_audit_lists_each_alternates_tier(example_stack: Path, tmp_path: Path) -> None:  # noqa: F811
    from liferaft.audit import audit
    from liferaft.engine.standby_state import save_standby
    from liferaft.stack import load_stack

    stack = load_stack(_with_tier(example_stack, "warm"))
    state = tmp_path / "state"
    report = audit(stack, state_dir=state, check_ns=False)
    assert [x.detail for x in report.layers if x.name == "standby tier"] == ["site alt-b: warm"]
    save_standby(state, stack.model.name, "alt-b", _record(stack, {}))
    report = audit(stack, state_dir=state, check_ns=False)
    assert [x.detail for x in report.layers if x.name == "standby tier"] == ["site alt-b: warm (standby recorded)"]
    assert any(f.layer == "standby tier" and "declared warm" in f.message for f in report.findings)
    save_standby(state, stack.model.name, "alt-b", _record(stack, {"web": {"digest": "x"}}))
    report = audit(stack, state_dir=state, check_ns=False)
    assert [x.detail for x in report.layers if x.name == "standby tier"] == [
        "site alt-b: warm (standby recorded; services web kept deployed and stopped)"]
    assert not any(f.layer == "standby tier" for f in report.findings)


def test_replicate_status_shows_the_tier_and_the_services_kept_warm(example_stack: Path,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    import json

    from liferaft.engine.standby_state import save_standby
    from liferaft.stack import load_stack
    from tests.cli_helpers import invoke

    stack_file = _with_tier(example_stack, "warm")
    stack = load_stack(stack_file)
    state = tmp_path / "state"
    base = ("--stack", str(stack_file), "--state-dir", str(state), "replicate", "--to", "alt-b", "--status")
    none = invoke(*base)
    assert none.exit_code == 2 and "declared tier: warm" in none.stderr
    save_standby(state, stack.model.name, "alt-b",
                 _record(stack, {"web": {"digest": "ab" * 16, "state": "stopped", "ok": True}}))
    shown = invoke(*base)
    assert shown.exit_code == 0, shown.stderr
    assert "tier warm" in shown.stdout and "service  web" in shown.stdout and "stopped at the standby" in shown.stdout
    doc = json.loads(invoke(*base, "--json").stdout)
    assert doc["tier"] == "warm" and doc["services"] == {"web": {"state": "stopped", "digest": "ab" * 16, "ok": True}}
    assert not (state / "stacks" / stack.model.name / "site-alt-b.lock").exists()  # read-only: no lock taken
