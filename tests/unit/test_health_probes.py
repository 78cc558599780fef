"""The network probes against real local servers: HTTPS with certificates of chosen lifetimes, and a DNS server
answering over UDP."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from liferaft.health import ProbeFailed
from liferaft.health.probes import dns_probe, http_probe, tls_probe
from tests.unit.test_health_helpers import QuietHTTPServer


def make_cert(directory: Path, days: float, name: str = "app.unit.test") -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"cert-{days}.pem", directory / f"key-{days}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Ok(BaseHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def https_server(cert: Path, key: Path) -> QuietHTTPServer:
    httpd = QuietHTTPServer(("127.0.0.1", 0), Ok)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return httpd


NAMES = {90.0: "app.unit.test", 5.0: "soon.unit.test"}  # distinct subjects: one trust bundle holds both


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[float, int]]:
    """HTTPS servers with certificates valid 90 and 5 more days, trusted through SSL_CERT_FILE."""
    servers, bundle = {}, b""
    for days in (90.0, 5.0):
        cert, key = make_cert(tmp_path, days, name=NAMES[days])
        bundle += cert.read_bytes()
        servers[days] = https_server(cert, key)
    (tmp_path / "bundle.pem").write_bytes(bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    try:
        yield {d: s.server_address[1] for d, s in servers.items()}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def test_tls_probe_reads_expiry(tls: dict[float, int]) -> None:
    found = tls_probe("127.0.0.1", tls[90.0], timeout=3, server_hostname="app.unit.test")
    assert 89 < found.data["days_left"] <= 90


def test_tls_probe_flags_a_certificate_about_to_expire(tls: dict[float, int]) -> None:
    with pytest.raises(ProbeFailed) as e:
        tls_probe("127.0.0.1", tls[5.0], timeout=3, server_hostname="soon.unit.test")
    assert e.value.code == "CERT_EXPIRING" and 4 < e.value.data["days_left"] <= 5


def test_tls_probe_flags_an_untrusted_certificate(tls: dict[float, int]) -> None:
    with pytest.raises(ProbeFailed) as e:
        tls_probe("127.0.0.1", tls[90.0], timeout=3, server_hostname="other.unit.test")
    assert e.value.code == "CERT_VERIFY_FAILED"


def test_https_health_check_verifies_the_name_users_reach(tls: dict[float, int]) -> None:
    assert http_probe("https", "127.0.0.1", tls[90.0], "/healthz", expect_status=200, timeout=3,
                      server_hostname="app.unit.test").status == 200


# ------------------------------------------------------------------------------------------- DNS
class UdpDns:
    """An authoritative DNS server on 127.0.0.1 (UDP) answering A queries from a dict, REFUSED otherwise."""

    def __init__(self, records: dict[str, list[str]], *, silent: bool = False) -> None:
        self.records, self.silent = records, silent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            if self.silent:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.flags |= 0x0400  # AA
            name = q.question[0].name.to_text()
            if name in self.records:
                r.answer.append(dns.rrset.from_text_list(name, 30, "IN", "A", self.records[name]))
            else:
                r.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(r.to_wire(), addr)

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[UdpDns]:
    s = UdpDns({"www.unit.test.": ["10.0.0.11"]})
    try:
        yield s
    finally:
        s.close()


def test_dns_answer_matching_the_stack(dns_server: UdpDns) -> None:
    found = dns_probe(f"127.0.0.1:{dns_server.port}", "www.unit.test.", "A", {"10.0.0.11"}, timeout=2)
    assert found.data["answer"] == ["10.0.0.11"]


def test_dns_answer_pointing_elsewhere_is_a_mismatch(dns_server: UdpDns) -> None:
    with pytest.raises(ProbeFailed) as e:
        dns_probe(f"127.0.0.1:{dns_server.port}", "www.unit.test.", "A", {"10.0.0.12"}, timeout=2)
    assert e.value.code == "MISMATCH" and "10.0.0.11" in e.value.detail


def test_dns_name_missing_is_nxdomain(dns_server: UdpDns) -> None:
    with pytest.raises(ProbeFailed) as e:
        dns_probe(f"127.0.0.1:{dns_server.port}", "gone.unit.test.", "A", set(), timeout=2)
    assert e.value.code == "NXDOMAIN"


def test_silent_dns_server_times_out() -> None:
    s = UdpDns({}, silent=True)
    try:
        with pytest.raises(TimeoutError):
            dns_probe(f"127.0.0.1:{s.port}", "www.unit.test.", "A", set(), timeout=0.5)
    finally:
        s.close()
