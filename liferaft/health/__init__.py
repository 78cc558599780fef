"""Provider health: probes, verdicts (healthy / degraded / unreachable / terminated) and the watch loop."""

from liferaft.health.evidence import Evidence, ProbeFailed, Verdict
from liferaft.health.report import HealthReport, check_health, judge, prometheus_text, write_atomic
from liferaft.health.rules import Judgement, judge_provider, judge_site
from liferaft.health.runner import Found, ProbeTask, run_probes
from liferaft.health.watch import Hysteresis, Policy, WatchResult, explain, watch

__all__ = [
    "Evidence",
    "Found",
    "HealthReport",
    "Hysteresis",
    "Judgement",
    "Policy",
    "ProbeFailed",
    "ProbeTask",
    "Verdict",
    "WatchResult",
    "check_health",
    "explain",
    "judge",
    "judge_provider",
    "judge_site",
    "prometheus_text",
    "run_probes",
    "watch",
    "write_atomic",
]
