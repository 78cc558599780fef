"""The drill's step kinds, registered in the failover engine's step-kind registry (importing this module does it).

- `drill.teardown`: a guard placed right after the host allocation. Its apply records nothing but the target; its
  undo (run by the rollback just before the host is released) stops what the drill started on the target and removes
  it: the services (systemd unit or start-stop-daemon pidfile, as the shipped playbooks start them) and the
  PostgreSQL cluster liferaft created, then checks that the service no longer answers.
- `drill.cut`: replaces the write freeze. The source is never made read-only: the cut instant is recorded, the
  source's WAL position read, the target allowed to confirm it (bounded), sequences copied, the subscription dropped.
- `drill.verify_data`: the gate, as of the cut: schema equal, no table missing, objects by sha256, and every write of
  the ledger acknowledged before the cut present (missing ones are the measured RPO, differing ones a failure).
- `drill.verify_service` (in `liferaft.steps.verify`, one implementation with `verify.service`): resolves the drill
  record until it names the target and GETs the health path there; the first healthy answer ends the RTO.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, RunFailed

CUT_CATCH_UP_TIMEOUT_S = 30.0


def _target(ctx: RunContext) -> Any:
    from liferaft.steps.hosts import target_host

    return target_host(ctx)


def is_drill(steps: Iterable[Any]) -> bool:
    """A drill's run (its plan's steps, or the journal's step records): it carries the drill's teardown guard."""
    return any(s.kind == "drill.teardown" for s in steps)


# ------------------------------------------------------------------------------------------------------ teardown
def teardown_script(services: list[str], pg_version: int | None) -> str:
    """The shell run on the target to remove what a drill started there. Names are validated by the stack model."""
    from liferaft.workloads.playbook import remove_lines, stop_lines

    lines = stop_lines(services) + remove_lines(services)  # the playbook kind's teardown (config files included)
    if pg_version is not None:
        v = int(pg_version)
        data = f"/var/lib/postgresql/{v}/liferaft"
        lines += ["if $sd; then systemctl disable --now liferaft-postgresql.service 2>/dev/null || true; fi",
                  (f"if [ -f {data}/postmaster.pid ]; then runuser -u postgres -- /usr/lib/postgresql/{v}/bin/pg_ctl "
                  f"stop -D {data} -m fast -w -t 60 >/dev/null || true; fi"),
                  f"rm -rf {data}"]
    lines.append("echo torn-down")
    return "\n".join(lines) + "\n"


@register
class DrillTeardown(StepKind):
    name = "drill.teardown"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        host = _target(ctx)
        return {"host": host.name, "address": host.address}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.steps.access import ssh
        from liferaft.steps.hosts import refuse_source_host, service_health_url, wait_silent

        try:
            host = _target(ctx)
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing to tear down
        stack = ctx.require_stack()
        refuse_source_host(ctx, host.address)
        dbs = [stack.model.data.databases[k] for k in step.params.get("databases", [])]
        services = [s for s in step.params.get("services", []) if s in stack.model.services]
        ssh(host, "sh -s", stdin=teardown_script(services, dbs[0].version if dbs else None), timeout=120.0,
            what="tear the drill target down")
        for svc in services:
            url = service_health_url(ctx, svc, host.address)
            if url is not None:
                wait_silent(url, timeout=15.0)
        ctx.emit("drill.torn_down", f"{host.name} ({host.address}): services {', '.join(services) or '-'} and "
                 f"{'PostgreSQL' if dbs else 'nothing else'} stopped and removed", address=host.address)


# ----------------------------------------------------------------------------------------------------------- cut
def cut_logical(src: Any, tgt: Any, timeout: float) -> dict[str, Any]:
    """Stop a logical replication at this instant without freezing the source. Idempotent after a crash."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import connect, ident

    rep = pg.Replication.for_databases(src, tgt)
    with connect(tgt) as t:
        active = t.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (rep.name,)).fetchone()
    if not active:
        return {"method": "logical", "note": "replication already stopped (the cut was interrupted and resumed)",
                "caught_up": None}
    lag = pg.lag(rep)
    t0 = time.monotonic()
    with connect(src) as s:
        row = s.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        cut_lsn = str(row[0]) if row else "0/0"
        caught_up = False
        while time.monotonic() - t0 < timeout:
            r = s.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                          (cut_lsn, rep.name)).fetchone()
            if r is None:
                raise RunFailed(f"replication slot {rep.name} vanished at the cut")
            if r[0]:
                caught_up = True
                break
            time.sleep(0.01)
        catch_up = time.monotonic() - t0
        missed = pg.lag(rep) if not caught_up else None
        seqs = s.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences"
                         " WHERE last_value IS NOT NULL").fetchall()
    with connect(tgt) as t:
        with t.transaction():
            for schema, name, value in seqs:
                t.execute("SELECT setval(%s::regclass, %s, true)", (ident(schema, name), value))
        t.execute(f"DROP SUBSCRIPTION {ident(rep.name)}")  # drops the slot at the source too
    with connect(src) as s:
        s.execute(f"DROP PUBLICATION IF EXISTS {ident(rep.name)}")
    return {"method": "logical", "cut_lsn": cut_lsn, "caught_up": caught_up, "catch_up_s": round(catch_up, 3),
            "lag_bytes_at_cut": lag.bytes, "lag_s_at_cut": round(lag.seconds, 3),
            "lag_s_left": round(missed.seconds, 3) if missed else 0.0, "sequences": len(seqs)}


