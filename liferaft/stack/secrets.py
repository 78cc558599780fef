"""Finding secret references in a stack model (their values are only ever read by Stack.secret)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from liferaft.stack.model import SECRET_REF


def secret_refs(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field path, reference) for every secret reference field in the model."""
    for name in type(model).model_fields:
        value: Any = getattr(model, name)
        where = f"{prefix}{name}"
        yield from _walk(value, where)


def _walk(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, BaseModel):
        yield from secret_refs(value, where + ".")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}.{i}")
    elif isinstance(value, str) and _secret_field(where) and SECRET_REF.match(value):
        yield where, value


def _secret_field(where: str) -> bool:
    """A field that holds a secret reference: by its name, or any entry of a service's `secrets`."""
    parts = where.split(".")
    return parts[-1] in SECRET_FIELDS or (len(parts) == 4 and parts[0] == "services" and parts[2] == "secrets")


SECRET_FIELDS = {"access_key_id", "secret_access_key", "session_token", "key", "secret", "private_key", "password",
                 "certificate"}
