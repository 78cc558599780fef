"""The ONE provider registry: type name -> adapter (imported lazily), capability matrix, open_provider().

Nothing outside liferaft/providers/ knows which vendor it talks to: callers hand a provider config from the stack
file (duck-typed: `config.type` and fields, pydantic models or plain mappings) to `open_provider` and get a
`Provider` with the capabilities that config enables. Importing this module imports no SDK.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from liferaft.errors import UsageError
from liferaft.providers.base import CAPABILITIES, Capability, Provider
from liferaft.statedir import default_state_dir, owner_only_dir

ProviderType = Literal["aws", "libcloud", "ssh", "hcloud", "digitalocean"]
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)

# libcloud style: type -> (module, class), imported only when a provider of that type is opened.
ADAPTERS: dict[str, tuple[str, str]] = {
    "aws": ("liferaft.providers.aws", "AwsAdapter"),
    "libcloud": ("liferaft.providers.libcloud_", "LibcloudAdapter"),
    "ssh": ("liferaft.providers.ssh", "SshAdapter"),
    "hcloud": ("liferaft.providers.hcloud_", "HcloudAdapter"),
    "digitalocean": ("liferaft.providers.digitalocean_", "DigitalOceanAdapter"),
}

# Which capabilities a provider of each type CAN offer (a configured one may offer fewer: see `capabilities_of`).
CAPABILITY_MATRIX: dict[str, tuple[Capability, ...]] = {
    "aws": ("compute", "objects", "dns", "account"),
    "libcloud": ("compute", "objects", "dns", "account"),
    "ssh": ("compute", "account"),
    "hcloud": ("compute", "account"),
    "digitalocean": ("compute", "account"),
}

TYPE_DESCRIPTIONS: dict[str, str] = {
    "aws": "AWS through boto3: EC2 compute, S3 objects, Route53 DNS, STS account probe",
    "libcloud": "any libcloud driver by name: storage (s3, minio, local, ...), dns (powerdns, cloudflare, ...), "
                "compute (ec2, digitalocean, linode, ...)",
    "ssh": "hosts you bring (colo, bare metal, a VPS without an API): a pool with pinned host keys",
    "hcloud": "Hetzner Cloud through its official library: servers with a firewall, labels and a host key liferaft "
              "generated, injected and pinned",
    "digitalocean": "DigitalOcean droplets through libcloud's DigitalOcean driver (API v2): a cloud firewall, tags "
                    "and a host key liferaft generated, injected and pinned",
}

SecretResolver = Callable[[str], str]


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _settings(section: Any) -> dict[str, Any] | None:
    """A libcloud section (driver + keyword settings) as a plain dict, None if absent."""
    if section is None:
        return None
    if isinstance(section, Mapping):
        data = dict(section)
    elif hasattr(section, "model_dump"):
        data = section.model_dump(exclude_none=True)
    else:
        data = {k: v for k, v in vars(section).items() if not k.startswith("_")}
    return {k: (str(v) if k == "host" else v) for k, v in data.items() if v is not None}


def provider_type(config: Any) -> str:
    t = str(_field(config, "type", ""))
    if t not in PROVIDER_TYPES:
        raise UsageError(f"unknown provider type {t!r}", hint=f"known types: {', '.join(PROVIDER_TYPES)}")
    return t


def adapter_class(type_name: str) -> Any:
    """The adapter class for a type (imports its module, and so its SDK, now)."""
    if type_name not in ADAPTERS:
        raise UsageError(f"unknown provider type {type_name!r}", hint=f"known types: {', '.join(PROVIDER_TYPES)}")
    module, cls = ADAPTERS[type_name]
    return getattr(importlib.import_module(module), cls)


def capabilities_of(config: Any) -> tuple[Capability, ...]:
    """The capabilities a configured provider offers, from its config alone (no SDK import)."""
    t = provider_type(config)
    if t == "libcloud":
        have = {"objects": _field(config, "storage"), "dns": _field(config, "dns"),
                "compute": _field(config, "compute")}
        caps = [c for c in CAPABILITIES if c != "account" and have.get(c) is not None]
        return tuple(caps + ["account"]) if caps else ()
    return CAPABILITY_MATRIX[t]


def _secret(resolve: SecretResolver, ref: Any) -> str | None:
    return None if ref is None else resolve(str(ref))


def _key_file(name: str, ref: Any, resolve: SecretResolver, state_dir: Path, base_dir: Path | None) -> str | None:
    """A path to the SSH private key. A `file:` ref is used in place (never copied); an `env:` ref's value is
    written once to an owner-only file in the state directory, because ssh reads keys from files only."""
    if ref is None:
        return None
    ref = str(ref)
    kind, _, target = ref.partition(":")
    if kind == "file":
        p = Path(target)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        if p.is_file():
            return str(p)
    material = resolve(ref)
    d = owner_only_dir(state_dir / "providers" / name, parents_from=state_dir)
    path = d / "id_private_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(material.rstrip("\n") + "\n")
    return str(path)


def open_provider(name: str, config: Any, resolve_secret: SecretResolver, *, state_dir: str | Path | None = None,
                  base_dir: str | Path | None = None, capabilities: Iterable[str] | None = None) -> Provider:
    """Build the Provider for one configured account. `resolve_secret(ref) -> str` resolves `env:`/`file:` refs
    (Stack.secret); `state_dir` holds the ssh pool's allocations and known_hosts; `base_dir` anchors relative
    `file:` refs (the stack file's folder). `capabilities` narrows what is offered."""
    t = provider_type(config)
    sdir = Path(state_dir) if state_dir is not None else default_state_dir()
    bdir = Path(base_dir) if base_dir is not None else None
    cls = adapter_class(t)
    creds = _field(config, "credentials")
    if t == "aws":
        endpoint = _field(config, "endpoint")
        adapter = cls(name, str(_field(config, "region", "us-east-1")),
                      str(endpoint).rstrip("/") if endpoint else None,
                      _secret(resolve_secret, _field(creds, "access_key_id")),
                      _secret(resolve_secret, _field(creds, "secret_access_key")),
                      session_token=_secret(resolve_secret, _field(creds, "session_token")),
                      image=_field(config, "image"), instance_type=_field(config, "instance_type"),
                      key_name=_field(config, "key_name"))
    elif t == "libcloud":
        adapter = cls(name, storage=_settings(_field(config, "storage")), dns=_settings(_field(config, "dns")),
                      compute=_settings(_field(config, "compute")),
                      key=_secret(resolve_secret, _field(creds, "key")),
                      secret=_secret(resolve_secret, _field(creds, "secret")))
    elif t == "hcloud":
        endpoint = _field(config, "endpoint")
        given = {k: str(_field(config, k)) for k in ("server_type", "image") if _field(config, k)}
        adapter = cls(name, _secret(resolve_secret, _field(creds, "token")), sdir,
                      endpoint=str(endpoint) if endpoint else None, **given,  # absent: the adapter's defaults
                      location=_field(config, "location"),
                      ssh_user=str(_field(config, "user", "root")),
                      private_key_file=_key_file(name, _field(config, "private_key"), resolve_secret, sdir, bdir),
                      ssh_sources=tuple(str(s) for s in (_field(config, "ssh_sources") or ())),
                      server_limit=_field(config, "server_limit"))
    elif t == "digitalocean":
        endpoint = _field(config, "endpoint")
        given = {k: str(_field(config, k)) for k in ("size", "image", "region") if _field(config, k)}
        adapter = cls(name, _secret(resolve_secret, _field(creds, "token")), sdir,
                      endpoint=str(endpoint) if endpoint else None, **given,  # absent: the adapter's defaults
                      ssh_user=str(_field(config, "user", "root")),
                      private_key_file=_key_file(name, _field(config, "private_key"), resolve_secret, sdir, bdir),
                      ssh_sources=tuple(str(s) for s in (_field(config, "ssh_sources") or ())))
    else:
        from liferaft.providers.ssh import PoolHost

        hosts = [PoolHost(name=str(_field(h, "name")), address=str(_field(h, "address")),
                          port=int(_field(h, "port", 22) or 22),
                          host_keys=tuple(str(k) for k in (_field(h, "host_keys") or ())))
                 for h in (_field(config, "hosts") or ())]
        adapter = cls(name, str(_field(config, "user", "root")),
                      _key_file(name, _field(config, "private_key"), resolve_secret, sdir, bdir), hosts, sdir)
    wanted = set(capabilities_of(config))
    if capabilities is not None:
        wanted &= set(capabilities)
    provider: Provider = adapter.provider(tuple(c for c in CAPABILITIES if c in wanted))
    return provider


def open_stack_providers(stack: Any, *, state_dir: str | Path | None = None) -> dict[str, Provider]:
    """Every provider of a loaded Stack (liferaft.stack.Stack), opened lazily-cheap (no network yet)."""
    return {name: open_provider(name, cfg, stack.secret, state_dir=state_dir, base_dir=stack.base_dir)
            for name, cfg in stack.model.providers.items()}
