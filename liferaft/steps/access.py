"""Kept for the steps that still import from here: SSH to hosts and the PostgreSQL access helpers, which moved to
`liferaft.datasets._pg_access` (the PostgreSQL dataset kind owns them)."""

from __future__ import annotations

from liferaft.configure.remote import controller_address, ssh
from liferaft.datasets._pg_access import (
    MIGRATOR_ROLE,
    admin_conn,
    drop_migrator,
    ensure_migrator,
    migrator_password,
    owner_conn,
)

__all__ = ["MIGRATOR_ROLE", "admin_conn", "controller_address", "drop_migrator", "ensure_migrator",
           "migrator_password", "owner_conn", "ssh"]
