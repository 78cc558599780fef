"""Shipped playbooks parse, their variable contract is documented, and the configure adapter's pure parts hold."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import re
from pathlib import Path

import pytest

from liferaft.configure import PLAYBOOK_DIR, TargetHost, resolve_playbook, syntax_check
from liferaft.configure._runner import _Scrubber
from liferaft.errors import UsageError
from liferaft.providers.appenv import s3_settings

PLAYBOOKS = sorted(p.name for p in PLAYBOOK_DIR.glob("*.yml"))


def test_the_three_playbooks_ship() -> None:
    """prepare, postgresql and microblog are shipped as package data."""
    assert {"prepare.yml", "postgresql.yml", "microblog.yml"} <= set(PLAYBOOKS)


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_syntax(name: str) -> None:
    """ansible-playbook --syntax-check accepts every shipped playbook."""
    syntax_check(name)


def test_syntax_check_reports_a_broken_playbook(tmp_path: Path) -> None:
    """A broken playbook is a UsageError naming it."""
    bad = tmp_path / "bad.yml"
    bad.write_text("- hosts: all\n  tasks:\n    - ansible.builtin.command: [unclosed\n")
    with pytest.raises(UsageError, match="bad.yml"):
        syntax_check(bad)


def test_every_liferaft_variable_used_is_documented() -> None:
    """Each liferaft_* variable the shipped playbooks read is in the README's contract (docs cannot drift)."""
    readme = (PLAYBOOK_DIR / "README.md").read_text()
    used: set[str] = set()
    for p in PLAYBOOK_DIR.glob("*.yml"):
        used |= set(re.findall(r"\b(liferaft_[a-z_]+)", p.read_text()))
    used -= {"liferaft_postgres", "liferaft_pg_max_wal_senders", "liferaft_pg_max_replication_slots"}
    missing = sorted(v for v in used if f"`{v}`" not in readme)
    assert not missing, f"undocumented playbook variables: {missing}"


def test_secret_tasks_are_no_log() -> None:
    """Tasks that touch liferaft_secrets in task arguments are marked no_log."""
    for p in PLAYBOOK_DIR.glob("*.yml"):
        blocks = re.split(r"\n    - name: ", p.read_text())
        for block in blocks[1:]:
            if "liferaft_secrets" in block or "microblog_config" in block:
                assert "no_log: true" in block, f"{p.name}: task {block.splitlines()[0]!r} lacks no_log"


def test_resolve_playbook_shipped_and_relative(tmp_path: Path) -> None:
    assert resolve_playbook("postgresql.yml") == (PLAYBOOK_DIR / "postgresql.yml").resolve()
    own = tmp_path / "mine.yml"
    own.write_text("- hosts: all\n  tasks: []\n")
    assert resolve_playbook("mine.yml", tmp_path) == own.resolve()
    with pytest.raises(UsageError, match="not found"):
        resolve_playbook("nope.yml", tmp_path)


def test_known_hosts_lines_pin_address_and_port() -> None:
    """Pinned keys become known_hosts lines for the host's own address, with [addr]:port off port 22."""
    k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestingOnly000000000000000"
    assert TargetHost("a", "10.0.0.5", host_keys=(k,)).known_hosts_lines() == [f"10.0.0.5 {k}"]
    assert TargetHost("a", "10.0.0.5", port=2222, host_keys=(f"otherhost {k} comment",)).known_hosts_lines() == [
        f"[10.0.0.5]:2222 {k}"]
    with pytest.raises(ValueError):
        TargetHost("a", "10.0.0.5", host_keys=("garbage",)).known_hosts_lines()


def test_scrubber_removes_nested_secret_values() -> None:
    scrub = _Scrubber({"liferaft_secrets": {"databases": {"blog": {"password": "hunter2hunter2"}},
                                            "buckets": {"i": {"secret_access_key": "abcdEFGH1234"}}}})
    assert scrub("auth failed for hunter2hunter2 with abcdEFGH1234") == "auth failed for ******** with ********"


