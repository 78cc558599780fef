"""The built-in dataset kinds: one line each. Importing this module registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from liferaft.datasets.base import _REGISTRY, Dataset, register_kind
from liferaft.datasets.bucket import Bucket
from liferaft.datasets.postgres import Postgres

if TYPE_CHECKING:
    from liferaft.stack import Stack

register_kind(Postgres)
register_kind(Bucket)


def datasets(stack: Stack) -> list[Dataset]:
    """Every dataset of the stack, in a stable order (kinds as registered, then keys)."""
    return [Dataset(kind.name, key, spec) for kind in _REGISTRY.values()
            for key, spec in sorted(kind.entries(stack.model).items())]
