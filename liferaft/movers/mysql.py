"""MySQL/MariaDB movers: connect, measure, dump into the target, replicate by GTID, freeze, catch up, verify.

Below the dataset kinds (liferaft.datasets.mariadb uses them; so does bench/bench_mariadb.py). Everything talks to
the servers over TCP from the controller with pymysql, and with the `mysqldump` / `mariadb` clients for the copy.
Passwords reach the clients in a 0600 option file (`--defaults-extra-file`), never on a command line.

Supported: MariaDB 10.5 and later (GTID replication, `MASTER_GTID_WAIT`; tested with Debian's 10.11). MySQL (its
GTIDs are another format, `CHANGE REPLICATION SOURCE`) is refused with a clear message by `server_info`.

- seed: `mysqldump --single-transaction --master-data=1 --gtid` piped into the target (one consistent snapshot; the
  dump sets the target's `gtid_slave_pos` to the snapshot's position; a FLUSH TABLES WITH READ LOCK of a few
  milliseconds at the source gives that position), then `CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos`;
- freeze: first a catch-up while the source still takes writes (`catch_up`: the source's position waited for at
  the target, in rounds, until one round is short), then `SET GLOBAL read_only=1` at the source (accounts without
  READ ONLY ADMIN, SUPER before 10.11, can no longer write), then `MASTER_GTID_WAIT(<source's gtid_binlog_pos>)` at
  the target, then the replica stopped and reset;
- verify: per table `COUNT(*)` and the sum of the first 60 bits of each row's MD5 (an order-independent content
  hash, exact DECIMAL arithmetic), plus the schema (`SHOW CREATE TABLE` without AUTO_INCREMENT counters, views,
  triggers and routines by name).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import AuthRejected, RunFailed, ToolMissing, Unreachable

Progress = Callable[[str, dict[str, Any]], None]
MIN_MARIADB = (10, 5)


@dataclass(frozen=True)
class MyConn:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str

    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _pymysql() -> Any:
    import pymysql

    return pymysql


def mysql_error(e: Exception) -> tuple[int, str]:
    args: tuple[Any, ...] = tuple(getattr(e, "args", ()))
    code = int(args[0]) if args and isinstance(args[0], int) else 0
    return code, str(args[1] if len(args) > 1 else e)


@contextmanager
def connect(conn: MyConn, *, database: bool = True, timeout: float = 10.0,
            read_timeout: float | None = None) -> Iterator[Any]:
    """A pymysql connection (autocommit); refused credentials and an unreachable server become liferaft errors that
    name the server."""
    pymysql = _pymysql()
    try:
        c = pymysql.connect(host=conn.host, port=int(conn.port), user=conn.user, password=conn.password,
                            database=conn.database if database else None, connect_timeout=timeout,
                            read_timeout=read_timeout, write_timeout=read_timeout, autocommit=True,
                            charset="utf8mb4")
    except pymysql.err.OperationalError as e:
        code, msg = mysql_error(e)
        if code in (1044, 1045, 1698, 4151) or "access denied" in msg.lower():
            raise AuthRejected(conn.where(), f"MySQL login as {conn.user}", msg,
                               hint="check the user and the password the stack file names") from None
        if code == 1049:
            raise RunFailed(f"MySQL at {conn.where()}: {msg}") from None
        raise Unreachable(conn.where(), f"MySQL login as {conn.user}", msg,
                          hint=f"is a MySQL/MariaDB server listening on port {conn.port} there?") from None
    try:
        yield c
    finally:
        c.close()


def query(c: Any, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with c.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def query_dicts(c: Any, sql: str, args: Any = None) -> list[dict[str, Any]]:
    pymysql = _pymysql()
    with c.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def ident(*parts: str) -> str:
    return ".".join("`" + p.replace("`", "``") + "`" for p in parts)


# ------------------------------------------------------------------------------------------------ what is there
@dataclass(frozen=True)
class ServerInfo:
    version: str
    mariadb: bool
    log_bin: bool
    server_id: int
    binlog_format: str

    def version_tuple(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.version)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def server_info(c: Any) -> ServerInfo:
    row = query(c, "SELECT VERSION(), @@log_bin, @@server_id, @@binlog_format")[0]
    return ServerInfo(str(row[0]), "mariadb" in str(row[0]).lower(), bool(int(row[1])), int(row[2]), str(row[3]))


def check_supported(info: ServerInfo, where: str) -> None:
    if not info.mariadb:
        raise RunFailed(f"the server at {where} is MySQL {info.version}: liferaft replicates MariaDB only (10.5 and "
                        "later)", hint="move MySQL with a dump by hand, or migrate it to MariaDB first")
    if info.version_tuple() < MIN_MARIADB:
        raise RunFailed(f"the server at {where} is MariaDB {info.version}: liferaft needs 10.5 or later")


@dataclass(frozen=True)
class TableInfo:
    name: str
    engine: str
    rows: int  # the estimate information_schema keeps
    bytes: int
    primary_key: bool


def tables(c: Any, database: str) -> list[TableInfo]:
    rows = query(c, "SELECT t.table_name, COALESCE(t.engine, ''), COALESCE(t.table_rows, 0),"
                    " COALESCE(t.data_length, 0) + COALESCE(t.index_length, 0),"
                    " EXISTS(SELECT 1 FROM information_schema.table_constraints k WHERE k.table_schema ="
                    " t.table_schema AND k.table_name = t.table_name AND k.constraint_type = 'PRIMARY KEY')"
                    " FROM information_schema.tables t WHERE t.table_schema = %s AND t.table_type = 'BASE TABLE'"
                    " ORDER BY t.table_name", (database,))
    return [TableInfo(str(r[0]), str(r[1]), int(r[2]), int(r[3]), bool(r[4])) for r in rows]


def warnings_for(found: list[TableInfo]) -> list[str]:
    """What the plan must say: tables without a primary key (row-based replication scans the whole table for each
    changed row), and non-transactional engines (MyISAM: no consistent snapshot, a crash may tear them)."""
    out = []
    nopk = [t.name for t in found if not t.primary_key]
    if nopk:
        out.append(f"table(s) without a primary key: {', '.join(nopk[:10])}{' ...' if len(nopk) > 10 else ''} "
                   "(replication applies each change by scanning the table: slow catch-up; add a primary key)")
    nontx = [f"{t.name} ({t.engine})" for t in found if t.engine.lower() not in ("innodb", "")]
    if nontx:
        out.append(f"non-transactional table(s): {', '.join(nontx[:10])}{' ...' if len(nontx) > 10 else ''} "
                   "(the dump's snapshot is not consistent for them while they take writes; convert them to "
                   "InnoDB)")
    return out


def writes_through_read_only(grants: list[str], info: ServerInfo) -> str | None:
    """A warning if the account whose `SHOW GRANTS` these are can write through `read_only` (MariaDB has no
    `super_read_only`): READ ONLY ADMIN on *.* (also inside ALL PRIVILEGES), or SUPER before 10.11, where SUPER
    implied it. Such an account's writes during the freeze would not stop, and those after the cut would be lost."""
    for g in grants:
        m = re.match(r"GRANT (.+?) ON \*\.\* TO ", g.strip(), re.IGNORECASE)
        if not m:
            continue
        privs = [p.strip().upper().replace("_", " ") for p in m.group(1).split(",")]
        held = [p for p in privs if p in ("ALL PRIVILEGES", "READ ONLY ADMIN")
                or (p == "SUPER" and info.version_tuple() < (10, 11))]
        if held:
            return (f"the application's account holds {held[0]} on *.*, so read_only does not stop its writes: the "
                    "write freeze would not hold for it and its writes after the cut would be lost (grant it "
                    "privileges on its database only)")
    return None


