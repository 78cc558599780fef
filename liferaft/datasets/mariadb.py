"""The MySQL/MariaDB dataset kind (stack file: `data.mysql.<key>`): MariaDB 10.5 and later.

Live move, verification and drills here; keeping a standby and promoting it in `mariadb_standby`; the server talk in
`liferaft.movers.mysql`; liferaft's account in `mariadb_access`.

- plan: the database's size from information_schema over a read-only session (read-only from its first
  statement), with warnings for tables without a primary key, non-transactional (MyISAM) tables and an application
  account that writes through read_only (READ ONLY ADMIN, also in ALL PRIVILEGES ON *.*: MariaDB has no
  super_read_only); refuses MySQL and a source without a binary log before anything runs (replication needs it);
- target: `mariadb.yml` (liferaft's MariaDB instance, binary log on, the databases and application accounts);
- prepare: liferaft's migration account at both ends;
- seed: `mysqldump --single-transaction --master-data --gtid | mariadb` into the target, then GTID replication from
  the source (the target catches up while the source keeps taking writes);
- freeze: first a catch-up while the source still takes writes (the source's GTID position waited for at the
  target, in rounds, until a round takes under CATCH_UP_CLOSE_S, at most PRE_CATCH_UP_TIMEOUT_S), then
  `read_only=1` at the source, `MASTER_GTID_WAIT` at the target for the source's last GTID (now a short wait), the
  replica stopped and reset (the target is a primary of its own);
- verify: per table count + order-independent content hash, and the schema;
- cut (drills): the source's GTID position at the cut waited for (bounded), then the replica stopped; the source is
  never made read-only;
- teardown: liferaft's MariaDB instance on the drill's target stopped and removed;
- set aside (a failback's `replicate --to` the old primary, before the standby's seed drops the database there):
  each database dumped to `/var/lib/liferaft/set_aside/<stack>/before_<run>/mysql-<key>.sql` (0400), outside the
  server's data dir, so no teardown removes it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from liferaft.datasets._util import HostedKind, both_ends, progress, source_host, target_host
from liferaft.datasets.base import Dataset, LedgerVerdict, Size, Verdict, Where
from liferaft.datasets.mariadb_access import admin_conn, ensure_migrator, lock_migrator, mysql_vars
from liferaft.datasets.mariadb_standby import MariadbStandby
from liferaft.errors import LiferaftError, ProviderError, RunFailed

if TYPE_CHECKING:
    from liferaft.engine.runner import RunContext
    from liferaft.movers.mysql import MyConn
    from liferaft.stack import Stack

DUMP_S_PER_GB = 60.0  # mysqldump | mariadb on the lab's 2 cores (bench/bench_mariadb.py)
VERIFY_S_PER_GB = 15.0
CATCH_UP_TIMEOUT_S = 60.0  # the final wait, the source read-only
PRE_CATCH_UP_TIMEOUT_S = 30.0  # the catch-up before the freeze, the source still writable
CATCH_UP_CLOSE_S = 0.25  # a catch-up round this short: the replica is close enough to freeze
CUT_CATCH_UP_TIMEOUT_S = 30.0
DATA_DIR = "/var/lib/liferaft-mariadb"


def _frozen_now(ctx: RunContext) -> None:
    if "writes_frozen_at" not in ctx.memo:
        ctx.remember(writes_frozen_at=time.time())  # the first source to refuse writes starts the window


def seed_replica(src: MyConn, tgt: MyConn, report: Any = None) -> dict[str, Any]:
    """The target's database replaced by a consistent dump of the source's, then replicating from it by GTID."""
    from liferaft.movers import mysql as my

    with my.connect(tgt, database=False) as t:
        my.reset_replica(t)
        my.query(t, "SET sql_log_bin = 0")
        my.query(t, f"DROP DATABASE IF EXISTS {my.ident(tgt.database)}")
        my.query(t, f"CREATE DATABASE {my.ident(tgt.database)} CHARACTER SET utf8mb4")
    res = my.dump_into(src, tgt, master_data=True, progress=report)
    with my.connect(tgt, database=False) as t:
        gtid = str(my.query(t, "SELECT @@gtid_slave_pos")[0][0] or "")
        my.start_replica(t, src)
        my.wait_running(t)
    return {"method": "replication", "dump_s": res.seconds, "dump_bytes": res.dump_bytes, "gtid_at_dump": gtid}


def replicating_from(t: Any, src: MyConn) -> bool:
    from liferaft.movers import mysql as my

    st = my.replica_status(t)
    return bool(st and st.get("Master_Host") == src.host and int(st.get("Master_Port") or 0) == int(src.port)
                and st.get("Slave_SQL_Running") == "Yes")


def server_lines(port: int) -> list[str]:
    """Shell lines that stop and remove liferaft's MariaDB instance (mariadb.yml's), for a drill's teardown."""
    p = int(port)
    pid, sock = f"/run/mysqld/liferaft-{p}.pid", f"/run/mysqld/liferaft-{p}.sock"
    return [("if $sd; then systemctl disable --now liferaft-mariadb.service 2>/dev/null || true; "
            "rm -f /etc/systemd/system/liferaft-mariadb.service; fi"),
            (f"if [ -f {pid} ]; then mariadb-admin --socket={sock} -u root shutdown 2>/dev/null || "
            f"kill $(cat {pid}) 2>/dev/null || true; for i in $(seq 1 300); do [ -f {pid} ] || break; sleep 0.1; done; "
            "fi"),
            f"rm -rf {DATA_DIR} /etc/mysql/liferaft-mariadb.cnf {sock} {pid}"]


