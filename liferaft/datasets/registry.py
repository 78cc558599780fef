"""The built-in dataset kinds: one line each. Importing this module registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.datasets.base import _REGISTRY, Dataset, register_kind
from liferaft.datasets.bucket import Bucket
from liferaft.datasets.directory import Directory
from liferaft.datasets.mariadb import Mariadb
from liferaft.datasets.postgres import Postgres
from liferaft.datasets.redis_ import Redis
from liferaft.datasets.sqlite import Sqlite

if TYPE_CHECKING:
    from liferaft.stack import Stack

register_kind(Postgres)
register_kind(Bucket)
register_kind(Redis)
register_kind(Mariadb)
register_kind(Directory)
register_kind(Sqlite)


def datasets(stack: Stack) -> list[Dataset]:
    """Every dataset of the stack, in a stable order (kinds as registered, then keys)."""
    return [Dataset(kind.name, key, spec) for kind in _REGISTRY.values()
            for key, spec in sorted(kind.entries(stack.model).items())]


def kind_by_group() -> dict[str, Any]:
    return {k.group: k for k in _REGISTRY.values()}


def grouped(datasets: list[Dataset], value: Any = None) -> dict[str, Any]:
    """Datasets as JSON step params or results: `{group: {key: value(ds)}}` per kind (`value` None: lists of keys),
    e.g. `{"databases": {"blog": "logical"}, "buckets": {"images": "microblog-images"}}`."""
    from liferaft.datasets.base import kind_of

    out: dict[str, Any] = {}
    for ds in datasets:
        group = kind_of(ds).group
        if value is None:
            out.setdefault(group, []).append(ds.key)
        else:
            out.setdefault(group, {})[ds.key] = value(ds)
    return out


def from_params(stack: Stack, params: dict[str, Any]) -> list[Dataset]:
    """The datasets a step's grouped params name (the inverse of `grouped`), in registry order."""
    out = []
    for kind in _REGISTRY.values():
        keys = params.get(kind.group) or ()
        if keys:
            entries = kind.entries(stack.model)
            out += [Dataset(kind.name, key, entries[key]) for key in keys]
    return out


def find(stack: Stack, kind: str, key: str) -> Dataset:
    """One dataset of the stack by kind and key (step params carry both)."""
    from liferaft.datasets.base import kind_of

    probe = Dataset(kind, key, None)
    entries = kind_of(probe).entries(stack.model)
    if key not in entries:
        from liferaft.errors import UsageError

        raise UsageError(f"the stack has no {kind} dataset {key!r}")
    return Dataset(kind, key, entries[key])


def by_kind(items: Any) -> dict[str, list[Any]]:
    """Datasets (or anything with a `kind`) grouped by kind name, in their order."""
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(item.kind, []).append(item)
    return out
