"""A failback keeps the old primary's own copy of every dataset kind aside before a standby is made over it
(`set_aside_lines`): the names, the file kinds' lines run here through a local shell (the copy complete, read-only,
made once, left by the teardown), and where the server kinds keep theirs (outside what their teardown removes)."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from liferaft.datasets._util import SET_ASIDE_ROOT, set_aside_dir, set_aside_name
from liferaft.datasets.base import Dataset
from tests.unit.test_readiness import example_stack  # noqa: F401  (fixture)


def sh(lines: list[str]) -> list[str]:
    r = subprocess.run(["sh", "-c", "set -u\n" + "\n".join(lines)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if ln.startswith("liferaft-fence: ")]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink()
            else os.readlink(p) if p.is_symlink() else "dir" for p in sorted(root.rglob("*"))}


def test_names_are_one_safe_path_component_per_stack_and_run() -> None:
    assert set_aside_name("before_20261203-1830-ab12") == "before_20261203-1830-ab12"
    assert set_aside_name("before_../x y") == "before_.._x_y" and "/" not in set_aside_name("a/b")
    assert set_aside_name("..") == "before_move"
    assert set_aside_dir("shop", "before_R1") == f"{SET_ASIDE_ROOT}/shop/before_R1"
    # no service root can be named so (a service name takes no '_'): a service's teardown never removes it
    assert SET_ASIDE_ROOT == "/var/lib/liferaft/set_aside"


def test_every_kind_that_fences_data_on_a_host_sets_it_aside() -> None:
    """Each kind whose old copy a failback's standby would overwrite answers `set_aside_lines` (objects are synced
    incrementally into the bucket as it is, and fence nothing)."""
    from liferaft.datasets.base import kinds

    names = {k.name for k in kinds() if callable(getattr(k, "set_aside_lines", None))}
    assert {"postgresql", "mysql", "redis", "directory", "sqlite"} <= names, names


def test_the_file_kinds_keep_a_read_only_copy_beside_the_path_once(tmp_path: Path) -> None:
    """Folder and SQLite file, fenced as a cold failover leaves them: the copy `<path>.before_<run>` holds every file
    byte for byte (a SQLite row still only in the -wal included), no write bit anywhere, the original untouched; a
    second run keeps it (no copy over it); the drill teardown's removal of the stack's paths leaves it; a path that
    is not there is nothing to keep."""
    from liferaft.datasets.directory import Directory
    from liferaft.datasets.sqlite import Sqlite
    from liferaft.stack.model import Data

    tree, db = tmp_path / "uploads", tmp_path / "data" / "notes.db"
    (tree / "img").mkdir(parents=True)
    (tree / "img" / "a.bin").write_bytes(os.urandom(5000))
    (tree / "private.txt").write_text("divergent write at the old primary")
    (tree / "latest").symlink_to("img/a.bin")
    (tree / "img").chmod(0o550)
    db.parent.mkdir()
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
    c.execute("INSERT INTO notes(body) VALUES ('written after the cut')")
    c.commit()  # the row is in notes.db-wal only while this connection stays open (no checkpoint)
    assert db.with_name("notes.db-wal").stat().st_size > 0
    data = Data.model_validate({"directories": {"uploads": {"path": str(tree)}}, "sqlite": {"notes": {"path": str(db)}}})
    dirs = [Dataset("directory", "uploads", data.directories["uploads"])]
    dbs = [Dataset("sqlite", "notes", data.sqlite["notes"])]
    stack: Any = SimpleNamespace(model=SimpleNamespace(name="fencestack"))
    before = tree_digest(tree)
    try:
        lines = Directory().set_aside_lines(stack, dirs, "before_R1") + Sqlite().set_aside_lines(stack, dbs, "before_R1")
        out = sh(lines)
        kept_tree, kept_db = tmp_path / "uploads.before_R1", tmp_path / "data" / "notes.db.before_R1"
        assert out == [f"liferaft-fence: done: folder uploads kept as {kept_tree} (a copy, read-only)",
                       f"liferaft-fence: done: sqlite file notes kept as {kept_db} (an online backup, read-only)"], out
        assert tree_digest(kept_tree) == before and tree_digest(tree) == before
        for p in (kept_tree, *kept_tree.rglob("*"), kept_db):
            assert p.is_symlink() or os.lstat(p).st_mode & 0o222 == 0, p
        assert os.stat(kept_tree / "img" / "a.bin").st_ino != os.stat(tree / "img" / "a.bin").st_ino  # not linked
        assert sqlite3.connect(f"file:{kept_db}?mode=ro", uri=True).execute(
            "SELECT body FROM notes").fetchall() == [("written after the cut",)]
        assert not list(tmp_path.rglob("*.partial"))

        # the standby's copy then replaces the old one (as rsync --delete and the SQLite install do): the kept copy
        # does not change, and a second set-aside run keeps it as it is
        c.close()
        (tree / "private.txt").write_text("the active site's content")
        os.remove(db)
        assert sh(lines) == out and tree_digest(kept_tree) == before
        # a drill's teardown there removes the stack's paths, never the copies beside them
        teardown = Directory().teardown_lines(stack, dirs)[:1] + Sqlite().teardown_lines(stack, dbs)[:1]
        assert all(".before_" not in line for line in teardown)
        sh(teardown)
        assert not tree.exists() and tree_digest(kept_tree) == before and kept_db.exists()
        # nothing at the path: nothing to keep (and no empty copy made)
        assert sh(Directory().set_aside_lines(stack, dirs, "before_R2")) == [
            f"liferaft-fence: done: folder uploads: nothing at {tree} to keep"]
        assert not (tmp_path / "uploads.before_R2").exists()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=False)


def _removed_paths(lines: list[str]) -> list[str]:
    return [w for line in lines for m in re.finditer(r"rm -(?:rf|f)(?: --)? ([^;\n]+)", line) for w in m.group(1).split()]


def test_mariadb_and_redis_keep_a_file_outside_what_their_teardown_removes() -> None:
    """MariaDB: a `mariadb-dump` of each database through the server's socket as root, Redis: the server's snapshot
    (`SAVE`, then the RDB copied), each 0400 under the set-aside folder of the stack and run, written under a
    temporary name renamed when complete, kept when already there; an ephemeral Redis (a cache) is not kept; no path
    a drill's teardown removes is above them, and the Redis password never lands on a command line."""
    from liferaft.datasets.mariadb import Mariadb
    from liferaft.datasets.redis_ import Redis

    stack: Any = SimpleNamespace(model=SimpleNamespace(name="shopstack"))
    my = [Dataset("mysql", "shop", SimpleNamespace(port=3306, name="shop"))]
    rd = [Dataset("redis", "queue", SimpleNamespace(port=6390, ephemeral=False)),
          Dataset("redis", "cache", SimpleNamespace(port=6391, ephemeral=True))]
    folder = f"{SET_ASIDE_ROOT}/shopstack/before_R1"
    my_lines = "\n".join(Mariadb().set_aside_lines(stack, my, "before_R1"))
    assert f"> {folder}/mysql-shop.sql.partial" in my_lines and "--single-transaction" in my_lines
    assert f"chmod 0400 {folder}/mysql-shop.sql.partial && mv -f {folder}/mysql-shop.sql.partial " \
           f"{folder}/mysql-shop.sql" in my_lines
    assert my_lines.startswith("s=; for c in /run/mysqld/liferaft-3306.sock") and f"if [ -s {folder}/mysql-shop.sql ]" \
        in my_lines and "--databases" not in my_lines  # no USE in the dump: it loads into any database
    rd_lines = "\n".join(Redis().set_aside_lines(stack, rd, "before_R1"))
    assert f"{folder}/redis-queue.rdb" in rd_lines and "6391" not in rd_lines and "cache" not in rd_lines
    assert "SAVE" in rd_lines and "REDISCLI_AUTH" in rd_lines and " -a " not in rd_lines
    assert f"chmod 0400 {folder}/redis-queue.rdb.partial" in rd_lines
    removed = _removed_paths(Mariadb().teardown_lines(stack, my) + Redis().teardown_lines(stack, rd))
    assert removed and all(not (folder + "/").startswith(p.rstrip("/") + "/") for p in removed), removed


