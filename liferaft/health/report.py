"""One health check: run the probes, judge providers and sites, and render the result (JSON, Prometheus text)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft import statedir
from liferaft.events import Events, as_events
from liferaft.health.evidence import Evidence, Verdict
from liferaft.health.probes import Opener, default_opener, plan_probes, registry_subject
from liferaft.health.rules import Judgement, judge_provider, judge_site
from liferaft.health.runner import DEFAULT_MAX_WORKERS, run_probes


@dataclass(frozen=True)
class HealthReport:
    stack: str
    started: float  # unix time
    duration_s: float
    providers: tuple[Judgement, ...]
    sites: tuple[Judgement, ...]
    evidence: tuple[Evidence, ...]

    @property
    def verdict(self) -> Verdict:
        return Verdict.worst([j.verdict for j in (*self.providers, *self.sites)])

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    def verdicts(self) -> dict[str, Verdict]:
        """subject ("provider:aws", "site:primary") -> verdict: what `--watch` applies hysteresis to."""
        out = {f"provider:{j.name}": j.verdict for j in self.providers}
        out.update({f"site:{j.name}": j.verdict for j in self.sites})
        return out

    def judgement(self, subject: str) -> Judgement:
        kind, _, name = subject.partition(":")
        for j in self.providers if kind == "provider" else self.sites:
            if j.name == name:
                return j
        raise KeyError(subject)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "started": round(self.started, 3),
            "duration_s": round(self.duration_s, 3),
            "providers": {j.name: j.to_dict() for j in self.providers},
            "sites": {j.name: j.to_dict() for j in self.sites},
        }


def judge(stack: Any, evidence: Iterable[Evidence], *, stack_name: str | None = None, started: float = 0.0,
          duration_s: float = 0.0) -> HealthReport:
    """Apply the rules to evidence (fresh or recorded)."""
    ev = tuple(evidence)
    m = stack.model
    registries = {name: registry_subject(name) for name, site in m.sites.items() if getattr(site, "registry", None)}
    providers = {name: judge_provider(name, [e for e in ev if e.provider == name])
                 for name in [*m.providers, *registries.values()]}
    sites = []
    for name, site in m.sites.items():
        parts = {p: providers[p] for p in dict.fromkeys([site.compute, site.objects, *(
            [registries[name]] if name in registries else [])])}
        dp = [e for e in ev if e.site == name and e.provider is None]
        sites.append(judge_site(name, parts, dp, role="primary" if name == m.primary else "alternate"))
    return HealthReport(stack=stack_name or m.name, started=started, duration_s=duration_s,
                        providers=tuple(providers.values()), sites=tuple(sites), evidence=ev)


def check_health(stack: Any, *, opener: Opener | None = None, timeout: float | None = None,
                 canary: bool | None = None, events: Events | None = None,
                 max_workers: int = DEFAULT_MAX_WORKERS, state_dir: Any = None) -> HealthReport:
    """Probe every provider and site of the stack concurrently and judge them."""
    ev = as_events(events)
    settings = stack.model.health
    t = settings.timeout if timeout is None else timeout
    started, t0 = time.time(), time.monotonic()
    tasks = plan_probes(stack, opener or default_opener(stack, state_dir), timeout=t,
                        canary=settings.write_canary if canary is None else canary)
    ev.emit("health.started", f"{len(tasks)} probes, timeout {t:g} s each", probes=len(tasks))
    evidence = run_probes(tasks, max_workers=max_workers, events=ev)
    report = judge(stack, evidence, started=started, duration_s=time.monotonic() - t0)
    ev.emit("health.finished", f"{report.verdict.value} in {report.duration_s:.2f} s",
            verdict=report.verdict.value, duration_s=round(report.duration_s, 3))
    return report


# ------------------------------------------------------------------------------------------- prometheus
def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items() if v is not None) + "}"


def prometheus_text(report: HealthReport) -> str:
    """Prometheus text exposition format (0.0.4): one state-set per provider/site verdict, per-probe up/latency."""
    out: list[str] = []

    def family(name: str, help_: str, kind: str = "gauge") -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    st = report.stack
    family("liferaft_provider_verdict", "1 for the provider's current verdict, 0 for the others.")
    for j in report.providers:
        for v in Verdict:
            out.append(f"liferaft_provider_verdict{_labels(stack=st, provider=j.name, verdict=v.value)} "
                       f"{int(j.verdict is v)}")
    family("liferaft_site_verdict", "1 for the site's current verdict, 0 for the others.")
    for j in report.sites:
        for v in Verdict:
            out.append(f"liferaft_site_verdict{_labels(stack=st, site=j.name, role=j.role, verdict=v.value)} "
                       f"{int(j.verdict is v)}")
    family("liferaft_health_verdict_code", "Worst verdict: 0 healthy, 1 degraded, 2 unreachable, 3 terminated.")
    out.append(f"liferaft_health_verdict_code{_labels(stack=st)} {report.verdict.rank}")
    family("liferaft_probe_up", "1 if the probe succeeded.")
    for e in report.evidence:
        out.append(f"liferaft_probe_up{_probe_labels(st, e)} {int(e.ok)}")
    family("liferaft_probe_latency_seconds", "How long the probe took (the API's own latency where it reports it).")
    for e in report.evidence:
        if e.latency_s is not None:
            out.append(f"liferaft_probe_latency_seconds{_probe_labels(st, e)} {e.latency_s:.6f}")
    tls = [e for e in report.evidence if e.kind == "tls" and "days_left" in e.data]
    if tls:
        family("liferaft_tls_cert_days_left", "Days until the certificate expires.")
        for e in tls:
            out.append(f"liferaft_tls_cert_days_left{_probe_labels(st, e)} {e.data['days_left']}")
    family("liferaft_health_check_timestamp_seconds", "When the check started (unix time).")
    out.append(f"liferaft_health_check_timestamp_seconds{_labels(stack=st)} {report.started:.3f}")
    family("liferaft_health_check_duration_seconds", "How long the whole check took.")
    out.append(f"liferaft_health_check_duration_seconds{_labels(stack=st)} {report.duration_s:.6f}")
    return "\n".join(out) + "\n"


def _probe_labels(stack: str, e: Evidence) -> str:
    return _labels(stack=stack, provider=e.provider or "", site=e.site or "", probe=e.probe, kind=e.kind)


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> Path:
    """Write to a temp file in the same directory, fsync, then rename over `path`: readers (node_exporter's
    textfile collector) see the old file or the new one, never half of one. The temp name does not end in .prom,
    so the collector never picks it up."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    statedir.write_atomic(target, text, mode)
    return target
