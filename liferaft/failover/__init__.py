"""Failover planning: the live plan (`planner`), the cold plan from a standby copy (`cold`)."""
