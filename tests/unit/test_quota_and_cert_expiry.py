"""Issue 23: an account's host limit checked before creating (Quota), the plan's price and quota text, and the
certificate expiry `health` reports per site."""

from __future__ import annotations

import io

import pytest

from liferaft.errors import QuotaExceeded
from liferaft.health.evidence import Evidence
from liferaft.health.rules import judge_site
from liferaft.planner.builder import _quota_text, _total
from liferaft.providers.base import Quota


def test_quota_counts_only_the_hosts_it_would_create() -> None:
    q = Quota("server_limit", 3, 2, ("other", "microblog-alt-h"))
    assert q.check_room("hetzner", ["microblog-alt-h", "microblog-alt-h-1"]) == 1  # the first exists already
    with pytest.raises(QuotaExceeded, match="server_limit is 3 and the account has 2: 2 new host") as e:
        q.check_room("hetzner", ["a", "b"])
    assert e.value.provider == "hetzner" and e.value.code == "server_limit"
    assert Quota("server_limit", None, 50).check_room("hetzner", ["a", "b"]) == 2  # unknown limit: the vendor decides


def test_plan_text_names_the_total_price_and_the_quota() -> None:
    assert _total({"hourly_gross": "0.0071", "currency": "EUR"}, 2) == "; 0.0142 EUR/h for all 2"
    assert _total({"hourly_gross": "0.0071", "currency": "EUR"}, 1) == ""
    assert _quota_text({"name": "droplet_limit", "limit": 10, "used": 3}) == "; droplet_limit: 3 of 10 used"
    assert _quota_text({"name": "server_limit", "limit": None, "used": 0}) == \
        "; server_limit: not published by the provider (0 in use)"


def _tls(target: str, days: float) -> Evidence:
    return Evidence(probe=f"tls:{target}", kind="tls", plane="data", outcome="ok", site="alt-h", target=target,
                    data={"not_after": "Dec  3 11:00:00 2031 GMT", "days_left": days})


def test_health_reports_each_sites_certificate_expiry_in_json_and_text() -> None:
    from rich.console import Console

    from liferaft.cli.health import render_report
    from liferaft.health.report import HealthReport

    site = judge_site("alt-h", {}, [_tls("10.0.0.6:8080", 80.5), _tls("10.0.0.5:8080", 30.25)], role="primary")
    d = site.to_dict()
    assert [c["endpoint"] for c in d["certificates"]] == ["10.0.0.5:8080", "10.0.0.6:8080"]  # soonest first
    assert d["certificates"][0] == {"endpoint": "10.0.0.5:8080", "not_after": "Dec  3 11:00:00 2031 GMT",
                                    "days_left": 30.25}
    assert "certificates" not in judge_site("primary", {}, [], role="alternate").to_dict()
    out = io.StringIO()
    render_report(HealthReport("microblog", 0.0, 0.1, (), (site,), site.evidence), Console(file=out, width=400))
    assert "certificate expires in 30 days (Dec  3 11:00:00 2031 GMT, soonest of 2)" in out.getvalue()


def test_an_https_service_with_an_untrusted_certificate_still_answers() -> None:
    """A stop waits for the service to go silent: over HTTPS a handshake this controller does not trust is an
    answer (else a running service with a private CA's certificate would pass for stopped)."""
    import ssl
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from pathlib import Path

    from liferaft.workloads.probe import answers
    from tests.unit.test_tls import _self_signed

    cert, key = _self_signed(["www.microblog.test"], days=30)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.pem").write_bytes(cert)
        (Path(d) / "k.pem").write_bytes(key)
        server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(Path(d) / "c.pem", Path(d) / "k.pem")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert answers(f"https://127.0.0.1:{port}/healthz")
    finally:
        server.shutdown()
        server.server_close()
    assert not answers(f"https://127.0.0.1:{port}/healthz")
