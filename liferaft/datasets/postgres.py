"""The PostgreSQL database dataset kind (stack file: `data.databases.<key>`, engine postgresql).

Live move, verification and drills here; keeping a standby and promoting it in `postgres_standby`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from liferaft.datasets.postgres_standby import PostgresStandby


class Postgres(PostgresStandby):
    name: ClassVar[str] = "postgresql"
    noun: ClassVar[str] = "database"

    def entries(self, model: Any) -> dict[str, Any]:
        return {k: d for k, d in model.data.databases.items() if d.engine == "postgresql"}