# ------------------------------------------------------------------------------------------------------ the copy
def _option_file(d: str, name: str, conn: MyConn) -> str:
    path = os.path.join(d, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    pw = conn.password.replace("\\", "\\\\").replace('"', '\\"')
    with os.fdopen(fd, "w") as f:
        f.write(f'[client]\nuser="{conn.user}"\npassword="{pw}"\nhost="{conn.host}"\nport={int(conn.port)}\n'
                "protocol=tcp\n")
    return path


def _tool(*names: str) -> str:
    import shutil

    for n in names:
        found = shutil.which(n)
        if found:
            return found
    raise ToolMissing(f"{names[0]} is not installed on this controller", hint="apt-get install mariadb-client")


@dataclass(frozen=True)
class DumpResult:
    seconds: float
    dump_bytes: int


def _exited(pid: int) -> bool:
    """The child has exited (a zombie, not yet reaped: its I/O accounting can still be read), or is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _written(pid: int, last: int) -> int:
    """The bytes the process wrote so far (`wchar` of /proc/PID/io), or `last` when it cannot be read."""
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                if line.startswith(b"wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return last


def dump_into(src: MyConn, tgt: MyConn, *, master_data: bool = True, progress: Progress | None = None,
              timeout: float = 3600.0) -> DumpResult:
    """`mysqldump --single-transaction` of the source's database piped into the target (binary logging off for the
    load; with `master_data` the dump sets the target's gtid_slave_pos to the snapshot's position). The bytes
    are counted from the dump's I/O accounting (/proc/PID/io), not relayed here."""
    dump, client = _tool("mariadb-dump", "mysqldump"), _tool("mariadb", "mysql")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="liferaft-mysql-") as d:
        sopt, topt = _option_file(d, "src.cnf", src), _option_file(d, "tgt.cnf", tgt)
        dargv = [dump, f"--defaults-extra-file={sopt}", "--single-transaction", "--quick", "--hex-blob",
                 "--routines", "--triggers", "--events", "--skip-dump-date", "--databases", src.database]
        if master_data:
            dargv[2:2] = ["--master-data=1", "--gtid"]
        cargv = [client, f"--defaults-extra-file={topt}", "--init-command=SET sql_log_bin=0",
                 "--max-allowed-packet=1G", tgt.database]
        errs = (Path(d) / "dump.err", Path(d) / "load.err")
        with open(errs[0], "wb") as de, open(errs[1], "wb") as le:
            # The dump goes straight into the load through a kernel pipe (a relay through this process cost ~10 %
            # at 1 GB); the bytes are counted from the dump's own I/O accounting.
            r, w = os.pipe()
            try:
                dp = subprocess.Popen(dargv, stdout=w, stderr=de, stdin=subprocess.DEVNULL)
                lp = subprocess.Popen(cargv, stdin=r, stdout=subprocess.DEVNULL, stderr=le)
            finally:
                os.close(r)
                os.close(w)
            moved, next_report = 0, 64 << 20
            try:
                while not _exited(dp.pid):
                    moved = _written(dp.pid, moved)
                    if progress is not None and moved >= next_report:
                        progress("mysql.dump.progress", {"bytes": moved})
                        next_report = (moved // (64 << 20) + 1) * (64 << 20)
                    if time.monotonic() - t0 > timeout:
                        raise RunFailed(f"the dump of {src.database} took over {timeout:.0f} s")
                    time.sleep(0.2)
                moved = _written(dp.pid, moved)
            finally:
                if dp.poll() is None:
                    dp.kill()
                drc = dp.wait()
                if drc != 0 and lp.poll() is None:
                    lp.kill()
                lrc = lp.wait()
        if drc != 0 or lrc != 0:
            # a load that died first makes the dump die of SIGPIPE: the load is then the one to name
            dump_failed = drc != 0 and not (lrc != 0 and drc == -signal.SIGPIPE)
            which = "mysqldump at the source" if dump_failed else "the load into the target"
            msg = (errs[0] if dump_failed else errs[1]).read_text(errors="replace").strip()[-600:]
            raise RunFailed(f"MySQL copy of {src.database} failed ({which}): {msg}")
    return DumpResult(round(time.monotonic() - t0, 3), moved)


# ------------------------------------------------------------------------------------------------ replication
def replica_status(c: Any) -> dict[str, Any] | None:
    rows = query_dicts(c, "SHOW SLAVE STATUS")
    return rows[0] if rows else None


def reset_replica(c: Any) -> None:
    query(c, "STOP SLAVE")
    query(c, "RESET SLAVE ALL")


def start_replica(c: Any, source: MyConn) -> None:
    """Replicate from `source` by GTID from the target's gtid_slave_pos (set by the dump)."""
    query(c, "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s,"
             " MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=2",
          (source.host, int(source.port), source.user, source.password))
    query(c, "START SLAVE")


def wait_running(c: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Until both replication threads run (or an error shows): the status, or RunFailed with the error."""
    deadline = time.monotonic() + timeout
    while True:
        st = replica_status(c) or {}
        io, sql = st.get("Slave_IO_Running"), st.get("Slave_SQL_Running")
        if io == "Yes" and sql == "Yes":
            return st
        err = st.get("Last_IO_Error") or st.get("Last_SQL_Error")
        if (io == "No" or sql == "No") and err or time.monotonic() > deadline:
            raise RunFailed(f"replication does not run (io={io}, sql={sql}): {err or 'no error reported'}")
        time.sleep(0.1)


def binlog_pos(c: Any) -> str:
    return str(query(c, "SELECT @@gtid_binlog_pos")[0][0] or "")


def wait_gtid(c: Any, pos: str, timeout: float) -> bool:
    """At the target: until it applied everything up to the source's GTID position `pos` (True), or timeout."""
    if not pos:
        return True
    row = query(c, "SELECT MASTER_GTID_WAIT(%s, %s)", (pos, float(timeout)))
    return bool(row and row[0][0] == 0)


def _sql_thread_stopped(st: dict[str, Any] | None) -> str | None:
    """Why the replica cannot apply anything more (its SQL thread stopped, or no replication at all), else None."""
    if st is None:
        return "the target no longer replicates"
    if st.get("Slave_SQL_Running") != "Yes":
        return f"the replica's SQL thread stopped ({replica_state(st)})"
    return None


def replica_state(st: dict[str, Any]) -> str:
    """`io=..., sql=..., error: ...` of a replica's SHOW SLAVE STATUS row, for an error message."""
    return (f"io={st.get('Slave_IO_Running')}, sql={st.get('Slave_SQL_Running')}, error: "
            f"{st.get('Last_SQL_Error') or st.get('Last_IO_Error') or '-'}")


@dataclass(frozen=True)
class CatchUp:
    close: bool  # a round took under `close_s`: the replica was within that of the source
    rounds: int
    seconds: float
    last_round_s: float
    rounds_s: tuple[float, ...]


def catch_up(s: Any, t: Any, *, close_s: float = 0.25, timeout: float = 30.0, max_rounds: int = 50,
             progress: Progress | None = None) -> CatchUp:
    """Before a freeze, while the source still takes writes: the source's GTID position now, waited for at the
    target; again, until one such round takes under `close_s` (the replica is that close behind, so the freeze's
    own wait will be about as short), or `timeout` / `max_rounds` is spent (`close` False: the caller freezes
    anyway, its final wait keeps RPO 0). A replica whose SQL thread stopped raises RunFailed here, before anything
    froze: it would never reach the source's position."""
    t0 = time.monotonic()
    rounds: list[float] = []
    while len(rounds) < max_rounds:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            break
        pos = binlog_pos(s)
        r0 = time.monotonic()
        reached = False
        while not reached:
            reached = wait_gtid(t, pos, min(1.0, max(left - (time.monotonic() - r0), 0.01)))
            if reached or time.monotonic() - r0 >= left:
                break
            why = _sql_thread_stopped(replica_status(t))
            if why:
                raise RunFailed(f"the target cannot catch up with the source's position {pos}: {why}",
                                hint="the source was not frozen and still takes writes; fix the replica (or "
                                     "seed again), then resume")
        rounds.append(time.monotonic() - r0)
        if progress is not None:
            progress("mysql.catch_up.round", {"round": len(rounds), "round_s": round(rounds[-1], 3),
                                              "reached": reached})
        if reached and rounds[-1] < close_s:
            return CatchUp(True, len(rounds), time.monotonic() - t0, rounds[-1], tuple(rounds))
        if not reached:
            break
    return CatchUp(False, len(rounds), time.monotonic() - t0, rounds[-1] if rounds else 0.0, tuple(rounds))


def set_read_only(c: Any, on: bool) -> None:
    query(c, f"SET GLOBAL read_only = {1 if on else 0}")


def is_read_only(c: Any) -> bool:
    return bool(int(query(c, "SELECT @@global.read_only")[0][0]))


@dataclass(frozen=True)
class Freeze:
    gtid: str  # the source's last position, applied at the target
    freeze_s: float  # read_only at the source -> the target caught up, no longer a replica and writable
    catch_up_s: float  # the final wait (inside the freeze)
    pre: CatchUp  # the catch-up before the freeze


def freeze(s: Any, t: Any, *, close_s: float = 0.25, pre_timeout: float = 30.0, timeout: float = 60.0,
           on_frozen: Callable[[], None] | None = None, progress: Progress | None = None) -> Freeze:
    """The cutover: `catch_up` while the source still takes writes, then the source read-only (`on_frozen` called
    right after), the target waits for the source's last GTID (at most `timeout`), the replica stopped and reset,
    the target writable. Whether or not the catch-up got close, the final wait makes the target complete (RPO 0);
    the catch-up only makes that wait, the write freeze, short. RunFailed if the target does not get there (the
    source stays read-only)."""
    pre = catch_up(s, t, close_s=close_s, timeout=pre_timeout, progress=progress)
    t0 = time.monotonic()
    set_read_only(s, True)
    if on_frozen is not None:
        on_frozen()
    pos = binlog_pos(s)
    t1 = time.monotonic()
    if not wait_gtid(t, pos, timeout):
        st = replica_status(t) or {}
        raise RunFailed(f"the target did not reach the source's position {pos} within {timeout:.0f} s (replica: "
                        f"{replica_state(st)})",
                        hint="the source stays read-only until rollback; roll back, or resume once the replica "
                             "caught up")
    caught = time.monotonic() - t1
    reset_replica(t)
    set_read_only(t, False)
    return Freeze(pos, time.monotonic() - t0, caught, pre)


@dataclass(frozen=True)
class Lag:
    seconds: float | None  # Seconds_Behind_Master (None: replication not running)
    bytes: int  # source binlog bytes not yet read by the replica (same file only; -1 unknown)
    source_pos: str
    replica_pos: str
    running: bool


def lag(src: Any, tgt: Any) -> Lag:
    st = replica_status(tgt) or {}
    running = st.get("Slave_IO_Running") == "Yes" and st.get("Slave_SQL_Running") == "Yes"
    sbm = st.get("Seconds_Behind_Master")
    master = query_dicts(src, "SHOW MASTER STATUS")
    lag_bytes = -1
    if master and st.get("Master_Log_File") == master[0].get("File"):
        lag_bytes = max(0, int(master[0]["Position"]) - int(st.get("Exec_Master_Log_Pos") or 0))
    src_pos = binlog_pos(src)
    rep_pos = str(query(tgt, "SELECT @@gtid_slave_pos")[0][0] or "")
    if src_pos and src_pos == rep_pos:
        lag_bytes = 0
    return Lag(float(sbm) if sbm is not None else None, lag_bytes, src_pos, rep_pos, running)


# --------------------------------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class TableDigest:
    count: int
    digest: str


def _columns(c: Any, database: str, table: str) -> list[str]:
    return [str(r[0]) for r in query(c, "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
                                        " AND table_name = %s ORDER BY ordinal_position", (database, table))]


def digest_table(c: Any, database: str, table: str) -> TableDigest:
    """COUNT(*) and the sum of each row's first 60 MD5 bits: equal iff the same rows, in any order (QUOTE tells
    NULL from 'NULL'; the separator cannot occur inside a QUOTEd value unescaped)."""
    cols = _columns(c, database, table)
    row_md5 = "MD5(CONCAT_WS(0x1e, " + ", ".join(f"QUOTE({ident(col)})" for col in cols) + "))"
    row = query(c, f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(SUBSTR({row_md5}, 1, 15), 16, 10) AS UNSIGNED)), 0)"
                   f" FROM {ident(database, table)}")
    return TableDigest(int(row[0][0]), str(row[0][1]))


