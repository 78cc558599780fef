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


TEARDOWN_KEPT = "liferaft-teardown: kept: "  # a teardown line saying what it left in place on purpose, and why


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
    # a rate this stack's last copy measured (bytes/s, items/s), for the estimate; 0: none kept (the kind's default)
    bytes_per_s: float = 0.0
    items_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bytes": self.bytes, "items": self.items, "detail": self.detail}
        if self.bytes_per_s or self.items_per_s:
            out.update(bytes_per_s=self.bytes_per_s, items_per_s=self.items_per_s)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Size:
        return cls(int(d.get("bytes", 0)), int(d.get("items", 0)), str(d.get("detail", "")),
                   float(d.get("bytes_per_s", 0.0)), float(d.get("items_per_s", 0.0)))


@dataclass(frozen=True)
class Where:
    """Where a plan observes from (read-only): the stack, the two sites, the state dir and the source host."""

    stack: Stack
    source: str  # site names
    target: str
    state_dir: Any
    source_host: TargetHost
    # the host the target will most likely be (an ssh pool's next free host), reachable over SSH with pinned keys;
    # None where nobody knows it before the allocation (hosts created through an API, Terraform)
    target_host: TargetHost | None = None


@dataclass(frozen=True)
class Prerequisite:
    """What a kind's plan-time check found at the source (`DatasetKind.prerequisites`): `blocking` stops the plan
    (exit 2) and any move before anything is created; `fix` names what resolves it, a stack key where one exists."""

    dataset: str
    check: str  # a short name: "primary-key", "wal-level", "replication-slots", "extensions", "access"...
    message: str
    fix: str = ""
    blocking: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "check": self.check, "message": self.message, "fix": self.fix,
                "blocking": self.blocking}

    def __str__(self) -> str:
        return f"{self.dataset}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


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


@dataclass(frozen=True)
class Writers:
    """How the programs writing a dataset stop and start again (shell commands run as root on its host), and the
    dataset's label for what the fence says."""

    stop: str | None
    start: str | None
    label: str


