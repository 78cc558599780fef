"""Failover planning: observe and build the live plan (`planner`), read the standby and build the cold plan
(`cold`); both are modes of the one plan builder, liferaft.planner.builder."""