_AUTO_INC = re.compile(r" AUTO_INCREMENT=\d+")


def schema(c: Any, database: str) -> dict[str, str]:
    """Tables (SHOW CREATE TABLE without the AUTO_INCREMENT counter), views, triggers and routines, by name."""
    out: dict[str, str] = {}
    for name, kind in query(c, "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = %s",
                            (database,)):
        if kind == "VIEW":
            out[f"view {name}"] = str(query(c, "SELECT view_definition FROM information_schema.views WHERE "
                                               "table_schema = %s AND table_name = %s", (database, name))[0][0])
        else:
            out[f"table {name}"] = _AUTO_INC.sub("", str(query(c, f"SHOW CREATE TABLE {ident(database, name)}")[0][1]))
    for name, stmt in query(c, "SELECT trigger_name, action_statement FROM information_schema.triggers WHERE "
                               "trigger_schema = %s", (database,)):
        out[f"trigger {name}"] = str(stmt)
    for name, kind, body in query(c, "SELECT routine_name, routine_type, routine_definition FROM "
                                     "information_schema.routines WHERE routine_schema = %s", (database,)):
        out[f"{str(kind).lower()} {name}"] = str(body)
    return out


@dataclass
class VerifyReport:
    tables: dict[str, tuple[TableDigest | None, TableDigest | None]]  # name -> (source, target)
    schema_differences: list[str]

    def problems(self) -> list[str]:
        out = list(self.schema_differences)
        for name, (s, t) in sorted(self.tables.items()):
            if t is None:
                out.append(f"table {name} missing at the target")
            elif s is None:
                out.append(f"table {name} exists only at the target")
            elif s.count != t.count:
                out.append(f"table {name}: {s.count} rows at the source, {t.count} at the target")
            elif s.digest != t.digest:
                out.append(f"table {name}: same row count ({s.count}) but the content differs")
        return out


def verify(src: Any, tgt: Any, src_db: str, tgt_db: str, progress: Progress | None = None) -> VerifyReport:
    s_schema, t_schema = schema(src, src_db), schema(tgt, tgt_db)
    diffs = [f"{k} missing at the target" for k in sorted(set(s_schema) - set(t_schema))]
    diffs += [f"{k} only at the target" for k in sorted(set(t_schema) - set(s_schema))]
    diffs += [f"{k} defined differently at the target" for k in sorted(set(s_schema) & set(t_schema))
              if s_schema[k] != t_schema[k]]
    names = sorted({k[6:] for k in (*s_schema, *t_schema) if k.startswith("table ")})
    out: dict[str, tuple[TableDigest | None, TableDigest | None]] = {}
    for name in names:
        s = digest_table(src, src_db, name) if f"table {name}" in s_schema else None
        t = digest_table(tgt, tgt_db, name) if f"table {name}" in t_schema else None
        out[name] = (s, t)
        if progress is not None:
            progress("mysql.verify.table", {"table": name, "rows": s.count if s else -1})
    return VerifyReport(out, diffs)
