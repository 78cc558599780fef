"""`liferaft replicate`: keep the standby at an alternate site current, and measure what a cut would lose.

Set-up (idempotent; `Replicator.setup`):
  1. find the source host (the one the service's DNS records point at: the engine's observer);
  2. allocate the standby host at the target's compute provider under the same name the failover planner uses
     (`<stack>-<site>`), so a later failover -- live or cold -- lands on the host that holds the copy;
  3. if PostgreSQL is not answering there: prepare.yml + postgresql.yml through `liferaft.configure` with the
     engine's database variables (nothing re-implemented here);
  4. liferaft's migration role at both ends (the engine's `ensure_migrator`);
  5. per database, `migrate: logical`: the movers' `start` (schema first, then publication and subscription,
     named as the live failover names them, so a live failover continues from this standby), objects handed to
     the owner role. `migrate: dump`: copied each round instead (see `pgstandby.dump_and_swap`).
Each round (`Replicator.round`): lag per logical database (bounded by the source timeout), a dump where due, an
incremental sync of each bucket (the movers' manifest, the same one failover uses), then the state file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liferaft.engine.standby_state import load_standby, push_history, rpo_exposure, save_standby
from liferaft.errors import LiferaftError, ProviderError, Unreachable, UsageError
from liferaft.events import Events, as_events
from liferaft.standby.bounded import DEFAULT_SOURCE_TIMEOUT, bounded, tcp_answers

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.movers.pg_conn import PgConn
    from liferaft.stack import Stack


@dataclass
class _Plan:
    stack: str


@dataclass
class EngineContext:
    """The slice of the failover engine's RunContext that its access helpers (migration role, database variables)
    use, so replicate calls them instead of copying them. Secrets resolved here are never written anywhere."""

    stack: Stack
    state_dir: Path
    plan: _Plan
    _secret_values: set[str] = field(default_factory=set, repr=False)

    def require_stack(self) -> Stack:
        return self.stack

    def secret(self, ref: str) -> str:
        value = self.stack.secret(ref)
        self._secret_values.add(value)
        return value

    def add_secret(self, value: str) -> None:
        self._secret_values.add(value)

    @classmethod
    def for_stack(cls, stack: Stack, state_dir: Path) -> EngineContext:
        return cls(stack, Path(state_dir), _Plan(stack.model.name))


def standby_spec_name(stack: Stack, target: str) -> str:
    """The host name the failover planner allocates at `target` (so both land on the same host)."""
    return f"{stack.model.name}-{target}"


@dataclass(frozen=True)
class ReplicateOptions:
    target: str
    interval: float = 5.0
    source_timeout: float = DEFAULT_SOURCE_TIMEOUT
    setup_timeout: float = 600.0
    lower_ttl: int | None = None  # lower the service records' TTLs to this many seconds (restored by stop())


def require_no_run_into(stack: Stack, state_dir: Path, target: str) -> None:
    """Refuse to replicate into a site that a failover run or a drill has (or may have) put the stack into: every
    run into it that is not rolled back. A done failover made it where the stack runs now -- replicating the stack
    file's primary into it would overwrite its data with the old site's the day the old provider answers again; a
    drill kept running (--keep) serves a promoted copy there; a run that stopped or failed midway is resumed or
    rolled back first. Rolled-back runs (every drill that tore down) leave the site free."""
    from liferaft.engine.journal import Journal, journal_path
    from liferaft.steps.drill import is_drill

    path = journal_path(state_dir, stack.model.name)
    if not path.exists():
        return
    with Journal(path) as journal:
        runs = [r for r in journal.runs() if r.target == target and r.status != "rolled-back"]
    if not runs:
        return
    r = runs[0]  # newest first
    if r.status == "done" and is_drill(r.plan.steps):
        raise UsageError(f"a drill kept its target running at {target!r} (run {r.id}): a standby there would "
                         "subscribe into the drill's promoted copy", hint=f"liferaft drill --teardown {r.id}")
    if r.status == "done":
        raise UsageError(f"the stack was failed over into {target!r} (run {r.id}, done): it runs there now, and "
                         f"replicating the old primary {stack.model.primary!r} into it would overwrite its data",
                         hint=f"make {target!r} the primary in the stack file to keep a standby of it elsewhere, or "
                              f"move back first (`liferaft rollback {r.id}`)")
    raise UsageError(f"run {r.id} into {target!r} is {r.status}: the site holds whatever it left there",
                     hint=f"finish it (`liferaft resume {r.id}`) or undo it (`liferaft rollback {r.id}`) first")


class Replicator:
    """One standby (target site) of one stack."""

    def __init__(self, stack: Stack, state_dir: Path, options: ReplicateOptions,
                 events: Events | None = None) -> None:
        m = stack.model
        if options.target == m.primary:
            raise UsageError(f"site {options.target!r} is the primary: replicate to an alternate",
                             hint=f"alternates: {', '.join(m.alternates) or '(none)'}")
        stack.site(options.target)
        require_no_run_into(stack, Path(state_dir), options.target)
        self.stack = stack
        self.state_dir = Path(state_dir)
        self.opts = options
        self.source = m.primary
        self.target = options.target
        self.events = as_events(events)
        self.ctx = EngineContext.for_stack(stack, self.state_dir)
        prev = load_standby(self.state_dir, m.name, self.target)
        self.record: dict[str, Any] = dict(prev.data) if prev else {}
        self.record.update(source=self.source, target=self.target)
        self.record.setdefault("started_at", time.time())
        self.record.setdefault("databases", {})
        self.record.setdefault("buckets", {})
        self._source_host: TargetHost | None = None
        self._standby_host: TargetHost | None = None

    # ----------------------------------------------------------------------------------------------- helpers
    def emit(self, kind: str, message: str, **data: Any) -> None:
        self.events.emit(kind, message, **{"stack": self.stack.model.name, "target": self.target, **data})

    def save(self) -> Path:
        self.record["rpo_exposure_s"] = rpo_exposure(self.record)
        return save_standby(self.state_dir, self.stack.model.name, self.target, self.record)

    def _conns(self, key: str) -> tuple[PgConn, PgConn]:
        from liferaft.steps.access import admin_conn

        db = self.stack.model.data.databases[key]
        assert self._source_host is not None and self._standby_host is not None
        return (admin_conn(self.ctx, self._source_host.address, db),  # type: ignore[arg-type]
                admin_conn(self.ctx, self._standby_host.address, db))  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------- set-up
    def setup(self) -> dict[str, Any]:
        """Make the standby exist and subscribe (idempotent). Needs the source to answer."""
        t0 = time.monotonic()
        self._source_host = self._find_source_host()
        self._standby_host = self._allocate_standby()
        self.record["source_host"] = _host_dict(self._source_host)
        self.record["standby_host"] = {**_host_dict(self._standby_host),
                                       "spec_name": standby_spec_name(self.stack, self.target),
                                       "provider": self.stack.site(self.target).compute}
        dbs = self.stack.model.data.databases
        if dbs:
            self._ensure_postgresql()
            self._ensure_migrators()
        for key, db in sorted(dbs.items()):
            entry = self.record["databases"].setdefault(key, {})
            entry.update(method=db.migrate, name=db.name)
            if db.migrate == "logical":
                entry.update(self._subscribe(key))
        for key, b in sorted(self.stack.model.data.buckets.items()):
            self.record["buckets"].setdefault(key, {}).update(
                name=b.name, source=self.stack.site(self.source).objects, target=self.stack.site(self.target).objects)
        self.record["set_up_at"] = time.time()
        self.save()
        seconds = round(time.monotonic() - t0, 2)
        self.emit("replicate.ready", f"standby at {self.target} on host {self._standby_host.name} "
                  f"({self._standby_host.address}) ready in {seconds:.1f}s", seconds=seconds,
                  host=self._standby_host.name)
        return {"seconds": seconds, "standby_host": self.record["standby_host"]}

    def lower_ttls(self) -> None:
        """With `lower_ttl`: the service records' TTLs lowered ahead of a move, the originals kept in the record."""
        from liferaft.standby.ttl import lower_ttls

        if self.opts.lower_ttl is None:
            return
        before = dict(self.record.get("dns_ttls") or {})
        self.record["dns_ttls"] = lower_ttls(self.stack, self.state_dir, self.opts.lower_ttl, before)
        self.save()
        lowered = sorted(set(self.record["dns_ttls"]) - set(before))
        if lowered:
            self.emit("replicate.ttl_lowered", f"DNS TTL of {', '.join(lowered)} lowered to "
                      f"{self.opts.lower_ttl} s (restored by --stop)", records=lowered, ttl=self.opts.lower_ttl)

    def setup_or_attach(self) -> dict[str, Any]:
        """Set up; if the source does not answer but a standby was recorded before, keep watching that one (the
        rounds then record the source as unreachable and the copy as stale instead of failing to start)."""
        try:
            return self.setup()
        except (Unreachable, ProviderError) as e:
            if not (self.record.get("standby_host") and self.record.get("source_host")):
                raise
            self.emit("replicate.degraded", f"set-up could not reach the source ({e}); watching the standby "
                      "recorded before", error=str(e)[:300])
            self.attach()
            return {"attached": True, "error": str(e)[:300]}

    def _find_source_host(self) -> TargetHost:
        from liferaft.engine.observe import dns_current, find_source_host

        t = self.opts.source_timeout
        current = bounded(lambda: dns_current(self.stack, self.state_dir), max(t, 10.0), provider="dns",
                          what="read the service's DNS records")
        host = find_source_host(self.stack, self.source, current, self.state_dir)
        self.emit("replicate.source", f"source host {host.name} ({host.address})", host=host.name)
        return host

    def _allocate_standby(self) -> TargetHost:
        from liferaft.configure import TargetHost
        from liferaft.engine.observe import open_provider
        from liferaft.providers.base import HostSpec

        name = standby_spec_name(self.stack, self.target)
        compute = open_provider(self.stack, self.stack.site(self.target).compute, self.state_dir).require("compute")
        host = compute.create_host(HostSpec(name=name, tags={"liferaft-stack": self.stack.model.name,
                                                             "liferaft-role": "standby"}))
        host = compute.wait_reachable(host, timeout=120.0)
        if host.ssh is None or host.address is None:
            raise UsageError(f"standby host {host.name} has no SSH access; liferaft cannot configure it")
        th = TargetHost.from_access(host.name, host.ssh)
        self.emit("replicate.host", f"standby host {name}: {host.id} at {th.address}", host=host.id)
        return th

    def _ensure_postgresql(self) -> None:
        from liferaft.configure import run_playbook
        from liferaft.steps.access import controller_address
        from liferaft.steps.hosts import database_vars

        assert self._standby_host is not None and self._source_host is not None
        host = self._standby_host
        port = next(iter(self.stack.model.data.databases.values())).port
        ok, _ = tcp_answers(host.address, port, 3.0)
        if ok and self.record.get("postgresql_deployed_on") == host.address:
            return
        keys = sorted(self.stack.model.data.databases)
        dbs, secret_vars = database_vars(self.ctx, keys, host.address)  # type: ignore[arg-type]
        nets = sorted({f"{controller_address(host.address)}/32", f"{self._source_host.address}/32"})
        self.emit("replicate.deploy", f"deploying PostgreSQL on the standby {host.name} (prepare.yml, "
                  "postgresql.yml)", host=host.name)
        res = run_playbook(["prepare.yml", "postgresql.yml"], [host], variables={
            "liferaft_listen_address": host.address, "liferaft_databases": dbs,
            "liferaft_allowed_networks": nets}, secret_variables=secret_vars,
            on_event=self._on_task, base_dir=self.stack.base_dir,
            timeout=self.opts.setup_timeout, state_dir=self.state_dir)
        self.record["postgresql_deployed_on"] = host.address
        self.emit("replicate.deployed", f"PostgreSQL on {host.name} in {res.duration_s:.1f}s",
                  seconds=round(res.duration_s, 2))

    def _on_task(self, ev: Any) -> None:
        if ev.kind in ("task.start", "task.failed", "unreachable"):
            self.emit(f"ansible.{ev.kind}", f"{ev.host}: {ev.task} {ev.message}".strip(), host=ev.host)

    def _ensure_migrators(self) -> None:
        from liferaft.steps.access import ensure_migrator

        db = next(iter(self.stack.model.data.databases.values()))
        for host in (self._source_host, self._standby_host):
            assert host is not None
            ensure_migrator(self.ctx, host, int(db.version), int(db.port))  # type: ignore[arg-type]

    def _subscribe(self, key: str) -> dict[str, Any]:
        from liferaft.movers import postgres as pg
        from liferaft.movers.pg_conn import give_to_owner

        src, tgt = self._conns(key)
        t0 = time.monotonic()
        def progress(event: str, details: dict[str, Any]) -> None:
            flat = {k: v for k, v in details.items() if isinstance(v, (int, float, str))}
            self.emit(event, " ".join(f"{k}={v}" for k, v in flat.items()), **flat)

        rep = pg.start(src, tgt, wait=True, timeout=self.opts.setup_timeout, progress=progress)
        owner = self.stack.model.data.databases[key].owner
        give_to_owner(tgt, owner)
        return {"subscription": rep.name, "subscribed_at": time.time(),
                "initial_sync_s": round(time.monotonic() - t0, 2)}

    def attach(self) -> None:
        """Use the hosts recorded by an earlier set-up (no source or DNS calls)."""
        from liferaft.configure import host_from_dict

        if self._source_host is None and self.record.get("source_host"):
            self._source_host = host_from_dict(self.record["source_host"])
        if self._standby_host is None and self.record.get("standby_host"):
            self._standby_host = host_from_dict(self.record["standby_host"])
        if self._source_host is None or self._standby_host is None:
            raise UsageError(f"no standby recorded for {self.target}", hint=f"run `liferaft replicate --to "
                             f"{self.target}` while the source answers")

    # ------------------------------------------------------------------------------------------------- stop
    def stop(self) -> dict[str, Any]:
        """Stop keeping this standby. Per logical database: the subscription at the standby is dropped (without
        asking the source to drop its slot, so a standby that is gone does not block this), then the slot and the
        publication at the source (a slot nobody reads keeps WAL at the primary forever). Then the record is
        forgotten. The standby's copies and its host are left as they are. The source must answer (that is where
        the slot is); a standby that does not answer is reported and the source is cleaned all the same."""
        from liferaft.engine.standby_state import forget_standby
        from liferaft.movers.pg_standby import detach_subscription, drop_source_side
        from liferaft.standby.ttl import restore_ttls

        if not self.record.get("standby_host"):
            raise UsageError(f"no standby recorded at {self.target!r}: nothing to stop")
        self.attach()
        out: dict[str, Any] = {}
        for key, entry in sorted(self.record["databases"].items()):
            if entry.get("method") != "logical":
                continue
            src, tgt = self._conns(key)
            name = str(entry.get("subscription") or _rep_name(src))
            done: dict[str, Any] = {"subscription": name, "subscription_dropped": False}
            try:
                done["subscription_dropped"] = detach_subscription(tgt, name)
            except Unreachable as e:
                done["standby_error"] = str(e)
                self.emit("replicate.standby_unreachable", f"database {key}: the standby does not answer ({e}); "
                          f"if it comes back, drop its subscription there: DROP SUBSCRIPTION {name};",
                          database=key)
            done["slot_dropped"] = drop_source_side(src, name)
            out[key] = done
            self.emit("replicate.db_stopped", f"database {key}: subscription {name} "
                      + ("dropped" if done["subscription_dropped"] else "not found at the standby")
                      + "; slot and publication at the source " + ("dropped" if done["slot_dropped"] else "gone"),
                      database=key, **{k: v for k, v in done.items() if k != "standby_error"})
        restored = restore_ttls(self.stack, self.state_dir, self.record.get("dns_ttls") or {})
        if restored:
            self.emit("replicate.ttl_restored", "DNS TTLs restored: " + ", ".join(
                f"{fqdn} {ttl} s" for fqdn, ttl in restored.items()), restored=restored)
        forget_standby(self.state_dir, self.stack.model.name, self.target)
        host = self.record.get("standby_host") or {}
        self.emit("replicate.stopped", f"the standby at {self.target} is no longer kept; its host "
                  f"{host.get('name')} ({host.get('address')}) and its copies are left as they are")
        return {"target": self.target, "stopped": True, "standby_host": host.get("name"), "databases": out}

    # ------------------------------------------------------------------------------------------------- rounds
    def round(self) -> dict[str, Any]:
        """One measurement/sync round: lag per database, dumps where due, bucket sync; state saved."""
        self.attach()
        t0 = time.time()
        errors: list[str] = []
        unreachable = False
        for key, db in sorted(self.stack.model.data.databases.items()):
            try:
                if db.migrate == "logical":
                    self._measure_logical(key)
                else:
                    self._dump_if_due(key)
            except Exception as e:  # noqa: BLE001 - recorded: a watch keeps the last copy and says it is stale
                unreachable = unreachable or isinstance(e, Unreachable)
                errors.append(f"database {key}: {_describe(e)}")
                self._mark_error("databases", key, e, t0)
        for key in sorted(self.stack.model.data.buckets):
            try:
                self._sync_bucket(key)
            except Exception as e:  # noqa: BLE001 - recorded, as above
                unreachable = unreachable or isinstance(e, Unreachable)
                errors.append(f"bucket {key}: {_describe(e)}")
                self._mark_error("buckets", key, e, t0)
        self.record["source_reachable"] = not unreachable
        self.record["source_error"] = errors[0] if errors else None
        self.record["last_round_at"] = t0
        path = self.save()
        summary = self.summary()
        self.emit("replicate.lag", _lag_line(summary), **summary, state_file=str(path))
        return summary

    def _mark_error(self, group: str, key: str, e: Exception, now: float) -> None:
        """A round that could not sync or measure: the lag grows from the last confirmed position -- lag_seconds
        is now minus the time up to which the standby was last confirmed to hold the source's writes
        (`caught_up_at`): the source may have taken writes since, and nobody can say it did not. The bytes stay the
        last measured (unknown since). `stale_since` says since when."""
        entry = self.record[group].setdefault(key, {})
        if entry.get("ok", True) or not entry.get("stale_since"):
            entry["stale_since"] = now
        entry.update(ok=False, error=_describe(e)[:300], error_at=now)
        confirmed = entry.get("caught_up_at")
        if confirmed is not None:
            entry.update(lag_seconds=round(max(0.0, now - float(confirmed)), 3), measured_at=now)

    def _measure_logical(self, key: str) -> None:
        from liferaft.movers import pg_standby as pgstandby

        src, tgt = self._conns(key)
        entry = self.record["databases"].setdefault(key, {})
        name = entry.get("subscription") or _rep_name(src)
        t = self.opts.source_timeout
        lag = bounded(lambda: pgstandby.source_lag(src, name, t), t, provider=self.source,
                      what=f"replication lag of {key}")
        now = time.time()
        status = pgstandby.standby_status(tgt, name)
        entry.update(ok=True, error=None, stale_since=None, lag_bytes=lag.bytes, lag_seconds=round(lag.seconds, 3),
                     measured_at=now, source_lsn=lag.source_lsn, confirmed_lsn=lag.confirmed_lsn,
                     last_received_at=status.get("last_received_at"), last_sync_at=now,
                     # the standby holds what the source committed up to `replay lag` ago
                     caught_up_at=round(now - lag.seconds, 3))
        push_history(entry, [now, lag.bytes, lag.seconds])

    def _dump_if_due(self, key: str) -> None:
        from liferaft.movers import pg_standby as pgstandby

        src, tgt = self._conns(key)
        entry = self.record["databases"].setdefault(key, {})
        t = self.opts.source_timeout
        last = float(entry.get("last_sync_started_at") or 0.0)
        now = time.time()
        if now - last >= self.opts.interval or not entry.get("ok"):
            lsn = bounded(lambda: pgstandby.source_lsn(src, t), t, provider=self.source, what=f"position of {key}")
            owner = self.stack.model.data.databases[key].owner
            res = pgstandby.dump_and_swap(src, tgt, owner)
            entry.update(ok=True, error=None, stale_since=None, last_sync_started_at=res["dump_started_at"], last_sync_at=time.time(),
                         dump_lsn=lsn, dump_seconds=res["seconds"], dump_bytes=res["dump_bytes"],
                         caught_up_at=res["dump_started_at"])
        since = float(entry["last_sync_started_at"])
        lag_bytes = bounded(lambda: pgstandby.wal_bytes_since(src, entry["dump_lsn"], t), t, provider=self.source,
                            what=f"WAL since the last dump of {key}")
        now = time.time()
        entry.update(lag_bytes=lag_bytes, lag_seconds=round(now - since, 3), measured_at=now)
        push_history(entry, [now, lag_bytes, now - since])

    def _sync_bucket(self, key: str) -> None:
        from liferaft.engine.journal import stack_dir
        from liferaft.movers.objects import SyncOptions, sync

        src, tgt = self._endpoints(key)
        entry = self.record["buckets"].setdefault(key, {})
        t = self.opts.source_timeout
        bounded(lambda: src.objects.bucket_exists(src.bucket), t, provider=src.provider,
                what=f"bucket {src.bucket} at the source")
        started = time.time()
        tgt.objects.create_bucket(tgt.bucket)
        res = sync(src, tgt, stack_dir(self.state_dir, self.stack.model.name), SyncOptions(progress_interval=1.0),
                   events=None)
        now = time.time()
        prev_started = entry.get("last_sync_started_at")
        entry.update(ok=True, error=None, stale_since=None, last_sync_started_at=started, last_sync_at=now, caught_up_at=started,
                     listed=res.listed, copied=res.copied, lag_bytes=res.bytes_total,
                     sync_seconds=round(res.seconds, 3),
                     # a write just after the previous listing waited until this listing: the exposure
                     lag_seconds=round(now - float(prev_started), 3) if prev_started else round(now - started, 3),
                     measured_at=now)
        push_history(entry, [now, res.bytes_total, entry["lag_seconds"]])

    def _endpoints(self, key: str) -> tuple[Any, Any]:
        from liferaft.engine.observe import open_provider
        from liferaft.movers.objects import Endpoint

        bucket = self.stack.model.data.buckets[key].name

        def side(provider: str) -> Endpoint:
            def make() -> Any:
                return open_provider(self.stack, provider, self.state_dir).require("objects")
            return Endpoint(provider, make(), bucket, factory=make)

        return side(self.stack.site(self.source).objects), side(self.stack.site(self.target).objects)

    def summary(self) -> dict[str, Any]:
        def pick(d: dict[str, Any]) -> dict[str, Any]:
            return {k: d.get(k) for k in ("method", "lag_bytes", "lag_seconds", "ok", "error", "last_sync_at")
                    if k in d}
        return {"target": self.target, "source": self.source,
                "standby_host": (self.record.get("standby_host") or {}).get("name"),
                "databases": {k: pick(v) for k, v in sorted(self.record["databases"].items())},
                "buckets": {k: pick(v) for k, v in sorted(self.record["buckets"].items())},
                "rpo_exposure_s": rpo_exposure(self.record),
                "source_reachable": self.record.get("source_reachable")}


