"""Drills: a failover into an isolated target, measured (RTO, RPO), verified, torn down, reported and remembered.

SDKs and the failover engine's step kinds load only when a drill runs (`run_drill`); the model, the reports and
the history import nothing heavy.
"""

from liferaft.drill.history import HistoryEntry, entries, record, sparkline
from liferaft.drill.model import PHASES, SCENARIOS, DataSummary, DrillResult, LedgerSummary, Phase
from liferaft.drill.report import ReportFiles, write_report

__all__ = [
    "PHASES", "SCENARIOS", "DataSummary", "DrillResult", "HistoryEntry", "LedgerSummary", "Phase", "ReportFiles",
    "entries", "record", "sparkline", "write_report",
]
