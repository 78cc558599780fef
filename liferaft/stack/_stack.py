"""A loaded stack: the validated model, where it came from, and secret resolution."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import Problem, SecretError, UsageError
from liferaft.stack.checks import resolve_playbook
from liferaft.stack.loader import parse_stack
from liferaft.stack.model import StackModel, provider_capabilities


@dataclass(frozen=True)
class Stack:
    model: StackModel
    path: Path
    warnings: tuple[Problem, ...] = ()
    _positions: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    # Convenient pass-throughs so callers write stack.sites rather than stack.model.sites.
    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent

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
            p = p if p.is_absolute() else self.base_dir / p
            try:
                return p.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as e:
                raise SecretError(f"secret reference file:{target}: cannot read ({e.strerror})") from None
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
        found = resolve_playbook(self.base_dir, svc.playbook)
        if found is None:
            raise UsageError(f"playbook {svc.playbook!r} of service {service!r} not found")
        return found

    def artifact_path(self, service: str) -> Path | None:
        svc = self.model.services[service]
        return (self.base_dir / svc.artifact).resolve() if svc.artifact else None


def load_stack(path: str | os.PathLike[str]) -> Stack:
    """Load and validate a stack file. Raises liferaft.errors.InvalidInput with every problem found."""
    p = Path(path)
    model, warnings, positions = parse_stack(p)
    return Stack(model=model, path=p, warnings=tuple(warnings), _positions=positions)
