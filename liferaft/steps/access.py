"""How the steps reach hosts and databases: host-key-checked SSH, and (from `liferaft.datasets.pg_access`, below the
step library, where the PostgreSQL dataset kind and the standby keeping use it too) liferaft's migration role and
PgConns."""

from __future__ import annotations

from liferaft.configure.remote import controller_address, ssh
from liferaft.datasets.pg_access import (
    MIGRATOR_ROLE,
    admin_conn,
    drop_migrator,
    ensure_migrator,
    migrator_password,
    owner_conn,
)

__all__ = ["MIGRATOR_ROLE", "admin_conn", "controller_address", "drop_migrator", "ensure_migrator",
           "migrator_password", "owner_conn", "ssh"]
