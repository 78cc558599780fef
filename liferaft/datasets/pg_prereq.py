"""PostgreSQL's prerequisites for a move: what the plan checks at the source before anything is created, what the
move does about them (the stack key `replica_identity: full`), and the `source-access` step's pg_hba line.

Plan (`prerequisites`, read-only: the owner's session is read-only from its first statement; the target host, where
an ssh pool says which it will be, is only listed over SSH):
- `migrate: logical`: tables without a primary key (blocking unless `replica_identity: full`), `wal_level`, a free
  replication slot and WAL sender for the subscription, the source's access rules (`pg_hba_file_rules`, when the
  owner may read it: rules in error stop the plan, since a reload would not take the line `source-access` adds);
- both methods: extensions the database uses that the target cannot provide (the target's
  `/usr/share/postgresql/<v>/extension/*.control`, which is what its `pg_available_extensions` lists).

Move (`open_source` / `close_source`, the `source-access` step): once the target's address is known (after the
allocation; API-created hosts have none before), a line `host <db> liferaft_migrator <target>/32 scram-sha-256`
marked with the run's id is put at the top of the source's pg_hba (the file `SHOW hba_file` names, the rules
postgresql.yml writes take the same form), PostgreSQL reloaded, the added lines journaled first. A rule already
there (same fields) is neither added again nor removed; the undo removes exactly the lines this run added.

Below the step library (the PostgreSQL dataset kind and its standby half use it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from liferaft.configure.remote import ssh
from liferaft.datasets.base import Prerequisite
from liferaft.datasets.pg_access import MIGRATOR_ROLE, PSQL
from liferaft.errors import LiferaftError, RunFailed, Unreachable

if TYPE_CHECKING:
    from liferaft.configure import TargetHost
    from liferaft.datasets.base import Dataset, Where
    from liferaft.engine.runner import RunContext
    from liferaft.movers.pg_conn import PgConn

FIX_DUMP = "`migrate: dump` on data.databases.{key} (the controller copies it inside the freeze; no replication)"
SYNC_WORKERS = 2  # max_sync_workers_per_subscription's default: the initial copy's table workers use slots too
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")


# ------------------------------------------------------------------------------------------------------------ plan
def prerequisites(where: Where, ds: Dataset) -> list[Prerequisite]:
    """Every check of the module docstring for database `ds`, read-only at the source (and the target's files)."""
    import psycopg

    db, host = ds.spec, where.source_host
    found: list[Prerequisite] = []
    try:
        with psycopg.connect(host=host.address, port=db.port, dbname=db.name, user=db.owner,
                             password=where.stack.secret(db.password), connect_timeout=10, autocommit=True,
                             application_name="liferaft-plan", options="-c default_transaction_read_only=on") as c:
            if db.migrate == "logical":
                found += _logical(c, ds, where.target_host)
            used = [str(r[0]) for r in c.execute("SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' "
                                                 "ORDER BY 1").fetchall()]
    except psycopg.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, psycopg.OperationalError):  # no connection: the source does not answer (as a provider)
            raise Unreachable(host.name, f"check the prerequisites of database {ds.key!r}", msg) from None
        raise LiferaftError(f"database {ds.key!r} at {host.address}:{db.port}: cannot check its prerequisites: "
                            f"{msg}") from None
    found += _extensions(ds, used, where.target_host)
    return found


