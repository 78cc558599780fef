"""The CLI behaves like an ops tool: exit codes, --json, errors without tracebacks, no overwrite without --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import invoke

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


def test_version() -> None:
    from liferaft import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_validate_ok_and_json() -> None:
    result = invoke("validate", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout
    result = invoke("--stack", str(EXAMPLE), "validate", "--json")
    body = json.loads(result.stdout)
    assert result.exit_code == 0 and body["ok"] is True and body["summary"]["providers"] == 5


def test_validate_invalid_exits_2_with_precise_json(tmp_path: Path) -> None:
    bad = tmp_path / "liferaft.yaml"
    bad.write_text(EXAMPLE.read_text().replace("primary: primary", "primary: nowhere"))
    (tmp_path / "app").mkdir()
    result = invoke("validate", str(bad), "--json")
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["ok"] is False and body["error"] == "InvalidInput"
    (problem,) = [p for p in body["problems"] if p["path"] == "primary"]
    assert problem["file"] == str(bad) and problem["line"] > 1 and "no site named 'nowhere'" in problem["message"]
    assert "Traceback" not in result.output


def test_missing_stack_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("--stack", str(tmp_path / "nope.yaml"), "validate")
    assert result.exit_code == 2 and "liferaft init" in result.stderr


def test_check_secrets_reports_missing_without_values(tmp_path: Path) -> None:
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(EXAMPLE.read_text())
    (tmp_path / "app").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db_password").write_text("hunter2-very-secret")
    result = invoke("validate", str(stack), "--check-secrets", "--json")
    body = json.loads(result.stdout)
    assert result.exit_code == 1 and body["ok"] is False
    fields = {u["field"] for u in body["unresolved_secrets"]}
    assert "providers.aws.credentials.secret_access_key" in fields
    assert "data.databases.blog.password" not in fields
    assert "hunter2" not in result.output


def test_init_writes_a_starter_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "liferaft.yaml"
    assert invoke("init", str(target)).exit_code == 0
    text = target.read_text()
    assert "version: 1" in text and "env:" in text
    again = invoke("init", str(target))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("init", str(target), "--force").exit_code == 0


def test_unknown_command_is_usage_error() -> None:
    assert invoke("no-such-command").exit_code == 2


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed entry point works as a real process (python -m liferaft)."""
    out = subprocess.run([sys.executable, "-m", "liferaft", "validate", str(EXAMPLE), "--json"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[2])},
                         check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ok"] is True
