"""The verdict rules, from recorded evidence: what each combination of probe outcomes means."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liferaft.health import Evidence, Verdict, judge, judge_provider, judge_site
from liferaft.health import rules as rules_module
from liferaft.stack import load_stack
from tests.unit.test_health_helpers import write_stack


def ev(probe: str, outcome: str, *, kind: str | None = None, plane: str = "control", provider: str | None = "aws",
       site: str | None = None, status: int | None = None, code: str | None = None) -> Evidence:
    error = {"ok": None, "auth_rejected": "AuthRejected", "not_found": "NotFound", "unreachable": "Unreachable",
             "timeout": "Timeout", "throttled": "Throttled", "failed": "ProbeFailed", "error": "ProviderError"}
    return Evidence(probe=probe, kind=kind or probe.split(":")[0], plane=plane, outcome=outcome, provider=provider,
                    site=site, latency_s=0.01, error=error[outcome], status=status, code=code,
                    detail=f"{probe} {outcome}")


# Recorded from the lab: `lab cut aws --mode deny` (the proxy answers 403 AccessDenied to everything).
DENIED = [ev("account", "auth_rejected", status=403, code="AccessDenied"),
          ev("bucket:microblog-images", "auth_rejected", kind="bucket", status=403, code="AccessDenied")]
# `--mode down`: connections dropped.
DOWN = [ev("account", "unreachable"), ev("bucket:microblog-images", "unreachable", kind="bucket")]


def test_auth_refused_while_network_answers_is_terminated() -> None:
    """403 on the account probe: the provider answers, and refuses us -> terminated, with the 403 as evidence."""
    j = judge_provider("aws", DENIED)
    assert (j.verdict, j.rule) == (Verdict.TERMINATED, "P1")
    assert any(e.status == 403 for e in j.evidence)
    assert "AccessDenied" in j.reason


def test_refusal_on_every_answer_is_terminated_even_if_account_probe_was_silent() -> None:
    j = judge_provider("aws", [ev("account", "timeout"), *DENIED[1:]])
    assert (j.verdict, j.rule) == (Verdict.TERMINATED, "P1")


def test_no_answer_anywhere_is_unreachable() -> None:
    j = judge_provider("aws", DOWN + [ev("account", "timeout")])
    assert (j.verdict, j.rule) == (Verdict.UNREACHABLE, "P3")


def test_one_operation_refused_while_others_work_is_only_degraded() -> None:
    """A permission problem on one bucket is not an account suspension."""
    j = judge_provider("aws", [ev("account", "ok"), ev("bucket:a", "auth_rejected", kind="bucket", status=403),
                               ev("bucket:b", "ok", kind="bucket")])
    assert (j.verdict, j.rule) == (Verdict.DEGRADED, "P4")


def test_everything_gone_while_auth_ok_is_terminated() -> None:
    j = judge_provider("aws", [ev("account", "ok"), ev("bucket:a", "not_found", kind="bucket", status=404),
                               ev("zone:x.", "not_found", kind="zone", status=404)])
    assert (j.verdict, j.rule) == (Verdict.TERMINATED, "P2")


def test_some_resources_gone_is_degraded() -> None:
    j = judge_provider("aws", [ev("account", "ok"), ev("bucket:a", "not_found", kind="bucket", status=404),
                               ev("bucket:b", "ok", kind="bucket")])
    assert (j.verdict, j.rule) == (Verdict.DEGRADED, "P4")


def test_data_plane_failing_with_control_plane_fine_is_degraded_and_says_so() -> None:
    j = judge_provider("dnshost", [ev("account", "ok", provider="dnshost"),
                                   ev("dns:www.x.A", "failed", kind="dns", plane="data", provider="dnshost",
                                      code="MISMATCH")])
    assert (j.verdict, j.rule) == (Verdict.DEGRADED, "P4")
    assert "data plane" in j.reason


@pytest.mark.parametrize("outcome", ["timeout", "throttled", "failed", "error"])
def test_any_single_failure_among_successes_is_degraded(outcome: str) -> None:
    j = judge_provider("aws", [ev("account", "ok"), ev("bucket:a", outcome, kind="bucket")])
    assert j.verdict is Verdict.DEGRADED


def test_all_ok_is_healthy() -> None:
    j = judge_provider("aws", [ev("account", "ok"), ev("bucket:a", "ok", kind="bucket")])
    assert (j.verdict, j.rule) == (Verdict.HEALTHY, "P5")


def _prov(verdict: Verdict, name: str = "p") -> rules_module.Judgement:
    return rules_module.Judgement("provider", name, verdict, "x", "")


def test_site_with_a_terminated_provider_is_terminated() -> None:
    j = judge_site("primary", {"colo": _prov(Verdict.HEALTHY), "aws": _prov(Verdict.TERMINATED)},
                   [ev("http:web@a:80", "ok", kind="http", plane="data", provider=None, site="primary")])
    assert (j.verdict, j.rule) == (Verdict.TERMINATED, "S1")


def test_site_nobody_can_reach_is_unreachable_even_if_apis_answer() -> None:
    """Host a's network cut: every health endpoint silent -> the site is unreachable."""
    dp = [ev("http:web@10.0.0.11:8080", "timeout", kind="http", plane="data", provider=None, site="primary")]
    j = judge_site("primary", {"colo": _prov(Verdict.UNREACHABLE), "aws": _prov(Verdict.HEALTHY)}, dp)
    assert (j.verdict, j.rule) == (Verdict.UNREACHABLE, "S2")


