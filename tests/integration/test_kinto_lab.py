"""Kinto -- a real third-party web service with a PostgreSQL backend, installed from PyPI -- taken through its whole
life by liferaft in a lab of its own (issue 20's journey), through the real CLI, checked from outside liferaft:

    deploy (primary, host a) -> records written through Kinto's API (PUT, POST, PATCH, DELETE) by the DNS name
    -> replicate --to alt (standby on host b) -> drill --to alt (no-notice: the standby promoted, the primary cut off
       in the lab; every record read back through the drill record, then the drill torn down: nothing of the stack
       left on b) -> replicate --to alt (the standby again)
    -> failover --to alt -> every record read back through Kinto's API by the production DNS name (now b); more
       written there -> replicate --to primary -> failover --to primary (failback) -> every record, those written at
       the alternate included, read back at the primary: by content (sha256 of each record's canonical JSON) and count.

Nothing is written by hand outside the stack file (examples/kinto/liferaft.lab.yaml filled with the lab's addresses)
and the app's playbook (examples/kinto/kinto.yml): no DNS record, pg_hba line or SQL. Kinto's storage and permission
schema is its own (`kinto migrate`), with a table without a primary key (`metadata`): the stack's
`replica_identity: full` is what lets logical replication carry it. Reading back with the same Basic Auth account
at each site also proves its `kinto.userid_hmac_secret` (a stack secret) is equal there. The wheelhouse comes from
scripts/setup.sh (lab hosts have no internet).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fixtures_lab import resolve

pytestmark = [pytest.mark.lab, pytest.mark.slow]

KINTO_VERSION = "26.5.0"  # as pinned in scripts/setup.sh and the stack template
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kinto"
WHEELHOUSE = Path(os.environ.get("LIFERAFT_WHEELHOUSE", "/var/cache/liferaft/wheels"))
PORT = 8888
SERVICE = "kinto"
# Where the playbook puts the service's files (the contract's places): a drill's teardown must leave none.
SERVICE_FILES = (f"/etc/liferaft/{SERVICE}", f"/opt/liferaft/{SERVICE}", f"/var/lib/liferaft/{SERVICE}",
                 f"/var/log/liferaft/{SERVICE}", f"/run/liferaft/{SERVICE}",
                 f"/etc/systemd/system/liferaft-{SERVICE}.service")


def records_module() -> ModuleType:
    """examples/kinto/records.py (the writer/verifier, standard library only), loaded by path."""
    name = "liferaft_example_kinto_records"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "records.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def render_lab_stack(info: Any, wheelhouse: Path) -> Path:
    """examples/kinto/liferaft.lab.yaml with the lab's values, written beside the lab's stack file (so `file:secrets/`
    resolves to the lab's secrets), and the two secrets the Kinto stack adds (0600)."""
    def host_port(url: str) -> tuple[str, int]:
        u = urlsplit(url)
        assert u.hostname and u.port
        return u.hostname, u.port

    obj_host, obj_port = host_port(info.endpoints["objstore"])
    dns_host, dns_port = host_port(info.endpoints["dnshost"])
    hook = [sys.executable, "-m", "liferaft", "lab", "--lab-dir", str(info.directory)]
    values: dict[str, Any] = {
        "AWS_ENDPOINT": info.endpoints["aws"], "OBJSTORE_HOST": obj_host, "OBJSTORE_PORT": obj_port,
        "DNS_API_HOST": dns_host, "DNS_API_PORT": dns_port, "ZONE": info.zone, "NAMESERVER": info.dns_server,
        "WHEELHOUSE": str(wheelhouse), "PLAYBOOK": str(EXAMPLE / "kinto.yml"),
        "DRILL_CUT": json.dumps([*hook, "drill-cut"]), "DRILL_HEAL": json.dumps([*hook, "drill-heal"]),
    }
    for name in ("a", "b", "c"):
        h = info.hosts[name]
        values.update({f"HOST_{name.upper()}_ADDRESS": h.address, f"HOST_{name.upper()}_PORT": h.port,
                       f"HOST_{name.upper()}_KEY": h.host_public_key})
    text = string.Template((EXAMPLE / "liferaft.lab.yaml").read_text()).substitute(values)
    for secret in ("kinto_db_password", "kinto_userid_hmac_secret"):
        f = info.secrets_dir / secret
        f.write_text(secrets.token_urlsafe(24) + "\n")
        f.chmod(0o600)
    out = info.stack_file.with_name("kinto.yaml")
    out.write_text(text)
    return out




@dataclass
class Journey:
    lab: Any
    info: Any
    stack_file: Path
    state: Path
    tmp: Path
    fqdn: str
    drill_fqdn: str
    rec: ModuleType
    ledger: Any
    stages: dict[str, float] = field(default_factory=dict)
    secrets_: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "liferaft", "--stack", str(self.stack_file), "--state-dir", str(self.state),
                *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIFERAFT_")}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env,
                              stdin=subprocess.DEVNULL)

    def timed(self, stage: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        out = self.cli(*args, timeout=timeout)
        self.stages[stage] = round(time.monotonic() - t0, 1)
        for s in self.secrets_.values():  # a stack secret never in liferaft's output
            assert s not in out.stdout and s not in out.stderr, f"{stage}: a secret in liferaft's output"
        return out

    def kinto(self, fqdn: str | None = None) -> Any:
        """A Kinto client for the DNS name `fqdn` (default: production's), sent to the address DNS gives now."""
        name = fqdn or self.fqdn
        addresses = resolve(self.info, name)
        assert len(addresses) == 1 and not addresses[0].startswith("<"), f"{name} -> {addresses}"
        return self.rec.Kinto(f"http://{name.rstrip('.')}:{PORT}", address=addresses[0])

    def verify(self, fqdn: str | None = None) -> dict[str, Any]:
        result = self.rec.verify(self.kinto(fqdn), self.ledger)
        assert result.ok, result.to_dict()
        return dict(result.collections)


@pytest.fixture(scope="module")
def journey(own_cloud_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Journey]:
    assert any(WHEELHOUSE.glob(f"kinto-{KINTO_VERSION}-*.whl")), (
        f"no Kinto {KINTO_VERSION} wheel in {WHEELHOUSE}: run scripts/setup.sh (it downloads the wheelhouse)")
    info = own_cloud_lab.info
    stack_file = render_lab_stack(info, WHEELHOUSE)
    tmp = tmp_path_factory.mktemp("kinto")
    rec = records_module()
    from liferaft.stack import load_stack

    dns = load_stack(stack_file).model.dns
    assert dns is not None
    j = Journey(lab=own_cloud_lab, info=info, stack_file=stack_file, state=tmp / "state", tmp=tmp,
                fqdn=dns.fqdn("kinto"), drill_fqdn=dns.fqdn("kinto-drill"), rec=rec, ledger=rec.Ledger(),
                secrets_={n: info.secret(n) for n in ("kinto_db_password", "kinto_userid_hmac_secret")})
    yield j
    print("\nKinto journey, seconds per stage: " + ", ".join(f"{k} {v}" for k, v in j.stages.items()))


def present(host: Any, paths: tuple[str, ...]) -> list[str]:
    out = host.run("for p in " + " ".join(paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true").stdout
    return out.split()


def test_deploy_then_records_written_through_kintos_api(journey: Journey) -> None:
    """`liferaft deploy` at the primary: PostgreSQL, Kinto from the wheelhouse, its schema, the DNS record; then
    records written through Kinto's API by the DNS name and read back."""
    j, a = journey, journey.info.hosts["a"].address
    assert resolve(j.info, j.fqdn) == []  # no record until liferaft makes one
    out = j.timed("deploy", "deploy", "--yes", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "done" and doc["site"] == "primary" and doc["changed_steps"] > 0, doc
    assert resolve(j.info, j.fqdn) == [a]
    # idempotent, the app's playbook included: a second deploy changes nothing and says so
    again = j.timed("deploy (again)", "deploy", "--yes", "--json")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    assert json.loads(again.stdout)["nothing_changed"] is True, again.stdout

    t0 = time.monotonic()
    k = j.kinto()
    j.rec.write_records(k, j.ledger, "liferaft", "notes", records=120, tag="primary", updates=15, deletes=8)
    j.rec.write_records(k, j.ledger, "liferaft", "tasks", records=40, tag="primary-tasks", updates=5, deletes=3)
    j.stages["write at primary"] = round(time.monotonic() - t0, 1)
    assert j.verify() == {
        "liferaft/notes": {"expected": 112, "found": 112, "missing": 0, "different": 0, "unexpected": 0},
        "liferaft/tasks": {"expected": 37, "found": 37, "missing": 0, "different": 0, "unexpected": 0}}

    # Kinto's own schema, with its table without a primary key: what `replica_identity: full` is for
    import psycopg

    from liferaft.stack import load_stack

    stack = load_stack(j.stack_file)
    db = stack.model.data.databases["kinto"]
    dsn = {"host": a, "port": db.port, "dbname": db.name, "user": db.owner, "password": stack.secret(db.password),
           "connect_timeout": 5}
    with psycopg.connect(**dsn) as c:
        nopk = [str(r[0]) for r in c.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
            "'public' AND c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND "
            "i.indisprimary) ORDER BY 1")]
    assert "metadata" in nopk, nopk


def test_replicate_then_a_drill_reads_every_record_and_leaves_nothing_behind(journey: Journey) -> None:
    """`replicate --to alt` keeps a standby at b; writes go on at the primary (UPDATEs and DELETEs too); a no-notice
    drill promotes the standby with the primary cut off, and every record reads back through the drill record; its
    teardown leaves no file of the service on b, none holding a secret; the standby is set up again."""
    j = journey
    b = j.info.hosts["b"]
    out = j.timed("replicate --to alt", "replicate", "--to", "alt", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["databases"]["kinto"]["ok"], doc
    assert '"pg.replica_identity_full"' in out.stderr  # liferaft said it set REPLICA IDENTITY FULL on `metadata`

    j.rec.write_records(j.kinto(), j.ledger, "liferaft", "notes", records=20, tag="replicated", updates=10,
                        deletes=5)
    again = j.cli("replicate", "--to", "alt", "--json")  # one round more: the standby current again
    assert again.returncode == 0, again.stderr[-3000:]

    out = j.timed("drill --to alt", "drill", "--to", "alt", "--scenario", "no-notice", "--keep", "--report",
                  str(j.tmp / "reports"), "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    drill = json.loads(out.stdout)
    assert drill["passed"] and drill["kept"] and drill["data"]["ok"], drill
    try:
        assert resolve(j.info, j.drill_fqdn) == [b.address]
        assert resolve(j.info, j.fqdn) == [j.info.hosts["a"].address]  # production DNS untouched
        j.verify(j.drill_fqdn)  # every record, through Kinto at b, with the same account: same HMAC secret there
    finally:
        down = j.timed("drill teardown", "drill", "--teardown", drill["run_id"], "--json", timeout=300)
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-3000:]
    assert json.loads(down.stdout)["torn_down"] is True

    assert present(b, SERVICE_FILES) == []
    assert b.run("id -u kinto", check=False).returncode != 0  # the service's system user went with its home
    needles = " ".join(f"-e '{s}'" for s in j.secrets_.values())
    holding = b.run(f"grep -rlsF {needles} /etc /opt /var/log /var/lib /run /tmp /root; true", timeout=120).stdout
    assert holding.split() == []

    out = j.timed("replicate --to alt (again)", "replicate", "--to", "alt", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert j.verify() is not None  # the primary serves every record after the drill's cut is healed


def test_failover_to_alt_then_every_record_by_the_dns_name(journey: Journey) -> None:
    """`failover --to alt` (live): the production name points at b, and every record reads back through it; the
    application then takes writes there (new records, UPDATEs and DELETEs of the primary's)."""
    j = journey
    b = j.info.hosts["b"].address
    out = j.timed("failover --to alt", "failover", "--to", "alt", "--yes", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "done", doc
    assert resolve(j.info, j.fqdn) == [b]
    counts = j.verify()
    assert counts["liferaft/notes"]["found"] == 112 + 20 - 5
    k = j.kinto()
    j.rec.write_records(k, j.ledger, "liferaft", "written-at-alt", records=30, tag="alt", updates=10, deletes=5)
    j.rec.write_records(k, j.ledger, "liferaft", "notes", records=6, tag="alt-notes", updates=12, deletes=6)
    j.verify()


def test_failback_to_primary_then_every_record_read_back_there(journey: Journey) -> None:
    """`replicate --to primary` keeps the old primary as the standby; `failover --to primary` moves back; every
    record, those written at the alternate included, reads back at the primary by content and count."""
    j = journey
    a = j.info.hosts["a"].address
    out = j.timed("replicate --to primary", "replicate", "--to", "primary", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert json.loads(out.stdout)["databases"]["kinto"]["ok"]
    out = j.timed("failover --to primary", "failover", "--to", "primary", "--yes", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["status"] == "done", doc
    assert resolve(j.info, j.fqdn) == [a]
    counts = j.verify()
    assert counts["liferaft/written-at-alt"] == {"expected": 25, "found": 25, "missing": 0, "different": 0,
                                                 "unexpected": 0}
    assert counts["liferaft/notes"]["found"] == 112 + 20 - 5 + 6 - 6
    assert sum(c["found"] for c in counts.values()) == sum(len(j.ledger.live(key)) for key in j.ledger.collections)
    # the stack's secrets (the database password, Kinto's HMAC secret) never in liferaft's journal, state or reports
    for f in j.tmp.rglob("*"):
        if f.is_file():
            body = f.read_bytes()
            assert not any(s.encode() in body for s in j.secrets_.values()), f
    print(f"\nfailback: write-unavailability window {doc['summary'].get('write_unavailable_s')} s; "
          f"{sum(c['found'] for c in counts.values())} records at the primary, each equal by sha256")
