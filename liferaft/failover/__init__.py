"""The failover engine: plan, step kinds, journal, lock and runner."""

from liferaft.failover.journal import Journal, JournalCorrupt, RunRecord, StepRecord, journal_path
from liferaft.failover.kinds import StepKind, get_kind, known_kinds, register, unregister
from liferaft.failover.lock import SiteLock, StackLock
from liferaft.failover.plan import MODES, Plan, Step
from liferaft.failover.runner import KILL_ON_EVENT, KILL_SWITCH, RunContext, Runner, RunOutcome

__all__ = [
    "KILL_ON_EVENT", "KILL_SWITCH", "MODES", "Journal", "JournalCorrupt", "Plan", "RunContext", "RunOutcome", "RunRecord",
    "Runner", "SiteLock", "StackLock", "Step", "StepKind", "StepRecord", "get_kind", "journal_path", "known_kinds", "register", "unregister",
]
