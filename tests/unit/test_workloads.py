"""The workload contract: `service.deploy` is generic over workload kinds, and the playbook kind's stop/teardown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

import liferaft.steps  # noqa: F401  (registers the step library)
from liferaft.engine import Plan, RunContext, Runner, Step, StepKind
from liferaft.engine.kinds import _REGISTRY as STEP_KINDS
from liferaft.engine.kinds import register
from liferaft.stack import load_stack
from liferaft.workloads import Workload, kind_of, register_kind, unregister_kind, workload, workloads

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "microblog" / "liferaft.yaml"


class ToyKind:
    """A second workload kind, made up here: it 'deploys' a service by writing a file and stops it by removing it.
    Nothing in the step library, the planner or the registry module knows it."""

    name: ClassVar[str] = "toy"
    root: ClassVar[Path] = Path("/nonexistent")

    def entries(self, model: Any) -> dict[str, Any]:
        return {"toyapp": {"greeting": "hello"}}

    def deploy(self, ctx: RunContext, wl: Workload, host: Any) -> dict[str, Any]:
        path = self.root / f"{wl.name}@{host.address}"
        path.write_text(json.dumps({**wl.spec, "site": ctx.plan.target}))
        return {"path": str(path)}

    def stop(self, ctx: RunContext, wl: Workload, host: Any) -> None:
        (self.root / f"{wl.name}@{host.address}").unlink(missing_ok=True)
        ctx.emit("service.stopped", f"{wl.name} stopped", service=wl.name)

    def health(self, wl: Workload) -> None:
        return None

    def health_url(self, wl: Workload, address: str) -> None:
        return None

    def teardown_lines(self, stack: Any, wls: list[Workload]) -> list[str]:
        return [f"rm -f {self.root}/{w.name}@*" for w in wls]


class _ToyAllocate(StepKind):
    """Stands in for host.allocate (no provider): a fixed target host."""

    name = "host.allocate"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {"name": "toy-host", "address": "192.0.2.7", "port": 22, "user": "root",
                "host_keys": ["ssh-ed25519 AAAA"]}


@pytest.fixture
def toy_kind(tmp_path: Path) -> Any:
    ToyKind.root = tmp_path
    real_allocate = type(STEP_KINDS["host.allocate"])
    register_kind(ToyKind)
    register(_ToyAllocate)
    try:
        yield ToyKind
    finally:
        unregister_kind("toy")
        register(real_allocate)


def test_a_second_workload_kind_deploys_and_rolls_back_through_service_deploy(toy_kind: Any, tmp_path: Path) -> None:
    stack = load_stack(EXAMPLE)
    assert [w.kind for w in workloads(stack)] == ["playbook", "playbook", "toy"]  # web, worker, toyapp
    assert workload(stack, "toyapp").kind == "toy" and workload(stack, "web").kind == "playbook"
    plan = Plan(stack="microblog", source="primary", target="alt-b", mode="live", steps=(
        Step("allocate", "host.allocate", "allocate"),
        Step("deploy-toyapp", "service.deploy", "deploy service toyapp", {"service": "toyapp"}, ("allocate",)),
    ))
    runner = Runner(tmp_path / "state", stack=stack)
    out = runner.start(plan)
    assert out.status == "done"
    deployed = tmp_path / "toyapp@192.0.2.7"
    assert json.loads(deployed.read_text()) == {"greeting": "hello", "site": "alt-b"}
    with runner.journal() as journal:
        rec = journal.step(out.run_id, "deploy-toyapp")
    assert rec.result == {"path": str(deployed), "service": "toyapp", "kind": "toy", "host": "toy-host"}
    assert runner.rollback(out.run_id).status == "rolled-back"
    assert not deployed.exists()


def test_service_deploy_params_are_parsed_at_the_journal_edge() -> None:
    from liferaft.errors import UsageError
    from liferaft.steps.hosts import DeployParams, DeployService

    assert DeployParams.from_json({"service": "web"}) == DeployParams("web")
    assert DeployParams.from_json({"service": "web"}).to_json() == {"service": "web"}
    with pytest.raises(UsageError, match="service name"):
        DeployParams.from_json({})
    assert DeployService.serial == "ansible"  # playbooks never overlap on one host


def test_unknown_service_is_a_usage_error_naming_the_known_ones() -> None:
    from liferaft.errors import UsageError

    with pytest.raises(UsageError) as e:
        workload(load_stack(EXAMPLE), "nope")
    assert "web" in (e.value.hint or "")


def test_playbook_teardown_removes_code_units_pidfiles_logs_and_the_config_file() -> None:
    """The shipped playbook writes its config (database password, bucket keys), start command, log and pidfile under
    the service's roots (`liferaft_paths`), and runs it as a user whose home is the code root: the teardown removes
    those roots whole, the unit, and that user."""
    stack = load_stack(EXAMPLE)
    wl = workload(stack, "web")
    script = "\n".join(kind_of(wl).teardown_lines(stack, [wl])) + "\n"
    shipped = (REPO / "liferaft" / "playbooks" / "microblog.yml").read_text()
    for where in ('app_conf: "{{ liferaft_paths.etc }}/config.json"', 'app_dir: "{{ liferaft_paths.app }}"',
                  'app_log: "{{ liferaft_paths.log }}/app.log"', 'app_pidfile: "{{ liferaft_paths.pidfile }}"',
                  'app_start: "{{ liferaft_paths.start }}"', 'home: "{{ app_dir }}"'):
        assert where in shipped, where  # where the playbook writes them
    assert "rm -rf /etc/liferaft/web /opt/liferaft/web /var/lib/liferaft/web /var/log/liferaft/web " \
           "/run/liferaft/web\n" in script
    assert "rm -f /etc/systemd/system/liferaft-web.service /run/liferaft-web.pid" in script
    assert "'$6 == \"/opt/liferaft/web\" {print $1}' /etc/passwd" in script and 'userdel "$u"' in script
    assert "start-stop-daemon --stop --pidfile /run/liferaft/web/web.pid" in script
    assert "start-stop-daemon --stop --pidfile /run/liferaft-web.pid" in script  # what earlier versions started
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0


def test_playbook_teardown_globs_never_reach_another_services_files(tmp_path: Path) -> None:
    """`<svc>.*` with a service name (no '.') matches web.json and web.log, never web-api.json."""
    for name in ("web.json", "web.log", "web-api.json", "webx.json"):
        (tmp_path / name).write_text("x")
    script = f"cd {tmp_path} && rm -rf web.*"
    subprocess.run(["sh", "-c", script], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web-api.json", "webx.json"]


def test_teardown_lines_ask_each_kind_for_its_own_workloads(toy_kind: Any) -> None:
    from liferaft.workloads import teardown_lines

    stack = load_stack(EXAMPLE)
    lines = teardown_lines(stack, workloads(stack))
    assert f"rm -f {toy_kind.root}/toyapp@*" in lines  # the toy kind's line, for its workload
    assert any("rm -rf /etc/liferaft/web " in line for line in lines)  # the playbook kind's, for web
    assert not any("toyapp" in line for line in lines if "liferaft" in line)  # never the playbook's for the toy
