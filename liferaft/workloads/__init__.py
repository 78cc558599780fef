"""Workload kinds: how a service runs at a site (an Ansible playbook today), a plug-in on the contract in `base`."""

from liferaft.workloads.base import Workload, WorkloadKind, kind_of, register_kind, unregister_kind
from liferaft.workloads.registry import teardown_lines, wait_stopped, workload, workloads

__all__ = ["Workload", "WorkloadKind", "kind_of", "register_kind", "teardown_lines", "unregister_kind", "wait_stopped",
           "workload", "workloads"]
