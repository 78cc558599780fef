"""Exit codes of a run that stops (issue 20 item 8): any stop exits 4 with the resume/rollback hint; only a failed
verification (a gate, or a step's own verify) is a failed check (exit 1), as the README's table says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liferaft.engine import Plan, RunContext, Runner, Step, StepKind, register
from liferaft.errors import EXIT_CHECK_FAILED, EXIT_RUN_FAILED, CheckFailed, RunFailed
from tests.unit.test_failover_cli import cli, env  # noqa: F401  (fixture)
from tests.unit.test_failover_toys import toy_plan


@register
class ToyRefuse(StepKind):
    """Refuses while acting, as logical replication refuses tables without a primary key (a precondition, raised
    as CheckFailed by the mover), until the file `fixed` exists."""

    name = "toy.refuse"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        if not Path(step.params["fixed"]).exists():
            raise CheckFailed("2 table(s) without a primary key: public.audit_log, public.raw_events",
                              hint="add a primary key, or migrate with 'dump'")
        return {}


def _plan(tmp: Path) -> Plan:
    return Plan(stack="toy", source="s1", target="s2", mode="live",
                steps=(Step("seed", "toy.refuse", "seed the copy", {"fixed": str(tmp / "fixed")}),))


def test_a_precondition_refused_midway_stops_the_run_with_exit_4_and_the_hint(
        env: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """Before: the mover's CheckFailed went through as a failed check, exit 1, although the run only stopped."""
    runner = Runner(env[1], stack_name="toy")
    with pytest.raises(RunFailed) as err:
        runner.start(_plan(tmp_path))
    assert err.value.exit_code == EXIT_RUN_FAILED == 4
    assert "without a primary key" in err.value.message and "failed at seed" in err.value.message
    run_id = err.value.message.split()[1]
    assert f"liferaft resume {run_id}" in (err.value.hint or "") and f"liferaft rollback {run_id}" in (
        err.value.hint or "")
    code, _, stderr = cli(env, "resume", run_id, capsys=capsys)  # the same stop through the CLI
    assert code == 4 and "without a primary key" in stderr and f"liferaft rollback {run_id}" in stderr
    (tmp_path / "fixed").write_text("")
    code, stdout, stderr = cli(env, "resume", run_id, capsys=capsys)
    assert code == 0 and "done" in stdout, stderr


def test_a_failed_gate_is_still_a_failed_check_exit_1_with_the_hint(
        env: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """Data that differs at the gate: exit 1 (the README's 'a check failed: data differs'), and the hint too."""
    with pytest.raises(CheckFailed) as err:
        Runner(env[1], stack_name="toy").start(toy_plan(tmp_path, gate_expect=tmp_path / "nope"))
    assert err.value.exit_code == EXIT_CHECK_FAILED
    run_id = err.value.message.split()[1]
    code, _, stderr = cli(env, "resume", run_id, capsys=capsys)
    assert code == 1 and f"liferaft resume {run_id}" in stderr and f"liferaft rollback {run_id}" in stderr