def test_site_whose_providers_are_all_unreachable_is_unreachable() -> None:
    j = judge_site("alt", {"colo": _prov(Verdict.UNREACHABLE), "s3": _prov(Verdict.UNREACHABLE)}, [])
    assert (j.verdict, j.rule) == (Verdict.UNREACHABLE, "S2")


def test_site_with_one_provider_down_but_service_answering_is_degraded() -> None:
    dp = [ev("http:web@a:80", "ok", kind="http", plane="data", provider=None, site="primary")]
    j = judge_site("primary", {"colo": _prov(Verdict.HEALTHY), "aws": _prov(Verdict.UNREACHABLE)}, dp)
    assert (j.verdict, j.rule) == (Verdict.DEGRADED, "S3")


def test_site_with_a_failing_endpoint_is_degraded() -> None:
    dp = [ev("http:web@a:80", "failed", kind="http", plane="data", provider=None, site="primary", status=500)]
    j = judge_site("primary", {"colo": _prov(Verdict.HEALTHY)}, dp)
    assert (j.verdict, j.rule) == (Verdict.DEGRADED, "S3")


def test_healthy_site() -> None:
    dp = [ev("http:web@a:80", "ok", kind="http", plane="data", provider=None, site="primary")]
    assert judge_site("primary", {"colo": _prov(Verdict.HEALTHY)}, dp).verdict is Verdict.HEALTHY


def test_recorded_json_evidence_gives_the_same_report(tmp_path: Path) -> None:
    """Evidence survives a JSON round trip, and judging it again gives the same verdicts and exit code."""
    stack = load_stack(write_stack(tmp_path, cloud_port=1, app_port=2))
    evidence = [
        ev("account", "auth_rejected", provider="cloud", status=403, code="AccessDenied"),
        ev("bucket:unit-images", "auth_rejected", kind="bucket", provider="cloud", status=403),
        ev("account", "ok", provider="cloud2"),
        ev("account", "ok", provider="colo"),
        ev("account", "ok", provider="spare"),
        ev("http:web@127.0.0.1:2", "ok", kind="http", plane="data", provider=None, site="primary"),
    ]
    report = judge(stack, evidence)
    assert report.verdict is Verdict.TERMINATED and report.exit_code == 3
    assert report.verdicts() == {"provider:cloud": Verdict.TERMINATED, "provider:cloud2": Verdict.HEALTHY,
                                 "provider:colo": Verdict.HEALTHY, "provider:spare": Verdict.HEALTHY,
                                 "site:primary": Verdict.TERMINATED, "site:standby": Verdict.HEALTHY}
    recorded = json.loads(json.dumps(report.to_dict()))
    replayed = [Evidence.from_dict(e) for p in recorded["providers"].values() for e in p["evidence"]]
    replayed += [Evidence.from_dict(e) for s in recorded["sites"].values() for e in s["evidence"]]
    again = judge(stack, replayed)
    assert again.verdicts() == report.verdicts()
    assert recorded["providers"]["cloud"]["evidence"][0]["status"] == 403


def test_exit_codes_follow_verdict_rank() -> None:
    assert [v.exit_code for v in Verdict] == [0, 1, 2, 3]
    assert Verdict.worst([Verdict.DEGRADED, Verdict.TERMINATED, Verdict.HEALTHY]) is Verdict.TERMINATED


def test_every_rule_the_code_returns_is_in_the_documented_table() -> None:
    """The README copies the table from the module docstring: it must not drift from the code."""
    source = Path(rules_module.__file__).read_text()
    code = source.split('"""', 2)[2]
    used = set(re.findall(r'"([PS]\d)"', code))
    documented = set(re.findall(r"^\| ?([PS]\d) +\|", rules_module.__doc__ or "", re.MULTILINE))
    assert used and used == documented
