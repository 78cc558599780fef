"""Standby readiness: keep an alternate site's copy of the data warm (`liferaft replicate`), measure what a cut
would lose, and fail over cold from that copy when the source no longer answers (`liferaft failover --mode cold`).
"""

from __future__ import annotations

from liferaft.readiness.bounded import DEFAULT_SOURCE_TIMEOUT, bounded
from liferaft.readiness.state import load_standby, load_state, prometheus_text, state_path

__all__ = ["DEFAULT_SOURCE_TIMEOUT", "bounded", "load_standby", "load_state", "prometheus_text", "state_path"]
