"""The playbook workload kind: an Ansible playbook (plus an artifact directory) that installs and starts a service."""

from __future__ import annotations

from typing import Any, ClassVar


class Playbook:
    name: ClassVar[str] = "playbook"

    def entries(self, model: Any) -> dict[str, Any]:
        return dict(model.services)
