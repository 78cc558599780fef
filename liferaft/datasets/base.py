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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
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

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "items": self.items, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Size:
        return cls(int(d.get("bytes", 0)), int(d.get("items", 0)), str(d.get("detail", "")))


@dataclass(frozen=True)
class Where:
    """Where a plan observes from (read-only): the stack, the two sites, the state dir and the source host."""

    stack: Stack
    source: str  # site names
    target: str
    state_dir: Any
    source_host: TargetHost


@dataclass(frozen=True)
class Verdict:
    """What a kind's `verify` found for one dataset: counts checked, differences (fail the gate), notes (reported
    only, e.g. rows written at the source after a drill's cut), seconds spent, kind-specific figures."""

    checked: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerVerdict:
    """A write ledger checked against the dataset it names (`DatasetKind.check_ledger`)."""

    checked: int  # acknowledged writes looked up (before the cut, in a drill)
    problems: tuple[str, ...]
    summary: dict[str, Any]  # JSON-safe: present, missing, mismatched, writes_after_cut, first_missing_at...


class DatasetKind(Protocol):
    """Plan, live move, verification and drills of one kind of data.

    Class attributes say how the planner and the step library place the kind's steps, so that neither names a kind:
    - `group`: the stack file's `data.<group>` section; also the key under which grouped step params and results list
      this kind's datasets (`{"databases": {"blog": "logical"}}`);
    - `seed_verb`: the seed step's id is `<seed_verb>-<key>` ("migrate-blog", "sync-images");
    - `freezes_source`: its `freeze` makes the source refuse writes; kinds without it (objects, whose content hangs off
      other datasets' writes) freeze only once every freezing kind has frozen, and run while those catch up;
    - `release_id`: the id of the step that runs `release` for the kind's datasets after the move (None: nothing to
      release);
    - `ledger`: the kind can check a write ledger (`check_ledger`);
    - `summary_name`: what `summary(ds)` is, as a seed step's param (PostgreSQL: "method");
    - `seed_needs_prepare`: the seed waits for `prepare` (a database's schema and access); else (buckets) it starts
      right after the allocation.
    """

    name: ClassVar[str]  # the registry name (also `Dataset.kind`)
    noun: ClassVar[str]  # "database", "bucket": for plans and reports
    group: ClassVar[str]
    seed_verb: ClassVar[str]
    freezes_source: ClassVar[bool]
    release_id: ClassVar[str | None]
    ledger: ClassVar[bool]
    summary_name: ClassVar[str]
    seed_needs_prepare: ClassVar[bool]

    def entries(self, model: Any) -> dict[str, Any]:
        """This kind's entries in a stack model (`data.databases` whose engine is postgresql, `data.buckets`)."""
        ...

    # ---- plan (read-only) -------------------------------------------------------------------------------------
    def summary(self, ds: Dataset) -> Any:
        """A short JSON value that shows in the plan what the move will do (PostgreSQL: its method)."""
        ...

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        """Step titles: "seed" (and "prepare"), given the (source, target) sites' providers for the kind."""
        ...

    def provider(self, stack: Stack, site: str) -> str:
        """The provider the kind's data lives at in `site` (its compute for databases, its objects for buckets)."""
        ...

    def observe(self, where: Where, ds: Dataset) -> Size:
        """Measure the dataset at the source READ-ONLY (a lab test counts what the servers saw: nothing written)."""
        ...

    def estimate_s(self, ds: Dataset, size: Size) -> float: ...

    def ports(self, ds: Dataset) -> tuple[int, ...]:
        """Ports the target host opens to the source host and the controller only (a database's port)."""
        ...

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        """Playbooks the target host needs before this kind's datasets can land there (e.g. postgresql.yml)."""
        ...

    def playbook_vars(self, ctx: RunContext, datasets: list[Dataset], address: str) -> tuple[dict[str, Any],
                                                                                                dict[str, Any]]:
        """(variables, secret variables) for the kind's target playbooks."""
        ...

    # ---- live move -------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """What the service's deploy and the seed need at the target (the bucket made; for a database, the access
        the move needs -- its schema is the seed's first act, within a second or two). After this the service may be
        deployed: it runs beside `seed`."""
        ...

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None: ...

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """The bulk copy / start of replication, while the source keeps taking writes."""
        ...

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        """Read the seeded copy back where that is worth it before the freeze (objects by sha256)."""
        ...

    def unseed(self, ctx: RunContext, ds: Dataset) -> None: ...

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        """Open what `freeze` will use (clients, connections) before the write freeze starts."""
        ...

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        """Inside the write freeze: make the source refuse writes (call `on_frozen()` the moment it does), catch the
        copy up. Kinds whose data hangs off others' writes (objects) run after every database froze."""
        ...

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None: ...

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        """Counts and content hashes, source vs target. `prior`: this dataset's part of the freeze's (or the cut's)
        result, None when unknown (a freeze that was retried). `as_of_cut`: a drill's copy, complete up to the cut
        while the source kept taking writes (what was written after it is a note, not a problem)."""
        ...

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        """(kinds with `ledger`) every acknowledged write of the ledger (before `cut_at`) present at the target."""
        ...

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        """After the move: liferaft's own access (migration roles...) disabled for these datasets of the kind."""
        ...

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None: ...

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


def kinds() -> list[Any]:
    """Every registered kind, in registration order."""
    from liferaft.datasets import registry  # noqa: F401  (registers the built-in kinds)

    return list(_REGISTRY.values())


def kind_named(name: str) -> Any:
    """The registered kind called `name` (step params carry a kind's name)."""
    return kind_of(Dataset(name, "", None))


def kind_of(ds: Dataset) -> Any:
    from liferaft.datasets import registry  # noqa: F401  (registers the built-in kinds)

    try:
        return _REGISTRY[ds.kind]
    except KeyError:
        from liferaft.errors import UsageError

        raise UsageError(f"unknown dataset kind {ds.kind!r}", hint=f"known: {', '.join(sorted(_REGISTRY))}") from None
