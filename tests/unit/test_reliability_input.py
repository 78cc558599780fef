"""Hostile input never executes and never crashes the CLI: stack files that try shell, Jinja, SQL and DNS injection,
huge files, alias bombs, symlinked and escaping paths, corrupted journals -- each a clear error (exit 2), no
traceback, and no sentinel file created by an injected command.

Everything goes through the real CLI entry point (tests/cli_helpers.invoke) so exit codes and rendering are checked.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_helpers import invoke

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "microblog" / "liferaft.yaml"
SECRET_NAMES = ("aws_access_key_id", "aws_secret_access_key", "id_ed25519", "s3rver_key", "s3rver_secret",
                "pdns_api_key", "db_password", "worker_redis_password")


def _example(root: Path) -> Path:
    """A copy of the example stack with its app and resolvable secrets, in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE.parent / "app", root / "app")
    (root / "secrets").mkdir(mode=0o700)
    for name in SECRET_NAMES:
        (root / "secrets" / name).write_text(f"value-of-{name}-Zq9\n")
    stack = root / "liferaft.yaml"
    stack.write_text(EXAMPLE.read_text())
    return stack


def _edit(stack: Path, old: str, new: str) -> Path:
    text = stack.read_text()
    assert old in text, old
    stack.write_text(text.replace(old, new, 1))
    return stack


def _assert_clean_refusal(result: object, sentinel: Path, *, code: int = 2) -> None:
    out, err = result.stdout, result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == code, (result.exit_code, out, err)  # type: ignore[attr-defined]
    assert "Traceback" not in out + err and "internal error" not in err
    assert not sentinel.exists(), "an injected command ran"


# ------------------------------------------------------------------------------------------------ injections
def _payloads(sentinel: Path) -> list[tuple[str, str, str, str]]:
    """(id, text to replace, replacement, field expected in the error)."""
    s = str(sentinel)
    return [
        ("shell-in-stack-name", "name: microblog\n", f'name: "microblog$(touch {s})"\n', "name"),
        ("backticks-in-bucket", "name: microblog-images", f'name: "img`touch {s}`"', "data.buckets.images.name"),
        ("semicolon-in-ssh-user", "    user: root\n", f'    user: "root; touch {s}"\n', "providers.colo-a"),
        ("proxycommand-in-address", "address: 10.213.7.12",
         f'address: "10.213.7.12 -oProxyCommand=touch {s}"', "providers.colo-b.hosts.0.address"),
        ("jinja-in-health-path", "path: /healthz", f"path: \"/healthz{{{{ lookup('pipe', 'touch {s}') }}}}\"",
         "services.web.health.path"),
        ("jinja-block-in-service-name", "  web:\n", '  "web{% for x in range(9) %}{% endfor %}":\n',
         "services"),
        ("jinja-in-playbook", "playbook: microblog.yml", f"playbook: \"{{{{ lookup('pipe','touch {s}') }}}}\"",
         "services.web.playbook"),
        ("sql-in-database-name", "      name: microblog\n", "      name: \"microblog'; DROP TABLE posts; --\"\n",
         "data.databases.blog.name"),
        ("sql-in-owner", "owner: microblog", 'owner: "x\\"; DROP ROLE postgres; --"', "data.databases.blog.owner"),
        ("newline-record-in-record-name", "- name: www",
         '- name: "www\\nevil.microblog.test. 60 IN A 6.6.6.6"', "dns.records.0.name"),
        ("newline-record-in-record-value", "      service: web          #",
         '      values: ["1.2.3.4\\nevil 60 IN A 6.6.6.6"]\n      #', "dns.records.0.values.0"),
        ("trailing-newline-in-value", "      service: web          #", '      values: ["1.2.3.4\\n"]\n      #',
         "dns.records.0.values.0"),
        ("zone-injection", "zone: microblog.test.", 'zone: "microblog.test.\\n@ IN NS evil."', "dns.zone"),
        ("known-hosts-injection", 'host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO+',
         'host_keys: ["ssh-ed25519 AAAA\\n@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO+',
         "providers.colo-b.hosts.0.host_keys.0"),
        ("env-ref-with-shell", "key: file:secrets/pdns_api_key", f'key: "env:X;touch {s}"',
         "providers.dnshost.credentials.key"),
    ]


