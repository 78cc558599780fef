"""The CLI behaves like an ops tool: exit codes, --json, errors without tracebacks, no overwrite without --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.reliability
def test_terminal_escapes_and_bidi_in_keys_are_shown_not_obeyed(tmp_path: Path) -> None:
    """A key holding an OSC escape (retitles the terminal) or U+202E (reverses text) reaches stderr escaped;
    --json escapes them through the JSON encoder and keeps the real key."""
    (tmp_path / "app").mkdir()
    stack = tmp_path / "liferaft.yaml"
    stack.write_text(EXAMPLE.read_text().replace("services:\n", 'services:\n  "x\\e]0;pwned\\ay\\u202eevil": {}\n', 1)
                     + '"\\e[2J\\u202etop": 1\n')
    for args in (("validate", str(stack)), ("--stack", str(stack), "health"), ("--stack", str(stack), "runs")):
        result = invoke(*args)
        assert result.exit_code in (2, 78), result.stderr
        assert "\x1b" not in result.stderr and "\x07" not in result.stderr and "\u202e" not in result.stderr
        assert "\\x1b]0;pwned\\x07y\\u202eevil" in result.stderr, result.stderr
        assert "\\x1b[2J\\u202etop" in result.stderr, result.stderr
    body = json.loads(invoke("validate", str(stack), "--json").stdout)
    assert any("x\x1b]0;pwned\x07y\u202eevil" in p["path"] for p in body["problems"])
    # A valid stack whose secret reference holds them: the unresolved-secret line is escaped too.
    stack.write_text(EXAMPLE.read_text().replace("password: file:secrets/db_password",
                                                 'password: "file:secrets/\\e]0;pwned\\a\\u202e"'))
    result = invoke("validate", str(stack), "--check-secrets")
    assert result.exit_code == 1, result.stderr
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert "file:secrets/\\x1b]0;pwned\\x07\\u202e" in result.stderr, result.stderr


def test_terminal_safe_keeps_ordinary_text() -> None:
    from liferaft.cli._common import terminal_safe

    assert terminal_safe("line one\n\tdéjà vu — ok ✓") == "line one\n\tdéjà vu — ok ✓"
    assert terminal_safe("a\x1bb\x7fc\u200fd\u2028e") == "a\\x1bb\\x7fc\\u200fd\\u2028e"


@pytest.mark.reliability
def test_a_typo_in_the_command_gets_a_suggestion() -> None:
    result = invoke("helth")
    assert result.exit_code == 2 and "Did you mean 'health'?" in result.stderr
    assert "Did you mean 'drills' or 'drill'?" in invoke("drils").stderr  # the closest first
    assert "Did you mean" not in invoke("zzzzzz").stderr


@pytest.mark.reliability
def test_a_global_option_after_the_command_gets_a_hint() -> None:
    """`liferaft validate --stack x`: --stack belongs before the command; say so."""
    result = invoke("validate", "--stack", "x.yaml")
    assert result.exit_code == 2
    assert "No such option" in result.stderr and "--stack is a global option: put it before the command" \
        in result.stderr
    assert "--state-dir is a global option" in invoke("runs", "--state-dir", "/tmp/x").stderr
    assert "is a global option" not in invoke("validate", "--nope").stderr


def test_suggestions_import_no_command_module() -> None:
    """The 'did you mean' comes from the command table: no command module (and no SDK) is imported for it."""
    code = ("import sys; from liferaft.cli import main\n"
            "try:\n    main(['helth'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('liferaft.cli.', 'boto', 'libcloud', 'rich'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(EXAMPLE.parents[2])})
    assert out.stdout.strip() == "['liferaft.cli._common']", out.stdout


@pytest.mark.reliability
def test_the_starter_fails_validation_until_its_placeholders_are_replaced(tmp_path: Path) -> None:
    """`init` writes it (exit 0), but a starter with example addresses and a placeholder host key must not pass
    `validate` as if it described a real stack: each placeholder is named, with 'replace it'."""
    target = tmp_path / "liferaft.yaml"
    assert invoke("init", str(target)).exit_code == 0
    result = invoke("validate", str(target), "--json")
    assert result.exit_code == 2, result.stdout
    problems = {p["path"]: p["message"] for p in json.loads(result.stdout)["problems"]}
    assert set(problems) == {"providers.colo.hosts.0.address", "providers.colo.hosts.0.host_keys.0",
                             "providers.backup.storage.host", "providers.dns.dns.host", "dns.zone"}, problems
    assert all("placeholder" in m and "replace it" in m for m in problems.values()), problems
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA/ugkVGSOctNgI54jGZg2AY4iSHYxzkbPrw/BdRwxD9"
    text = target.read_text()
    for old, new in (("192.0.2.10", "10.20.0.10"), ("objects.example.net", "objects.my-backup.io"),
                     ("dns.example.net", "ns-api.my-dns.io"), ("example.org.", "myapp.io."),
                     ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheHostsRealPublicKey0000000000", key)):
        assert old in text, old
        text = text.replace(old, new)
    target.write_text(text)
    result = invoke("validate", str(target))
    assert result.exit_code == 0, result.stderr


def test_documentation_addresses_are_placeholders_anywhere(tmp_path: Path) -> None:
    """The rule is not tied to the starter's exact values: any RFC 5737 address or RFC 2606 domain in an address
    field is refused; real-looking ones next to them are not."""
    from liferaft.stack.checks import _placeholder

    assert _placeholder("address", "203.0.113.7") and _placeholder("endpoint", "https://s3.example.com:9000/x")
    assert _placeholder("zone", "shop.example.com.") and _placeholder("webhook", "http://example.org/hook")
    assert not _placeholder("address", "10.0.0.1") and not _placeholder("host", "example.com.evil.io")
    assert not _placeholder("detail", "see example.com") and not _placeholder("zone", "notexample.com.")
