"""A loaded stack: the validated model, where it came from, and secret resolution."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from liferaft.errors import Problem, SecretError, UsageError
from liferaft.stack._files import real_path
from liferaft.stack.checks import resolve_artifact, resolve_playbook
from liferaft.stack.loader import parse_stack
from liferaft.stack.model import StackModel, provider_capabilities


@dataclass(frozen=True)
class Stack:
    model: StackModel
    path: Path
    warnings: tuple[Problem, ...] = ()
    _positions: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    # Where the stack runs now, when that is not the stack file's primary (`at_site`): the addresses of the hosts
    # running its services there (None: every host of the site), and the primary the stack file names.
    active_hosts: tuple[str, ...] | None = None
    file_primary: str | None = None

    def at_site(self, site: str, hosts: list[str] | tuple[str, ...] | None = None) -> Stack:
        """The stack as it stands when it runs at `site` (its active site, recorded by a failover): `site` is the
        primary of the returned view, the stack file's primary one of its alternates. The file is not touched."""
        m = self.model
        if site == m.primary and not hosts:
            return self
        self.site(site)
        alternates = [a for a in [m.primary, *m.alternates] if a != site]
        model = m.model_copy(update={"primary": site, "alternates": alternates})
        return replace(self, model=model, active_hosts=tuple(hosts) if hosts else None,
                       file_primary=self.file_primary or m.primary)

    # Convenient pass-throughs so callers write stack.sites rather than stack.model.sites.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    @property
    def base_dir(self) -> Path:
        return real_path(self.path).parent

    def secret(self, ref: str) -> str:
        """Resolve `env:NAME` or `file:PATH` (relative to the stack file). The value is never logged."""
        kind, _, target = ref.partition(":")
        if kind == "env":
            value = os.environ.get(target)
            if value is None:
                raise SecretError(f"secret reference env:{target}: the environment variable is not set")
            return value
        if kind == "file":
            p = Path(target)
            return read_secret_file(p if p.is_absolute() else self.base_dir / p, ref)
        raise SecretError("a secret reference must start with env: or file:")

    def provider(self, name: str) -> Any:
        try:
            return self.model.providers[name]
        except KeyError:
            raise UsageError(f"no provider named {name!r}", hint=f"providers: {', '.join(self.model.providers)}") \
                from None

    def site(self, name: str) -> Any:
        try:
            return self.model.sites[name]
        except KeyError:
            raise UsageError(f"no site named {name!r}", hint=f"sites: {', '.join(self.model.sites)}") from None

    def capabilities(self, provider: str) -> tuple[str, ...]:
        return provider_capabilities(self.provider(provider))

    def playbook_path(self, service: str) -> Path:
        svc = self.model.services[service]
        if svc.playbook is None:
            raise UsageError(f"service {service!r} runs a container image, not a playbook")
        found = resolve_playbook(self.base_dir, svc.playbook)
        if found is None:
            raise UsageError(f"playbook {svc.playbook!r} of service {service!r} not found")
        return found

    def artifact_path(self, service: str) -> Path | None:
        svc = self.model.services[service]
        if not svc.artifact:
            return None
        found = resolve_artifact(self.base_dir, svc.artifact)
        if found is None:
            raise UsageError(f"artifact {svc.artifact!r} of service {service!r} leaves the stack file's folder")
        return found


MAX_SECRET_BYTES = 64 * 1024  # a key, token or password; a private key is a few KiB


def read_secret_file(path: Path, ref: str) -> str:
    """Read a `file:` secret. Symlinks are followed (container secret mounts are symlinks), but the file reached
    must be a regular, small, UTF-8 text file: a device (/dev/zero), FIFO, directory or symlink loop would hang,
    exhaust memory or crash. Errors name the reference, never the content."""
    from liferaft.stack._files import Refused, read_limited

    def refuse(why: str) -> SecretError:
        return SecretError(f"secret reference {ref}: {why}")

    try:
        data = read_limited(path, MAX_SECRET_BYTES)
    except FileNotFoundError:
        raise refuse("cannot read (No such file or directory)") from None
    except Refused as e:
        raise refuse(str(e)) from None
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise refuse("the file is not UTF-8 text") from None


def load_stack(path: str | os.PathLike[str]) -> Stack:
    """Load and validate a stack file. Raises liferaft.errors.InvalidInput with every problem found."""
    p = Path(path)
    model, warnings, positions = parse_stack(p)
    return Stack(model=model, path=p, warnings=tuple(warnings), _positions=positions)
