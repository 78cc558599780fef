"""Dataset kinds: PostgreSQL databases and buckets today, each a plug-in on the contract in `base`."""

from liferaft.datasets.base import Dataset, DatasetKind, Size, StandbyCopy, kind_of

__all__ = ["Dataset", "DatasetKind", "Size", "StandbyCopy", "datasets", "kind_of"]


def datasets(stack):  # type: ignore[no-untyped-def]  # re-exported lazily: the kinds load their movers lazily
    from liferaft.datasets.registry import datasets as _datasets

    return _datasets(stack)