def test_status_names_what_the_failback_set_aside(example_stack: Path, tmp_path: Path) -> None:  # noqa: F811
    """`liferaft status` prints the set-aside copies the fence record holds (`--json` has them in `fence`)."""
    import json
    import sys

    from liferaft.engine.active import record_active, update_fence

    state = tmp_path / "state"
    record_active(state, "microblog", site="alt-b", source="primary", run="R1", mode="cold",
                  hosts=[{"name": "b", "address": "10.213.7.12"}], source_host={"name": "a", "address": "10.0.0.1"})
    kept = ["database microblog kept as microblog_before_r1 (read-only)",
            "folder uploads kept as /srv/app/uploads.before_R1 (a copy, read-only)"]
    update_fence(state, "microblog", state="fenced", set_aside=kept)

    def status(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "liferaft", "--stack", str(example_stack), "--state-dir", str(state),
                            "status", *args], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout

    text = status()
    assert "its old copies, set aside there by the failback" in text and all(k in text for k in kept), text
    assert json.loads(status("--json"))["fence"]["set_aside"] == kept


def test_a_file_dataset_inside_a_folder_dataset_is_kept_within_the_folders_copy(tmp_path: Path) -> None:
    """A SQLite file inside a folder dataset's tree: a copy beside it would be inside the tree the standby's push
    (rsync --delete) makes equal to the active site's, so it is kept within the folder's copy, which holds it."""
    from liferaft.datasets.directory import Directory
    from liferaft.datasets.sqlite import Sqlite
    from liferaft.stack.model import Data

    app, db = tmp_path / "app", tmp_path / "app" / "data" / "notes.db"
    db.parent.mkdir(parents=True)
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE notes(body TEXT)")
    c.execute("INSERT INTO notes VALUES ('divergent')")
    c.commit()
    c.close()
    data = Data.model_validate({"directories": {"app": {"path": str(app)}}, "sqlite": {"notes": {"path": str(db)}}})
    stack: Any = SimpleNamespace(model=SimpleNamespace(name="s", data=data))
    dirs = [Dataset("directory", "app", data.directories["app"])]
    dbs = [Dataset("sqlite", "notes", data.sqlite["notes"])]
    try:
        out = sh(Directory().set_aside_lines(stack, dirs, "before_R1") + Sqlite().set_aside_lines(stack, dbs, "before_R1"))
        assert out == [f"liferaft-fence: done: folder app kept as {app}.before_R1 (a copy, read-only)",
                       f"liferaft-fence: done: sqlite file notes kept within the copy of folder app ({app}.before_R1)"]
        kept = tmp_path / "app.before_R1" / "data" / "notes.db"
        assert sqlite3.connect(f"file:{kept}?immutable=1", uri=True).execute("SELECT body FROM notes").fetchall() == [
            ("divergent",)]
        assert not (tmp_path / "app" / "data" / "notes.db.before_R1").exists()
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp_path)], check=False)
