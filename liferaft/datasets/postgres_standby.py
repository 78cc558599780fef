"""PostgreSQL's half of the standby contract (`StandbyCopy`): keep, lag, promote, loss."""

from __future__ import annotations


class PostgresStandby:
    pass
