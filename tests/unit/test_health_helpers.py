"""Helpers for the health tests: a real local HTTP server whose behaviour a test switches live, a stack file
pointing at it, and a provider whose account/objects capabilities speak plain HTTP to such a server (a real wire,
no SDK involved, so no SDK is mocked)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import AuthRejected, ProviderError, Unreachable
from liferaft.providers.base import ProbeResult, Provider


class QuietHTTPServer(ThreadingHTTPServer):
    """Probes hang up on slow servers on purpose; the handler thread then fails writing, possibly seconds later,
    while another test captures stderr. Such errors are expected here and must not print."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class ProbeServer:
    """127.0.0.1 HTTP server. `status` is answered to every request after `delay` seconds; `fail_next` requests
    answer `fail_status` first. `hang` makes requests sleep `hang` seconds before answering."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.fail_next = 0
        self.fail_status = 503
        self.hits = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _answer(self, body: bool) -> None:
                with server._lock:
                    server.hits += 1
                    if server.fail_next > 0:
                        server.fail_next -= 1
                        status = server.fail_status
                    else:
                        status = server.status
                    delay = server.delay
                if delay:
                    time.sleep(delay)
                payload = b'{"ok": %s}' % (b"true" if status < 400 else b"false")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload) if body else 0))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                server.posted.append(self.rfile.read(n))
                self._answer(True)

        self.posted: list[bytes] = []
        self.httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpAccount:
    """AccountProbe over plain HTTP: GET /account; 401/403 refused, no answer unreachable."""

    def __init__(self, name: str, url: str, timeout: float = 5.0) -> None:
        self.name, self.url, self.timeout = name, url, timeout

    def _get(self, path: str, op: str, method: str = "GET") -> int:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise AuthRejected(self.name, op, f"HTTP {e.code}", status=e.code, code="AccessDenied") from None
            return int(e.code)
        except (urllib.error.URLError, OSError) as e:
            raise Unreachable(self.name, op, f"endpoint did not answer ({e})") from None

    def probe(self) -> ProbeResult:
        t0 = time.monotonic()
        status = self._get("/account", "probe")
        if status >= 400:
            raise ProviderError(self.name, "probe", f"HTTP {status}", status=status)
        return ProbeResult(latency_s=time.monotonic() - t0, account="acct-1")

    def bucket_exists(self, bucket: str) -> bool:
        status = self._get(f"/{bucket}", "bucket_exists", "HEAD")
        if status == 404:
            return False
        if status >= 400:
            raise ProviderError(self.name, "bucket_exists", f"HTTP {status}", status=status)
        return True


def http_provider(name: str, url: str) -> Provider:
    acct = HttpAccount(name, url)
    return Provider(name=name, type="http-test", account=acct, objects=acct)  # type: ignore[arg-type]


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkFZl4vM3wV0bWJ1dGVzdGtleWZvcmhlYWx0aHRlc3Rz"


def write_stack(directory: Path, *, cloud_port: int, app_port: int, hook: list[str] | None = None,
                webhook: str | None = None, failover_on: str = "never", timeout: float = 1.0,
                confirm: int = 3, scheme: str = "http", standby_port: int | None = None) -> Path:
    """A stack: site primary = ssh pool host 127.0.0.1 (the app server) + objects at `cloud`; site standby =
    pool `spare` + objects at `cloud2`."""
    hook_yaml = "" if not hook else "  hook: [" + ", ".join(f'"{a}"' for a in hook) + "]\n"
    webhook_yaml = f"  webhook: {webhook}\n" if webhook else ""
    text = f"""version: 1
name: unit
providers:
  cloud:
    type: aws
    endpoint: http://127.0.0.1:{cloud_port}
    credentials: {{access_key_id: env:UNIT_KEY, secret_access_key: env:UNIT_SECRET}}
  cloud2:
    type: aws
    endpoint: http://127.0.0.1:{standby_port or cloud_port}
    credentials: {{access_key_id: env:UNIT_KEY, secret_access_key: env:UNIT_SECRET}}
  colo:
    type: ssh
    hosts:
      - {{name: a, address: 127.0.0.1, port: {closed_port()}, host_keys: ["{KEY}"]}}
  spare:
    type: ssh
    hosts:
      - {{name: b, address: 127.0.0.2, port: {closed_port()}, host_keys: ["{KEY}"]}}
sites:
  primary: {{compute: colo, objects: cloud}}
  standby: {{compute: spare, objects: cloud2}}
primary: primary
alternates: [standby]
services:
  web:
    playbook: web.yml
    health: {{path: /healthz, port: {app_port}, scheme: {scheme}}}
data:
  buckets:
    images: {{name: unit-images}}
health:
  timeout: {timeout}
  confirm: {confirm}
  failover_on: {failover_on}
{hook_yaml}{webhook_yaml}"""
    (directory / "web.yml").write_text("- hosts: all\n  tasks: []\n")
    path = directory / "liferaft.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def app_server() -> Iterator[ProbeServer]:
    s = ProbeServer().start()
    try:
        yield s
    finally:
        s.stop()


def test_probe_server_fails_exactly_as_told(app_server: ProbeServer) -> None:
    """The helper server answers fail_status for fail_next requests, then status again."""
    app_server.fail_next = 1
    codes = []
    for _ in range(2):
        try:
            with urllib.request.urlopen(app_server.url + "/healthz", timeout=2) as r:
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
    assert codes == [503, 200]
