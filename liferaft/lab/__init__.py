"""The local lab: real provider servers, network-namespace hosts and fault proxies, for tests, benchmarks and people.

Public surface: `LabHosts` / `LabHost` (hosts only) and `Lab` (the whole lab, driven by `liferaft lab`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liferaft.lab.hosts import (
    LabHost,
    LabHosts,
    LabUnavailable,
    check_lab_possible,
    lab_resources,
    sweep_stale,
)

if TYPE_CHECKING:
    from liferaft.lab.core import Lab

__all__ = ["Lab", "LabHost", "LabHosts", "LabUnavailable", "check_lab_possible", "lab_resources", "sweep_stale"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from liferaft.lab.core import Lab

        return Lab
    raise AttributeError(name)
