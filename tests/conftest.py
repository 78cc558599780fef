"""Shared pytest configuration. Lab fixtures live in plugin modules so each area owns its own."""

pytest_plugins = [
    "tests.fixtures_servers",  # moto, s3rver, PowerDNS, fault proxies (liferaft.lab.servers / proxy)
    "tests.fixtures_lab",  # network-namespace hosts and the whole lab (liferaft.lab)
    "tests.pg_fixtures",  # local PostgreSQL clusters (owned by the movers work)
]