@pytest.mark.parametrize("case", range(15))
@pytest.mark.parametrize("command", [("validate",), ("plan", "--to", "alt-b", "--json")])
def test_injection_in_stack_values_is_refused_and_never_runs(tmp_path: Path, case: int,
                                                             command: tuple[str, ...]) -> None:
    """Each injection attempt is refused at load time with exit 2, naming the field; the payload never runs."""
    sentinel = tmp_path / "pwned"
    payloads = _payloads(sentinel)
    assert len(payloads) == 15
    _id, old, new, field = payloads[case]
    stack = _edit(_example(tmp_path / "stack"), old, new)
    result = invoke("--stack", str(stack), "--state-dir", str(tmp_path / "state"), *command)
    _assert_clean_refusal(result, sentinel)
    shown = result.stdout + result.stderr
    assert field in shown, shown
    assert "touch" not in shown and "DROP" not in shown  # the error names the field, never echoes the payload


def test_injection_in_a_secret_reference_path_is_only_a_path(tmp_path: Path) -> None:
    """A `file:` reference holding shell syntax is just a (missing) file name: resolving it runs nothing."""
    sentinel = tmp_path / "pwned"
    stack = _edit(_example(tmp_path / "stack"), "password: file:secrets/db_password",
                  f'password: "file:secrets/$(touch {sentinel});`touch {sentinel}`"')
    result = invoke("--stack", str(stack), "validate", "--check-secrets", "--json")
    _assert_clean_refusal(result, sentinel, code=1)
    assert json.loads(result.stdout)["unresolved_secrets"][0]["field"] == "data.databases.blog.password"


# ------------------------------------------------------------------------------------------- size and shape
def test_huge_stack_file_refused_before_parsing(tmp_path: Path) -> None:
    stack = _example(tmp_path / "stack")
    with stack.open("a") as f:
        f.write("# " + "x" * (3 * 1024 * 1024) + "\n")
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, tmp_path / "none")
    assert "at most" in result.stderr


def test_yaml_alias_bomb_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    stack = tmp_path / "liferaft.yaml"
    stack.write_text("version: 1\nname: bomb\n" + "\n".join(lines) + "\n")
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, tmp_path / "none")
    assert "alias bomb" in result.stderr


def test_deeply_nested_document_refused(tmp_path: Path) -> None:
    stack = tmp_path / "liferaft.yaml"
    stack.write_text("version: 1\nname: deep\nproviders: " + "[" * 5000 + "]" * 5000 + "\n")
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, tmp_path / "none")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"+_", b"\x00" * 64, b"!!python/object/apply:os.system ['id']",
                                     b"version: !!python/object/apply:os.system ['touch SENTINEL']\n"])
def test_binary_and_tagged_stack_files_refused(tmp_path: Path, content: bytes) -> None:
    """Binary garbage and Python-object YAML tags are refused; no tag constructs anything."""
    sentinel = tmp_path / "SENTINEL"
    stack = tmp_path / "liferaft.yaml"
    stack.write_bytes(content.replace(b"SENTINEL", str(sentinel).encode()))
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, sentinel)


