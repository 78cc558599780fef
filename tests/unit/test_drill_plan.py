"""The drill plan: a pure transform of the failover plan that freezes nothing and never touches production DNS."""

from __future__ import annotations

import threading
import types
from pathlib import Path
from typing import Any

import pytest

from liferaft.drill.plan import DRILL_STEP_KINDS, drill_fqdn, to_drill
from liferaft.engine import Plan, Step
from liferaft.engine.observe import Observed
from liferaft.errors import RunFailed, UsageError
from liferaft.failover.planner import make_plan
from liferaft.stack import Stack, load_stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> Stack:
    return load_stack(REPO / "examples" / "microblog" / "liferaft.yaml")


def failover_plan(stack: Stack) -> Plan:
    obs = Observed(source_host={"name": "a", "address": "10.9.9.11", "port": 22, "user": "root", "host_keys": [],
                                "private_key_file": None},
                   target_host_preview="10.9.9.12", target_free=("b",),
                   sizes={"images": {"items": 3, "bytes": 10}, "blog": {"bytes": 1000}},
                   dns_current={"www.microblog.test.": {"type": "A", "ttl": 30, "values": ["10.9.9.11"]}})
    return make_plan(stack, "primary", "alt-b", "live", obs)


def drill(stack: Stack, **kw: Any) -> Plan:
    dns = stack.model.dns
    assert dns is not None
    args: dict[str, Any] = {"drill_record": drill_fqdn(dns), "dns_provider": dns.provider, "zone": dns.zone,
                            "nameserver": dns.nameserver}
    args.update(kw)
    return to_drill(failover_plan(stack), **args)


def test_drill_plan_has_no_freeze_and_no_production_record(stack: Stack) -> None:
    """The write freeze is gone and the only DNS change is the drill record."""
    plan = drill(stack)
    kinds = [s.kind for s in plan.steps]
    assert "cutover.freeze" not in kinds and "verify.data" not in kinds and "verify.service" not in kinds
    assert all(k in kinds for k in DRILL_STEP_KINDS)
    (dns_step,) = [s for s in plan.steps if s.kind == "dns.cutover"]
    assert [r["fqdn"] for r in dns_step.params["records"]] == ["drill.microblog.test."]
    names = {r["fqdn"] for s in plan.steps for r in s.params.get("records", [])}
    assert names == {"drill.microblog.test."}
    assert [d["name"] for d in plan.dns_diff] == ["drill.microblog.test."]


def test_drill_plan_order_teardown_first_dns_after_the_data_gate(stack: Stack) -> None:
    """The teardown guard comes right after the allocation (undone last); DNS after the data gate."""
    ids = list(drill(stack).step_ids)
    assert ids[:2] == ["allocate", "drill-teardown"]
    assert ids.index("drill-cut") < ids.index("drill-verify-data") < ids.index("drill-dns") \
        < ids.index("drill-verify-service")
    assert ids.index("deploy-web") < ids.index("drill-cut")


def test_drill_plan_is_pure_and_stable(stack: Stack) -> None:
    """Same failover plan in, same drill plan out (same hash); the failover plan is not changed."""
    fp = failover_plan(stack)
    before = fp.hash
    a = to_drill(fp, drill_record="drill.microblog.test.", dns_provider="dnshost", zone="microblog.test.")
    b = to_drill(fp, drill_record="drill.microblog.test.", dns_provider="dnshost", zone="microblog.test.")
    assert a.hash == b.hash and fp.hash == before and a.hash != fp.hash


def test_ledger_goes_to_the_data_gate(stack: Stack) -> None:
    plan = drill(stack, ledger="/tmp/ledger.sqlite")
    assert plan.step("drill-verify-data").params["ledger"] == "/tmp/ledger.sqlite"


def test_without_a_drill_record_no_dns_step_and_deps_stay_valid(stack: Stack) -> None:
    """drill_record disabled: no DNS change at all; the service check waits for the data gate."""
    plan = drill(stack, drill_record=None)
    assert "dns.cutover" not in [s.kind for s in plan.steps]
    assert plan.step("drill-verify-service").depends_on == ("drill-verify-data",)
    assert plan.step("drill-verify-service").params["records"] == []


def test_a_production_record_as_drill_record_is_refused(stack: Stack) -> None:
    with pytest.raises(UsageError, match="production record"):
        drill(stack, drill_record="www.microblog.test.")


