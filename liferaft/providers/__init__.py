"""Providers: capability protocols, one registry, and adapters (aws, libcloud, ssh). No SDK is imported here."""

from liferaft.providers._errors import RetryPolicy, set_retry_policy

__all__ = ["RetryPolicy", "set_retry_policy"]
