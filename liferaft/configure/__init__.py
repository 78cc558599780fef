"""Configure hosts with Ansible (through ansible-runner), host keys checked and secrets off every command line."""

from liferaft.configure._runner import PLAYBOOK_DIR, resolve_playbook, run_playbook, syntax_check
from liferaft.configure._types import (
    HostStats,
    PlaybookFailed,
    PlaybookResult,
    TargetHost,
    TaskEvent,
    to_progress,
)

__all__ = [
    "PLAYBOOK_DIR",
    "HostStats",
    "PlaybookFailed",
    "PlaybookResult",
    "TargetHost",
    "TaskEvent",
    "resolve_playbook",
    "run_playbook",
    "syntax_check",
    "to_progress",
]
