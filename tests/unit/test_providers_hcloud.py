"""The hcloud adapter without a network: error translation, the cloud-init host key, labels, config, lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.errors import AuthRejected, Conflict, NotFound, ProviderError, QuotaExceeded, Throttled
from liferaft.providers._cloudinit import generate_host_key, public_key_of, user_data
from liferaft.providers.hcloud_ import classify, label_value


def _api(code: str, message: str = "m", details: object = None) -> Exception:
    from hcloud import APIException

    return APIException(code=code, message=message, details=details)


def test_unauthorized_names_the_account_and_never_the_token() -> None:
    """401 `unauthorized` -> AuthRejected naming the provider (the account), status 401, code kept."""
    err = classify(_api("unauthorized", "unable to authenticate"), "hetzner", "create server x")
    assert isinstance(err, AuthRejected) and err.status == 401 and err.code == "unauthorized"
    assert "'hetzner'" in str(err) and "token" in str(err)


@pytest.mark.parametrize(("code", "cls"), [
    ("rate_limit_exceeded", Throttled), ("not_found", NotFound), ("uniqueness_error", Conflict),
    ("forbidden", AuthRejected), ("server_error", ProviderError)])
def test_codes_map_to_the_error_tree(code: str, cls: type[ProviderError]) -> None:
    """Hetzner's documented error codes land on liferaft's classes (throttling retried by the shared loop)."""
    err = classify(_api(code), "hetzner", "op")
    assert type(err) is cls and err is not None and err.code == code


def test_limit_exceeded_names_the_limit() -> None:
    """resource_limit_exceeded -> QuotaExceeded naming the limit from the error details."""
    err = classify(_api("resource_limit_exceeded", "server limit exceeded", {"limits": [{"name": "server_limit"}]}),
                   "hetzner", "create server x")
    assert isinstance(err, QuotaExceeded) and "server_limit" in str(err) and "limits" in str(err)


def test_user_data_carries_the_generated_host_key_and_repr_hides_it(tmp_path: Path) -> None:
    """The user data installs exactly the generated key (cloud-init's ssh_keys, generation off); the private half
    is in no repr."""
    from ruamel.yaml import YAML

    key = generate_host_key()
    assert key.public.startswith("ssh-ed25519 ") and "PRIVATE" not in repr(key)
    text = user_data(key, hostname="alt-h-1")
    assert text.startswith("#cloud-config\n")
    config = YAML(typ="safe").load(text)
    assert config["ssh_keys"] == {"ed25519_private": key.private, "ed25519_public": key.public}
    assert config["ssh_genkeytypes"] == [] and config["ssh_deletekeys"] is True
    priv = tmp_path / "k"
    priv.write_text(key.private)
    assert public_key_of(priv) == key.public  # the private half is a valid OpenSSH key of that public one


def test_label_values_follow_hetzner_syntax() -> None:
    assert label_value("microblog") == "microblog"
    assert label_value("a b/c:d") == "a-b-c-d"
    assert len(label_value("x" * 100)) == 63


def test_stack_accepts_an_hcloud_provider_and_rejects_an_inline_token() -> None:
    """An hcloud provider validates with a token reference; an inline token is refused without being echoed."""
    from pydantic import TypeAdapter, ValidationError

    from liferaft.stack.model import ProviderConfig

    ta: TypeAdapter[object] = TypeAdapter(ProviderConfig)
    p = ta.validate_python({"type": "hcloud", "credentials": {"token": "env:HCLOUD_TOKEN"}, "location": "fsn1",
                            "ssh_sources": ["203.0.113.7/32"], "private_key": "file:secrets/id"})
    assert p.vendor == "hetzner"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as exc:
        ta.validate_python({"type": "hcloud", "credentials": {"token": "s3cr3t-inline-token"}})
    assert "s3cr3t-inline-token" not in str(exc.value).split("input_value")[0]


def test_opening_an_hcloud_provider_imports_no_sdk(tmp_path: Path) -> None:
    """The registry opens an hcloud provider without importing hcloud, requests or cryptography (first call does)."""
    code = (
        "import sys, json\n"
        "from liferaft.providers.registry import open_provider\n"
        "p = open_provider('h', {'type': 'hcloud', 'credentials': {'token': 'env:T'}}, lambda r: 'tok', "
        f"state_dir={str(tmp_path)!r})\n"
        "print(json.dumps([p.capabilities, sorted(m for m in sys.modules if m.split('.')[0] in "
        "('hcloud', 'requests', 'cryptography'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    caps, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert caps == ["compute", "account"] and loaded == []


def test_firewall_rules_open_ssh_to_the_source_host_only_for_a_pushed_folder(tmp_path: Path) -> None:
    """SSH from the controller; with private port 22 (a folder the source host pushes over SSH) one SSH rule from
    the controller and the source host; databases from both; services from anywhere."""
    from liferaft.providers.hcloud_ import HcloudClient, HcloudCompute

    compute = HcloudCompute(HcloudClient("h", "t", None), tmp_path, ssh_sources=["203.0.113.7/32"])
    rules = [(r.port, r.source_ips) for r in compute.firewall_rules((8080,), (5432,), ("198.51.100.2",))]
    assert rules == [("22", ["203.0.113.7/32"]), ("5432", ["198.51.100.2/32", "203.0.113.7/32"]),
                     ("8080", ["0.0.0.0/0", "::/0"])]
    rules = [(r.port, r.source_ips) for r in compute.firewall_rules((8080,), (22, 5432), ("198.51.100.2",))]
    assert rules == [("22", ["198.51.100.2/32", "203.0.113.7/32"]), ("5432", ["198.51.100.2/32", "203.0.113.7/32"]),
                     ("8080", ["0.0.0.0/0", "::/0"])]