def _describe(e: Exception) -> str:
    return str(e) if isinstance(e, LiferaftError) else f"{type(e).__name__}: {e}"


def _rep_name(src: PgConn) -> str:
    from liferaft.movers.pg_logical import Replication

    return Replication.for_databases(src, src).name


def _host_dict(h: TargetHost) -> dict[str, Any]:
    from liferaft.configure import host_to_dict

    return host_to_dict(h)


def _lag_line(s: dict[str, Any]) -> str:
    parts = [f"db {k}: {v.get('lag_bytes', '?')} B / {v.get('lag_seconds', '?')} s" + ("" if v.get("ok") else " (!)")
             for k, v in s["databases"].items()]
    parts += [f"bucket {k}: {v.get('lag_bytes', '?')} B / {v.get('lag_seconds', '?')} s"
              + ("" if v.get("ok") else " (!)") for k, v in s["buckets"].items()]
    return f"{s['target']}: " + "; ".join(parts) + f"; RPO exposure {s['rpo_exposure_s']} s"


@dataclass(frozen=True)
class Watched:
    """What a watch did: how many rounds, and the last round's summary (None when it ran none). Only the last is
    kept: a watch runs for days (the soak benchmark measured ~1.5 MiB per 1,000 rounds when every one was kept)."""

    rounds: int
    last: dict[str, Any] | None


def watch(rep: Replicator, *, interval: float, count: int | None, on_round: Any = None,
          stop: Any = None) -> Watched:
    """Rounds every `interval` seconds (`count` rounds, or until `stop` is set). A round that fails is recorded
    and the loop goes on: the standby must keep its last good copy and say how stale it grows."""
    summary: dict[str, Any] | None = None
    n = 0
    while count is None or n < count:
        if stop is not None and stop.is_set():  # asked to stop before this round (e.g. during the set-up)
            break
        t0 = time.monotonic()
        try:
            summary = rep.round()
        except Unreachable as e:
            summary = {"error": str(e)}
        if on_round is not None:
            on_round(summary)
        n += 1
        if count is not None and n >= count:
            break
        delay = max(0.0, interval - (time.monotonic() - t0))
        if stop is not None:
            if stop.wait(delay):
                break
        else:
            time.sleep(delay)
    return Watched(n, summary)
