"""Folders and SQLite files (`data.directories`, `data.sqlite`) moved between lab hosts through the real CLI.

One module lab: three network-namespace hosts (a: the source site's, b and c: the alternate's pool) with sshd, a
stack of its own (no service, no database: only the two file kinds), and a writer on host a that keeps adding
files and rows until the freeze stops it (`writers.stop`). Every check is made from outside liferaft: `find`,
`stat` and `sha256sum` on both hosts, `sqlite3` at the target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UPLOADS = "/srv/app/uploads"
NOTES = "/srv/app/data/notes.db"
WRITER_PID = "/run/files-writer.pid"
WRITER = r"""
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[2], timeout=10)
db.execute("PRAGMA journal_mode=WAL")
i = 0
while True:
    i += 1
    db.execute("INSERT INTO notes(body) VALUES (?)", ("live note %d" % i,))
    db.commit()
    with open(os.path.join(sys.argv[1], "live", "%d-%06d.txt" % (os.getpid(), i)), "w") as f:
        f.write("live file %d\n" % i)
    time.sleep(0.02)
"""
START = (f"start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile {WRITER_PID} "
         f"--exec /usr/bin/python3 -- /srv/writer.py {UPLOADS} {NOTES}")
STOP = f"start-stop-daemon --stop --quiet --oknodo --retry 5 --pidfile {WRITER_PID} --remove-pidfile"

STACK = """\
version: 1
name: files
providers:
  colo-a:
    type: ssh
    user: root
    private_key: file:secrets/id_ed25519
    hosts:
{a}
  colo-b:
    type: ssh
    user: root
    private_key: file:secrets/id_ed25519
    hosts:
{b}{c}
  store:
    type: libcloud
    storage: {{driver: local, path: store}}
sites:
  primary: {{compute: colo-a, objects: store}}
  alt-b: {{compute: colo-b, objects: store}}
primary: primary
alternates: [alt-b]
data:
  directories:
    uploads:
      path: {uploads}
      writers: {{stop: {stop}, start: {start}}}
  sqlite:
    notes:
      path: {notes}
      writers: {{stop: {stop}, start: {start}}}
"""


def _host(h: Any) -> str:
    return (f"      - name: {h.name}\n        address: {h.address}\n        port: {h.port}\n"
            f"        host_keys: [{json.dumps(h.host_public_key)}]\n")


@dataclass
class Env:
    hosts: dict[str, Any]
    dir: Path
    state: Path

    def cli(self, *args: str, stack: str = "liferaft.yaml", timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "liferaft", "--stack", str(self.dir / stack), "--state-dir", str(self.state),
                *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def run(self, host: str, command: str) -> str:
        return str(self.hosts[host].run(command).stdout)

    def show(self, run: str) -> dict[str, Any]:
        out = self.cli("show", run, "--json")
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def last_run(self) -> str:
        out = self.cli("runs", "--json")
        assert out.returncode == 0, out.stderr
        return str(json.loads(out.stdout)[0]["run"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from liferaft.lab.hosts import LabHosts, LabUnavailable, check_lab_possible

    try:
        check_lab_possible()
    except LabUnavailable as e:
        pytest.skip(f"lab hosts unavailable on this machine: {e}")
    d = tmp_path_factory.mktemp("files-lab")
    hosts = LabHosts(directory=d / "hosts", names=("a", "b", "c"))
    try:
        hosts.up(timeout=30)
        (d / "secrets").mkdir(mode=0o700)
        shutil.copy(hosts.client_key, d / "secrets" / "id_ed25519")
        os.chmod(d / "secrets" / "id_ed25519", 0o600)
        (d / "store").mkdir()
        h = hosts.hosts
        (d / "liferaft.yaml").write_text(STACK.format(a=_host(h["a"]), b=_host(h["b"]), c=_host(h["c"]),
                                                      uploads=UPLOADS, notes=NOTES, stop=json.dumps(STOP),
                                                      start=json.dumps(START)))
        env = Env(dict(h), d, d / "state")
        seed_source(env)
        yield env
    finally:
        problems = hosts.down()
        assert not problems, problems


def seed_source(env: Env) -> None:
    """Host a's data: a tree with nested folders, a symlink, a hard link, odd modes, a foreign owner, a binary file
    and an empty folder; a SQLite file in WAL mode; the writer started."""
    env.run("a", f"""set -e