def _logical(c: Any, ds: Dataset, target: TargetHost | None) -> list[Prerequisite]:
    from liferaft.movers.pg_logical import NO_KEY_SQL, replication_name

    key, db = ds.key, ds.spec
    out: list[Prerequisite] = []
    no_key = [str(r[0]) for r in c.execute(NO_KEY_SQL).fetchall()]
    if no_key and db.replica_identity != "full":
        out.append(Prerequisite(key, "primary-key", (
            f"logical replication cannot carry UPDATE/DELETE of {len(no_key)} table(s) without a primary key: "
            + ", ".join(no_key[:20]) + (" ..." if len(no_key) > 20 else "")),
            f"`replica_identity: full` on data.databases.{key} (REPLICA IDENTITY FULL on those tables at the "
            f"source; slower at the target), or {FIX_DUMP.format(key=key)}, or add primary keys"))
    elif no_key:
        out.append(Prerequisite(key, "primary-key", f"{len(no_key)} table(s) without a primary key ("
                                + ", ".join(no_key[:20]) + ") get REPLICA IDENTITY FULL at the source when the "
                                "migration starts (`replica_identity: full`)", blocking=False))

    def setting(name: str) -> str:
        row = c.execute(f"SHOW {name}").fetchone()
        return str(row[0]) if row else ""

    level = setting("wal_level")
    if level != "logical":
        out.append(Prerequisite(key, "wal-level", f"the source has wal_level={level}; logical replication needs "
                                "wal_level=logical", f"set `wal_level = logical` at the source and restart it, or "
                                f"{FIX_DUMP.format(key=key)}"))
    slot = replication_name(str(db.name))
    slots_max = int(setting("max_replication_slots") or 0)
    row = c.execute("SELECT count(*), count(*) FILTER (WHERE slot_name = %s) FROM pg_replication_slots",
                    (slot,)).fetchone()
    used, ours = (int(row[0]), int(row[1])) if row else (0, 0)
    need = 0 if ours else 1
    if slots_max - used < need:
        out.append(Prerequisite(key, "replication-slots", f"no free replication slot at the source "
                                f"(max_replication_slots={slots_max}, {used} in use); the subscription needs one",
                                "raise `max_replication_slots` at the source (restart) or drop an unused slot, or "
                                + FIX_DUMP.format(key=key)))
    elif slots_max - used < need + SYNC_WORKERS:
        out.append(Prerequisite(key, "replication-slots", f"only {slots_max - used} free replication slot(s) at "
                                f"the source: the initial copy's table workers ({SYNC_WORKERS}) will wait for one",
                                blocking=False))
    senders_max = int(setting("max_wal_senders") or 0)
    row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'").fetchone()
    senders = int(row[0]) if row else 0
    if senders_max - senders < 1:
        out.append(Prerequisite(key, "wal-senders", f"no free WAL sender at the source (max_wal_senders="
                                f"{senders_max}, {senders} in use); the subscription needs one",
                                "raise `max_wal_senders` at the source (restart), or " + FIX_DUMP.format(key=key)))
    out += _access(c, ds, target)
    return out


def _access(c: Any, ds: Dataset, target: TargetHost | None) -> list[Prerequisite]:
    """The source's rules, when the owner may read them: errors block (a reload would ignore the added line)."""
    import psycopg

    key = ds.key
    try:
        rows = c.execute("SELECT line_number, type, database, user_name, address, netmask, auth_method, error "
                         "FROM pg_hba_file_rules ORDER BY line_number").fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return [Prerequisite(key, "access", f"the source's pg_hba rules are not readable by {ds.spec.owner}; the "
                             "`source-access` step adds the target's rule after the allocation", blocking=False)]
    errors = [f"line {r[0]}: {r[7]}" for r in rows if r[7]]
    if errors:
        return [Prerequisite(key, "access", "the source's pg_hba.conf has errors (" + "; ".join(errors[:5]) + "): "
                             "PostgreSQL would not take the target's rule on a reload",
                             f"correct the source's pg_hba.conf, or {FIX_DUMP.format(key=key)}")]
    if target is None:
        return [Prerequisite(key, "access", "the target's address is known only after the allocation: the "
                             "`source-access` step adds its rule to the source's pg_hba then", blocking=False)]
    hit = next((r for r in rows if _admits(r, ds.spec.name, target.address)), None)
    said = (f"line {hit[0]} of the source's pg_hba ({hit[6]}) already covers {target.address}" if hit else
            f"the source's pg_hba does not admit {target.address} yet")
    return [Prerequisite(key, "access", said + "; the `source-access` step adds a rule for the migration role "
                         "from the target's address (removed by rollback)", blocking=False)]


def _admits(rule: Any, dbname: str, address: str) -> bool:
    import ipaddress

    _, kind, dbs, users, addr, mask, method, _ = rule
    if kind not in ("host", "hostssl", "hostnossl") or method == "reject" or not addr:
        return False
    if not (set(dbs or ()) & {"all", dbname}) or not (set(users or ()) & {"all", MIGRATOR_ROLE}):
        return False
    try:
        net = ipaddress.ip_network(f"{addr}/{mask}" if mask else addr, strict=False)
        return ipaddress.ip_address(address) in net
    except ValueError:
        return bool(addr == "all")