def writer_lines(writers: list[Writers], *, undo: bool = False) -> list[str]:
    """The fence's (`undo`: its undo's) shell lines for `writers`: each distinct stop (start) command once, under the
    first dataset's label that names it, saying `liferaft-fence: done|failed: writers of <label> stopped|started`."""
    import shlex

    seen: dict[str, str] = {}
    for w in writers:
        cmd = w.start if undo else w.stop
        if cmd:
            seen.setdefault(cmd, w.label)
    verb, part = ("started", "start") if undo else ("stopped", "stop")
    return [f"if sh -c {shlex.quote(cmd)} >/dev/null 2>&1; then echo 'liferaft-fence: done: writers of {lab} {verb}'; "
            f"else echo 'liferaft-fence: failed: writers of {lab} (writers.{part} failed)'; fi"
            for cmd, lab in seen.items()]


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

    def arrives_in_freeze(self, ds: Dataset) -> bool:
        """Optional (default False). True when nothing of the dataset is at the target before the freeze (a
        PostgreSQL database in `migrate: dump` mode: the dump is made inside the freeze): the services then deploy
        after the freeze, since a service checks its health on its data."""
        ...

    def prerequisites(self, where: Where, ds: Dataset) -> list[Prerequisite]:
        """Optional. Check READ-ONLY at the source what the move needs there (PostgreSQL: primary keys, wal_level,
        free replication slots and senders, extensions the target lacks, the source's access rule for the target),
        before anything is created. A kind without it has nothing to check."""
        ...

    def source_access_title(self, stack: Stack, datasets: list[Dataset], target: str | None = None) -> str | None:
        """Optional, with `open_source`. What the `source-access` step opens at the source for these datasets, once
        the target's address is known (after the allocation), or None: nothing (e.g. a dump the controller makes,
        `data_path: controller`). `target`: the site moved to (the planner passes it)."""
        ...

    def open_source(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        """Optional. Let the target host reach the source for these datasets (PostgreSQL: a pg_hba line for the
        migration role and the database, from the target's address, and a reload). Idempotent; journal (ctx.remember)
        what it adds before adding it, and add nothing that is already there."""
        ...

    def close_source(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        """Optional, with `open_source`: remove exactly what it added (never what was there before)."""
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
        """Shell lines run on the drill's target to remove what the kind created there -- and only that: never a
        copy `set_aside_lines` kept (a drill into an old primary kept as a standby runs these there). What a line
        leaves in place on purpose it says as `liferaft-teardown: kept: <what, why>` (TEARDOWN_KEPT)."""
        ...

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        """Shell lines (sh, as root) run on a site the stack left, at the first contact after a cold failover, so
        that it never takes writes for these datasets again (PostgreSQL: the databases read-only, sessions ended).
        Data stays. A line that cannot do its part prints `liferaft-fence: failed: <what>` (the fence is then
        tried again at the next contact). Optional: a kind without it has nothing to fence (objects)."""
        ...

    def unfence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        """The undo of `fence_lines`, for the rollback of the move that fenced the site (it is the active site
        again). Same output convention. Optional, with `fence_lines`."""
        ...

    def writers(self, stack: Stack, datasets: list[Dataset]) -> list[Writers]:
        """The programs outside the stack's services that write these datasets (a folder's uploader, a SQLite
        file's app): the fence stops them before any kind's `fence_lines`, its undo starts them after every kind's
        `unfence_lines` (a writer started earlier would meet another kind's data still read-only, and die). Each
        distinct command runs once, however many datasets name it. Optional: most kinds are written by services."""
        ...

    def set_aside_lines(self, stack: Stack, datasets: list[Dataset], tag: str) -> list[str]:
        """Shell lines run on a fenced old site before a standby of the active site is kept there (failback): the
        old copy of each dataset kept under another name (`tag`), fenced still, so the standby's copy is made
        under the stack's names. Nothing is deleted. Same output convention. Optional (objects: the standby's sync
        is incremental into the bucket as it is)."""
        ...


class CreatesData(Protocol):
    """What a kind adds so that `liferaft deploy` (a first deployment: nothing to copy from) makes its datasets at
    the run's site through it (`data.create`); a kind without it gets its `target_playbooks` there, as in a
    failover. The databases a kind makes admit `liferaft.datasets._util.allow_from(ctx, host)` besides this
    controller: the hosts the stack's other sites declare."""

    def existing(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        """What of these datasets is at the run's site already (read-only; journaled before `create`)."""
        ...

    def create(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> dict[str, Any]:
        """Make them there, empty (idempotent). The result's `created` lists the keys this made (and `changed`,
        Ansible's count where a playbook ran): a deploy that made nothing says so."""
        ...

    def uncreate(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> None:
        """The rollback of `create`: remove what was not in `existing`; what was there before stays."""
        ...


@dataclass(frozen=True)
class StandbySides:
    """Where one standby lives, as its kinds see it: the sites, the hosts (None where unknown: a cold failover may
    not know the source host, a set-up has not allocated the standby yet) and how long to wait on the source."""

    source: str  # the source site (its objects provider for buckets)
    target: str  # the standby's site
    source_host: TargetHost | None = None
    standby_host: TargetHost | None = None
    source_timeout: float = 5.0  # every call to the source is bounded by this (it may be gone)
    interval: float = 5.0  # the keeping period (a periodic copy is due after it)

    def need_standby(self) -> TargetHost:
        if self.standby_host is None:
            from liferaft.errors import UsageError

            raise UsageError(f"no standby host is known at {self.target}")
        return self.standby_host

    def need_source(self) -> TargetHost:
        if self.source_host is None:
            from liferaft.errors import UsageError

            raise UsageError(f"the source host at {self.source} is not known")
        return self.source_host


class StandbyCopy(Protocol):
    """Keeping a standby copy (`replicate`), and failing over to it when the source is gone (cold failover).

    `entry` is the dataset's part of the standby record (`liferaft.engine.standby_state`, under
    `record_group(ds)`); methods that keep or measure return the fields to update there (JSON-safe, no secret).
    """

    # The cold plan's step that makes this kind's standby copy the primary: (step kind, step id prefix). Both kinds
    # are the same generic step (`liferaft.steps.standby`); a kind whose promotion only checks the copy makes it a
    # gate (a difference stops the run before DNS).
    promote_step: ClassVar[tuple[str, str]]

    def holds_copy(self, entry: dict[str, Any]) -> bool:
        """Does the record entry say a standby copy was made (a cold failover can use it)?"""
        ...

    def source_ports(self, ds: Dataset) -> list[int]:
        """Ports at the source host whose answer says the source is still there (a cold plan probes them)."""
        ...

    def standby_place(self, stack: Stack, ds: Dataset, target: str) -> str:
        """The provider holding the standby copy at site `target` (for the plan's resources)."""
        ...

    def install_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        """What the standby host needs installed for these datasets (a step title), or None: nothing."""
        ...

    def install(self, ctx: RunContext, datasets: list[Dataset], sides: StandbySides,
                installed_on: str | None) -> dict[str, Any]:
        """Make the standby host fit for these datasets and give liferaft its access at both ends (idempotent;
        `installed_on`: the address a former set-up installed on, to skip what is still there)."""
        ...

    def keep(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """Set up the standby copy (once) and keep it current (one round): start what copies it, or copy what is
        due. Contacts the source (bounded where it only measures)."""
        ...

    def lag(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """What a cut now would lose: `lag_bytes`, `lag_seconds`, `measured_at`, `caught_up_at` (the time up to
        which the copy is confirmed to hold the source's writes), bounded by the source timeout."""
        ...

    def promote_title(self, stack: Stack, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> str: ...

    def promote(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """Make the standby copy at `sides.standby_host` / the target site the primary without contacting the
        source (raise CheckFailed where the copy cannot be trusted)."""
        ...

    def check_promoted(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> None:
        """Verify the promotion took effect (CheckFailed naming what differs)."""
        ...

    def promoted_summary(self, key: str, promoted: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
        """What a no-notice drill's report says of a done promotion (`promoted`: `promote`'s result): what was
        checked (label -> count) and notes."""
        ...

    def clean_source(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any]:
        """Once the source answers again: drop what a promotion abandoned there (a rollback, a drill's heal)."""
        ...

    def stop(self, ctx: RunContext, ds: Dataset, sides: StandbySides, entry: dict[str, Any]) -> dict[str, Any] | None:
        """Stop keeping the copy (`replicate --stop`): what keeps it is removed at both ends, the copy stays. None:
        nothing keeps it between rounds."""
        ...

    def loss(self, ctx: RunContext, ds: Dataset, entry: dict[str, Any], promoted: dict[str, Any], *,
             ledger: str | None = None, host: TargetHost | None = None) -> dict[str, Any]:
        """What a cut lost: the last replicated time (`last_replicated_at`) and position, from the record and the
        promotion's result `promoted` ({} when not promoted); with a write `ledger` (a path) and the promoted
        `host`, a kind that holds the ledger's writes adds `ledger`: the acknowledged writes missing there."""
        ...

    def release_standby_title(self, stack: Stack, datasets: list[Dataset]) -> str | None:
        """What `release` disables after a cold failover (a step title), or None: nothing."""
        ...

    def release_standby(self, ctx: RunContext, datasets: list[Dataset], host: TargetHost, *, undo: bool = False) -> bool:
        """After a cold failover: liferaft's own access at the promoted standby disabled (`undo`: enabled again).
        False: this kind has none."""
        ...


def record_group(ds: Dataset) -> str:
    """Where the standby record keeps a dataset: "<noun>s" (databases, buckets), keyed by the dataset's key."""
    return f"{kind_of(ds).noun}s"


def record_groups() -> list[str]:
    """Every kind's group in the standby record (present, if empty, in every summary)."""
    from liferaft.datasets import registry  # noqa: F401  (registers the built-in kinds)

    return sorted({f"{k.noun}s" for k in _REGISTRY.values()})


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