mkdir -p {UPLOADS}/live {UPLOADS}/img/2026 {UPLOADS}/empty {os.path.dirname(NOTES)}
for i in $(seq 1 40); do head -c $((i * 97)) /dev/urandom > {UPLOADS}/img/2026/p$i.bin; done
echo original > {UPLOADS}/img/a.txt
ln {UPLOADS}/img/a.txt {UPLOADS}/img/a-hardlink.txt
ln -s img/a.txt {UPLOADS}/latest
ln -s /nowhere/dangling {UPLOADS}/dangling
echo secret > {UPLOADS}/private.txt && chmod 0640 {UPLOADS}/private.txt && chown 1234:2345 {UPLOADS}/private.txt
chmod 0750 {UPLOADS}/img && chown 1234:1234 {UPLOADS}/img/2026
sqlite3 {NOTES} "PRAGMA journal_mode=WAL; CREATE TABLE notes(id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT);
  CREATE TABLE tags(note INTEGER, tag TEXT); CREATE INDEX tags_note ON tags(note);
  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
  INSERT INTO notes(body) SELECT 'note ' || i || ' ' || hex(randomblob(40)) FROM n;
  INSERT INTO tags SELECT id, 't' || (id % 7) FROM notes;" >/dev/null
chown 1234:1234 {NOTES} && chmod 0660 {NOTES}
""")
    (env.dir / "writer.py").write_text(WRITER)
    env.hosts["a"].run(f"cat > /srv/writer.py <<'EOF'\n{WRITER}\nEOF\n{START}")


FIND = (r"cd {p} && find . -printf '%y %m %U:%G %n %p -> %l\n' | grep -v '^. .* ./.liferaft' | sort && "
        r"find . -type f -print0 | sort -z | xargs -0 -r sha256sum")


def tree(env: Env, host: str, path: str = UPLOADS) -> str:
    """Every entry's type, mode, owner, link count and symlink target, then every file's sha256 (not mtimes)."""
    return env.run(host, FIND.format(p=path))


def notes(env: Env, host: str) -> list[str]:
    return env.run(host, f"sqlite3 {NOTES} 'PRAGMA integrity_check' 'SELECT count(*), max(id), "
                         f"sum(length(body)) FROM notes' 'SELECT count(*) FROM tags' "
                         f"\"SELECT seq FROM sqlite_sequence WHERE name = 'notes'\"").split()


def flip_byte(path: str, offset: int) -> str:
    """A command that inverts every bit of one byte of a file, size kept: the content surely changes (writing a fixed
    byte over random data leaves it as it was once in 256 runs); run twice, the file is back as it was."""
    return ("python3 -c 'import sys; f = open(sys.argv[1], \"r+b\"); o = int(sys.argv[2]); f.seek(o); "
            "b = f.read(1)[0]; f.seek(o); f.write(bytes([b ^ 255]))' " f"{path} {offset}")


def writer_alive(env: Env) -> bool:
    out = env.hosts["a"].run(f"start-stop-daemon --status --pidfile {WRITER_PID}", check=False)
    return out.returncode == 0


def target_of(env: Env, run: str) -> str:
    shown = env.show(run)
    alloc = next(s for s in shown["steps"] if s["step"] == "allocate")
    return next(n for n, h in env.hosts.items() if h.address == alloc["result"]["address"])


def test_plan_observes_the_files_read_only(env: Env) -> None:
    """The plan measures both datasets at host a without writing there (the tree's and the file's state equal
    before and after), and places the kinds' steps."""
    env.run("a", f"start-stop-daemon --stop --quiet --oknodo --retry 5 --pidfile {WRITER_PID}")
    try:
        before = tree(env, "a", "/srv/app")
        out = env.cli("plan", "--to", "alt-b", "--json")
        assert out.returncode == 0, out.stderr[-3000:]
        assert tree(env, "a", "/srv/app") == before
    finally:
        env.run("a", START)
    plan = json.loads(out.stdout)
    ids = [s["id"] for s in plan["steps"]]
    assert {"copy-uploads", "snapshot-notes", "freeze", "verify-data", "files-release"} <= set(ids)
    assert plan["bytes_to_move"] > 80_000


