"""The one registry: types from a Literal, lazy adapters, capability matrix, open_provider from stack configs
(the lead's pydantic models and plain mappings alike), secrets kept out of reprs."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

import pytest

from liferaft.errors import UsageError
from liferaft.providers.base import AccountProbe, Compute, Objects
from liferaft.providers.registry import (
    ADAPTERS,
    CAPABILITY_MATRIX,
    PROVIDER_TYPES,
    adapter_class,
    capabilities_of,
    open_provider,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


def test_types_come_from_one_literal() -> None:
    """Every type has an adapter and a capability row; the lead's stack model accepts the same names."""
    assert PROVIDER_TYPES == ("aws", "libcloud", "ssh", "hcloud", "digitalocean")
    assert set(ADAPTERS) == set(CAPABILITY_MATRIX) == set(PROVIDER_TYPES)
    assert CAPABILITY_MATRIX["ssh"] == ("compute", "account")
    for t in PROVIDER_TYPES:
        assert adapter_class(t).__name__.lower().startswith(t.replace("_", ""))
    with pytest.raises(UsageError):
        capabilities_of({"type": "gcp"})


def test_capabilities_follow_the_config() -> None:
    """libcloud offers what its sections configure; the example stack's providers agree with the stack model."""
    assert capabilities_of({"type": "libcloud", "dns": {"driver": "powerdns"}}) == ("dns", "account")
    assert capabilities_of({"type": "libcloud", "storage": {"driver": "local"}, "compute": {"driver": "ec2"}}) == (
        "compute", "objects", "account")
    from liferaft.stack import load_stack
    from liferaft.stack.model import provider_capabilities

    stack = load_stack(EXAMPLE)
    for name, cfg in stack.model.providers.items():
        assert set(capabilities_of(cfg)) == set(provider_capabilities(cfg)), name


def test_open_libcloud_local_storage_round_trip(tmp_path: Path) -> None:
    """A libcloud local-storage provider opened from a mapping config stores and returns bytes with sha256."""
    p = open_provider("disk", {"type": "libcloud", "storage": {"driver": "local", "path": str(tmp_path / "d")}},
                      lambda ref: "", state_dir=tmp_path / "state")
    assert p.capabilities == ("objects", "account")
    objects: Objects = p.require("objects")
    assert isinstance(objects, Objects) and isinstance(p.account, AccountProbe)
    objects.create_bucket("b")
    info = objects.put_object("b", "k", [b"data"])
    assert info.sha256 == hashlib.sha256(b"data").hexdigest()
    assert b"".join(objects.get_object("b", "k")) == b"data"
    with pytest.raises(UsageError):
        p.require("dns")


def test_open_example_stack_models_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every provider of the example stack opens from the lead's pydantic models; nothing connects yet;
    secrets do not show in any repr."""
    from liferaft.stack import load_stack

    stack = load_stack(EXAMPLE)
    values = {}

    def resolve(ref: str) -> str:
        values[ref] = f"SECRET-{hashlib.sha256(ref.encode()).hexdigest()[:12]}"
        return values[ref]

    for name, cfg in stack.model.providers.items():
        p = open_provider(name, cfg, resolve, state_dir=tmp_path, base_dir=tmp_path)
        assert set(p.capabilities) == set(capabilities_of(cfg))
        text = repr(p) + repr(vars(p))
        assert not any(v in text for v in values.values()), name
        if cfg.type == "ssh":
            assert isinstance(p.compute, Compute)
            key = Path(p.compute.private_key_file)  # type: ignore[union-attr]
            assert stat.S_IMODE(key.stat().st_mode) == 0o600  # the env/file secret written owner-only


def test_ssh_file_key_is_used_in_place(tmp_path: Path) -> None:
    """A `file:` private key is referenced where it lies (relative to the stack), never copied."""
    key = tmp_path / "secrets" / "id"
    key.parent.mkdir()
    key.write_text("KEY\n")
    cfg = {"type": "ssh", "user": "root", "private_key": "file:secrets/id",
           "hosts": [{"name": "a", "address": "10.9.9.1", "host_keys": ["ssh-ed25519 AAAA"]}]}
    p = open_provider("colo", cfg, lambda ref: "unused", state_dir=tmp_path / "st", base_dir=tmp_path)
    assert p.compute.private_key_file == str(key)  # type: ignore[union-attr]
    assert not list((tmp_path / "st").rglob("id_private_key"))


def test_adapters_load_lazily() -> None:
    """Importing the registry does not import adapter modules; opening a provider imports only its own."""
    import subprocess

    code = ("import sys\nfrom liferaft.providers.registry import open_provider\n"
            "assert 'liferaft.providers.aws' not in sys.modules\n"
            "open_provider('d', {'type': 'libcloud', 'storage': {'driver': 'local', 'path': '/tmp'}}, str)\n"
            "assert 'liferaft.providers.aws' not in sys.modules and 'boto3' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={**os.environ})