# --------------------------------------------------------------------------------------- symlinks and paths
def test_symlinked_stack_file_resolves_relative_paths_from_its_real_folder(tmp_path: Path) -> None:
    """Policy: a symlinked stack file is followed; its relative paths (secrets, artifact) resolve next to the real
    file, so a link elsewhere cannot make it pick up another folder's secrets."""
    stack = _example(tmp_path / "real")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "liferaft.yaml").symlink_to(stack)
    result = invoke("--stack", str(elsewhere / "liferaft.yaml"), "validate", "--check-secrets", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_dangling_symlink_stack_file(tmp_path: Path) -> None:
    (tmp_path / "liferaft.yaml").symlink_to(tmp_path / "missing.yaml")
    result = invoke("--stack", str(tmp_path / "liferaft.yaml"), "validate")
    _assert_clean_refusal(result, tmp_path / "none")


def test_symlinked_secret_is_followed_but_never_printed(tmp_path: Path) -> None:
    """Policy: a `file:` secret may be a symlink (container secret mounts are); the value is never shown."""
    stack = _example(tmp_path / "stack")
    outside = tmp_path / "vault" / "db"
    outside.parent.mkdir()
    outside.write_text("S3cr3t-behind-a-symlink\n")
    (tmp_path / "stack" / "secrets" / "db_password").unlink()
    (tmp_path / "stack" / "secrets" / "db_password").symlink_to(outside)
    for args in (("validate", "--check-secrets"), ("validate", "--check-secrets", "--json"), ("-vv", "validate")):
        result = invoke("--stack", str(stack), *args)
        assert result.exit_code == 0, result.stderr
        assert "S3cr3t" not in result.stdout + result.stderr


@pytest.mark.parametrize("target", ["/dev/zero", "dir", "fifo", "binary", "huge"])
def test_secret_that_is_not_a_small_text_file_is_refused_promptly(tmp_path: Path, target: str) -> None:
    """A `file:` secret leading to a device, a directory, a FIFO, binary bytes or megabytes is a clear error naming
    the reference -- not a hang, not an out-of-memory, not a traceback, never the bytes."""
    stack = _example(tmp_path / "stack")
    link = tmp_path / "stack" / "secrets" / "db_password"
    link.unlink()
    if target == "/dev/zero":
        link.symlink_to("/dev/zero")
    elif target == "dir":
        link.mkdir()
    elif target == "fifo":
        os.mkfifo(link)
    elif target == "binary":
        link.write_bytes(b"\xff\xfe\xfdBINARYSECRET\x00")
    else:
        link.write_text("HUGESECRET" * 200_000)
    import time

    t0 = time.monotonic()
    result = invoke("--stack", str(stack), "validate", "--check-secrets", "--json")
    assert time.monotonic() - t0 < 10
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    unresolved = json.loads(result.stdout)["unresolved_secrets"]
    assert [u["field"] for u in unresolved] == ["data.databases.blog.password"]
    assert "file:secrets/db_password" in unresolved[0]["problem"]
    assert "SECRET" not in result.stdout + result.stderr


@pytest.mark.parametrize("field,value", [
    ("playbook", "../outside/evil.yml"),
    ("playbook", "app/../../outside/evil.yml"),
    ("playbook", "../../../../../../../../{outside}/evil.yml"),
    ("playbook", "link/evil.yml"),
    ("artifact", "../outside"),
    ("artifact", "."),
    ("artifact", "secrets"),
])
def test_paths_leaving_the_stack_folder_or_exposing_secrets_are_refused(tmp_path: Path, field: str,
                                                                       value: str) -> None:
    """Policy: a relative playbook or artifact path must stay inside the stack file's folder (no `..` climbing,
    no symlink leading out; absolute paths are an explicit choice and allowed); an artifact may not contain the
    stack's secret files (they would be copied to the hosts). Refused before anything runs."""
    sentinel = tmp_path / "pwned"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.yml").write_text(f"- hosts: localhost\n  tasks:\n    - command: touch {sentinel}\n")
    stack = _example(tmp_path / "stack")
    (tmp_path / "stack" / "link").symlink_to(outside)
    value = value.format(outside=str(outside).lstrip("/"))
    if field == "playbook":
        _edit(stack, "playbook: microblog.yml", f'playbook: "{value}"')
    else:
        _edit(stack, "artifact: app", f'artifact: "{value}"')
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, sentinel)
    assert f"services.web.{field}" in result.stderr


def test_shipped_playbook_fallback_cannot_climb_out(tmp_path: Path) -> None:
    """A playbook name not next to the stack falls back to liferaft's shipped playbooks -- and only to them."""
    stack = _edit(_example(tmp_path / "stack"), "playbook: microblog.yml",
                  'playbook: "../stack/__init__.py"')  # exists relative to liferaft/playbooks/
    result = invoke("--stack", str(stack), "validate")
    _assert_clean_refusal(result, tmp_path / "none")
    assert "services.web.playbook" in result.stderr


