"""The engine: plans, step kinds, the journal, site and stack locks, and the runner that executes a plan."""

from liferaft.engine.journal import Journal, JournalCorrupt, RunRecord, StepRecord, journal_path
from liferaft.engine.kinds import StepKind, get_kind, known_kinds, register, unregister
from liferaft.engine.lock import SiteLock, StackLock
from liferaft.engine.plan import MODES, Plan, Step
from liferaft.engine.runner import KILL_ON_EVENT, KILL_SWITCH, RunContext, Runner, RunOutcome

__all__ = [
    "KILL_ON_EVENT", "KILL_SWITCH", "MODES", "Journal", "JournalCorrupt", "Plan", "RunContext", "RunOutcome", "RunRecord",
    "Runner", "SiteLock", "StackLock", "Step", "StepKind", "StepRecord", "get_kind", "journal_path", "known_kinds", "register", "unregister",
]