FENCE_MARK = "# liferaft-fence"
CONF = "/etc/mysql/liferaft-mariadb.cnf"


def fence_lines(datasets: list[Dataset], *, undo: bool = False) -> list[str]:
    """Shell lines that make each server of the datasets refuse writes (`undo`: accept them again), through its
    socket as root (no password: a cold failover may have left none).

    MariaDB has no `super_read_only` (MySQL's); `read_only = 1` refuses every write of an account without the
    READ_ONLY ADMIN privilege (MariaDB 10.11; SUPER before it): the application's accounts have neither (every
    privilege on their database only). liferaft's own account has them, so it is locked too (a later set-up
    unlocks it). The setting is also written into liferaft's server configuration, so a server that was down,
    or restarts, comes up read-only; the undo removes it (the account stays locked: a move unlocks it when it
    needs it). A server that is not running counts as fenced once its configuration says read-only."""
    from liferaft.datasets.mariadb_access import MIGRATOR, ROOT_CLIENT, find_socket

    lines: list[str] = []
    for port in sorted({int(ds.spec.port) for ds in datasets}):
        names = ", ".join(str(ds.spec.name) for ds in datasets if int(ds.spec.port) == port)
        what = f"MySQL server on port {port} (databases {names})"
        if undo:
            sql = "SET GLOBAL read_only = 0;"
            conf = f"if [ -f {CONF} ]; then sed -i '/^{FENCE_MARK}/,+2d' {CONF}; fi"
            done = "writable again"
        else:
            sql = (f"SET SESSION lock_wait_timeout = 20; SET GLOBAL read_only = 1; "
                   f"ALTER USER IF EXISTS '{MIGRATOR}'@'%' ACCOUNT LOCK;")
            conf = (f"if [ -f {CONF} ] && ! grep -q '^{FENCE_MARK}' {CONF}; then printf '%s\\n' "
                    f"'{FENCE_MARK}: the stack moved away; removed when liferaft makes this site active again' "
                    f"'[mariadbd]' 'read_only = 1' >> {CONF}; fi")
            done = "read-only, the migration account locked"
        lines += [conf, f"{find_socket(port)}",
                  (f"if [ -z \"$s\" ]; then if [ -f {CONF} ]; then echo 'liferaft-fence: done: {what} not running; "
                   f"{'writable' if undo else 'read-only'} when it starts'; else echo 'liferaft-fence: failed: {what}:"
                   f" no server socket and no liferaft configuration on this host'; fi; "
                   f"elif echo \"SET sql_log_bin = 0; {sql}\" | {ROOT_CLIENT} >/dev/null 2>&1; "
                   f"then echo 'liferaft-fence: done: {what} {done}'; "
                   f"else echo 'liferaft-fence: failed: {what} did not take {'read_only = 0' if undo else 'read_only'}';"
                   " fi")]
    return lines


