"""`depends_on` between services of one host: validation (an unknown service, itself, a cycle: an error naming it),
the start order (workloads, the plans' step edges) and the stop order (teardown, fence: the reverse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.errors import InvalidInput
from liferaft.stack import load_stack
from tests.unit.test_containers import DIGEST, _stack

SIDECAR = f"""  sidecar:
    image: team/sidecar@{DIGEST}
    ports: [9091]
    depends_on: [web, api]
  api:
    image: team/api@{DIGEST}
    ports: [9090]
    depends_on: [web]
"""


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_stack(path)
    return [str(p) for p in exc.value.problems]


def test_services_start_after_what_they_depend_on_and_stop_before_it(tmp_path: Path) -> None:
    from liferaft.workloads import workloads
    from liferaft.workloads.registry import stop_order, teardown_lines

    stack = load_stack(_stack(tmp_path, SIDECAR))
    # Without depends_on the order would be by kind, then name: web (playbook) last among none; here it is first.
    # The example's worker depends on nothing: it comes by name, after them (and stops first).
    assert [w.name for w in workloads(stack)] == ["web", "api", "sidecar", "worker"]
    assert [w.name for w in stop_order(workloads(stack))] == ["worker", "sidecar", "api", "web"]
    lines = "\n".join(teardown_lines(stack, workloads(stack)))
    assert lines.index("liferaft-sidecar") < lines.index("liferaft-api") < lines.index("/etc/liferaft/web")


def test_the_fence_stops_dependents_first_and_its_undo_starts_them_last(tmp_path: Path) -> None:
    from liferaft.standby.fence import fence_script

    stack = load_stack(_stack(tmp_path, SIDECAR.replace("    depends_on: [web, api]\n", "    depends_on: [api]\n")
                              .replace("    depends_on: [web]\n", "")))
    fence = fence_script(stack)
    assert fence.index("container service sidecar") < fence.index("container service api")
    undo = fence_script(stack, undo=True)
    assert undo.index("container service api") < undo.index("container service sidecar")


def test_a_deploy_plan_gets_the_edges(tmp_path: Path) -> None:
    from liferaft.planner.builder import Deploy, build

    stack = load_stack(_stack(tmp_path, SIDECAR))
    plan = build(stack, "primary", "primary", Deploy())
    deps = {s.id: set(s.depends_on) for s in plan.steps if s.id.startswith("deploy-")}
    assert "deploy-web" in deps["deploy-api"]
    assert {"deploy-web", "deploy-api"} <= deps["deploy-sidecar"]
    assert not {"deploy-api", "deploy-sidecar"} & deps["deploy-web"]
    ids = list(plan.step_ids)
    assert ids.index("deploy-web") < ids.index("deploy-api") < ids.index("deploy-sidecar")


@pytest.mark.parametrize(("services", "expected"), [
    (f"  api:\n    image: team/api@{DIGEST}\n    depends_on: [db]\n",
     "services.api.depends_on.0: service 'api' depends on 'db', which is not a service of the stack"),
    (f"  api:\n    image: team/api@{DIGEST}\n    depends_on: [api]\n", "service 'api' depends on itself"),
    ((f"  api:\n    image: team/api@{DIGEST}\n    depends_on: [sidecar]\n"
     f"  sidecar:\n    image: team/sidecar@{DIGEST}\n    depends_on: [web]\n"),
     None),  # no cycle: valid
    ((f"  api:\n    image: team/api@{DIGEST}\n    depends_on: [sidecar]\n"
     f"  sidecar:\n    image: team/sidecar@{DIGEST}\n    depends_on: [api]\n"),
     "services depend on each other in a cycle: api -> sidecar -> api"),
])
def test_an_unknown_service_or_a_cycle_is_an_error_naming_it(tmp_path: Path, services: str,
                                                              expected: str | None) -> None:
    path = _stack(tmp_path, services)
    if expected is None:
        load_stack(path)
        return
    problems = _problems(path)
    assert any(expected in p for p in problems), problems