def cut_dump(ctx: RunContext, src: Any, tgt: Any, owner: str) -> dict[str, Any]:
    """Dump mode: a consistent snapshot copied whole, while the source keeps taking writes."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import give_to_owner
    from liferaft.steps.data import progress

    t0 = time.monotonic()
    res = pg.dump_restore(src, tgt, replace=True, progress=progress(ctx))
    give_to_owner(tgt, owner)
    return {"method": "dump", "copy_s": round(time.monotonic() - t0, 3), "dump_bytes": res.dump_bytes,
            "caught_up": True}


@register
class DrillCut(StepKind):
    name = "drill.cut"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.steps.data import conns, sync_bucket

        if "cut_at" not in ctx.memo:
            ctx.remember(cut_at=time.time())
        cut_at = float(ctx.memo["cut_at"])
        stack = ctx.require_stack()
        dbs: dict[str, Any] = {}
        for key, method in step.params["databases"].items():
            src, tgt = conns(ctx, step, key)
            dbs[key] = (cut_logical(src, tgt, CUT_CATCH_UP_TIMEOUT_S) if method == "logical"
                        else cut_dump(ctx, src, tgt, stack.model.data.databases[key].owner))
            ctx.emit("drill.cut", f"database {key}: cut ({dbs[key].get('method')}), caught up: "
                     f"{dbs[key].get('caught_up')}", database=key, **{k: v for k, v in dbs[key].items()
                                                                       if k != "method"})
        objects = {key: sync_bucket(ctx, step, key) for key in step.params["buckets"]}
        return {"cut_at": cut_at, "databases": dbs, "objects": objects}


# -------------------------------------------------------------------------------------------------- verify data
@register
class DrillVerifyData(StepKind):
    """The gate, as of the cut. Its findings are remembered in the journal before it passes or fails."""

    name = "drill.verify_data"
    gate = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.movers.objects import verify_sync
        from liferaft.movers.pg_verify import verify
        from liferaft.steps.data import conns, endpoints, progress

        cut = ctx.output("drill-cut")
        problems: list[str] = []
        notes: list[str] = []
        checked: dict[str, int] = {}

        # Connections and endpoints are resolved here, in the runner's thread: they read the journal.
        db_conns = {key: conns(ctx, step, key) for key in step.params["databases"]}
        bucket_eps = {key: endpoints(ctx, step, key) for key in step.params["buckets"]}
        report = progress(ctx)

        def database(key: str) -> None:
            src, tgt = db_conns[key]
            rep = verify(src, tgt, raise_on_difference=False, progress=report)
            checked[f"database {key} tables"] = len(rep.tables)
            problems.extend(f"database {key}: {d}" for d in rep.schema_differences)
            for t in rep.tables:
                if t.target_count is None:
                    problems.append(f"database {key}: table {t.table} missing at the target")
                elif t.source_count is not None and t.source_count != t.target_count:
                    notes.append(f"database {key}: table {t.table} has {t.source_count} rows at the source and "
                                 f"{t.target_count} at the target (the source kept taking writes after the cut)")

        def bucket(key: str) -> None:
            src_ep, tgt_ep = bucket_eps[key]
            orep = verify_sync(src_ep, tgt_ep, raise_on_difference=False, events=ctx.events)
            checked[f"bucket {key} objects"] = orep.checked
            problems.extend(f"bucket {key}: differs (sha256): {k}" for k in orep.differing[:20])
            if orep.missing:
                notes.append(f"bucket {key}: {len(orep.missing)} object(s) at the source are not at the target "
                             "(written after the cut?)")

        jobs = [(database, k) for k in step.params["databases"]] + [(bucket, k) for k in step.params["buckets"]]
        with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="liferaft-drill-verify") as pool:
            for f in [pool.submit(fn, k) for fn, k in jobs]:
                f.result()  # a liferaft error here (a server gone) fails the step as it is
        ledger_summary = None
        if step.params.get("ledger"):
            ledger_summary = self._ledger(ctx, step, float(cut["cut_at"]), problems)
            checked["ledger writes before the cut"] = ledger_summary["acknowledged_before_cut"]
        lags = [d for d in cut["databases"].values() if "lag_s_at_cut" in d]
        summary = {"ok": not problems, "checked": checked, "problems": problems, "notes": notes,
                   "ledger": ledger_summary, "cut_at": cut["cut_at"],
                   "caught_up": all(d.get("caught_up") is not False for d in cut["databases"].values()),
                   "replication_lag_s": max((d["lag_s_at_cut"] for d in lags), default=None),
                   "replication_lag_bytes": max((d["lag_bytes_at_cut"] for d in lags), default=None),
                   "lag_s_left": max((d.get("lag_s_left", 0.0) for d in lags), default=0.0)}
        ctx.remember(summary=summary)
        if problems:
            raise CheckFailed("the target's data differs from the source as of the cut:\n  "
                              + "\n  ".join(problems[:15]))
        ctx.emit("drill.data", "data verified as of the cut: " + ", ".join(f"{k} ({v})" for k, v in
                                                                            sorted(checked.items())), **summary)
        return summary

    def _ledger(self, ctx: RunContext, step: Step, cut_at: float, problems: list[str]) -> dict[str, Any]:
        from liferaft.movers import ledger
        from liferaft.steps.access import owner_conn

        stack = ctx.require_stack()
        key = next(iter(step.params["databases"]), None)
        if key is None:
            problems.append("a write ledger was given but the stack has no database")
            return {"acknowledged_before_cut": 0, "present": 0, "missing": 0, "mismatched": 0,
                    "writes_after_cut": 0, "first_missing_at": None}
        db = stack.model.data.databases[key]
        conn = owner_conn(ctx, _target(ctx).address, db)
        with tempfile.TemporaryDirectory(prefix="liferaft-drill-ledger-") as d:
            path, before, after, acked_at = ledger.copy_before(step.params["ledger"], cut_at, d)
            res = ledger.check(path, conn, ledger.spec_for(db, key))
        problems += [f"ledger: row {k} differs at the target" for k in res.mismatched[:10]]
        first = min((acked_at[k] for k in res.missing if k in acked_at), default=None)
        return {"acknowledged_before_cut": before, "present": res.present, "missing": len(res.missing),
                "mismatched": len(res.mismatched), "writes_after_cut": after, "first_missing_at": first}


__all__ = ["CUT_CATCH_UP_TIMEOUT_S", "cut_logical", "teardown_script"]
