"""`liferaft audit`: which single vendor can take the service and its way out down together."""

from liferaft.audit._core import AuditReport, Finding, Layer, audit, lookup_ns, ns_vendor

__all__ = ["AuditReport", "Finding", "Layer", "audit", "lookup_ns", "ns_vendor"]