def _load_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("liferaft_pg_mod", PLAYBOOK_DIR / "library" / "liferaft_postgres.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scram_verifier_matches_rfc7677_construction() -> None:
    """The module's SCRAM-SHA-256 verifier is what PostgreSQL stores, and a changed password is detected."""
    mod = _load_module()
    salt = b"0123456789abcdef"
    v = mod.scram_verifier("pencil", salt, 4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert v.startswith("SCRAM-SHA-256$4096:" + base64.b64encode(salt).decode() + "$")
    assert v.split("$")[2].split(":")[0] == base64.b64encode(stored).decode()
    assert mod.password_matches(v, "pencil") and not mod.password_matches(v, "pencil2")
    assert not mod.password_matches("md5abc", "pencil") and not mod.password_matches(None, "pencil")


def _resolver(ref: str) -> str:
    return {"file:k": "KEYID", "file:s": "SECRET"}[ref]


def test_s3_settings_for_aws_and_s3_compatible_libcloud() -> None:
    """The one place mapping vendor fields to what an app needs to reach its bucket."""
    aws = s3_settings({"type": "aws", "region": "eu-west-1", "endpoint": "http://10.0.0.1:4100",
                       "credentials": {"access_key_id": "file:k", "secret_access_key": "file:s"}}, _resolver)
    assert (aws.endpoint_url, aws.region, aws.access_key_id, aws.secret_access_key) == (
        "http://10.0.0.1:4100", "eu-west-1", "KEYID", "SECRET")
    assert "SECRET" not in repr(aws) and aws.public() == {"endpoint_url": "http://10.0.0.1:4100", "region": "eu-west-1"}
    real = s3_settings({"type": "aws", "credentials": {"access_key_id": "file:k", "secret_access_key": "file:s"}},
                       _resolver)
    assert real.endpoint_url is None and real.region == "us-east-1"
    lc = s3_settings({"type": "libcloud", "storage": {"driver": "s3", "host": "10.0.0.1", "port": 4200,
                                                      "secure": False},
                      "credentials": {"key": "file:k", "secret": "file:s"}}, _resolver)
    assert lc.endpoint_url == "http://10.0.0.1:4200" and lc.access_key_id == "KEYID"
    tls = s3_settings({"type": "libcloud", "storage": {"driver": "minio", "host": "s3.example.test"},
                       "credentials": {"key": "file:k", "secret": "file:s"}}, _resolver)
    assert tls.endpoint_url == "https://s3.example.test"
    with pytest.raises(UsageError, match="does not speak the S3 API"):
        s3_settings({"type": "libcloud", "storage": {"driver": "local"}, "credentials": {}}, _resolver)
    with pytest.raises(UsageError, match="no storage"):
        s3_settings({"type": "libcloud", "dns": {"driver": "powerdns"}}, _resolver)
    with pytest.raises(UsageError):
        s3_settings({"type": "ssh", "hosts": []}, _resolver)


def test_s3_settings_accepts_the_stack_model() -> None:
    """A validated stack provider model (pydantic) maps the same as a plain mapping."""
    from liferaft.stack.model import AwsProvider

    model = AwsProvider.model_validate({"type": "aws", "region": "us-east-1", "endpoint": "http://10.0.0.1:4100",
                                        "credentials": {"access_key_id": "file:k", "secret_access_key": "file:s"}})
    assert s3_settings(model, _resolver).endpoint_url == "http://10.0.0.1:4100"


def test_task_events_become_liferaft_progress_events() -> None:
    """Ansible task outcomes reach the event bus as ansible.<kind> events naming host and task."""
    from liferaft.configure import TaskEvent, to_progress
    from liferaft.events import Event, Events

    seen: list[Event] = []
    forward = to_progress(Events(seen.append))
    forward(TaskEvent("task.failed", play="p", task="Start it", host="a", message="boom"))
    assert seen[0].kind == "ansible.task.failed" and seen[0].message == "a: Start it: boom"
    assert seen[0].data["host"] == "a" and seen[0].data["task"] == "Start it"
