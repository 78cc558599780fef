"""The step library: every built-in step kind, registered in the engine's registry when this package is imported.

Whoever runs, resumes or rolls back a plan imports this package first (a journal may name any of these kinds,
whichever command started the run). SDKs load inside the steps, not here.
"""

from liferaft.steps import data, deploy, drill, hosts, provision, standby, tls, verify, warm

__all__ = ["data", "deploy", "drill", "hosts", "provision", "standby", "tls", "verify", "warm"]
