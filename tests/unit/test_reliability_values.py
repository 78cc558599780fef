"""Values that parse but mean nothing (`.inf`, `.nan`, absurd durations) and hostile characters in error messages:
refused or escaped at the edge, with file, line and field like every other validation error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import invoke
from tests.unit.test_reliability_input import _edit, _example

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("old,new,field", [
    ("  rto: 5m\n", "  rto: .inf\n", "objectives.rto"),
    ("  rpo: 0s\n", "  rpo: .nan\n", "objectives.rpo"),
    ("  rpo: 0s\n", "  rpo: -.inf\n", "objectives.rpo"),
    ("  rpo: 0s\n", "  rpo: 0s\nhealth:\n  timeout: .inf\n", "health.timeout"),
    ("  rpo: 0s\n", "  rpo: 0s\nhealth:\n  interval: .NaN\n", "health.interval"),
    ("  rpo: 0s\n", "  rpo: 0s\nhealth:\n  timeout: " + "9" * 400 + "\n", "health.timeout"),
    ("  rpo: 0s\n", "  rpo: 0s\nhealth:\n  timeout: " + "9" * 400 + "h\n", "health.timeout"),
    ("  rto: 5m\n", "  rto: 1e300\n", "objectives.rto"),
    ("      driver: s3 ", "      retry_delay: .inf\n      driver: s3 ", "providers.objstore.storage.retry_delay"),
])
def test_non_finite_and_absurd_numbers_are_refused_with_file_line_field(tmp_path: Path, old: str, new: str,
                                                                        field: str) -> None:
    """`.inf`/`.nan` validated before (then `health` exited 70 on OverflowError, and a `.nan` objective made every
    comparison false); now each is an exit-2 problem pointing at its line and field."""
    stack = _edit(_example(tmp_path / "stack"), old, new)
    result = invoke("--stack", str(stack), "validate", "--json")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    problems = json.loads(result.stdout)["problems"]
    assert [p["path"] for p in problems] == [field], problems
    assert problems[0]["line"] and problems[0]["line"] > 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


def test_health_does_not_crash_on_an_infinite_timeout(tmp_path: Path) -> None:
    stack = _edit(_example(tmp_path / "stack"), "  rpo: 0s\n", "  rpo: 0s\nhealth:\n  timeout: .inf\n")
    result = invoke("--stack", str(stack), "--state-dir", str(tmp_path / "state"), "health", "--json")
    assert result.exit_code == 78, (result.exit_code, result.stderr)  # EX_CONFIG: not a verdict, not a crash
    assert "health.timeout" in result.stderr and "finite" in result.stderr


@pytest.mark.parametrize("args", [("health", "--timeout", "inf"), ("health", "--timeout", "nan"),
                                  ("health", "--watch", "--interval", "nan"),
                                  ("replicate", "--to", "alt", "--interval", "nan"),
                                  ("replicate", "--to", "alt", "--interval", "inf"),
                                  ("plan", "--to", "alt", "--mode", "cold", "--source-timeout", "nan")])
def test_non_finite_seconds_on_the_command_line_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Click's float and FloatRange accept `inf` and `nan` (nan passes every range check)."""
    stack = _example(tmp_path / "stack")
    result = invoke("--stack", str(stack), "--state-dir", str(tmp_path / "state"), *args)
    assert result.exit_code == (64 if args[0] == "health" else 2), (result.exit_code, result.stderr)
    assert "finite" in result.stderr


def test_durations_still_parse() -> None:
    from liferaft.stack.model import parse_duration

    assert parse_duration("1h30m") == 5400.0 and parse_duration(0) == 0.0 and parse_duration(12.5) == 12.5


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "Infinity"])
def test_non_finite_source_timeout_from_the_environment_is_refused(tmp_path: Path, value: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """LIFERAFT_SOURCE_TIMEOUT=inf waited forever on a dead source (and nan became 0.5 s silently)."""
    from liferaft.errors import UsageError
    from liferaft.failover.cold import source_timeout
    from liferaft.stack import load_stack

    stack = load_stack(_example(tmp_path / "stack"))
    monkeypatch.setenv("LIFERAFT_SOURCE_TIMEOUT", value)
    with pytest.raises(UsageError, match="is not a number of seconds"):
        source_timeout(stack)
    monkeypatch.setenv("LIFERAFT_SOURCE_TIMEOUT", "2.5")
    assert source_timeout(stack) == 2.5
