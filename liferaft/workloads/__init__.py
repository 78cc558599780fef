"""Workload kinds: how a service runs at a site (an Ansible playbook today), a plug-in on the contract in `base`."""

from liferaft.workloads.base import Workload, WorkloadKind, kind_of

__all__ = ["Workload", "WorkloadKind", "kind_of", "workloads"]


def workloads(stack):  # type: ignore[no-untyped-def]  # re-exported lazily
    from liferaft.workloads.registry import workloads as _workloads

    return _workloads(stack)
