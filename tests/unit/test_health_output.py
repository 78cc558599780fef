"""Output formats: Prometheus text exposition (parsable, one verdict per subject) written atomically, and JSON."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

from liferaft.health import Evidence, judge, prometheus_text, write_atomic
from liferaft.stack import load_stack
from tests.unit.test_health_helpers import write_stack

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*)\} '
                    r"(-?[0-9.e+-]+|NaN)$")


def report(tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = load_stack(write_stack(tmp_path, cloud_port=1, app_port=2))
    evidence = [
        Evidence("account", "account", "control", "auth_rejected", provider="cloud", latency_s=0.012,
                 error="AuthRejected", status=403, code="AccessDenied", detail='refused "quoted"\nline'),
        Evidence("account", "account", "control", "ok", provider="cloud2", latency_s=0.02),
        Evidence("account", "account", "control", "ok", provider="colo", latency_s=0.2),
        Evidence("account", "account", "control", "timeout", provider="spare", latency_s=1.0, error="Timeout"),
        Evidence("http:web@127.0.0.1:2", "http", "data", "ok", site="primary", latency_s=0.003, status=200),
        Evidence("tls:127.0.0.1:2", "tls", "data", "ok", site="primary", latency_s=0.01,
                 data={"days_left": 42.5}),
    ]
    return judge(stack, evidence, started=1_700_000_000.0, duration_s=1.25)


def test_prometheus_text_is_valid_exposition(tmp_path: Path) -> None:
    text = prometheus_text(report(tmp_path))
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families, f"{name} declared twice"
            families[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2)))
            assert m.group(1) in families, f"sample before its TYPE: {line}"
            samples.append((m.group(1), labels, float(m.group(3))))
    assert set(families.values()) == {"gauge"}
    # exactly one verdict is 1 per provider; aws-style refused provider is terminated, spare unreachable
    current = {(lb["provider"], lb["verdict"]) for n, lb, v in samples if n == "liferaft_provider_verdict" and v == 1}
    assert current == {("cloud", "terminated"), ("cloud2", "healthy"), ("colo", "healthy"), ("spare", "unreachable")}
    assert len([s for s in samples if s[0] == "liferaft_provider_verdict"]) == 4 * 4
    sites = {(lb["site"], lb["verdict"]) for n, lb, v in samples if n == "liferaft_site_verdict" and v == 1}
    assert sites == {("primary", "terminated"), ("standby", "degraded")}
    up = {(lb["provider"], lb["probe"]): v for n, lb, v in samples if n == "liferaft_probe_up"}
    assert up[("cloud", "account")] == 0 and up[("cloud2", "account")] == 1
    lat = {(lb["provider"], lb["probe"]): v for n, lb, v in samples if n == "liferaft_probe_latency_seconds"}
    assert lat[("cloud", "account")] == 0.012
    assert [v for n, _, v in samples if n == "liferaft_health_verdict_code"] == [3]
    assert [v for n, _, v in samples if n == "liferaft_tls_cert_days_left"] == [42.5]


def test_label_values_are_escaped() -> None:
    from liferaft.health.report import _labels

    assert _labels(a='x"y\\z\nw') == '{a="x\\"y\\\\z\\nw"}'


def test_write_atomic_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    """A reader polling the file while it is rewritten 300 times sees only complete versions."""
    target = tmp_path / "textfile" / "liferaft.prom"
    versions = ["A" * 200_000 + "\n", "B" * 150_000 + "\n"]
    write_atomic(target, versions[0])
    stop = threading.Event()
    seen: set[str] = set()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            text = target.read_text()
            if text not in versions:
                bad.append(len(text))
            seen.add(text[:1])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            write_atomic(target, versions[i % 2])
    finally:
        stop.set()
        t.join()
    assert not bad, f"partial reads: {bad[:5]}"
    assert seen == {"A", "B"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["liferaft.prom"]  # no temp files left behind


def test_write_atomic_failure_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "liferaft.prom"
    write_atomic(target, "old\n")
    try:
        write_atomic(target, 42)  # type: ignore[arg-type]  # fails while writing the temp file
    except TypeError:
        pass
    else:
        raise AssertionError("expected TypeError")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["liferaft.prom"]


def test_json_report_has_verdicts_rules_and_evidence(tmp_path: Path) -> None:
    d = json.loads(json.dumps(report(tmp_path).to_dict()))
    assert (d["verdict"], d["exit_code"]) == ("terminated", 3)
    cloud = d["providers"]["cloud"]
    assert (cloud["verdict"], cloud["rule"]) == ("terminated", "P1")
    assert {k: cloud["evidence"][0][k] for k in ("outcome", "error", "status", "code")} == {
        "outcome": "auth_rejected", "error": "AuthRejected", "status": 403, "code": "AccessDenied"}
    assert d["sites"]["primary"]["providers"] == {"colo": "healthy", "cloud": "terminated"}
    assert d["sites"]["primary"]["role"] == "primary"


def test_cli_rejects_watch_options_without_watch(tmp_path: Path) -> None:
    """A usage error of `health` exits 64 (EX_USAGE): 2 means 'unreachable' there."""
    from tests.cli_helpers import invoke

    stack = write_stack(tmp_path, cloud_port=1, app_port=2)
    r = invoke("--stack", str(stack), "health", "--count", "2")
    assert r.exit_code == 64 and "--count and --interval need --watch" in r.stderr
    r = invoke("--stack", str(stack), "health", "--watch", "--explain")
    assert r.exit_code == 64