def _extensions(ds: Dataset, used: list[str], target: TargetHost | None) -> list[Prerequisite]:
    if not used:
        return []
    v = int(ds.spec.version)
    listed = ", ".join(used)
    if target is None:
        return [Prerequisite(ds.key, "extensions", f"the database uses extensions {listed}; the target host is not "
                             f"known before the allocation, so they are not checked there: postgresql.yml installs "
                             f"postgresql-{v} (with its contrib extensions), anything else must be in the host's "
                             "image", blocking=False)]
    try:
        out = ssh(target, f"if [ -x /usr/lib/postgresql/{v}/bin/postgres ]; then echo installed; fi; "
                          f"ls /usr/share/postgresql/{v}/extension/ 2>/dev/null || true",
                  timeout=15, what="list the target's PostgreSQL extensions")
    except LiferaftError as e:
        return [Prerequisite(ds.key, "extensions", f"the database uses extensions {listed}; the target "
                             f"{target.name} could not be asked which it has ({e.message})", blocking=False)]
    lines = out.split()
    if "installed" not in lines:
        return [Prerequisite(ds.key, "extensions", f"the database uses extensions {listed}; PostgreSQL {v} is not "
                             f"installed at the target {target.name} yet: postgresql.yml installs postgresql-{v} "
                             "(with its contrib extensions), anything else must be in the host's image",
                             blocking=False)]
    have = {n.removesuffix(".control") for n in lines if n.endswith(".control")}
    missing = [e for e in used if e not in have]
    if missing:
        return [Prerequisite(ds.key, "extensions", f"extension(s) {', '.join(missing)} used by the source are not "
                             f"available at the target {target.name} (PostgreSQL {v}: no "
                             f"{', '.join(m + '.control' for m in missing)})",
                             "install their packages on the target host (its image, or a playbook run before the "
                             "service's); a dump needs them as well")]
    return []


# ------------------------------------------------------------------------------------------------- the run's side
def replica_identity_full(ctx: RunContext, ds: Dataset, src: PgConn) -> list[str]:
    """With the stack key `replica_identity: full`: the source's tables without a primary key, which the logical
    migration is about to give REPLICA IDENTITY FULL (said in an event, and in the seed's result); else []."""
    from liferaft.movers.pg_logical import tables_without_key

    if ds.spec.replica_identity != "full":
        return []
    tables = tables_without_key(src)
    if tables:
        ctx.emit("pg.replica_identity_full", f"database {ds.key}: REPLICA IDENTITY FULL set at the source on "
                 f"{len(tables)} table(s) without a primary key ({', '.join(tables[:10])}"
                 f"{' ...' if len(tables) > 10 else ''}), as `replica_identity: full` asks", database=ds.key,
                 tables=tables)
    return tables


def hba_rule(dbname: str, address: str) -> str:
    """The rule `source-access` adds (the form postgresql.yml writes), without its marker."""
    return f"host    {dbname}    {MIGRATOR_ROLE}    {address}/32    scram-sha-256"