def test_playbook_inside_the_stack_folder_still_works(tmp_path: Path) -> None:
    stack = _example(tmp_path / "stack")
    (tmp_path / "stack" / "books").mkdir()
    (tmp_path / "stack" / "books" / "web.yml").write_text("- hosts: all\n  tasks: []\n")
    _edit(stack, "playbook: microblog.yml", "playbook: books/web.yml")
    assert invoke("--stack", str(stack), "validate").exit_code == 0


# ------------------------------------------------------------------------------------------- hypothesis
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_hostile = st.sampled_from(["$(touch {s})", "`touch {s}`", "; touch {s}", "{{{{ lookup('pipe','touch {s}') }}}}",
                            "{{% raw %}}", "'; DROP TABLE x; --", "a\nb", "../../x", "*a", "&a x", "!!python/name:os"])
_FIELDS = ["name: microblog\n", "primary: primary", "zone: microblog.test.", "name: microblog-images",
           "address: 10.213.7.12", "playbook: microblog.yml", "artifact: app", "rto: 5m", "driver: powerdns",
           "port: 5432", "ttl: 30", "user: root", "owner: microblog", "- name: www", "api_version: v1"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(_FIELDS), payload=st.one_of(_hostile, _text), quoted=st.booleans())
def test_hypothesis_hostile_values_never_traceback(tmp_path_factory: pytest.TempPathFactory, field: str,
                                                   payload: str, quoted: bool) -> None:
    """Any value in any field: validate exits 0 or 2 (1 only for missing secrets), never a traceback, nothing runs."""
    root = tmp_path_factory.mktemp("hyp")
    sentinel = root / "pwned"
    stack = _example(root / "stack")
    key, _, _ = field.partition(":")
    value = payload.format(s=sentinel) if "{s}" in payload else payload
    rendered = json.dumps(value) if quoted else value
    stack.write_text(stack.read_text().replace(field, f"{key}: {rendered}" + ("\n" if field.endswith("\n") else ""),
                                               1))
    result = invoke("--stack", str(stack), "validate", "--check-secrets")
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr and "internal error" not in result.stderr
    assert not sentinel.exists()


# ------------------------------------------------------------------------------------------ corrupted journals
STACK_TOY = """\
version: 1
name: toy
providers:
  p:
    type: ssh
    hosts: [{name: a, address: 127.0.0.1, host_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"]}]
  o:
    type: libcloud
    storage: {driver: local, path: /tmp}
sites:
  s1: {compute: p, objects: o}
  s2: {compute: p, objects: o}
primary: s1
alternates: [s2]
"""


def _journal_with_a_run(tmp_path: Path) -> tuple[Path, Path, str]:
    """A real journal with one interrupted run (stopped before its 4th step): stack file, state dir, run id."""
    from liferaft.engine import Runner, journal_path
    from tests.unit.test_failover_toys import toy_plan

    stack = tmp_path / "liferaft.yaml"
    stack.write_text(STACK_TOY)
    state = tmp_path / "state"
    work = tmp_path / "toy"
    work.mkdir()
    out = Runner(state, stack_name="toy").start(toy_plan(work), stop_before="gate")
    assert out.status == "stopped"
    return stack, journal_path(state, "toy"), out.run_id


def _cli_on_journal(stack: Path, journal: Path) -> list[object]:
    state = journal.parent.parent.parent
    base = ("--stack", str(stack), "--state-dir", str(state))
    return [invoke(*base, "runs"), invoke(*base, "runs", "--json"), invoke(*base, "show", "last"),
            invoke(*base, "show", "last", "--json"), invoke(*base, "resume", "last"),
            invoke(*base, "rollback", "last", "--yes")]


