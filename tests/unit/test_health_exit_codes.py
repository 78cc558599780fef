"""`health` keeps 0-3 for its verdicts; anything that is not a verdict has its own sysexits.h code, so a cron job or
a Nagios-style monitor can tell a typo or a missing credential from an outage."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from liferaft.cli._common import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE, VerdictCommand
from liferaft.errors import InvalidInput, ProviderError, SecretError, Unreachable, UsageError
from tests.cli_helpers import invoke
from tests.unit.test_health_helpers import write_stack

pytestmark = pytest.mark.reliability


def test_invalid_stack_file_is_78_not_unreachable(tmp_path: Path) -> None:
    """Before: exit 2, the same code as an 'unreachable' verdict."""
    stack = write_stack(tmp_path, cloud_port=1, app_port=2)
    stack.write_text(stack.read_text().replace("primary: primary", "primary: nowhere"))
    for args in ((), ("--json",), ("--watch", "--count", "1")):
        r = invoke("--stack", str(stack), "health", *args)
        assert r.exit_code == EX_CONFIG == 78, (r.exit_code, r.stderr)
        assert "no site named 'nowhere'" in r.stderr
    r = invoke("--stack", str(tmp_path / "missing.yaml"), "health")
    assert r.exit_code == 78 and "liferaft init" in r.stderr


def test_usage_errors_are_64(tmp_path: Path) -> None:
    stack = write_stack(tmp_path, cloud_port=1, app_port=2)
    for args in (("--count", "2"), ("--no-such-flag",), ("--confirm", "0"), ("--timeout", "abc")):
        r = invoke("--stack", str(stack), "health", *args)
        assert r.exit_code == EX_USAGE == 64, (args, r.exit_code, r.stderr)


def test_unreadable_credentials_are_78_naming_the_reference_never_the_value(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every provider 'degraded' (exit 1), the cause buried in the evidence. Now no probe runs: exit 78,
    each unreadable reference named with the field that holds it; a value that was readable is never shown."""
    stack = write_stack(tmp_path, cloud_port=1, app_port=2)
    monkeypatch.setenv("UNIT_KEY", "readable-key-value-Zq9")
    monkeypatch.delenv("UNIT_SECRET", raising=False)
    r = invoke("--stack", str(stack), "health", "--json")
    assert r.exit_code == 78, (r.exit_code, r.stderr)
    body = json.loads(r.stdout)
    assert body["ok"] is False and body["error"] == "SecretError"
    assert "providers.cloud.credentials.secret_access_key" in r.stderr and "env:UNIT_SECRET" in r.stderr
    assert "providers.cloud.credentials.access_key_id" not in r.stderr  # it resolved
    assert "readable-key-value" not in r.stdout + r.stderr
    assert '"verdict"' not in r.stdout  # no verdict was made up


@pytest.mark.parametrize("err,code", [
    (click.UsageError("x"), 64), (InvalidInput([]), 78), (SecretError("x"), 78), (UsageError("no site"), 78),
    (ProviderError("p", "op", "d"), 69), (Unreachable("p", "op", "d"), 69), (RuntimeError("bug"), 70),
])
def test_verdict_command_error_codes(err: BaseException, code: int) -> None:
    """The mapping itself: errors never land on 0-3 (2 was 'invalid input', 3 'provider error' before)."""
    assert VerdictCommand.error_exit_code(err, 70) == code
    assert EX_UNAVAILABLE == 69


def test_other_commands_keep_their_codes(tmp_path: Path) -> None:
    """Only `health` (whose 0-3 are verdicts) changes: `validate` still exits 2 on an invalid stack file."""
    stack = write_stack(tmp_path, cloud_port=1, app_port=2)
    stack.write_text(stack.read_text().replace("primary: primary", "primary: nowhere"))
    assert invoke("--stack", str(stack), "validate").exit_code == 2
    assert invoke("--stack", str(stack), "audit").exit_code == 2
    assert invoke("--stack", str(stack), "plan", "--to", "standby", "--bogus").exit_code == 2
