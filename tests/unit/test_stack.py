"""The stack file: the example validates; each kind of mistake is reported precisely, all at once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from liferaft.errors import InvalidInput, SecretError
from liferaft.stack import load_stack

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example stack next to its app, so relative paths resolve."""
    shutil.copytree(EXAMPLE.parent / "app", tmp_path / "app")
    dst = tmp_path / "liferaft.yaml"
    dst.write_text(EXAMPLE.read_text())
    return dst


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _broken(example: Path, old: str, new: str) -> tuple[Path, str]:
    text = example.read_text()
    assert old in text, old
    text = text.replace(old, new, 1)
    example.write_text(text)
    return example, text


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_stack(path)
    return [str(p) for p in exc.value.problems]


def test_example_validates() -> None:
    """The shipped example is valid and its sections are all there."""
    stack = load_stack(EXAMPLE)
    assert stack.model.primary == "primary" and stack.model.alternates == ["alt-b"]
    assert set(stack.model.providers) == {"aws", "colo-a", "colo-b", "objstore", "dnshost"}
    assert stack.model.objectives.rto == 300.0 and stack.model.objectives.rpo == 0.0
    assert stack.model.data.databases["blog"].migrate == "logical"
    assert stack.capabilities("dnshost") == ("dns", "account")


def test_malformed_yaml_names_line(example: Path) -> None:
    path, _text = _broken(example, "primary: primary", "primary: [primary")
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}:") and "YAML syntax" in problem


def test_wrong_type_names_file_line_field(example: Path) -> None:
    path, text = _broken(example, "port: 41002", "port: lots")
    (problem,) = _problems(path)
    line = _line_of(text, "port: lots")
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: providers\.objstore\.storage\.port: ", problem)


def test_unknown_key_suggests_the_right_one(example: Path) -> None:
    path, text = _broken(example, "    migrate: logical", "    migrat: logical")
    (problem,) = _problems(path)
    assert f":{_line_of(text, 'migrat:')}:" in problem
    assert "unknown key 'migrat'" in problem and "did you mean 'migrate'" in problem


def test_dangling_references_all_reported(example: Path) -> None:
    path, _ = _broken(example, "alternates: [alt-b]", "alternates: [alt-x]")
    path, text = _broken(path, "    buckets: [images]", "    buckets: [imagez]")
    problems = _problems(path)
    assert len(problems) == 2
    assert any("alternates.0: no site named 'alt-x'" in p for p in problems)
    assert any(f":{_line_of(text, 'buckets: [imagez]')}:" in p and "no bucket named 'imagez'" in p
               for p in problems)


def test_inline_secret_rejected_without_echoing_it(example: Path) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    path, _ = _broken(example, "secret_access_key: file:secrets/aws_secret_access_key", f"secret_access_key: {secret}")
    (problem,) = _problems(path)
    assert "inline secrets are not allowed" in problem and "env:" in problem and "file:" in problem
    assert secret not in problem


def test_duplicate_names(example: Path) -> None:
    path, _ = _broken(example, "{name: c, address", "{name: b, address")
    assert any("duplicate host name 'b'" in p for p in _problems(path))
    path, _ = _broken(path, "  alt-b:\n", "  primary:\n")
    assert any("duplicate key" in p for p in _problems(path))


def test_missing_field_and_unknown_provider_type(example: Path) -> None:
    path, _ = _broken(example, "    type: ssh\n", "    type: sftp\n")
    path, _ = _broken(path, "name: microblog\n", "")
    problems = _problems(path)
    assert any(p.endswith("name: this field is required") for p in problems)
    assert any("providers.colo-a" in p and "unknown type 'sftp'" in p for p in problems)


def test_capability_mismatch(example: Path) -> None:
    path, _ = _broken(example, "    compute: colo-b", "    compute: objstore")
    assert any("provider 'objstore' has no compute capability" in p for p in _problems(path))


def test_hostile_names_rejected(example: Path) -> None:
    """Shell, SQL and DNS metacharacters never get past the model."""
    path, _ = _broken(example, "      name: microblog\n      owner", "      name: \"x; DROP DATABASE y\"\n      owner")
    path, _ = _broken(path, "    - name: www", "    - name: \"www.$(reboot)\"")
    problems = _problems(path)
    assert any("data.databases.blog.name" in p and "PostgreSQL identifier" in p for p in problems)
    assert any("dns.records.0.name" in p for p in problems)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join('*' + chr(96 + i) for _ in range(10))}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    (problem,) = _problems(path)
    assert "alias bomb" in problem


def test_huge_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("x: " + "y" * (2 * 1024 * 1024))
    assert "at most" in _problems(path)[0]


def test_dns_at_primary_vendor_warns(example: Path) -> None:
    path, _ = _broken(example, "  provider: dnshost", "  provider: aws")
    stack = load_stack(path)
    assert any("DNS is hosted at the primary site's vendor" in str(w) for w in stack.warnings)


def test_secrets_resolve_by_reference(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = load_stack(example)
    (example.parent / "secrets").mkdir()
    (example.parent / "secrets" / "db_password").write_text("s3cret\n")
    assert stack.secret("file:secrets/db_password") == "s3cret"
    monkeypatch.setenv("LR_TEST_SECRET", "v")
    assert stack.secret("env:LR_TEST_SECRET") == "v"
    with pytest.raises(SecretError) as exc:
        stack.secret("env:LR_TEST_UNSET_VAR")
    assert "not set" in str(exc.value)


def test_replica_identity_key(example: Path) -> None:
    """`replica_identity` is `default` unless the database says `full`; any other value names the field."""
    assert load_stack(example).model.data.databases["blog"].replica_identity == "default"
    path, _ = _broken(example, "migrate: logical", "migrate: logical\n      replica_identity: full")
    assert load_stack(path).model.data.databases["blog"].replica_identity == "full"
    path, _ = _broken(example, "replica_identity: full", "replica_identity: nothing")
    assert any("data.databases.blog.replica_identity" in p for p in _problems(path))
