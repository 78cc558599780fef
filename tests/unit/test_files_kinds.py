"""The file kinds' pure parts: the stack model's entries, the manifest script (run here through a local shell) and
its comparison, the SQLite digest and its comparison, and the rsync command line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from liferaft.movers import files
from liferaft.stack.model import Data


def local(command: str, stdin: str | None = None, timeout: float = 60.0) -> str:
    r = subprocess.run(["bash", "-c", command], input=stdin or "", capture_output=True, text=True, timeout=timeout,
                       check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return r.stdout


def test_the_stack_model_takes_folders_and_sqlite_files_and_refuses_bad_paths() -> None:
    d = Data.model_validate({"directories": {"uploads": {"path": "/srv/app/uploads",
                                                         "writers": {"stop": "systemctl stop app"}}},
                             "sqlite": {"notes": {"path": "/var/lib/app/notes.db"}}})
    assert d.directories["uploads"].name == "/srv/app/uploads" and d.sqlite["notes"].writers is None
    for bad in ("relative/path", "/srv/../etc", "/srv/app/", "/srv//app", "/etc", "/", "/srv/a b", "/srv/$(x)"):
        with pytest.raises(ValidationError):
            Data.model_validate({"directories": {"x": {"path": bad}}})
    with pytest.raises(ValidationError):
        Data.model_validate({"sqlite": {"x": {"path": "/srv/a.db", "writers": {"stop": "a\nb"}}}})
    with pytest.raises(ValidationError):
        Data.model_validate({"sqlite": {"x": {"path": "/srv/a.db", "unknown": 1}}})


def _tree(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("a\n")
    os.link(root / "d" / "a.txt", root / "d" / "b.txt")
    (root / "l").symlink_to("d/a.txt")
    (root / "c.bin").write_bytes(os.urandom(3000))
    os.chmod(root / "c.bin", 0o640)


def test_the_manifest_sees_content_modes_links_and_hard_links_never_mtimes(tmp_path: Path) -> None:
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    _tree(src)
    _tree(tgt)
    (tgt / "c.bin").write_bytes((src / "c.bin").read_bytes())
    a, b = files.manifest(local, str(src)), files.manifest(local, str(tgt))
    assert a.files == 3 and set(a.entries) == {".", "d", "d/a.txt", "d/b.txt", "l", "c.bin"}
    assert a.entries["d/b.txt"].link == "d/a.txt" and a.entries["l"].value == "d/a.txt"
    os.utime(tgt / "c.bin", (1, 1))  # an mtime alone is no difference
    assert files.compare(a, b).ok and a.digest() == b.digest()

    data = bytearray((tgt / "c.bin").read_bytes())
    data[100] ^= 1  # one byte, same size
    (tgt / "c.bin").write_bytes(bytes(data))
    os.chmod(tgt / "c.bin", 0o600)
    (tgt / "d" / "b.txt").unlink()
    (tgt / "d" / "b.txt").write_text("a\n")  # same content, no longer a hard link
    (tgt / "l").unlink()
    (tgt / "l").symlink_to("d/b.txt")
    (tgt / "extra").write_text("x")
    (src / "gone").write_text("y")
    diff = files.compare(files.manifest(local, str(src)), files.manifest(local, str(tgt)))
    assert diff.missing == ("gone",) and diff.extra == ("extra",) and diff.content == ("c.bin",)
    text = "\n".join(diff.problems())
    assert "mode 640 -> 600: c.bin" in text and "symlink target d/a.txt -> d/b.txt: l" in text
    assert "hard links d/a.txt -> none: d/a.txt" in text and diff.count() == 7
    with pytest.raises(files.PathMissing):
        files.manifest(local, str(tmp_path / "nothere"))


def test_the_manifest_hashes_many_files_in_several_processes_and_catches_a_changed_byte(tmp_path: Path) -> None:
    """Past 256 files the script hashes in forked processes (shares balanced by bytes): every file's sha256 is the
    one hashlib computes here, whichever process read it, odd names included; one changed byte is named."""
    import hashlib

    root = tmp_path / "many"
    want: dict[str, str] = {}
    for i in range(700):
        p = root / f"d{i % 7}" / (f"f{i}" if i % 100 else f"odd\nname {i}")
        p.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(i * 53 if i != 5 else 3 << 20)
        p.write_bytes(data)
        want[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    (root / files.PARTIAL_DIR).mkdir()
    (root / files.PARTIAL_DIR / "half").write_bytes(b"x")  # rsync's partial files: left out
    m = files.manifest(local, str(root))
    assert {k: e.value for k, e in m.entries.items() if e.type == "f"} == want
    assert m.files == 700 and files.PARTIAL_DIR not in m.entries
    p = root / "d3" / "f3"
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    assert files.compare(m, files.manifest(local, str(root))).content == ("d3/f3",)


def test_the_sqlite_digest_catches_a_row_a_changed_value_and_a_broken_schema(tmp_path: Path) -> None:
    def make(p: Path) -> None:
        c = sqlite3.connect(p)
        c.executescript("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE u(x);"
                        "INSERT INTO t(v) VALUES ('a'), ('b'), ('c'); INSERT INTO u VALUES (1), (2);")
        c.commit()
        c.close()

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    make(a)
    files.sqlite_snapshot(local, str(a), str(b))  # the online backup API
    da, db = files.sqlite_digest(local, str(a)), files.sqlite_digest(local, str(b), integrity=True)
    assert db["integrity"] == ["ok"] and files.sqlite_compare(da, db) == ([], ["t", "u"])
    c = sqlite3.connect(b)
    c.execute("UPDATE t SET v = 'B' WHERE id = 2")
    c.execute("DELETE FROM u WHERE x = 2")
    c.commit()
    c.close()
    problems, _ = files.sqlite_compare(da, files.sqlite_digest(local, str(b)))
    assert problems == ["table t: content differs (hash)", "table u: 2 rows at the source, 1 at the target"]
    c = sqlite3.connect(b)
    c.execute("CREATE TABLE w(y)")
    c.commit()
    c.close()
    problems, _ = files.sqlite_compare(da, files.sqlite_digest(local, str(b)))
    assert "schema differs" in problems and "table w only at the target" in problems


def test_push_runs_rsync_keeping_everything_with_the_pinned_host_key_and_reports_a_full_disk() -> None:
    seen: list[str] = []

    def shell(command: str, stdin: str | None = None, timeout: float = 0) -> str:
        seen.append(command)
        return "Number of regular files transferred: 3\nTotal transferred file size: 1,234 bytes\n@rc=0\n"

    acc = files.PushAccess("liferaft-push-x", ".liferaft/k", ".liferaft/kh", "10.0.0.2", 2222, "root")
    out = files.push(shell, acc, "/srv/u", "/srv/u")
    assert out["files_copied"] == 3 and out["bytes_copied"] == 1234
    cmd = seen[0]
    assert "rsync -aH --numeric-ids" in cmd and "--delete" in cmd and "StrictHostKeyChecking=yes" in cmd
    assert "UserKnownHostsFile=.liferaft/kh" in cmd and "-p 2222" in cmd and "root@10.0.0.2:/srv/u/" in cmd
    assert "StrictHostKeyChecking=no" not in cmd
    files.push(shell, acc, "/srv/u", "/srv/u", acls_xattrs=True)
    assert "rsync -aHAX --numeric-ids" in seen[1]

    def full(command: str, stdin: str | None = None, timeout: float = 0) -> Any:
        return "rsync: write failed on \"/srv/u/x\": No space left on device (28)\n@rc=11\n"

    with pytest.raises(files.DiskFull):
        files.push(full, acc, "/srv/u", "/srv/u")


def test_the_fence_makes_the_files_read_only_and_its_undo_puts_every_mode_back(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence script of a stack with a folder and a SQLite file written by one program, run here through a local
    shell: the writers stopped once, every file and folder of the tree and the SQLite file (and its -wal) without a
    write bit, the modes recorded once (a second fence keeps the first record); the undo puts each mode back
    exactly, then starts the writers once -- after both kinds are writable (a writer started between the two
    died on the SQLite file still read-only: CI's test_fence_kinds_lab found it)."""
    from liferaft.datasets import _files as F
    from liferaft.datasets.base import Dataset
    from liferaft.datasets.directory import Directory
    from liferaft.standby import fence as fence_mod

    monkeypatch.setattr(F, "FENCE_DIR", str(tmp_path / "fence"))
    tree, db, marker = tmp_path / "uploads", tmp_path / "data" / "notes.db", tmp_path / "writers-stopped"
    (tree / "img").mkdir(parents=True)
    (tree / "img" / "a.bin").write_bytes(b"a")
    (tree / "private.txt").write_text("p")
    (tree / "already-read-only.txt").write_text("r")
    (tree / "latest").symlink_to("img/a.bin")
    for path, mode in ((tree / "img", 0o750), (tree / "private.txt", 0o640), (tree / "already-read-only.txt", 0o444)):
        path.chmod(mode)
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE t(x)").connection.commit()
    (tmp_path / "data" / "notes.db-wal").write_bytes(b"")
    # the writer starts only where both the folder and the database are writable again (as the app would)
    writable = f"python3 -c 'import os, sys; sys.exit(any(os.stat(p).st_mode & 0o200 == 0 for p in sys.argv[1:]))' {tree} {db}"
    writers = {"stop": f"touch {marker}", "start": f"{writable} && rm {marker}"}
    data = Data.model_validate({"directories": {"uploads": {"path": str(tree), "writers": writers}},
                                "sqlite": {"notes": {"path": str(db), "writers": writers}}})
    dirs = [Dataset("directory", "uploads", data.directories["uploads"])]
    dbs = [Dataset("sqlite", "notes", data.sqlite["notes"])]
    monkeypatch.setattr(fence_mod, "datasets", lambda stack: dirs + dbs)
    monkeypatch.setattr(fence_mod, "workloads", lambda stack: [])

    def listing() -> dict[str, int]:
        paths = [tree, *tree.rglob("*"), db, db.with_name("notes.db-wal")]
        return {str(p): os.lstat(p).st_mode & 0o7777 for p in paths if not p.is_symlink()}

    before = listing()

    def run(lines: list[str]) -> list[str]:
        return [ln for ln in local("\n".join(lines)).splitlines() if ln.startswith("liferaft-fence: ")]

    out = run([fence_mod.fence_script(None)])  # type: ignore[arg-type]
    assert out == ["liferaft-fence: done: writers of folder uploads stopped",
                   "liferaft-fence: done: folder uploads read-only (modes recorded): 4 entries",
                   "liferaft-fence: done: sqlite file notes read-only (modes recorded): 2 entries"], out
    assert marker.exists()
    fenced = listing()
    assert all(mode & 0o222 == 0 for mode in fenced.values()), fenced
    assert fenced[str(tree / "img")] == 0o550 and fenced[str(tree / "private.txt")] == 0o440
    record = tmp_path / "fence" / "directory-uploads.json"
    recorded = record.read_text()
    assert run(Directory().fence_lines(None, dirs))[0].endswith(": 0 entries")  # type: ignore[arg-type]
    assert record.read_text() == recorded  # the second fence never records the modes the first one set

    out = run([fence_mod.fence_script(None, undo=True)])  # type: ignore[arg-type]
    assert out == ["liferaft-fence: done: folder uploads writable again (modes put back): 4 entries",
                   "liferaft-fence: done: sqlite file notes writable again (modes put back): 2 entries",
                   "liferaft-fence: done: writers of folder uploads started"], out
    assert listing() == before and not marker.exists() and not record.exists()
