"""Configure hosts with Ansible (through ansible-runner), host keys checked and secrets off every command line."""

from liferaft.configure._runner import (
    PLAYBOOK_DIR,
    ansible_events,
    resolve_playbook,
    run_playbook,
    syntax_check,
)
from liferaft.configure._types import (
    HostStats,
    PlaybookFailed,
    PlaybookResult,
    TargetHost,
    TaskEvent,
    host_from_dict,
    host_to_dict,
    to_progress,
)
from liferaft.configure._workspace import Cleaned, clean_dead_runs

__all__ = [
    "PLAYBOOK_DIR",
    "Cleaned",
    "HostStats",
    "PlaybookFailed",
    "PlaybookResult",
    "TargetHost",
    "TaskEvent",
    "ansible_events",
    "clean_dead_runs",
    "host_from_dict",
    "host_to_dict",
    "resolve_playbook",
    "run_playbook",
    "syntax_check",
    "to_progress",
]
