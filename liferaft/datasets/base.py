"""The dataset contract: everything liferaft does to one kind of data, in every mode, behind one small Protocol.

A **dataset** is one entry of the stack file's `data:` section (a PostgreSQL database, a bucket; later MySQL, Redis,
directories, SQLite). Its **kind** owns all of its behaviour: the planner, the step library, the drill and
`replicate` iterate over `datasets(stack)` and call the kind through this contract -- they never branch on a kind's
name. Adding a kind is one module implementing `DatasetKind` plus one line in `liferaft.datasets.registry`.

The contract has two halves, each a Protocol:
- `DatasetKind` -- plan (observe, estimate, what the target host needs), live move (prepare the empty copy, seed it,
  freeze + catch up, release), verification, and drills (cut without freezing, verify as of the cut, teardown);
- `StandbyCopy` -- keeping a standby copy current (`replicate`), its lag, promoting it when the source is gone (cold
  failover), and what a cut lost.
A kind implements both (see `liferaft.datasets.postgres`, `liferaft.datasets.bucket`).

`ctx` is the engine's run context (`liferaft.engine.runner.RunContext`): secrets, providers, the target host, memo.
Every method that acts is idempotent (a resumed run calls it again) and returns a JSON-safe, secret-free dict that
the step journals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext
    from liferaft.stack import Stack


@dataclass(frozen=True)
class Dataset:
    """One dataset of a stack: its kind's registry name, its key in the stack file and the model's entry."""

    kind: str  # "postgresql" | "bucket" | ...
    key: str  # data.databases.<key> / data.buckets.<key>
    spec: Any  # the stack model's entry (liferaft.stack.model.Database, Bucket, ...)

    @property
    def id(self) -> str:
        """Unique within a stack (step ids derive from it)."""
        return self.key


@dataclass(frozen=True)
class Size:
    """What the plan observed of a dataset at the source (read-only)."""

    bytes: int = 0
    items: int = 0  # rows, objects, keys, files: whatever the kind counts
    detail: str = ""


class DatasetKind(Protocol):
    """Plan, live move, verification and drills of one kind of data."""

    name: ClassVar[str]  # the registry name (also `Dataset.kind`)
    noun: ClassVar[str]  # "database", "bucket": for plans and reports

    def entries(self, model: Any) -> dict[str, Any]:
        """This kind's entries in a stack model (`data.databases` whose engine is postgresql, `data.buckets`)."""
        ...

    # ---- plan (read-only) -------------------------------------------------------------------------------------
    def observe(self, ctx: Any, ds: Dataset) -> Size: ...
    def estimate_s(self, ds: Dataset, size: Size) -> float: ...
    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        """Playbooks the target host needs before this kind's datasets can land there (e.g. postgresql.yml)."""
        ...

    # ---- live move -------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """Make the empty copy at the target (schema, bucket) and whatever access the move needs. After this the
        service may be deployed (it runs beside `seed`)."""
        ...

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """The bulk copy / start of replication, while the source keeps taking writes."""
        ...

    def unseed(self, ctx: RunContext, ds: Dataset) -> None: ...

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        """Inside the write freeze: make the source refuse writes (call `on_frozen()` the moment it does), catch the
        copy up. Kinds whose data hangs off others' writes (objects) run after every database froze."""
        ...

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None: ...

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool) -> dict[str, Any]:
        """Counts and content hashes, source vs target; raise CheckFailed naming what differs."""
        ...

    def release(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """After the move: liferaft's own access (migration roles...) disabled."""
        ...

    # ---- drills ----------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """Stop copying at this instant without freezing the source; the copy is complete up to the cut."""
        ...

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        """Shell lines run on the drill's target to remove what the kind created there."""
        ...


class StandbyCopy(Protocol):
    """Keeping a standby copy, and failing over to it when the source is gone."""

    def keep(self, ctx: RunContext, ds: Dataset, record: dict[str, Any]) -> dict[str, Any]:
        """Set up (once) and keep the standby copy current (one round); returns what the standby record keeps."""
        ...

    def lag(self, ctx: RunContext, ds: Dataset, record: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    def promote(self, ctx: RunContext, ds: Dataset, record: dict[str, Any]) -> dict[str, Any]:
        """Make the standby copy the primary without contacting the source."""
        ...

    def loss(self, ctx: RunContext, ds: Dataset, record: dict[str, Any]) -> dict[str, Any]:
        """What a cut lost (last replicated position and time)."""
        ...


_REGISTRY: dict[str, Any] = {}


def register_kind(kind: Any) -> Any:
    """Register a dataset kind (an instance or a class, instantiated once) under its `name`."""
    inst = kind() if isinstance(kind, type) else kind
    _REGISTRY[inst.name] = inst
    return kind


def kind_of(ds: Dataset) -> Any:
    from liferaft.datasets import registry  # noqa: F401  (registers the built-in kinds)

    try:
        return _REGISTRY[ds.kind]
    except KeyError:
        from liferaft.errors import UsageError

        raise UsageError(f"unknown dataset kind {ds.kind!r}", hint=f"known: {', '.join(sorted(_REGISTRY))}") from None