def _assert_journal_refused(results: list[object]) -> None:
    for r in results:
        out, err, code = r.stdout, r.stderr, r.exit_code  # type: ignore[attr-defined]
        assert "Traceback" not in out + err and "internal error" not in err, err
        assert code in (2, 4), (code, out, err)
        assert "journal" in err, err




@pytest.mark.parametrize("damage", ["truncated-header", "truncated-half", "garbage", "zeroed-pages",
                                    "wrong-schema", "newer-schema", "bad-json", "bad-plan", "directory", "symlink",
                                    "invalid-utf8"])
def test_corrupted_journal_is_a_clear_error_never_a_traceback(tmp_path: Path, damage: str) -> None:
    """runs, show, resume and rollback on a damaged journal: exit 2 naming the journal, never a traceback."""
    stack, journal, run_id = _journal_with_a_run(tmp_path)
    for side in ("-wal", "-shm"):
        Path(str(journal) + side).unlink(missing_ok=True)
    data = journal.read_bytes()
    if damage == "truncated-header":
        journal.write_bytes(data[:50])
    elif damage == "truncated-half":
        journal.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        journal.write_bytes(os.urandom(len(data)))
    elif damage == "zeroed-pages":
        journal.write_bytes(data[:100] + b"\x00" * (len(data) - 100))
    elif damage == "wrong-schema":
        journal.unlink()
        db = sqlite3.connect(journal)
        db.execute("CREATE TABLE runs (id TEXT, something_else BLOB)")
        db.execute("INSERT INTO runs VALUES ('x', 'y')")
        db.commit()
        db.close()
    elif damage == "newer-schema":
        db = sqlite3.connect(journal)
        db.execute("PRAGMA user_version=99")
        db.commit()
        db.close()
    elif damage == "bad-json":
        db = sqlite3.connect(journal)
        db.execute("UPDATE steps SET result_json='{not json' WHERE run_id=?", (run_id,))
        db.commit()
        db.close()
    elif damage == "bad-plan":
        db = sqlite3.connect(journal)
        db.execute("UPDATE runs SET plan_json='{\"steps\": 7}' WHERE id=?", (run_id,))
        db.commit()
        db.close()
    elif damage == "invalid-utf8":  # the byte hypothesis found (test_hypothesis_mutated_journals_never_traceback)
        at = 61072 % len(data)
        journal.write_bytes(data[:at] + b"\x80" + data[at + 1:])
    elif damage == "directory":
        journal.unlink()
        journal.mkdir()
    else:
        journal.unlink()
        (tmp_path / "elsewhere.db").write_bytes(data)
        journal.symlink_to(tmp_path / "elsewhere.db")
    results = _cli_on_journal(stack, journal)
    if damage == "invalid-utf8":  # some commands never read the damaged page: they may work
        _assert_no_traceback(results)
    else:
        _assert_journal_refused(results)


def _assert_no_traceback(results: list[object]) -> None:
    for r in results:
        out, err, code = r.stdout, r.stderr, r.exit_code  # type: ignore[attr-defined]
        assert "Traceback" not in out + err and "internal error" not in err, err
        assert code in (0, 1, 2, 4), (code, err)


# derandomize: the same mutations every run, so CI is stable; a random run found the non-UTF-8 defect pinned above
# as the `invalid-utf8` case.
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(min_value=0, max_value=1 << 16), st.binary(min_size=1, max_size=64)),
                     min_size=1, max_size=6))
def test_hypothesis_mutated_journals_never_traceback(tmp_path_factory: pytest.TempPathFactory,
                                                     cuts: list[tuple[int, bytes]]) -> None:
    """Random byte overwrites anywhere in a real journal: every command either works or refuses cleanly."""
    stack, journal, _ = _journal_with_a_run(tmp_path_factory.mktemp("jh"))
    for side in ("-wal", "-shm"):
        Path(str(journal) + side).unlink(missing_ok=True)
    data = bytearray(journal.read_bytes())
    for offset, blob in cuts:
        offset %= len(data)
        data[offset:offset + len(blob)] = blob
    journal.write_bytes(bytes(data[: max(len(data), 1)]))
    _assert_no_traceback(_cli_on_journal(stack, journal))