def set_aside_lines(stack: str, datasets: list[Dataset], tag: str) -> list[str]:
    """Shell lines that keep each (fenced) database of the old primary as a dump file before a failback's standby
    seed drops it: `mariadb-dump --single-transaction` (routines, triggers, events, binary as hex) through the
    server's socket as root into `<set_aside_dir>/mysql-<key>.sql`, 0400, written under a temporary name and renamed
    when complete. No USE statement in it: `mariadb <any database> < file` loads it. Idempotent (a file already
    there is kept as it is). The dump lives outside the server's data dir, so a drill's teardown, which removes
    liferaft's MariaDB instance, leaves it. Nothing is deleted."""
    import shlex

    from liferaft.datasets._util import set_aside_dir
    from liferaft.datasets.mariadb_access import ROOT_CLIENT, find_socket

    d = set_aside_dir(stack, tag)
    lines: list[str] = []
    for ds in datasets:
        port, db = int(ds.spec.port), str(ds.spec.name)
        f = f"{d}/mysql-{ds.key}.sql"
        what = f"mysql database {db} ({ds.key})"
        dump = ("$(command -v mariadb-dump || command -v mysqldump) --protocol=socket --socket=$s -u root "
                "--single-transaction --routines --triggers --events --hex-blob --skip-dump-date")
        lines += [find_socket(port), (
            f"if [ -s {f} ]; then echo 'liferaft-fence: done: {what} kept as {f} (a dump, read-only)'; "
            f"elif [ -z \"$s\" ]; then echo 'liferaft-fence: failed: {what}: no server socket on port {port} (start "
            "the server, then run replicate again)'; "
            f"elif [ -z \"$(echo \"SELECT 1 FROM information_schema.schemata WHERE schema_name = '{db}'\" | "
            f"{ROOT_CLIENT} 2>/dev/null)\" ]; then echo 'liferaft-fence: done: {what} not on this server: nothing to "
            "keep'; "
            f"elif (umask 077 && mkdir -p {d} && {dump} {shlex.quote(db)} > {f}.partial 2>{f}.err) && chmod 0400 "
            f"{f}.partial && mv -f {f}.partial {f} && rm -f {f}.err; then "
            f"echo \"liferaft-fence: done: {what} kept as {f} (a dump, read-only, $(wc -c < {f}) bytes)\"; "
            f"else echo \"liferaft-fence: failed: {what} could not be dumped to {f}: $(head -c 200 {f}.err "
            f"2>/dev/null)\"; rm -f {f}.partial {f}.err; fi")]
    return lines


