"""`replicate --watch` must not grow with the number of rounds (the soak benchmark, bench/bench_soak.py, measured
~1.5 MiB of RSS per 1,000 rounds: `liferaft.standby.keeper.watch` keeps every round's summary in the list it
returns; now only the last is kept)."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

from liferaft.standby.keeper import watch


class _StubReplicator:
    """Rounds shaped like the lab's summaries (fresh numbers each round, as a real round's are)."""

    def round(self) -> dict[str, Any]:
        def entry() -> dict[str, Any]:
            return {"method": "logical", "lag_bytes": random.randint(10**6, 10**7), "lag_seconds": random.random(),
                    "ok": True, "error": None, "last_sync_at": random.random() * 1e9}

        return {"target": "alt-b", "source": "primary", "standby_host": "microblog-alt-b",
                "databases": {"blog": entry()}, "buckets": {"images": entry()},
                "rpo_exposure_s": random.random(), "source_reachable": True}


def test_replicate_watch_memory_does_not_grow_with_rounds() -> None:
    traced: dict[int, int] = {}
    seen = [0]

    def on_round(_summary: dict[str, Any]) -> None:
        seen[0] += 1
        if seen[0] in (100, 2100):
            traced[seen[0]] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        watch(_StubReplicator(), interval=0.0, count=2100, on_round=on_round)  # type: ignore[arg-type]
    finally:
        tracemalloc.stop()
    growth = traced[2100] - traced[100]
    assert growth < 200 * 1024, f"{growth / 2000:.0f} bytes kept per round ({growth / 1024:.0f} KiB over 2,000 rounds)"
