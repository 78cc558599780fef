"""The object mover's cost is linear in the number of objects and its memory flat (issue 26 item 3): listings and the
manifest are joined in key order, a page at a time, never held whole. On libcloud's local driver (real files)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import ProviderError
from liferaft.movers import manifest as manifest_mod
from liferaft.movers import objects as objects_mod
from liferaft.movers.manifest import Manifest, new_entry
from liferaft.movers.objects import Endpoint, SyncOptions, _in_key_order, merge_listings, sync
from liferaft.providers.base import ObjectInfo
from liferaft.providers.libcloud_ import LibcloudAdapter


def _local(root: Path, name: str, bucket: str) -> Endpoint:
    objects = LibcloudAdapter(name, storage={"driver": "local", "path": str(root)}).objects
    objects.create_bucket(bucket)
    return Endpoint(name, objects, bucket)


def _fill(root: Path, bucket: str, keys: list[str], body: bytes = b"x") -> None:
    for key in keys:
        path = root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body + key.encode())


def test_manifest_rows_come_in_key_order_a_page_at_a_time(tmp_path: Path) -> None:
    """rows() returns every row of the pair in key order across pages, and rows recorded meanwhile (a sync
    records as it copies) neither break the walk nor keep a read open."""
    with Manifest(tmp_path / "m.sqlite", "a -> b") as m, Manifest(tmp_path / "m.sqlite", "a -> c") as other:
        keys = [f"k{(i * 7919) % 2500:05d}" for i in range(2500)]  # out of order
        for k in keys:
            m.record(new_entry(k, 1, "s", "t", None, None))
        other.record(new_entry("k00001x", 1, "s", "t", None, None))
        seen = []
        for i, e in enumerate(m.rows(page=300)):
            seen.append(e.key)
            if i == 10:
                m.record(new_entry("zz-late", 1, "s", "t", None, None))
        assert seen == sorted(keys) + ["zz-late"]


def test_a_listing_out_of_key_order_is_refused() -> None:
    """The join relies on key order: a listing that breaks it fails loudly (a wrong join could delete objects
    the source has), duplicates too."""
    ok = [ObjectInfo("p/a", 1), ObjectInfo("p/b", 1)]
    assert [k for k, _ in _in_key_order(ok, "src", "p/", "q/")] == ["q/a", "q/b"]
    for bad in ([ObjectInfo("b", 1), ObjectInfo("a", 1)], [ObjectInfo("a", 1), ObjectInfo("a", 1)]):
        with pytest.raises(ProviderError, match="not in key order"):
            list(_in_key_order(bad, "src"))


def test_local_listing_is_in_key_order_and_matches_libclouds(tmp_path: Path) -> None:
    """liferaft walks the local driver's directories itself (lazily, in key order: `a-b` < `a/b` < `a0`), with the
    same sizes and ETags as libcloud's own listing (which holds and sorts every object), prefixes included."""
    ep = _local(tmp_path, "disk", "b")
    keys = ["a/c/d", "é", "a0", "a-b", "b", "a/b", "z/y", "a/.lock/hidden"]
    _fill(tmp_path, "b", keys)
    mine = list(ep.objects.list_objects("b"))
    theirs = sorted(ep.objects.driver.iterate_container_objects(ep.objects._container("b")), key=lambda o: o.name)
    assert [o.key for o in mine] == ["a-b", "a/b", "a/c/d", "a0", "b", "z/y", "é"] == [o.name for o in theirs]
    assert mine == [ep.objects._to_info(o) for o in theirs]
    assert [o.key for o in ep.objects.list_objects("b", "a/")] == ["a/b", "a/c/d"]
    assert [o.key for o in ep.objects.list_objects("b", "a")] == ["a-b", "a/b", "a/c/d", "a0"]


def test_merge_listings_joins_both_sides_with_prefixes(tmp_path: Path) -> None:
    src, dst = _local(tmp_path / "s", "s", "b"), _local(tmp_path / "t", "t", "b")
    src = Endpoint("s", src.objects, "b", prefix="in/")
    dst = Endpoint("t", dst.objects, "b", prefix="out/")
    _fill(tmp_path / "s", "b", ["in/1", "in/2", "in/4", "other"])
    _fill(tmp_path / "t", "b", ["out/2", "out/3", "out/4", "zz"])
    got = [(k, s is not None, t is not None) for k, s, t in merge_listings(src, dst)]
    assert got == [("in/1", True, False), ("in/2", True, True), ("in/3", False, True), ("in/4", True, True)]


def test_sync_joins_correctly_across_manifest_pages_and_a_spilled_spool(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With manifest pages of 7 rows, listing batches of 5 and at most 4 objects to copy held in memory, a sync
    with delete copies all, a resync only what changed on either side, a no-change resync nothing."""
    monkeypatch.setattr(manifest_mod, "PAGE", 7)
    monkeypatch.setattr(objects_mod, "LISTING_BATCH", 5)
    monkeypatch.setattr(objects_mod, "SPOOL_IN_MEMORY", 4)
    src, dst = _local(tmp_path / "s", "s", "b"), _local(tmp_path / "t", "t", "b")
    keys = [f"d{i // 10}/o{i:03d}" for i in range(40)]
    _fill(tmp_path / "s", "b", keys)
    _fill(tmp_path / "t", "b", ["d0/extra", "zz/extra"])
    state = tmp_path / "state"
    r = sync(src, dst, state, SyncOptions(workers=4, delete=True))
    assert (r.copied, r.skipped, r.deleted, r.listed) == (40, 0, 2, 40)
    assert sorted(os.listdir(tmp_path / "t" / "b" / "d0")) == sorted(k.split("/")[1] for k in keys[:10])
    changed = [keys[3], keys[17], keys[39]]
    _fill(tmp_path / "s", "b", changed, body=b"changed ")  # new size and mtime at the source
    (tmp_path / "t" / "b" / keys[25]).unlink()  # gone at the target
    r = sync(src, dst, state, SyncOptions(workers=4, delete=True))
    assert r.copied_keys == tuple(sorted([*changed, keys[25]])) and r.skipped == 36
    r = sync(src, dst, state, SyncOptions(workers=4, delete=True, dry_run=True))
    assert (r.copied_keys, r.skipped) == ((), 40)
    for k in keys:
        assert (tmp_path / "t" / "b" / k).read_bytes() == (tmp_path / "s" / "b" / k).read_bytes()


def _peak_planning(tmp_path: Path, n: int) -> int:
    """Peak Python memory of a dry-run sync (both listings, the manifest, the plan) of n objects into an empty
    target, 100 objects per directory."""
    root = tmp_path / f"n{n}"
    src, dst = _local(root / "s", "s", "b"), _local(root / "t", "t", "b")
    _fill(root / "s", "b", [f"d{i // 100:03d}/o{i:05d}" for i in range(n)])
    tracemalloc.start()
    try:
        r: Any = sync(src, dst, root / "state", SyncOptions(dry_run=True, keys_limit=100))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.listed == n and len(r.copied_keys) == 100
    return peak


def test_planning_memory_is_flat_in_the_number_of_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten times the objects, about the same peak memory: nothing is held per object (listings, manifest, the
    list to copy, the keys kept for the result are all bounded). Held whole (before), 4,000 objects took 8.8x the
    memory of 400."""
    monkeypatch.setattr(objects_mod, "LISTING_BATCH", 50)
    monkeypatch.setattr(objects_mod, "SPOOL_IN_MEMORY", 100)
    small, large = _peak_planning(tmp_path, 300), _peak_planning(tmp_path, 3000)
    assert large < 1.5 * small, (small, large)
