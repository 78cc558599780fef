"""Standby keeping: keep an alternate site's copy of the data warm (`liferaft replicate`, `keeper`; its set-up a
journaled run planned in `setup`), measure what a cut would lose, lower DNS TTLs ahead of time (`ttl`). Each dataset
kind keeps its copy through the standby contract (`liferaft.datasets.base.StandbyCopy`). The cold failover from that
copy is planned by
`liferaft.failover.cold`; the standby's record lives in `liferaft.engine.standby_state`.
"""

from __future__ import annotations

from liferaft.engine.standby_state import load_standby, load_state, state_path
from liferaft.movers.bounded import DEFAULT_SOURCE_TIMEOUT, bounded
from liferaft.standby.exposure import prometheus_text

__all__ = ["DEFAULT_SOURCE_TIMEOUT", "bounded", "load_standby", "load_state", "prometheus_text", "state_path"]