def _fields(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


def with_rules(text: str, rules: list[str], marker: str) -> tuple[str, list[str], list[str]]:
    """`text` with each rule (and `marker` as its comment) before the first rule of the file, unless a line with the
    same fields is there: (new text, rules this marker holds -- added now or by an earlier attempt, rules that were
    there before)."""
    lines = text.splitlines()
    ours: list[str] = []
    before: list[str] = []
    new: list[str] = []
    for rule in rules:
        same = [ln for ln in lines if _fields(ln) == _fields(rule)]
        if any(ln.strip() == f"{rule}    {marker}" for ln in same):
            ours.append(rule)
        elif same:
            before.append(rule)
        else:
            new.append(f"{rule}    {marker}")
            ours.append(rule)
    if not new:
        return text, ours, before
    first = next((i for i, ln in enumerate(lines) if _fields(ln)), len(lines))
    out = lines[:first] + new + lines[first:]
    return "\n".join(out) + "\n", ours, before


def without_rules(text: str, rules: list[str], marker: str) -> str:
    """`text` without exactly the lines `with_rules` added for `rules` under `marker`."""
    drop = {f"{rule}    {marker}" for rule in rules}
    kept = [ln for ln in text.splitlines() if ln.strip() not in drop]
    return "\n".join(kept) + "\n" if kept else ""


def _psql(host: TargetHost, version: int, port: int, sql: str, what: str) -> str:
    psql = PSQL.format(version=int(version))
    return ssh(host, f"su postgres -s /bin/sh -c '{psql} -X -q -At -v ON_ERROR_STOP=1 -h /var/run/postgresql "
                     f"-p {int(port)} -d postgres'", stdin=sql, what=what).strip()


def _hba_file(host: TargetHost, version: int, port: int) -> str:
    path = _psql(host, version, port, "SHOW hba_file;\n", "find the source's pg_hba.conf")
    if not _SAFE_PATH.match(path):
        raise RunFailed(f"the source's hba_file {path!r} is not a plain path; liferaft will not edit it",
                        hint="add the target's rule by hand, or use `migrate: dump`")
    return path


def _write(host: TargetHost, path: str, text: str) -> None:
    ssh(host, f"set -e; f='{path}'; t=$(mktemp \"$f.liferaft.XXXXXX\"); cat > \"$t\"; "
              "chown --reference=\"$f\" \"$t\"; chmod --reference=\"$f\" \"$t\"; mv -f \"$t\" \"$f\"",
        stdin=text, what="write the source's pg_hba.conf")


def _reload(host: TargetHost, version: int, port: int) -> None:
    errors = _psql(host, version, port, "SELECT pg_reload_conf();\nSELECT pg_sleep(0.2);\n"
                   "SELECT string_agg(line_number || ': ' || error, '; ') FROM pg_hba_file_rules "
                   "WHERE error IS NOT NULL;\n", "reload the source's PostgreSQL")
    errors = "\n".join(ln for ln in errors.splitlines() if ln.strip() and ln.strip() != "t").strip()
    if errors:
        raise RunFailed(f"the source's pg_hba.conf has errors after the change ({errors}); PostgreSQL keeps its "
                        "former rules", hint="correct the file at the source, then resume")


def open_source(ctx: RunContext, datasets: list[Dataset], source: TargetHost, address: str) -> dict[str, Any]:
    """The `source-access` step for these (logical) databases: per cluster, the rules added at the top of the
    source's pg_hba (journaled in the step's notes before the file is written) and PostgreSQL reloaded."""
    marker = f"# liferaft run {ctx.run_id}"
    notes: dict[str, Any] = dict(ctx.memo.get("hba") or {})
    out: dict[str, Any] = {"address": address, "clusters": {}}
    for (version, port), group in _by_cluster(datasets).items():
        path = _hba_file(source, version, port)
        rules = [hba_rule(str(ds.spec.name), address) for ds in group]
        text = ssh(source, f"cat '{path}'", what="read the source's pg_hba.conf")
        new, ours, before = with_rules(text, rules, marker)
        cid = f"{version}:{port}"
        notes[cid] = {"file": path, "marker": marker, "rules": ours}
        ctx.remember(hba=notes)  # before the file changes: an undo after a crash here removes them
        if new != text:
            _write(source, path, new)
            _reload(source, version, port)
        out["clusters"][cid] = {"file": path, "added": ours, "already_there": before}
        ctx.emit("pg.source_access", f"source {source.name}: {len(ours)} rule(s) for {address} in {path}"
                 + (f", {len(before)} already there (kept as they were)" if before else ""),
                 file=path, added=len(ours), already=len(before))
    return out


def close_source(ctx: RunContext, source: TargetHost, datasets: list[Dataset]) -> None:
    """Undo of `open_source`: remove exactly the rules it noted, reload."""
    versions = {f"{v}:{p}": (v, p) for v, p in _by_cluster(datasets)}
    for cid, note in (ctx.memo.get("hba") or {}).items():
        version, port = versions.get(cid) or tuple(int(x) for x in cid.split(":"))
        path, marker, rules = str(note["file"]), str(note["marker"]), list(note.get("rules") or [])
        if not rules or not _SAFE_PATH.match(path):
            continue
        text = ssh(source, f"cat '{path}'", what="read the source's pg_hba.conf")
        new = without_rules(text, rules, marker)
        if new != text:
            _write(source, path, new)
            _reload(source, version, port)
        ctx.emit("pg.source_access_removed", f"source {source.name}: rule(s) of this run removed from {path}",
                 file=path, removed=len(rules))


def _by_cluster(datasets: list[Dataset]) -> dict[tuple[int, int], list[Dataset]]:
    out: dict[tuple[int, int], list[Dataset]] = {}
    for ds in datasets:
        out.setdefault((int(ds.spec.version), int(ds.spec.port)), []).append(ds)
    return out