def test_replicate_keeps_a_standby_with_lag_then_a_cold_failover_checks_and_uses_it(env: Env) -> None:
    """`replicate` copies both datasets to the standby host each round and reports their lag; with the source host
    cut off, a cold failover checks the standby's copies against the last round's manifest and digest (a changed
    byte there stops it before DNS, naming the file) and then uses them: equal to the source as of the last round."""
    out = env.cli("replicate", "--to", "alt-b", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    first = json.loads(out.stdout)
    env.run("a", STOP)  # the last round sees a source at rest, so the test can compare it whole afterwards
    out = env.cli("replicate", "--to", "alt-b", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    status = json.loads(env.cli("replicate", "--to", "alt-b", "--status", "--json").stdout)
    text = json.dumps(status)
    assert "uploads" in text and "notes" in text and "lag_seconds" in text, text[:2000]
    for group, key in (("folders", "uploads"), ("sqlite files", "notes")):
        lag = status[group][key]
        assert lag["ok"] and lag["lag_seconds"] >= 0 and lag["lag_bytes"] is not None, lag
    standby = next(n for n in ("b", "c") if env.hosts[n].run(f"test -d {UPLOADS}", check=False).returncode == 0)
    src_tree, src_notes = tree(env, "a"), notes(env, "a")
    assert tree(env, standby) == src_tree and notes(env, standby) == src_notes
    assert first != status

    env.hosts["a"].cut()
    try:
        env.run(standby, flip_byte(f"{UPLOADS}/img/2026/p3.bin", 50))
        out = env.cli("failover", "--to", "alt-b", "--mode", "cold", "--yes", "--json", "--source-timeout", "2")
        assert out.returncode != 0
        assert "folder uploads" in out.stderr and "img/2026/p3.bin" in out.stderr, out.stderr[-3000:]
        assert "DNS was not touched" in out.stderr
        run = env.last_run()
        env.run(standby, flip_byte(f"{UPLOADS}/img/2026/p3.bin", 50))  # back as it was
        out = env.cli("resume", run, "--json")
        assert out.returncode == 0, out.stderr[-3000:]
        assert tree(env, standby) == src_tree and notes(env, standby) == src_notes
    finally:
        env.hosts["a"].heal()
    out = env.cli("rollback", run, "--yes")
    assert out.returncode == 0, out.stderr[-3000:]
    out = env.cli("replicate", "--to", "alt-b", "--stop", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "liferaft-push" not in env.run(standby, "cat ~/.ssh/authorized_keys")
    env.run("a", START)


def test_drill_cuts_without_freezing_verifies_as_of_the_cut_and_tears_down(env: Env) -> None:
    """A drill with the writer running: the copies cut at an instant, the writer never stopped, the target checked
    as of the cut (later files and rows are notes), then torn down: no copied file and no push key left there."""
    assert writer_alive(env)
    out = env.cli("drill", "--to", "alt-b", "--json", "--report", str(env.dir / "reports"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert writer_alive(env)  # a drill never freezes the source
    report = json.loads(out.stdout)
    text = json.dumps(report)
    assert "folder uploads files" in text and "sqlite file notes tables" in text, text[:3000]
    assert "folder uploads: " in text and "path(s) changed at the source after the cut" in text, text[-3000:]
    assert "sqlite file notes: table notes: +" in text and "rows, content changed at the source after the cut" in text
    run = env.last_run()
    tgt = target_of(env, run)
    assert env.run(tgt, f"ls -d {UPLOADS} {NOTES} {NOTES}-wal 2>/dev/null | wc -l").strip() == "0"
    assert "liferaft-push" not in env.run(tgt, "cat ~/.ssh/authorized_keys")


def variant(env: Env, name: str, data: str) -> str:
    """A stack file like the module's with another `data:` section."""
    text = (env.dir / "liferaft.yaml").read_text()
    (env.dir / name).write_text(text[:text.index("data:\n")] + data)
    return name


def test_bad_input_stops_before_dns_naming_the_dataset_and_the_fix(env: Env) -> None:
    """A path the source host does not have stops the plan; a target disk too small stops the copy before
    anything else happens, naming the dataset, the free space and the fix; the source is left as it was."""
    missing = variant(env, "missing.yaml", "data:\n  directories:\n    ghost: {path: /srv/app/nothere}\n"
                                           "  sqlite:\n    lost: {path: /srv/app/data/lost.db}\n")
    out = env.cli("plan", "--to", "alt-b", stack=missing)
    assert out.returncode != 0
    assert "folder ghost: /srv/app/nothere is not on the source host a" in out.stderr, out.stderr[-2000:]
    assert "data.directories.ghost.path" in out.stderr
    out = env.cli("failover", "--to", "alt-b", "--yes", stack=missing)
    assert out.returncode != 0 and "/srv/app/nothere is not on the source host" in out.stderr

    full = variant(env, "full.yaml", "data:\n  directories:\n    big: {path: /srv/big}\n")
    env.run("a", "mkdir -p /srv/big && head -c 4000000 /dev/urandom > /srv/big/blob")
    for h in ("b", "c"):
        env.run(h, "mkdir -p /srv/big && mount -t tmpfs -o size=1m tmpfs /srv/big")
    try:
        out = env.cli("failover", "--to", "alt-b", "--yes", "--json", stack=full)
        assert out.returncode != 0
        assert "folder big: the target host" in out.stderr and "ran out of space" in out.stderr, out.stderr[-3000:]
        assert "DNS was not touched" in out.stderr and "free space at /srv/big" in out.stderr
    finally:
        for h in ("b", "c"):
            env.run(h, "umount /srv/big; rmdir /srv/big")
    assert env.run("a", "stat -c %s /srv/big/blob").strip() == "4000000"
    # The fix made (space at the target): the same run resumes and completes. This stack names no writers: the
    # freeze's final pass runs with the source writable, and the gate checks as of that pass.
    run = env.last_run()
    out = env.cli("resume", run, "--json", stack=full)
    assert out.returncode == 0, out.stderr[-3000:]
    tgt = target_of(env, run)
    assert tree(env, tgt, "/srv/big") == tree(env, "a", "/srv/big")
    assert env.cli("rollback", run, "--yes", stack=full).returncode == 0
    env.run("a", "rm -rf /srv/big")
    env.run(tgt, "rm -rf /srv/big")


def test_live_failover_keeps_every_file_and_row_and_the_gate_catches_a_missing_file_row_and_byte(env: Env) -> None:
    """With the writer adding files and rows: a live failover stopped before the gate; at the target a file
    deleted, one byte changed (same size) and a row deleted: the gate fails naming all three, DNS untouched; the
    rollback starts the writer again; a second failover then completes with both hosts equal by sha256, owners,
    modes, symlinks and hard links kept, and the SQLite file intact with every row."""
    assert writer_alive(env)
    out = env.cli("failover", "--to", "alt-b", "--yes", "--json", "--stop-before", "verify-data")
    assert out.returncode == 0, out.stderr[-3000:]
    run = env.last_run()
    assert not writer_alive(env)  # the freeze stopped it
    tgt = target_of(env, run)
    env.run(tgt, f"rm {UPLOADS}/img/2026/p7.bin && {flip_byte(f'{UPLOADS}/img/2026/p9.bin', 100)} "
                 f"&& sqlite3 {NOTES} 'DELETE FROM notes WHERE id = 1500'")
    out = env.cli("resume", run, "--json")
    assert out.returncode != 0
    assert "DNS was not touched" in out.stderr
    assert "folder uploads: missing at the target: img/2026/p7.bin" in out.stderr, out.stderr[-3000:]
    assert "folder uploads: differs (sha256): img/2026/p9.bin" in out.stderr
    assert "sqlite file notes: table notes: " in out.stderr and " rows at the source" in out.stderr

    out = env.cli("rollback", run, "--yes")
    assert out.returncode == 0, out.stderr[-3000:]
    assert writer_alive(env)  # unfreeze ran writers.start
    time.sleep(1.0)  # more files and rows while the next copy runs

    out = env.cli("failover", "--to", "alt-b", "--yes", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    run = env.last_run()
    assert not writer_alive(env)
    tgt = target_of(env, run)
    src_tree, tgt_tree = tree(env, "a"), tree(env, tgt)
    assert src_tree == tgt_tree
    assert len(src_tree.splitlines()) > 150  # the writer's files are there
    assert "l 777 0:0 1 ./latest -> img/a.txt" in tgt_tree and "./dangling -> /nowhere/dangling" in tgt_tree
    assert "f 640 1234:2345 1 ./private.txt" in tgt_tree and "d 750 0:0" in tgt_tree
    assert "f 644 0:0 2 ./img/a-hardlink.txt" in tgt_tree
    inodes = env.run(tgt, f"stat -c %i {UPLOADS}/img/a.txt {UPLOADS}/img/a-hardlink.txt").split()
    assert inodes[0] == inodes[1]  # one file, two names
    assert notes(env, tgt) == notes(env, "a")
    assert notes(env, tgt)[0] == "ok" and int(notes(env, tgt)[1].split("|")[0]) > 2000
    assert env.run(tgt, f"stat -c '%u:%g %a' {NOTES}").strip() == "1234:1234 660"
    shown = env.show(run)
    gate = next(s for s in shown["steps"] if s["step"] == "verify-data")
    checked = gate["result"]["checked"]
    assert checked["folder uploads files"] > 100 and checked["sqlite file notes tables"] >= 2
    # released: the push key is gone at both ends
    assert "liferaft-push" not in env.run(tgt, "cat ~/.ssh/authorized_keys")
    assert env.run("a", "ls .liferaft 2>/dev/null | wc -l").strip() == "0"