def test_unknown_step_kind_is_refused(stack: Stack) -> None:
    """A step the drill does not know to be safe stops the drill before anything runs."""
    fp = failover_plan(stack)
    odd = Plan(stack=fp.stack, source=fp.source, target=fp.target, mode="live",
               steps=(*fp.steps, Step("wipe", "source.wipe", "wipe the source", {}, ())))
    with pytest.raises(UsageError, match="safe"):
        to_drill(odd, drill_record="drill.microblog.test.", dns_provider="dnshost", zone="microblog.test.")


# ------------------------------------------------------------------------------------------ no-notice (cold plan)
def cold_plan(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """The example's cold failover plan from a recorded standby; nothing answers (and nothing is probed)."""
    import shutil

    from liferaft.engine.standby_state import save_standby
    from liferaft.failover.cold import SOURCE_TIMEOUT_ENV, build_cold_plan

    d = tmp_path / "stack"
    shutil.copytree(REPO / "examples" / "microblog", d, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "secrets").mkdir(exist_ok=True)
    for name in ("aws_access_key_id", "aws_secret_access_key", "db_password", "worker_redis_password", "id_ed25519",
                 "pdns_api_key",
                 "s3rver_key", "s3rver_secret"):
        (d / "secrets" / name).write_text("not-a-real-secret\n")
    local = load_stack(d / "liferaft.yaml")
    m = local.model
    target = m.alternates[0]
    save_standby(tmp_path / "state", m.name, target, {
        "source": m.primary, "target": target, "source_host": {"name": "a", "address": "127.0.0.1", "port": 1},
        "standby_host": {"name": "b", "address": "127.0.0.2", "port": 22, "spec_name": f"{m.name}-{target}",
                         "provider": local.site(target).compute},
        "databases": {k: {"method": db.migrate, "subscription": f"liferaft_{db.name}"}
                      for k, db in m.data.databases.items()},
        "keyspaces": {k: {"method": "replicaof"} for k in m.data.redis},
        "folders": {k: {"path": d.path, "last_sync_at": 1.0} for k, d in m.data.directories.items()},
        "buckets": {k: {"last_sync_at": 1.0} for k in m.data.buckets}})
    monkeypatch.setenv(SOURCE_TIMEOUT_ENV, "0.5")
    return build_cold_plan(local, target, state_dir=tmp_path / "state", probe_source=False)


def test_no_notice_drill_plan_promotes_the_standby_behind_the_drill_record(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.drill.plan import to_cold_drill

    cold = cold_plan(stack, tmp_path, monkeypatch)
    assert any("not probed" in n for n in cold.notes)
    dns = stack.model.dns
    assert dns is not None
    plan = to_cold_drill(cold, drill_record=drill_fqdn(dns), dns_provider=dns.provider, zone=dns.zone,
                         nameserver=dns.nameserver, ledger="/tmp/ledger.sqlite")
    kinds = [s.kind for s in plan.steps]
    ids = list(plan.step_ids)
    assert ids[:2] == ["allocate", "drill-teardown"] and "verify.service" not in kinds
    assert "standby.promote" in kinds and "drill.verify_service" in kinds
    names = {r["fqdn"] for s in plan.steps for r in s.params.get("records", [])}
    assert names == {"drill.microblog.test."}  # production records never in the plan
    loss = next(s for s in plan.steps if s.kind == "standby.loss")
    assert loss.params["ledger"] == "/tmp/ledger.sqlite"
    assert ids.index("drill-dns") < ids.index("drill-verify-service")
    for s in plan.steps:  # every dependency names a step of the plan
        assert set(s.depends_on) <= set(ids), s
    teardown = plan.steps[1]
    assert teardown.params["databases"] == sorted(stack.model.data.databases)


def test_no_notice_drill_refuses_a_live_plan_and_a_live_drill_refuses_a_cold_one(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.drill.plan import to_cold_drill

    with pytest.raises(UsageError):
        to_cold_drill(failover_plan(stack), drill_record=None, dns_provider=None, zone=None)
    with pytest.raises(UsageError):
        to_drill(cold_plan(stack, tmp_path, monkeypatch), drill_record=None, dns_provider=None, zone=None)


# ------------------------------------------------------------------------------- service.deploy undo (rollback)
class _UndoCtx:
    """What DeployService.undo reads of a run context: the allocate step's output, the plan, the stack, events."""

    def __init__(self, stack: Stack, host: dict[str, Any] | None, source_address: str = "10.0.0.1") -> None:
        self._host = host
        self.run_id = "run-1"
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.plan = types.SimpleNamespace(steps=[Step(id="allocate", kind="host.allocate", title="allocate",
                                                      params={"source_host": {"address": source_address}})])
        self._stack = stack

    def output(self, step_id: str) -> dict[str, Any]:
        if self._host is None:
            raise RunFailed(f"step {step_id!r} has not completed (status pending)")
        return self._host

    def outputs_of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {"allocate": self._host} if self._host is not None and kind == "host.allocate" else {}

    @property
    def memo(self) -> dict[str, Any]:
        return {}

    def require_stack(self) -> Stack:
        return self._stack

    def emit(self, kind: str, message: str, **data: Any) -> None:
        self.events.append((kind, data))


def _deploy_step(service: str) -> Any:
    return Step(id=f"deploy-{service}", kind="service.deploy", title="deploy", params={"service": service})


def test_service_stop_lines_follow_the_shipped_playbooks_and_remove_nothing() -> None:
    """A rolled-back deploy is stopped the way the shipped playbooks start it; its files and data stay."""
    from liferaft.steps.hosts import stop_services_lines

    script = "\n".join(stop_services_lines(["web"]))
    assert "systemctl disable --now liferaft-web.service" in script
    assert "start-stop-daemon --stop --pidfile /run/liferaft-web.pid" in script and "--oknodo" in script
    assert "rm " not in script


def test_deploy_undo_stops_the_service_on_the_target(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """service.deploy is undoable: its undo runs the stop script on the allocated host, never the source."""
    from liferaft.configure import remote as access
    from liferaft.engine.kinds import get_kind

    kind = get_kind("service.deploy")
    assert kind.undoable
    svc = min(stack.model.services)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(access, "ssh", lambda host, cmd, **kw: calls.append((host.address, kw["stdin"])) or "")
    monkeypatch.setattr("liferaft.workloads.playbook.Playbook.health_url", lambda self, wl, a: None)
    host = {"name": "b", "address": "10.0.0.2", "host_keys": ["ssh-ed25519 AAAA"]}

    kind.undo(_UndoCtx(stack, None), _deploy_step(svc))  # nothing allocated: nothing to stop
    assert calls == []
    ctx = _UndoCtx(stack, host)
    kind.undo(ctx, _deploy_step(svc))
    assert [a for a, _ in calls] == ["10.0.0.2"] and f"/run/liferaft-{svc}.pid" in calls[0][1]
    assert [k for k, _ in ctx.events] == ["service.stopped"]
    with pytest.raises(RunFailed, match="source host"):
        kind.undo(_UndoCtx(stack, host, source_address="10.0.0.2"), _deploy_step(svc))
    assert len(calls) == 1


def test_deploy_undo_on_an_unreachable_host_fails_only_while_the_service_answers(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SSH to the target: the rollback goes on when the service does not answer either, and stops (naming the
    URL) when it still does: a client holding its address would still be writing there."""
    import http.server

    from liferaft.configure import remote as access
    from liferaft.engine.kinds import get_kind
    from liferaft.errors import Unreachable

    def unreachable(host: Any, cmd: str, **kw: Any) -> str:
        raise Unreachable(host.name, "ssh", "No route to host")

    monkeypatch.setattr(access, "ssh", unreachable)
    kind, svc = get_kind("service.deploy"), min(stack.model.services)
    host = {"name": "b", "address": "127.0.0.1", "host_keys": ["ssh-ed25519 AAAA"]}
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens on the port now
    monkeypatch.setattr("liferaft.workloads.playbook.Playbook.health_url",
                        lambda self, wl, a: f"http://127.0.0.1:{port}/healthz")
    ctx = _UndoCtx(stack, host)
    kind.undo(ctx, _deploy_step(svc))
    assert [k for k, _ in ctx.events] == ["service.stop_skipped"]

    server = http.server.HTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)  # answers 501
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with pytest.raises(RunFailed, match="still answers"):
            kind.undo(_UndoCtx(stack, host), _deploy_step(svc))
    finally:
        server.shutdown()
        server.server_close()
