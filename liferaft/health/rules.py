"""The verdict rules: the ONE place that turns probe evidence into healthy / degraded / unreachable / terminated.

Probes (see `liferaft.health.probes`) produce one `Evidence` each, with an outcome: ok, auth_rejected (HTTP 401/403
or an auth error code), not_found, unreachable (connection refused/reset, no route), timeout, throttled, failed (an
answer, but the wrong one: HTTP 500, DNS pointing elsewhere, certificate expiring) or error (anything else).
"Answered" means any outcome except unreachable and timeout.

Provider verdict, from the probes about that provider (account, buckets, hosts, zone, write canary, DNS answers
of a DNS provider). The first rule that matches wins:

| #  | rule                                                                                     | verdict     |
|----|------------------------------------------------------------------------------------------|-------------|
| P1 | the account probe was refused (401/403), or every probe that got an answer was refused   | terminated  |
| P2 | credentials accepted, but every resource liferaft expects there is gone (NotFound)       | terminated  |
| P3 | no probe got an answer (all connection refused / reset / timed out)                      | unreachable |
| P4 | any probe failed (some silent, throttled, one operation refused, a resource missing, a   | degraded    |
|    | wrong answer, the data plane failing while the control plane is fine)                    |             |
| P5 | every probe ok                                                                           | healthy     |

Site verdict, from the verdicts of its compute and objects providers and its data plane (the services' health
endpoints on the site's hosts and their TLS certificates; probed at the primary site, where the services run):

| #  | rule                                                                                     | verdict     |
|----|------------------------------------------------------------------------------------------|-------------|
| S1 | its compute or objects provider is terminated                                            | terminated  |
| S2 | it has data-plane probes and none got an answer, or all its providers are unreachable    | unreachable |
| S3 | a provider of the site is degraded or unreachable, or any data-plane probe failed        | degraded    |
| S4 | otherwise                                                                                | healthy     |

The overall verdict is the worst provider or site verdict; the exit code is its rank: 0 healthy, 1 degraded,
2 unreachable, 3 terminated.

Why these choices: a suspended account answers, and refuses (P1) — that is the signal that a provider has stopped
serving *you* rather than having an outage (P3). A refusal on one operation while others succeed is a permission
problem, not a suspension (P4). A provider that still accepts the key but has deleted everything liferaft expects
(P2) is, for the stack, gone: that is what a closed-and-wiped account looks like; one missing bucket among several
is only degraded. A site whose service nobody can reach is unreachable even if its APIs answer (S2), because that is
what users experience.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from liferaft.health.evidence import Evidence, Verdict

RESOURCE_KINDS = frozenset({"bucket", "hosts", "zone"})


@dataclass(frozen=True)
class Judgement:
    """A verdict about one subject (a provider or a site), the rule that gave it, and the evidence behind it."""

    subject: str  # "provider" or "site"
    name: str
    verdict: Verdict
    rule: str
    reason: str
    evidence: tuple[Evidence, ...] = ()
    role: str = ""  # for sites: primary | alternate; for providers: the capabilities probed
    parts: dict[str, str] = field(default_factory=dict)  # for sites: provider name -> verdict

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "verdict": self.verdict.value, "rule": self.rule,
                             "reason": self.reason}
        if self.role:
            d["role"] = self.role
        if self.parts:
            d["providers"] = dict(self.parts)
        if self.certificates:
            d["certificates"] = self.certificates
        d["evidence"] = [e.to_dict() for e in self.evidence]
        return d

    @property
    def certificates(self) -> list[dict[str, Any]]:
        """The TLS certificates this site's endpoints served (a site's data plane), soonest to expire first:
        address:port, notAfter, days left."""
        certs = [{"endpoint": e.target, "not_after": e.data.get("not_after"), "days_left": e.data["days_left"]}
                 for e in self.evidence if e.kind == "tls" and "days_left" in e.data]
        return sorted(certs, key=lambda c: (c["days_left"], c["endpoint"]))


def _summary(evidence: Iterable[Evidence]) -> str:
    bad = [e for e in evidence if not e.ok]
    parts = []
    for e in bad[:3]:
        what = e.code or (str(e.status) if e.status else e.outcome)
        parts.append(f"{e.probe}: {what}")
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return "; ".join(parts) + more


def judge_provider(name: str, evidence: Iterable[Evidence]) -> Judgement:
    ev = tuple(evidence)

    def j(verdict: Verdict, rule: str, reason: str) -> Judgement:
        return Judgement("provider", name, verdict, rule, reason, ev)

    if not ev:
        return j(Verdict.HEALTHY, "P5", "nothing to probe")
    answered = [e for e in ev if e.answered]
    refused = [e for e in answered if e.outcome == "auth_rejected"]
    account = [e for e in ev if e.kind == "account"]
    if any(e.outcome == "auth_rejected" for e in account):
        return j(Verdict.TERMINATED, "P1", "credentials refused while the network answers: " + _summary(refused))
    if refused and len(refused) == len(answered):
        return j(Verdict.TERMINATED, "P1", "every answer was a refusal: " + _summary(refused))
    resources = [e for e in ev if e.kind in RESOURCE_KINDS]
    account_ok = bool(account) and all(e.ok for e in account)
    if account_ok and resources and all(e.outcome == "not_found" for e in resources):
        return j(Verdict.TERMINATED, "P2", "credentials accepted but every expected resource is gone: "
                 + _summary(resources))
    if not answered:
        return j(Verdict.UNREACHABLE, "P3", "no probe got an answer: " + _summary(ev))
    if any(not e.ok for e in ev):
        control_ok = all(e.ok for e in ev if e.plane == "control")
        lead = "data plane failing while the control plane is fine: " if control_ok else "some probes failed: "
        return j(Verdict.DEGRADED, "P4", lead + _summary(ev))
    return j(Verdict.HEALTHY, "P5", f"{len(ev)} probe{'s' if len(ev) != 1 else ''} ok")


def judge_site(name: str, providers: dict[str, Judgement], data_plane: Iterable[Evidence], *,
               role: str = "") -> Judgement:
    """`providers`: the judgements of the site's compute and objects providers (one entry if they are the same)."""
    dp = tuple(data_plane)
    parts = {p: jd.verdict.value for p, jd in providers.items()}

    def j(verdict: Verdict, rule: str, reason: str) -> Judgement:
        return Judgement("site", name, verdict, rule, reason, dp, role=role, parts=parts)

    terminated = [p for p, jd in providers.items() if jd.verdict is Verdict.TERMINATED]
    if terminated:
        return j(Verdict.TERMINATED, "S1", f"provider {', '.join(terminated)} terminated")
    if dp and not any(e.answered for e in dp):
        return j(Verdict.UNREACHABLE, "S2", "no data-plane probe got an answer: " + _summary(dp))
    unreachable = [p for p, jd in providers.items() if jd.verdict is Verdict.UNREACHABLE]
    if providers and len(unreachable) == len(providers):
        return j(Verdict.UNREACHABLE, "S2", f"provider {', '.join(unreachable)} unreachable")
    weak = [f"{p} {jd.verdict.value}" for p, jd in providers.items() if jd.verdict is not Verdict.HEALTHY]
    failing = [e for e in dp if not e.ok]
    if weak or failing:
        bits = ([f"provider {', '.join(weak)}"] if weak else []) + ([_summary(failing)] if failing else [])
        return j(Verdict.DEGRADED, "S3", "; ".join(bits))
    n = len(dp)
    return j(Verdict.HEALTHY, "S4", "providers healthy" + (f", {n} data-plane probe{'s' if n != 1 else ''} ok"
                                                          if n else ""))
