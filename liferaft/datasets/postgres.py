"""The PostgreSQL database dataset kind (stack file: `data.databases.<key>`, engine postgresql).

Live move, verification and drills here; keeping a standby and promoting it in `postgres_standby`.

- plan: `pg_database_size` over a session read-only from its first statement; estimates from the lab's throughput
  (logical initial sync 34 s/GB, pg_dump -Fd | pg_restore 22 s/GB, tables hashed at 12.6 s/GB);
- plan checks (`pg_prereq`): tables without a primary key (unless `replica_identity: full`), wal_level, a free slot
  and WAL sender, the source's pg_hba rules, extensions the target lacks; a blocking one stops the plan;
- target: `postgresql.yml` (one cluster per version/port, the databases, who may connect);
- source access (`pg_prereq`, logical only): the target's address admitted in the source's pg_hba for the migration
  role, once the allocation gave it; the undo removes exactly that rule;
- prepare: liferaft's migration role at both ends (`pg_access`); the service can be deployed from here on;
- seed: logical -- the target database marked as liferaft's, the schema copied and given to the application's owner
  at once, the subscription made and its initial copy waited for; dump -- nothing until the freeze;
- freeze: logical -- the movers' cutover (source read-only, sessions ended, caught up, sequences set); dump -- source
  read-only, sessions ended, copied whole inside the freeze;
- verify: per table count + order-independent hash, sequences, schema; the write ledger;
- cut (drills): the source's WAL position at the cut confirmed by the target (bounded), sequences copied, the
  subscription dropped; the source never made read-only;
- teardown: the cluster liferaft created on the drill's target stopped and removed -- unless it holds databases
  that are not the stack's (the old primary's copies set aside by a failback's `replicate --to`): then only the
  stack's databases (and roles nothing else needs) are dropped and the cluster keeps running with the others.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import (
    HostedKind,
    allow_from,
    both_ends,
    data_path,
    progress,
    run_target_playbooks,
    source_address,
    source_host,
    target_host,
    target_hosts,
)
from liferaft.datasets.base import TEARDOWN_KEPT, Dataset, LedgerVerdict, Prerequisite, Size, Verdict, Where
from liferaft.datasets.pg_access import (
    MIGRATOR_ROLE,
    admin_conn,
    allowed_networks,
    database_vars,
    drop_migrator,
    ensure_migrator,
    owner_conn,
)
from liferaft.datasets.pg_prereq import close_source, open_source, prerequisites, replica_identity_full
from liferaft.datasets.postgres_standby import PostgresStandby
from liferaft.errors import LiferaftError, RunFailed

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn
    from liferaft.stack import Stack

PG_LOGICAL_S_PER_GB = 34.0
PG_DUMP_S_PER_GB = 22.0
PG_VERIFY_S_PER_GB = 12.6
CUT_CATCH_UP_TIMEOUT_S = 30.0


def _target_address(ctx: RunContext) -> str:
    return str(target_host(ctx).address)


def conns(ctx: RunContext, ds: Dataset) -> tuple[PgConn, PgConn]:
    """Migration-role connections to the dataset's database at the source and the target."""
    return admin_conn(ctx, source_host(ctx).address, ds.spec), admin_conn(ctx, _target_address(ctx), ds.spec)


def clusters(datasets: list[Dataset]) -> list[tuple[int, int]]:
    """The PostgreSQL servers (version, port) these databases live in, each once."""
    return sorted({(int(ds.spec.version), int(ds.spec.port)) for ds in datasets})


