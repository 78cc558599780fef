"""The built-in step kinds of a failover. Importing this package registers them; SDKs load inside the steps."""

from liferaft.failover.steps import data, hosts, verify

__all__ = ["data", "hosts", "verify"]
