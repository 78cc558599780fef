"""Unit tests of the movers' pure parts: manifest durability, change detection, reports, secrets handling."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.movers.manifest import Manifest, new_entry
from liferaft.movers.objects import is_current
from liferaft.movers.pg_conn import PgConn, tool_env
from liferaft.movers.pg_verify import SequenceCheck, TableCheck, VerifyReport, schema_diff
from liferaft.providers.base import ObjectInfo


def test_manifest_rows_survive_a_killed_writer(tmp_path: Path) -> None:
    """Each record is committed at once: a process killed right after recording leaves the row behind."""
    code = (
        "import os, signal, sys\n"
        "from liferaft.movers.manifest import Manifest, new_entry\n"
        f"m = Manifest({str(tmp_path / 'm.sqlite')!r}, 'a -> b')\n"
        "for i in range(5):\n"
        "    m.record(new_entry(f'k{i}', i, 's', 't', 'e', 'f'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], check=False)
    assert proc.returncode == -9
    with Manifest(tmp_path / "m.sqlite", "a -> b") as m:
        assert sorted(m.load()) == [f"k{i}" for i in range(5)]
    assert stat.S_IMODE(os.stat(tmp_path / "m.sqlite").st_mode) == 0o600


def test_manifest_pairs_are_separate(tmp_path: Path) -> None:
    """Rows of one bucket pair never count for another."""
    with Manifest(tmp_path / "m.sqlite", "a -> b") as m:
        m.record(new_entry("k", 1, "s", "t", None, None))
    with Manifest(tmp_path / "m.sqlite", "a -> c") as m:
        assert m.load() == {}


def _entry(size: int = 10, src_etag: str | None = "e1", tgt_etag: str | None = "t1"):  # type: ignore[no-untyped-def]
    return new_entry("k", size, "a" * 64, "a" * 64, src_etag, tgt_etag)


@pytest.mark.parametrize(("src", "tgt", "entry", "current"), [
    (ObjectInfo("k", 10, etag="e1"), ObjectInfo("k", 10, etag="t1"), _entry(), True),
    (ObjectInfo("k", 10, etag="e1"), None, _entry(), False),  # gone at the target
    (ObjectInfo("k", 10, etag="e1"), ObjectInfo("k", 10, etag="t1"), None, False),  # never copied by us
    (ObjectInfo("k", 11, etag="e1"), ObjectInfo("k", 10, etag="t1"), _entry(), False),  # size changed
    (ObjectInfo("k", 10, etag="e2"), ObjectInfo("k", 10, etag="t1"), _entry(), False),  # rewritten at the source
    (ObjectInfo("k", 10, etag="e1"), ObjectInfo("k", 10, etag="t2"), _entry(), False),  # rewritten at the target
    (ObjectInfo("k", 10, sha256="b" * 64), ObjectInfo("k", 10), _entry(src_etag=None, tgt_etag=None), False),
    (ObjectInfo("k", 10, sha256="a" * 64), ObjectInfo("k", 10, sha256="a" * 64),
     _entry(src_etag=None, tgt_etag=None), True),
])
def test_is_current(src: ObjectInfo, tgt: ObjectInfo | None, entry, current: bool) -> None:  # type: ignore[no-untyped-def]
    """An object is skipped only when the manifest recorded it and neither side moved since."""
    assert is_current(src, tgt, entry) is current


def test_verify_report_names_tables_and_sequences() -> None:
    """Problems name the table and say what differs."""
    r = VerifyReport("s", "t", (TableCheck("public.a", 3, 2, "1", "1"), TableCheck("public.b", 2, 2, "1", "2"),
                                TableCheck("public.c", 1, None, "1", None)),
                     (SequenceCheck("public.s", 10, 9), SequenceCheck("public.u", None, None)))
    assert not r.ok and r.differing_tables == ["public.a", "public.b", "public.c"]
    assert r.problems() == [
        "table public.a: 3 rows at the source, 2 at the target",
        "table public.b: same row count (2) but the content hash differs",
        "table public.c missing at the target",
        "sequence public.s: target last value 9 is behind the source's 10",
    ]


def test_schema_diff_names_kind_and_object() -> None:
    src = {"column": {("public.t", "a", "integer", True, "")}, "constraint": set(),
           "index": {("public.t", "t_pkey", "CREATE UNIQUE INDEX t_pkey ON public.t USING btree (a)")}}
    tgt = {"column": {("public.t", "a", "bigint", True, "")}, "constraint": set(), "index": set()}
    assert schema_diff(src, tgt) == [
        "schema: column public.t.a differs: source ('integer', True, ''), target ('bigint', True, '')",
        "schema: index t_pkey on public.t missing at the target",
    ]


def test_passwords_go_to_a_private_passfile_never_to_argv() -> None:
    """PgConn hides the password; tool_env writes a 0600 PGPASSFILE and removes it afterwards."""
    c = PgConn("127.0.0.1", 5432, "db", "u", "s3cr:et")
    assert "s3cr" not in repr(c) and "s3cr" not in c.describe()
    with tool_env(c) as env:
        path = env["PGPASSFILE"]
        assert "PGPASSWORD" not in env
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert Path(path).read_text() == "127.0.0.1:5432:*:u:s3cr\\:et\n"
    assert not os.path.exists(path)


def test_postgres_progress_goes_to_callables_and_event_buses() -> None:
    """emit() feeds a plain callback or a liferaft.events.Events; a failing observer never breaks the mover."""
    from liferaft.events import Events
    from liferaft.movers.pg_conn import emit

    got: list[tuple[str, dict[str, object]]] = []
    emit(lambda e, d: got.append((e, d)), "pg.dump.done", seconds=1.5)
    bus_events: list[object] = []
    emit(Events(bus_events.append), "pg.cutover.done", freeze_s=0.3)
    emit(lambda e, d: 1 / 0, "pg.dump.done")  # must not raise
    assert got == [("pg.dump.done", {"seconds": 1.5})]
    ev = bus_events[0]
    assert ev.kind == "pg.cutover.done" and ev.data == {"freeze_s": 0.3}  # type: ignore[attr-defined]