def end_sessions(conn: PgConn) -> int:
    """End every client session of `conn`'s database but our own (they reconnect with its current settings)."""
    from liferaft.movers.pg_conn import connect

    with connect(conn.with_db("postgres")) as c:
        return len(c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                             " AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                             (conn.dbname,)).fetchall())


def cluster_removal_lines(version: int) -> list[str]:
    """Shell lines that stop and remove the PostgreSQL cluster postgresql.yml made (drill teardown)."""
    v = int(version)
    data = f"/var/lib/postgresql/{v}/liferaft"
    return ["if $sd; then systemctl disable --now liferaft-postgresql.service 2>/dev/null || true; fi",
            (f"if [ -f {data}/postmaster.pid ]; then runuser -u postgres -- /usr/lib/postgresql/{v}/bin/pg_ctl "
             f"stop -D {data} -m fast -w -t 60 >/dev/null || true; fi"),
            f"rm -rf {data}", "rm -f /etc/systemd/system/liferaft-postgresql.service"]


SYSTEM_DATABASES = ("postgres", "template0", "template1")


def teardown_lines(datasets: list[Dataset]) -> list[str]:
    """Shell lines that remove what a drill made in each PostgreSQL cluster of `datasets`, decided on the host when
    they run: a cluster holding only the stack's databases (and postgres/template0/template1) is stopped and removed
    (`cluster_removal_lines`); one that holds any other database -- the old primary's copies set aside by
    `replicate --to` it (`<db>_before_<run>`, see `set_aside_lines`), or anything not the stack's -- keeps running
    with those: only the stack's databases are dropped (their subscriptions first, without reaching a publisher),
    and the stack's roles where nothing else depends on them. A cluster whose server does not answer is removed
    only when its data directory holds no database beyond the system ones; else it is left as it is, and said so.
    Each kept cluster prints a `liferaft-teardown: kept ...` line. Names are validated by the stack model."""
    lines: list[str] = []
    for version, port in clusters(datasets):
        mine = [ds for ds in datasets if (int(ds.spec.version), int(ds.spec.port)) == (version, port)]
        names = sorted({str(ds.spec.name) for ds in mine})
        roles = sorted({str(ds.spec.owner) for ds in mine} | {MIGRATOR_ROLE})
        listed = ", ".join(f"'{n}'" for n in (*SYSTEM_DATABASES, *names))
        data = f"/var/lib/postgresql/{version}/liferaft"
        psql = f"/usr/lib/postgresql/{version}/bin/psql -X -q -h /var/run/postgresql -p {port}"
        ask = (f"SELECT string_agg(datname, ' ' ORDER BY datname) FROM pg_database WHERE datname NOT IN ({listed})")
        drops: list[str] = []
        for name in names:
            subs = ("SELECT format('ALTER SUBSCRIPTION %I DISABLE', subname) FROM pg_subscription WHERE subdbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) \\gexec\n"
                    "SELECT format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', subname) FROM pg_subscription "
                    "WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \\gexec\n"
                    "SELECT format('DROP SUBSCRIPTION %I', subname) FROM pg_subscription WHERE subdbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()) \\gexec")
            drops.append(f"  su postgres -s /bin/sh -c '{psql} -d {name}' >/dev/null 2>&1 <<'LIFERAFT_SQL'\n"
                         f"{subs}\nLIFERAFT_SQL")
        drop_sql = "".join(
            f"SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots WHERE active AND database = "
            f"'{n}';\nDROP DATABASE IF EXISTS \"{n}\" WITH (FORCE);\n" for n in names)
        role_sql = "".join(f"DROP ROLE IF EXISTS \"{r}\";\n" for r in roles)
        lines += [
            (f"others=$(su postgres -s /bin/sh -c '{psql} -At -d postgres' 2>/dev/null <<'LIFERAFT_SQL'\n{ask};\n"
            "LIFERAFT_SQL\n) || others='?'"),
            (f"if [ \"$others\" = '?' ] && [ -d {data}/base ] && "
            f"[ \"$(ls -1 {data}/base | wc -l)\" -gt 3 ]; then"),
            (f"  echo '{TEARDOWN_KEPT}PostgreSQL {version} cluster on port {port} left as it is: its server does not "
            "answer and it holds databases (remove it by hand when none of them is to be kept)'"),
            "elif [ -n \"$others\" ] && [ \"$others\" != '?' ]; then",
            *drops,
            f"  su postgres -s /bin/sh -c '{psql} -d postgres' >/dev/null 2>&1 <<'LIFERAFT_SQL'\n{drop_sql}LIFERAFT_SQL",
            f"  su postgres -s /bin/sh -c '{psql} -d postgres' >/dev/null 2>&1 <<'LIFERAFT_SQL'\n{role_sql}LIFERAFT_SQL",
            (f"  echo \"{TEARDOWN_KEPT}PostgreSQL {version} cluster on port {port} (it holds $others); dropped the "
            f"stack's database(s) {' '.join(names)}\""),
            "else",
            *(f"  {line}" for line in cluster_removal_lines(version)),
            "fi"]
    return lines


def fence_lines(datasets: list[Dataset], *, undo: bool = False) -> list[str]:
    """Shell lines that make each database read-only for every new transaction (`undo`: writable again) and end its
    client sessions (they reconnect with the new setting), through the server's socket as the postgres user (no
    password, no migration role needed: a cold failover may have left none). Database names are validated by the
    stack model (no quotes)."""
    lines: list[str] = []
    for ds in datasets:
        v, port, name = int(ds.spec.version), int(ds.spec.port), str(ds.spec.name)
        psql = f"/usr/lib/postgresql/{v}/bin/psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p {port} -d postgres"
        setting = "RESET default_transaction_read_only" if undo else "SET default_transaction_read_only = on"
        sql = (f'ALTER DATABASE "{name}" {setting}; '
               f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' "
               "AND pid <> pg_backend_pid() AND backend_type = 'client backend';")
        lines.append(f"if su postgres -s /bin/sh -c '{psql}' >/dev/null 2>&1 <<'LIFERAFT_SQL'\n{sql}\nLIFERAFT_SQL\n"
                     f"then echo 'liferaft-fence: done: database {name} "
                     f"{'writable again' if undo else 'read-only'}, sessions ended'; "
                     f"else echo 'liferaft-fence: failed: database {name} (PostgreSQL {v} on port {port} did not "
                     "take it)'; fi")
    return lines


def set_aside_lines(datasets: list[Dataset], tag: str) -> list[str]:
    """Shell lines that keep each (fenced) database under another name, `<name>_<tag>`, still read-only, so that a
    standby of the active site can be made under the stack's name; and drop the replication slots a cold
    promotion abandoned in it (nobody will read them; they would keep WAL forever). Nothing is deleted."""
    import re

    lines: list[str] = []
    for ds in datasets:
        v, port, name = int(ds.spec.version), int(ds.spec.port), str(ds.spec.name)
        aside = re.sub(r"[^a-z0-9_]", "_", f"{name}_{tag}".lower())[:63]
        psql = f"/usr/lib/postgresql/{v}/bin/psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p {port} -d postgres"
        sql = (f"SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE database = '{name}' "
               "AND slot_name LIKE 'liferaft%' AND NOT active; "
               f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' "
               "AND pid <> pg_backend_pid(); "
               f'ALTER DATABASE "{name}" RENAME TO "{aside}";')
        lines.append(f"if su postgres -s /bin/sh -c '{psql}' >/dev/null 2>&1 <<'LIFERAFT_SQL'\n{sql}\nLIFERAFT_SQL\n"
                     f"then echo 'liferaft-fence: done: database {name} kept as {aside} (read-only)'; "
                     f"else echo 'liferaft-fence: failed: database {name} could not be set aside as {aside}'; fi")
    return lines


# --------------------------------------------------------------------------------------------- freeze and cut
def _frozen_now(ctx: RunContext) -> None:
    if "writes_frozen_at" not in ctx.memo:
        ctx.remember(writes_frozen_at=time.time())  # the first source to refuse writes starts the window


def host_of(where: Where) -> str:
    return f"{where.source_host.name} ({where.source_host.address})"


def reaches_source(stack: Stack, datasets: list[Dataset], target: str | None) -> list[Dataset]:
    """The databases whose target host connects to the source: logical ones (the subscription), and dumps made at
    the target's host (`data_path` not `controller`)."""
    at_host = target is not None and data_path(stack, target) != "controller"
    return [ds for ds in datasets if ds.spec.migrate == "logical" or at_host]


def dump(ctx: RunContext, ds_id: str | None, src: PgConn, tgt: PgConn) -> Any:
    """pg_dump | pg_restore: on the target's host when the plan let it reach the source (its `source-access` step
    covers the database), so the dump never passes through this controller; else here."""
    from liferaft.movers import postgres as pg

    opened = any(s.id == "source-access" and (ds_id is None or ds_id in json.dumps(s.params)) for s in ctx.plan.steps)
    stack = ctx.require_stack()
    if opened and data_path(stack, ctx.plan.target) != "controller":
        from liferaft.configure.remote import ssh_process
        from liferaft.movers.pg_dump import dump_restore_at

        host = target_host(ctx)
        return dump_restore_at(lambda command: ssh_process(host, command), f"{host.name} ({host.address})", src,
                               tgt, replace=True, progress=progress(ctx))
    return pg.dump_restore(src, tgt, replace=True, progress=progress(ctx))


def freeze_and_dump(ctx: RunContext, src: PgConn, tgt: PgConn, owner: str, on_frozen: Any = None) -> dict[str, Any]:
    """Dump mode: make the source read-only, end its sessions, then copy it whole (the freeze lasts the copy)."""
    from liferaft.movers.pg_conn import connect, give_to_owner, ident

    t0 = time.monotonic()
    with connect(src.with_db("postgres")) as c:
        _frozen_now(ctx)
        c.execute(f"ALTER DATABASE {ident(src.dbname)} SET default_transaction_read_only = on")
    end_sessions(src)
    if on_frozen is not None:
        on_frozen()
    res = dump(ctx, None, src, tgt)
    give_to_owner(tgt, owner)
    return {"method": "dump", "freeze_s": round(time.monotonic() - t0, 3), "dump_bytes": res.dump_bytes}


def cut_over_logical(ctx: RunContext, src: PgConn, tgt: PgConn, on_frozen: Any = None) -> dict[str, Any]:
    """Logical mode: the movers' cutover; after a crash inside it, tell 'already cut over' from 'broken'."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_logical import subscription_exists

    rep = pg.Replication.for_databases(src, tgt)
    if subscription_exists(tgt, rep.name):
        report = progress(ctx)

        def observe(event: str, details: dict[str, Any]) -> None:
            if event == "pg.cutover.frozen":
                _frozen_now(ctx)  # the source just became read-only
                if on_frozen is not None:
                    on_frozen()
            report(event, details)

        res = pg.cutover(rep, progress=observe)
        return {"method": "logical", "freeze_s": round(res.freeze_s, 3), "catch_up_s": round(res.catch_up_s, 3),
                "sequences": res.sequences_set, "sessions_ended": res.sessions_ended}
    if pg.is_read_only(src):
        if on_frozen is not None:
            on_frozen()
        return {"method": "logical", "note": "already cut over before an interruption"}
    raise RunFailed(f"the replication {rep.name} is gone and the source is still writable: nothing guarantees "
                    "the target is complete", hint="roll back and fail over again")


def cut_logical(src: PgConn, tgt: PgConn, timeout: float) -> dict[str, Any]:
    """Stop a logical replication at this instant without freezing the source. Idempotent after a crash."""
    from liferaft.movers import postgres as pg
    from liferaft.movers.pg_conn import connect, ident
    from liferaft.movers.pg_logical import subscription_exists

    rep = pg.Replication.for_databases(src, tgt)
    if not subscription_exists(tgt, rep.name):
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


def cut_dump(ctx: RunContext, src: PgConn, tgt: PgConn, owner: str) -> dict[str, Any]:
    """Dump mode: a consistent snapshot copied whole, while the source keeps taking writes."""
    from liferaft.movers.pg_conn import give_to_owner

    t0 = time.monotonic()
    res = dump(ctx, None, src, tgt)
    give_to_owner(tgt, owner)
    return {"method": "dump", "copy_s": round(time.monotonic() - t0, 3), "dump_bytes": res.dump_bytes,
            "caught_up": True}


# ------------------------------------------------------------------------------------------------------ kind
class Postgres(PostgresStandby, HostedKind):
    name: ClassVar[str] = "postgresql"
    noun: ClassVar[str] = "database"
    group: ClassVar[str] = "databases"
    seed_verb: ClassVar[str] = "migrate"
    release_id: ClassVar[str | None] = "db-release"
    ledger: ClassVar[bool] = True

    def entries(self, model: Any) -> dict[str, Any]:
        return {k: d for k, d in model.data.databases.items() if d.engine == "postgresql"}

    # ---- plan -----------------------------------------------------------------------------------------------
    def summary(self, ds: Dataset) -> Any:
        return str(ds.spec.migrate)

    def arrives_in_freeze(self, ds: Dataset) -> bool:
        return bool(ds.spec.migrate == "dump")

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        how = "logical replication" if ds.spec.migrate == "logical" else "dump/restore inside the freeze"
        return {"seed": f"migrate database {ds.spec.name} ({how})",
                "prepare": f"database {ds.spec.name}: liferaft's migration role at the source and the target"}

    def observe(self, where: Where, ds: Dataset) -> Size:
        """pg_database_size, over a session that is read-only from its first statement."""
        import psycopg

        db, host = ds.spec, where.source_host
        try:
            with psycopg.connect(host=host.address, port=db.port, dbname=db.name, user=db.owner,
                                 password=where.stack.secret(db.password), connect_timeout=10, autocommit=True,
                                 application_name="liferaft-plan",
                                 options="-c default_transaction_read_only=on") as c:
                row = c.execute("SELECT pg_database_size(current_database())").fetchone()
        except psycopg.Error as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LiferaftError(f"database {ds.key!r} at {host.address}:{db.port}: cannot measure its size: {msg}") \
                from None
        detail = ""
        if ds.spec.migrate == "dump":
            where_to = (f"host {where.target_host.name} ({where.target_host.address})"
                        if where.target_host is not None else "the target's first host")
            detail = ("pg_dump | pg_restore run here, through this controller (data_path: controller)"
                      if data_path(where.stack, where.target) == "controller" else
                      f"pg_dump -Fd | pg_restore run on {where_to} at site {where.target}: the dump flows {host_of(where)} "
                      f"-> that host, not through this controller")
        return Size(bytes=int(row[0]) if row else 0, detail=detail)

    def prerequisites(self, where: Where, ds: Dataset) -> list[Prerequisite]:
        """Primary keys, wal_level, a free slot and sender, the source's access rules, extensions (`pg_prereq`)."""
        return prerequisites(where, ds)

    def source_access_title(self, stack: Stack, datasets: list[Dataset], target: str | None = None) -> str | None:
        logical = reaches_source(stack, datasets, target)
        if not logical:
            return None  # a dump made by the controller (`data_path: controller`): the target never connects
        return (f"let the target reach the source's database(s) {', '.join(str(ds.spec.name) for ds in logical)} "
                f"(pg_hba rule for {MIGRATOR_ROLE} from the target's address, reload)")

    def open_source(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        logical = reaches_source(ctx.require_stack(), datasets, ctx.plan.target)
        return open_source(ctx, logical, source_host(ctx), _target_address(ctx))

    def close_source(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        close_source(ctx, source_host(ctx), datasets)

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        gb = size.bytes / 1e9
        return gb * (PG_LOGICAL_S_PER_GB if ds.spec.migrate == "logical" else PG_DUMP_S_PER_GB) \
            + gb * PG_VERIFY_S_PER_GB

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return ["postgresql.yml"] if datasets else []

    def playbook_vars(self, ctx: RunContext, datasets: list[Dataset], address: str
                      ) -> tuple[dict[str, Any], dict[str, Any]]:

        dbs, secret_vars = database_vars(ctx, [ds.key for ds in datasets], address)
        # the site's other hosts (`hosts: N`) run the service too and reach the databases here
        others = [f"{h.address}/32" for h in target_hosts(ctx) if h.address != address]
        # a first deployment names who else its databases admit: the hosts of the stack's other sites
        hosts = [h for h in target_hosts(ctx) if h.address == address]
        extra = allow_from(ctx, hosts[0]) if hosts else []
        return ({"liferaft_databases": dbs, "liferaft_allowed_networks": sorted(
            set(allowed_networks(address, source_address(ctx)) + others + extra))}, secret_vars)

    # ---- first deployment (`liferaft deploy`) ---------------------------------------------------------------
    def existing(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        """What is there before a deploy makes these databases (read-only): liferaft's clusters ("15:5432") and
        the databases they hold (`unknown` where a cluster is there but does not answer)."""
        from liferaft.configure.remote import ssh

        host = target_host(ctx)
        out: dict[str, Any] = {"clusters": [], "databases": [], "unknown": []}
        for version, port in clusters(datasets):
            psql = f"/usr/lib/postgresql/{version}/bin/psql -X -At -h /var/run/postgresql -p {port} -d postgres"
            text = ssh(host, "sh -s", stdin=(
                f"[ -f /var/lib/postgresql/{version}/liferaft/PG_VERSION ] || exit 0\necho cluster\n"
                f"su postgres -s /bin/sh -c '{psql} -c \"SELECT datname FROM pg_database\"' 2>/dev/null "
                "| sed 's/^/db /' || echo unknown\n"), what="look for liferaft's PostgreSQL cluster")
            lines = text.split("\n")
            if "cluster" in lines:
                out["clusters"].append(f"{version}:{port}")
                dbs = [line[3:] for line in lines if line.startswith("db ")]
                out["databases"] += [f"{version}:{port}:{d}" for d in dbs]
                if not dbs:
                    out["unknown"].append(f"{version}:{port}")
        return out

    def create(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> dict[str, Any]:
        """The PostgreSQL server and these (empty) databases at the run's host, through the kind's target
        playbook (postgresql.yml: the owner roles, who may connect); `created`: the databases that were not there
        before (`existing`)."""
        res = run_target_playbooks(ctx, self, datasets, target_host(ctx))
        have = set(existing.get("databases") or [])
        created = [ds.key for ds in datasets
                   if f"{ds.spec.version}:{ds.spec.port}:{ds.spec.name}" not in have]
        return {**res, "created": created, "databases": {ds.key: str(ds.spec.name) for ds in datasets}}

    def uncreate(self, ctx: RunContext, datasets: list[Dataset], existing: dict[str, Any]) -> None:
        """Undo `create`: a cluster it made is stopped and removed; in a cluster that was there, the databases it
        made are dropped. What was there before stays."""
        from liferaft.configure.remote import ssh
        from liferaft.errors import RunFailed

        try:
            host = target_host(ctx)
        except RunFailed:
            return
        had, known = set(existing.get("clusters") or []), set(existing.get("databases") or [])
        lines: list[str] = []
        for version, port in clusters(datasets):
            if f"{version}:{port}" not in had:
                lines += cluster_removal_lines(version)
                continue
            if f"{version}:{port}" in set(existing.get("unknown") or []):
                continue
            psql = f"/usr/lib/postgresql/{version}/bin/psql -X -q -h /var/run/postgresql -p {port} -d postgres"
            for ds in datasets:
                name = str(ds.spec.name)
                if (int(ds.spec.version), int(ds.spec.port)) == (version, port) and \
                        f"{version}:{port}:{name}" not in known:
                    lines.append(f"su postgres -s /bin/sh -c '{psql} -c \"DROP DATABASE IF EXISTS \\\"{name}\\\" "
                                 "WITH (FORCE)\"'")
        if lines:
            script = ["sd=false; if [ -d /run/systemd/system ]; then sd=true; fi", *lines]
            ssh(host, "sh -s", stdin="\n".join(script) + "\n", timeout=120.0, what="remove what the deploy created")

    # ---- live move ------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """liferaft's migration role at both ends. The target database itself is postgresql.yml's (empty, owned by
        the application's role); its schema comes first thing in `seed`, given to the owner at once, so a service
        deployed meanwhile finds its tables within a second or two of the seed's start (its health check waits)."""
        for host in (source_host(ctx), target_host(ctx)):
            ensure_migrator(ctx, host, int(ds.spec.version), int(ds.spec.port))
        return {"role": "liferaft_migrator"}

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None:
        for host in both_ends(ctx):
            drop_migrator(host, int(ds.spec.version), int(ds.spec.port))

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """Logical: the schema copied and given to the owner, the subscription made, then its initial copy waited
        for (tables owned by the application's role from the start: a service deployed beside this can use them)."""
        from liferaft.movers import postgres as pg
        from liferaft.movers.pg_conn import give_to_owner

        if ds.spec.migrate == "dump":
            return {"method": "dump", "note": "copied inside the write freeze"}
        src, tgt = conns(ctx, ds)
        t0 = time.monotonic()
        full = replica_identity_full(ctx, ds, src)
        rep = pg.start(src, tgt, wait=False, replica_identity_full=bool(full), progress=progress(ctx),
                       owner=ds.spec.owner)
        pg.wait_initial_sync(rep, progress=progress(ctx))
        moved = give_to_owner(tgt, ds.spec.owner)  # a safety net: start() gave the schema before the copy began
        return {"method": "logical", "replication": rep.name, "initial_sync_s": round(time.monotonic() - t0, 2),
                "owner_fixed": moved, **({"replica_identity_full": full} if full else {})}

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def unseed(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import postgres as pg

        if ds.spec.migrate == "logical":
            src, tgt = conns(ctx, ds)
            pg.stop(pg.Replication.for_databases(src, tgt))

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        src, tgt = conns(ctx, ds)
        if ds.spec.migrate == "logical":
            return cut_over_logical(ctx, src, tgt, on_frozen)
        return freeze_and_dump(ctx, src, tgt, ds.spec.owner, on_frozen)

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import postgres as pg

        src, _ = conns(ctx, ds)
        pg.undo_read_only(src)
        # Sessions opened during the freeze stay read-only: end them so clients reconnect writable.
        ended = end_sessions(src)
        ctx.emit("db.writable", f"{src.dbname} at the source accepts writes again ({ended} read-only "
                 "sessions ended)", database=ds.key)

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        from liferaft.movers.pg_verify import verify

        t0 = time.monotonic()
        src, tgt = conns(ctx, ds)
        rep = verify(src, tgt, raise_on_difference=False, progress=progress(ctx))
        label = f"database {ds.key}"
        if not as_of_cut:
            return Verdict(checked={label: len(rep.tables)},
                           problems=tuple(f"{label}: {p}" for p in rep.problems()),
                           seconds=round(time.monotonic() - t0, 3))
        problems = [f"{label}: {d}" for d in rep.schema_differences]
        notes = []
        for t in rep.tables:
            if t.target_count is None:
                problems.append(f"{label}: table {t.table} missing at the target")
            elif t.source_count is not None and t.source_count != t.target_count:
                notes.append(f"{label}: table {t.table} has {t.source_count} rows at the source and "
                             f"{t.target_count} at the target (the source kept taking writes after the cut)")
        cut = prior or {}
        figures = {"caught_up": cut.get("caught_up"), "lag_s_at_cut": cut.get("lag_s_at_cut"),
                   "lag_bytes_at_cut": cut.get("lag_bytes_at_cut"), "lag_s_left": cut.get("lag_s_left", 0.0)}
        return Verdict(checked={f"{label} tables": len(rep.tables)}, problems=tuple(problems), notes=tuple(notes),
                       seconds=round(time.monotonic() - t0, 3), figures=figures)

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        from liferaft.movers import ledger as led

        conn = owner_conn(ctx, _target_address(ctx), ds.spec)
        spec = led.spec_for(ds.spec, ds.key)
        if cut_at is None:
            res = led.check(ledger, conn, spec)
            problems = [f"ledger: acknowledged write (row {k}) missing at the target" for k in res.missing[:10]]
            problems += [f"ledger: row {k} differs at the target" for k in res.mismatched[:10]]
            return LedgerVerdict(res.acknowledged, tuple(problems), {"acknowledged": res.acknowledged})
        with tempfile.TemporaryDirectory(prefix="liferaft-drill-ledger-") as d:
            path, before, after, acked_at = led.copy_before(ledger, cut_at, d)
            res = led.check(path, conn, spec)
        first = min((acked_at[k] for k in res.missing if k in acked_at), default=None)
        return LedgerVerdict(before, tuple(f"ledger: row {k} differs at the target" for k in res.mismatched[:10]),
                             {"acknowledged_before_cut": before, "present": res.present, "missing": len(res.missing),
                              "mismatched": len(res.mismatched), "writes_after_cut": after,
                              "first_missing_at": first})

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        for version, port in clusters(datasets):
            for host in (source_host(ctx), target_host(ctx)):
                drop_migrator(host, version, port)
        return {"role": "liferaft_migrator", "login": False}

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        for version, port in clusters(datasets):
            for host in (source_host(ctx), target_host(ctx)):
                ensure_migrator(ctx, host, version, port)

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        src, tgt = conns(ctx, ds)
        out = (cut_logical(src, tgt, CUT_CATCH_UP_TIMEOUT_S) if ds.spec.migrate == "logical"
               else cut_dump(ctx, src, tgt, ds.spec.owner))
        ctx.emit("drill.cut", f"database {ds.key}: cut ({out.get('method')}), caught up: {out.get('caught_up')}",
                 database=ds.key, **{k: v for k, v in out.items() if k != "method"})
        return out

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return teardown_lines(datasets)

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets)

    def unfence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets, undo=True)

    def set_aside_lines(self, stack: Stack, datasets: list[Dataset], tag: str) -> list[str]:
        return set_aside_lines(datasets, tag)
