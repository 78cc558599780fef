"""The `tls:` setting of a service (validation), the steps a planner inserts, and certificate facts."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from liferaft.engine.plan import Plan, Step
from liferaft.errors import InvalidInput
from liferaft.stack import load_stack
from liferaft.steps.tls import KIND, TlsCertificateParams, cert_info, key_matches, tls_steps

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"
HEALTH = """    health:
      path: /healthz
      port: 8080
      expect_status: 200
"""


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE.parent / "app", tmp_path / "app")
    dst = tmp_path / "liferaft.yaml"
    dst.write_text(EXAMPLE.read_text())
    return dst


def _with_tls(example: Path, tls: str, health_extra: str = "") -> Path:
    text = example.read_text()
    assert HEALTH in text
    example.write_text(text.replace(HEALTH, HEALTH + health_extra + "    tls:\n" + tls, 1))
    return example


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_stack(path)
    return [str(p) for p in exc.value.problems]


def test_acme_setting_validates_and_names_default_to_the_services_records(example: Path) -> None:
    (example.parent / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    stack = load_stack(_with_tls(example, "      acme:\n        directory: https://acme.test:14000/dir\n"
                                          "        email: ops@microblog.test\n        ca_bundle: ca.pem\n",
                                 "      scheme: https\n"))
    tls = stack.model.services["web"].tls
    assert tls is not None and tls.acme is not None
    assert tls.acme.directory == "https://acme.test:14000/dir" and tls.renew_before == pytest.approx(2 / 3)
    (step,) = tls_steps(stack, "alt-b", after="host-configure")
    assert step.kind == KIND and step.id == "tls:web" and step.depends_on == ("host-configure",)
    p = TlsCertificateParams.from_step(step)
    assert p == TlsCertificateParams(service="web", names=("www.microblog.test",), source="acme", site="alt-b")
    assert not [w for w in stack.warnings if "tls" in w.field]


def test_secret_pair_validates(example: Path) -> None:
    stack = load_stack(_with_tls(example, "      certificate: file:secrets/web.crt\n      key: env:WEB_TLS_KEY\n"
                                          "      names: [www.microblog.test, api.other.org]\n"))
    (step,) = tls_steps(stack, "alt-b", after="allocate")
    assert step.params["source"] == "secret"
    assert step.params["names"] == ["www.microblog.test", "api.other.org"]


def test_a_plan_with_the_steps_wired_in(example: Path) -> None:
    """How a planner inserts them: after the host exists, before the service deploy (which depends on them)."""
    stack = load_stack(_with_tls(example, "      certificate: file:secrets/web.crt\n      key: file:secrets/web.key\n"))
    steps = [Step(id="allocate", kind="host.allocate", title="a", params={"provider": "colo-b", "name": "x"})]
    tls = tls_steps(stack, "alt-b", after="allocate")
    steps += tls
    steps.append(Step(id="deploy:web", kind="service.deploy", title="d", params={"service": "web"},
                      depends_on=("allocate", *(s.id for s in tls))))
    plan = Plan(stack="microblog", source="primary", target="alt-b", mode="cold", steps=tuple(steps))
    assert plan.step_ids == ("allocate", "tls:web", "deploy:web")
    assert Plan.from_dict(plan.to_dict()).hash == plan.hash


def test_no_tls_setting_no_steps() -> None:
    assert tls_steps(load_stack(EXAMPLE), "alt-b", after="allocate") == []


@pytest.mark.parametrize(("tls", "expected"), [
    ("      acme:\n        directory: https://acme.test/dir\n      certificate: file:x.crt\n      key: file:x.key\n",
     "either `acme`"),
    ("      certificate: file:x.crt\n", "a certificate source is needed"),
    ("      names: [www.microblog.test]\n", "a certificate source is needed"),
    ("      acme:\n        directory: http://acme.test/dir\n", "directory"),
    ("      acme:\n        directory: https://acme.test/dir\n        email: not-an-email\n", "email"),
    ("      acme:\n        directory: https://acme.test/dir\n        contact: ops@x.org\n", "contact"),
    ("      certificate: file:x.crt\n      key: \"-----BEGIN PRIVATE KEY-----\"\n", "inline secrets"),
    ("      certificate: file:x.crt\n      key: file:x.key\n      names: [\"www.x.org; rm -rf /\"]\n", "names"),
    ("      certificate: file:x.crt\n      key: file:x.key\n      renew_before: 1.5\n", "renew_before"),
])
def test_bad_tls_settings_rejected(example: Path, tls: str, expected: str) -> None:
    problems = _problems(_with_tls(example, tls))
    assert any(expected in p for p in problems), problems
    assert not any("BEGIN PRIVATE KEY" in p for p in problems)


def test_acme_names_outside_the_zone_or_without_dns_rejected(example: Path) -> None:
    problems = _problems(_with_tls(example, "      acme:\n        directory: https://acme.test/dir\n"
                                            "      names: [www.elsewhere.org]\n"))
    assert any("outside the zone microblog.test." in p for p in problems), problems


def test_missing_ca_bundle_rejected(example: Path) -> None:
    problems = _problems(_with_tls(example, "      acme:\n        directory: https://acme.test/dir\n"
                                            "        ca_bundle: nowhere.pem\n"))
    assert any("tls.acme.ca_bundle" in p and "not a file" in p for p in problems), problems


def test_https_service_without_tls_warns(example: Path) -> None:
    text = example.read_text().replace(HEALTH, HEALTH + "      scheme: https\n", 1)
    example.write_text(text)
    warnings = [str(w) for w in load_stack(example).warnings]
    assert any("no `tls:` setting" in w for w in warnings), warnings


def _self_signed(names: list[str], days: float) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_cert_facts_coverage_life_and_key_match() -> None:
    cert, key = _self_signed(["www.x.org", "*.api.x.org"], days=89)
    info = cert_info(cert)
    assert info.covers(["www.x.org"]) and info.covers(["v1.api.x.org"]) and not info.covers(["x.org"])
    assert info.life_left() > 2 / 3
    assert key_matches(cert, key)
    assert not key_matches(cert, _self_signed(["www.x.org"], days=1)[1])
    short, _ = _self_signed(["www.x.org"], days=1)
    assert cert_info(short).life_left() < 2 / 3  # would be renewed, not kept


def test_health_verifies_the_certificate_with_the_stacks_trust_file(example: Path) -> None:
    """`tls.trust` is the CA `liferaft health` verifies the service's certificate with (and reads its expiry)."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from liferaft.health.probes import _data_plane

    cert, key = _self_signed(["www.microblog.test"], days=60)
    (example.parent / "ca.pem").write_bytes(cert)
    (example.parent / "key.pem").write_bytes(key)

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(example.parent / "ca.pem", example.parent / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _with_tls(example, "      certificate: file:x.crt\n      key: file:x.key\n      trust: ca.pem\n",
                  "      scheme: https\n")
        text = example.read_text().replace("port: 8080", f"port: {port}").replace("ports: [8080]", f"ports: [{port}]")
        example.write_text(text)
        trusted = load_stack(example)
        tasks = {t.kind: t for t in _data_plane(trusted, "primary", ["127.0.0.1"], 3.0)}
        found = tasks["tls"].fn()
        assert 59 < found.data["days_left"] <= 60
        assert tasks["http"].fn().status == 200
        example.write_text(example.read_text().replace("      trust: ca.pem\n", ""))
        untrusted = {t.kind: t for t in _data_plane(load_stack(example), "primary", ["127.0.0.1"], 3.0)}
        with pytest.raises(Exception, match="not trusted"):
            untrusted["tls"].fn()
    finally:
        server.shutdown()


def test_audit_flags_an_https_service_whose_certificate_lives_only_at_the_primary(example: Path) -> None:
    from liferaft.audit import audit

    example.write_text(example.read_text().replace(HEALTH, HEALTH + "      scheme: https\n", 1))
    found = [f for f in audit(load_stack(example), check_ns=False).findings if f.layer == "TLS certificates"]
    assert len(found) == 1 and found[0].severity == "warning" and "only on the primary's hosts" in found[0].message
    assert found[0].vendor == "ssh:10.213.7.11"  # the primary site's compute (hosts you bring)

    example.write_text(example.read_text().replace(
        "      scheme: https\n", "      scheme: https\n    tls:\n      acme:\n"
        "        directory: https://acme-v02.api.letsencrypt.org/directory\n", 1))
    report = audit(load_stack(example), check_ns=False)
    assert not [f for f in report.findings if f.layer == "TLS certificates"]
    assert ("acme-v02.api.letsencrypt.org",) in [lay.vendors for lay in report.layers
                                                  if lay.name == "TLS certificates"]


def test_the_live_planner_inserts_the_certificate_before_the_deploy(example: Path) -> None:
    """make_plan itself puts `tls:web` after the host's preparation, and the deploy waits for it; a drill keeps it."""
    from liferaft.drill.plan import to_drill
    from liferaft.engine.observe import Observed
    from liferaft.failover.planner import make_plan

    stack = load_stack(_with_tls(example, "      certificate: file:secrets/web.crt\n      key: file:secrets/web.key\n"))
    obs = Observed(source_host={"name": "a", "address": "10.0.0.11", "port": 22, "user": "root",
                                "host_keys": ["ssh-ed25519 AAAA"], "private_key_file": "/k"},
                   target_host_preview="10.0.0.12", target_free=("b",),
                   sizes={"images": {"items": 1, "bytes": 1}, "blog": {"bytes": 1}}, dns_current={})
    plan = make_plan(stack, "primary", "alt-b", "live", obs)
    tls = plan.step("tls:web")
    assert tls.kind == "tls.certificate" and tls.depends_on == ("prepare",)
    assert "tls:web" in plan.step("deploy-web").depends_on
    drill = to_drill(plan, drill_record=None, dns_provider=None, zone=None)
    assert "tls:web" in drill.step_ids
    assert make_plan(load_stack(EXAMPLE), "primary", "alt-b", "live", obs).step_ids.count("tls:web") == 0


def test_audit_flags_a_certificate_whose_only_copy_and_issuing_account_are_at_the_primary_vendor(
        example: Path) -> None:
    """Critical when the certificate's only copy (the primary's hosts; or the stack's secrets, held by the primary
    vendor) and its issuing account (dependencies.tls) both sit at a primary vendor; not when the issuer is
    elsewhere or the certificate comes from ACME."""
    from liferaft.audit import audit

    def tls_findings(path: Path) -> list[tuple[str, str]]:
        return [(f.severity, f.message) for f in audit(load_stack(path), check_ns=False).findings
                if f.layer == "TLS certificates"]

    tls_dep = '  tls: {vendor: letsencrypt, detail: "ACME: re-issued at any host"}\n'
    secrets_dep = '  secrets: {vendor: operators-vault, detail: "a vault the operators run outside both sites"}\n'
    base = example.read_text()
    assert tls_dep in base and secrets_dep in base
    at_aws = base.replace(tls_dep, "  tls: {vendor: aws, detail: ACM}\n")
    example.write_text(at_aws.replace(HEALTH, HEALTH + "      scheme: https\n", 1))
    found = tls_findings(example)
    assert any(sev == "critical" and "only copy is on the primary's hosts" in msg and "issuing account is at aws"
               in msg for sev, msg in found), found
    example.write_text(base.replace(HEALTH, HEALTH + "      scheme: https\n", 1))
    assert not [f for f in tls_findings(example) if f[0] == "critical"]
    example.write_text(at_aws.replace(secrets_dep, "  secrets: {vendor: aws, detail: Secrets Manager}\n"))
    _with_tls(example, "      certificate: file:x.crt\n      key: file:x.key\n")
    found = tls_findings(example)
    assert any(sev == "critical" and "stack's secrets, which aws holds" in msg for sev, msg in found), found
    example.write_text(example.read_text().replace("tls: {vendor: aws, detail: ACM}", "tls: {vendor: zerossl.com}"))
    found = tls_findings(example)
    assert [sev for sev, msg in found if "only copy" in msg] == ["warning"], found