class Mariadb(MariadbStandby, HostedKind):
    name: ClassVar[str] = "mysql"
    noun: ClassVar[str] = "mysql"
    group: ClassVar[str] = "mysql"
    seed_verb: ClassVar[str] = "mysql"
    release_id: ClassVar[str | None] = "mysql-release"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.data.mysql)

    def conns(self, ctx: RunContext, ds: Dataset) -> tuple[MyConn, MyConn]:
        return (admin_conn(ctx, source_host(ctx).address, ds.spec),
                admin_conn(ctx, target_host(ctx).address, ds.spec))

    # ---- plan -----------------------------------------------------------------------------------------------
    def summary(self, ds: Dataset) -> Any:
        return "replication"

    def titles(self, ds: Dataset, where: tuple[str, str]) -> dict[str, str]:
        return {"seed": f"copy MySQL database {ds.spec.name} (consistent dump, then GTID replication)",
                "prepare": f"MySQL database {ds.spec.name}: liferaft's migration account at the source and the target"}

    def observe(self, where: Where, ds: Dataset) -> Size:
        """information_schema sizes over a read-only session as the application's account; a MySQL server, a
        source without a binary log or a refused login stop the plan naming the dataset."""
        from liferaft.movers import mysql as my

        spec, host = ds.spec, where.source_host
        conn = my.MyConn(str(host.address), int(spec.port), spec.user, where.stack.secret(spec.password), spec.name)
        label = f"MySQL dataset {ds.key!r} (data.mysql.{ds.key}) at {conn.where()}"
        try:
            with my.connect(conn) as c:
                my.query(c, "SET SESSION TRANSACTION READ ONLY")
                info = my.server_info(c)
                found = my.tables(c, spec.name)
                grants = [str(r[0]) for r in my.query(c, "SHOW GRANTS")]
        except ProviderError as e:
            raise LiferaftError(f"{label}: cannot measure it: {e.operation} failed: {e.detail}",
                                hint=e.hint) from None
        except RunFailed as e:
            raise LiferaftError(f"{label}: {e.message}", hint=e.hint) from None
        try:
            my.check_supported(info, conn.where())
        except RunFailed as e:
            raise LiferaftError(f"{label}: {e.message}", hint=e.hint) from None
        if not info.log_bin:
            raise LiferaftError(f"{label}: the server has no binary log, so it cannot be replicated",
                                hint="set log_bin, a server_id and binlog_format=ROW in its configuration and "
                                     "restart it")
        warnings = my.warnings_for(found)
        privileged = my.writes_through_read_only(grants, info)
        if privileged:
            warnings.append(privileged)
        detail = f"MariaDB {info.version}, {len(found)} tables"
        if warnings:
            detail += "; WARNING: " + "; ".join(warnings)
        return Size(bytes=sum(t.bytes for t in found), items=sum(t.rows for t in found), detail=detail)

    def estimate_s(self, ds: Dataset, size: Size) -> float:
        gb = size.bytes / 1e9
        return gb * (DUMP_S_PER_GB + VERIFY_S_PER_GB)

    def target_playbooks(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return ["mariadb.yml"] if datasets else []

    def playbook_vars(self, ctx: RunContext, datasets: list[Dataset], address: str
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
        return mysql_vars(ctx, [ds.key for ds in datasets], address)

    # ---- live move ------------------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        for host in (source_host(ctx), target_host(ctx)):
            ensure_migrator(ctx, host, int(ds.spec.port))
        return {"account": "liferaft_migrator"}

    def unprepare(self, ctx: RunContext, ds: Dataset) -> None:
        for host in both_ends(ctx):
            lock_migrator(host, int(ds.spec.port))

    def seed(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        from liferaft.movers import mysql as my

        src, tgt = self.conns(ctx, ds)
        with my.connect(tgt, database=False) as t:
            if replicating_from(t, src):
                return {"method": "replication", "note": "already replicating (a resumed seed)"}
        t0 = time.monotonic()
        out = seed_replica(src, tgt, progress(ctx))
        return {**out, "seed_s": round(time.monotonic() - t0, 3)}

    def check_seed(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def unseed(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import mysql as my

        _, tgt = self.conns(ctx, ds)
        with my.connect(tgt, database=False) as t:
            my.reset_replica(t)

    def warm(self, ctx: RunContext, ds: Dataset) -> None:
        return None

    def freeze(self, ctx: RunContext, ds: Dataset, on_frozen: Any) -> dict[str, Any]:
        """A catch-up while the source still takes writes (bounded; froze anyway if the replica never gets close),
        then the source read-only, the target waits for the source's last GTID, the replica stopped and reset (the
        movers' `freeze`). After a crash inside it: a target no longer replicating with a read-only source is a
        completed cutover."""
        from liferaft.movers import mysql as my

        src, tgt = self.conns(ctx, ds)
        with my.connect(src, database=False) as s, my.connect(tgt, database=False) as t:
            if my.replica_status(t) is None:
                if my.is_read_only(s):
                    if on_frozen is not None:
                        on_frozen()
                    return {"method": "replication", "note": "already cut over before an interruption"}
                raise RunFailed(f"MySQL {ds.key}: the target no longer replicates and the source is still "
                                "writable: nothing guarantees the target is complete",
                                hint="roll back and fail over again")

            def frozen() -> None:
                _frozen_now(ctx)
                if on_frozen is not None:
                    on_frozen()

            try:
                res = my.freeze(s, t, close_s=CATCH_UP_CLOSE_S, pre_timeout=PRE_CATCH_UP_TIMEOUT_S,
                                timeout=CATCH_UP_TIMEOUT_S, on_frozen=frozen, progress=progress(ctx))
            except RunFailed as e:
                raise RunFailed(f"MySQL {ds.key}: {e.message}", hint=e.hint) from None
        pre = res.pre
        ctx.emit("mysql.frozen", f"mysql {ds.key}: write freeze {res.freeze_s:.3f} s, after a catch-up of "
                 f"{pre.seconds:.2f} s in {pre.rounds} round(s) "
                 + ("(the replica was close)" if pre.close else "(the replica never got close: froze anyway, "
                    "the final wait keeps RPO 0)"), database=ds.key, freeze_s=round(res.freeze_s, 3),
                 pre_catch_up_s=round(pre.seconds, 3), pre_catch_up_rounds=pre.rounds, pre_caught_up=pre.close)
        return {"method": "replication", "gtid": res.gtid, "freeze_s": round(res.freeze_s, 3),
                "catch_up_s": round(res.catch_up_s, 3), "pre_catch_up_s": round(pre.seconds, 3),
                "pre_catch_up_rounds": pre.rounds, "pre_caught_up": pre.close,
                "pre_last_round_s": round(pre.last_round_s, 3)}

    def unfreeze(self, ctx: RunContext, ds: Dataset) -> None:
        from liferaft.movers import mysql as my

        src, _ = self.conns(ctx, ds)
        with my.connect(src, database=False) as s:
            my.set_read_only(s, False)
        ctx.emit("db.writable", f"MySQL {ds.key} at the source accepts writes again", database=ds.key)

    def verify(self, ctx: RunContext, ds: Dataset, *, as_of_cut: bool, prior: dict[str, Any] | None) -> Verdict:
        from liferaft.movers import mysql as my

        t0 = time.monotonic()
        src, tgt = self.conns(ctx, ds)
        with my.connect(src) as s, my.connect(tgt) as t:
            rep = my.verify(s, t, src.database, tgt.database, progress=progress(ctx))
        label = f"mysql {ds.key}"
        rows = sum(d.count for d, _ in rep.tables.values() if d is not None)
        if not as_of_cut:
            return Verdict(checked={f"{label} tables": len(rep.tables), f"{label} rows": rows},
                           problems=tuple(f"{label}: {p}" for p in rep.problems()),
                           seconds=round(time.monotonic() - t0, 3))
        problems = [f"{label}: {d}" for d in rep.schema_differences]
        notes = []
        for name, (s_d, t_d) in sorted(rep.tables.items()):
            if t_d is None:
                problems.append(f"{label}: table {name} missing at the target")
            elif s_d is not None and (s_d.count, s_d.digest) != (t_d.count, t_d.digest):
                notes.append(f"{label}: table {name} has {s_d.count} rows at the source and {t_d.count} at the "
                             "target, content differs (the source kept taking writes after the cut)")
        cut = prior or {}
        return Verdict(checked={f"{label} tables": len(rep.tables), f"{label} rows": rows},
                       problems=tuple(problems), notes=tuple(notes), seconds=round(time.monotonic() - t0, 3),
                       figures={"caught_up": cut.get("caught_up"), "lag_s_at_cut": cut.get("lag_s_at_cut"),
                                "lag_bytes_at_cut": cut.get("lag_bytes_at_cut"),
                                "lag_s_left": cut.get("lag_s_left", 0.0)})

    def check_ledger(self, ctx: RunContext, ds: Dataset, ledger: str, cut_at: float | None) -> LedgerVerdict:
        return LedgerVerdict(0, (), {"note": "MySQL datasets keep no write ledger"})

    def release(self, ctx: RunContext, datasets: list[Dataset]) -> dict[str, Any]:
        for port in sorted({int(ds.spec.port) for ds in datasets}):
            for host in (source_host(ctx), target_host(ctx)):
                lock_migrator(host, port)
        return {"account": "liferaft_migrator", "locked": True}

    def unrelease(self, ctx: RunContext, datasets: list[Dataset]) -> None:
        for port in sorted({int(ds.spec.port) for ds in datasets}):
            for host in (source_host(ctx), target_host(ctx)):
                ensure_migrator(ctx, host, port)

    # ---- drills ---------------------------------------------------------------------------------------------
    def cut(self, ctx: RunContext, ds: Dataset) -> dict[str, Any]:
        """The source's GTID position now, waited for at the target (bounded), then the replica stopped."""
        from liferaft.movers import mysql as my

        src, tgt = self.conns(ctx, ds)
        with my.connect(src, database=False) as s, my.connect(tgt, database=False) as t:
            if my.replica_status(t) is None:
                out: dict[str, Any] = {"method": "replication", "caught_up": None,
                                       "note": "replication already stopped (the cut was interrupted and resumed)"}
            else:
                lag = my.lag(s, t)
                pos = my.binlog_pos(s)
                t0 = time.monotonic()
                caught = my.wait_gtid(t, pos, CUT_CATCH_UP_TIMEOUT_S)
                lag_s = float(lag.seconds or 0.0)
                out = {"method": "replication", "cut_gtid": pos, "caught_up": caught,
                       "catch_up_s": round(time.monotonic() - t0, 3), "lag_s_at_cut": lag_s,
                       "lag_bytes_at_cut": max(lag.bytes, 0), "lag_s_left": 0.0 if caught else lag_s}
                my.reset_replica(t)
                my.set_read_only(t, False)
        ctx.emit("drill.cut", f"mysql {ds.key}: cut, caught up: {out.get('caught_up')}", database=ds.key,
                 **{k: v for k, v in out.items() if k != "method"})
        return out

    def teardown_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return [line for port in sorted({int(ds.spec.port) for ds in datasets}) for line in server_lines(port)]

    def fence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets)

    def unfence_lines(self, stack: Stack, datasets: list[Dataset]) -> list[str]:
        return fence_lines(datasets, undo=True)

    def set_aside_lines(self, stack: Stack, datasets: list[Dataset], tag: str) -> list[str]:
        return set_aside_lines(stack.model.name, datasets, tag)
