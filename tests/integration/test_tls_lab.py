"""TLS at the target (issue 23 item 4) against the lab: pebble (the ACME test CA) validating DNS-01 at the lab's
PowerDNS, certificates delivered over SSH to a lab host, the example app serving HTTPS with them.

One lab for the module (`cloud_lab`: hosts, PowerDNS, pebble; no example deploy); each test starts from pool hosts
without TLS state (`_pool_hosts_without_tls`). The step runs
through the engine: a plan of `host.allocate` (the alternate site's ssh pool) + the steps `tls_steps()` makes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from liferaft.configure import TargetHost
from liferaft.configure.remote import ssh
from liferaft.engine import Runner
from liferaft.engine.plan import Plan, Step
from liferaft.errors import CheckFailed
from liferaft.stack import load_stack
from liferaft.steps.hosts import stop_services_lines
from liferaft.steps.tls import (
    account_key_path,
    cert_info,
    https_get,
    service_https_check,
    tls_state_dir,
    tls_steps,
    txt_answers,
)

pytestmark = pytest.mark.lab

FQDN = "www.microblog.test"
CHALLENGE = "_acme-challenge.www.microblog.test."
REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "microblog" / "app" / "microblog.py"
APP_DIR_ON_HOST = "/opt/tls-app"  # the app is copied here: see _serve_https
APP_ON_HOST = f"{APP_DIR_ON_HOST}/microblog.py"
HTTPS_PORT = 8443
STOP_APP = "start-stop-daemon --stop --pidfile /run/tls-app.pid --remove-pidfile --oknodo --retry TERM/5/KILL/2"


@dataclass(frozen=True)
class Acme:
    url: str  # the ACME directory
    ca_bundle: Path  # trust for the directory's HTTPS
    issuer_ca: Path  # the root pebble issues under
    log_path: Path


@pytest.fixture(scope="module")
def cloud_lab(own_cloud_lab: Any) -> Any:
    """A cloud lab of this module's own, so its pool hosts start as `lab up` leaves them. (The app that "never
    answered on 8443" in full runs was not the shared lab's doing: it was started by the checkout's path, absent
    on the host when the checkout is under /tmp -- see `_serve_https`.)"""
    return own_cloud_lab


@pytest.fixture(autouse=True)
def _pool_hosts_without_tls(cloud_lab: Any) -> None:
    """Every test starts from pool hosts b and c as `lab up` left them for TLS: no app running, no certificate in
    /etc/liferaft/tls/web, no challenge TXT record. What one test leaves -- the certificate the first one issues
    (on success or failure), the app it serves, a playbook's service -- must not decide another's outcome: a kept
    certificate makes the step answer `kept` without asking the CA, so the failure tests' orders never happen."""
    info = cloud_lab.info
    lines = [STOP_APP + " >/dev/null", *stop_services_lines(["web"]), "rm -rf /etc/liferaft/tls/web", ""]
    for name in ("b", "c"):
        ssh(_lab_host(info, name), "sh -s", stdin="\n".join(lines))
    _pdns_txt(info, CHALLENGE, [])


@pytest.fixture(scope="module")
def pebble(cloud_lab: Any) -> Acme:
    """The lab's ACME CA (pebble, started by `lab up`, DNS-01 through the lab's PowerDNS)."""
    acme = cloud_lab.info.acme
    assert acme is not None, "the lab runs no ACME server"
    state = json.loads((cloud_lab.info.directory / "lab.json").read_text())
    return Acme(url=acme["directory"], ca_bundle=Path(acme["ca_bundle"]), issuer_ca=Path(acme["issuer_ca"]),
                log_path=Path(state["servers"]["acme"]["log_path"]))


def _stack_file(info: Any, name: str, tls: dict[str, Any], expect_status: int = 503) -> Path:
    """The lab's stack with `services.web.tls` set and its health check on HTTPS."""
    data = yaml.safe_load(info.stack_file.read_text())
    web = data["services"]["web"]
    web["tls"] = tls
    web["ports"] = [HTTPS_PORT]
    # no database in most of these tests: /healthz answers 503 -- over HTTPS, with a certificate that verifies
    web["health"] = {"path": "/healthz", "port": HTTPS_PORT, "scheme": "https", "expect_status": expect_status}
    if "acme" in tls:
        tls.setdefault("trust", str(info.acme["issuer_ca"]))
    data.pop("drill", None)
    path = info.directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _plan(stack: Any, name: str) -> Plan:
    allocate = Step(id="allocate", kind="host.allocate", title="allocate a host at alt-b",
                    params={"provider": "colo-b", "name": name})
    return Plan(stack=stack.model.name, source="primary", target="alt-b", mode="cold",
                steps=(allocate, *tls_steps(stack, "alt-b", after="allocate")))


def _run(stack: Any, state: Path, name: str) -> tuple[Any, dict[str, Any], list[Any], Runner]:
    events: list[Any] = []
    runner = Runner(state, stack=stack, events=events.append)
    outcome = runner.start(_plan(stack, name))
    assert outcome.status == "done", outcome.to_dict()
    with runner.journal() as j:
        result = j.step(outcome.run_id, "tls:web").result
    return outcome, result, events, runner


def _target(info: Any, state: Path, runner: Runner, run_id: str) -> TargetHost:
    with runner.journal() as j:
        alloc = j.step(run_id, "allocate").result
    return TargetHost(name=alloc["name"], address=alloc["address"], port=int(alloc["port"]), user="root",
                      host_keys=tuple(alloc["host_keys"]), private_key_file=str(info.client_key))


def _serve_https(host: TargetHost) -> None:
    """The example app on the host, configured for HTTPS with the delivered files (no database: /healthz 503).

    The app's file is copied to the host first, as a deploy does: a lab host is another machine, which shares
    the controller's /usr but has its own /tmp, /run and /root -- started by the checkout's path, the app of a
    checkout under /tmp (a fresh clone in /tmp/fresh) was not there, and never answered. Returns once the app
    listens; if it exits first, fails at once with its log."""
    ssh(host, f"mkdir -p {APP_DIR_ON_HOST} && cat > {APP_ON_HOST}", stdin=APP.read_text())
    cfg = {"listen_host": "0.0.0.0", "listen_port": HTTPS_PORT,
           "db": {"host": "127.0.0.1", "port": 1, "name": "x", "user": "x", "password": "x", "connect_timeout": 1},
           "s3": {"region": "us-east-1", "access_key_id": "x", "secret_access_key": "x", "bucket": "x",
                  "endpoint_url": "http://127.0.0.1:1"},
           "tls": {"certificate": "/etc/liferaft/web/tls/fullchain.pem", "key": "/etc/liferaft/web/tls/privkey.pem"}}
    script = "\n".join([
        "set -eu", "umask 077", f"cat > /tmp/tls-app.json <<'EOF'\n{json.dumps(cfg)}\nEOF",
        STOP_APP + " >/dev/null", ": > /tmp/tls-app.log",
        ("start-stop-daemon --start --background --make-pidfile --pidfile /run/tls-app.pid "
         f"--output /tmp/tls-app.log --exec /usr/bin/python3 -- -B {APP_ON_HOST} --config /tmp/tls-app.json"),
        "i=0",
        "until grep -q 'listening on' /tmp/tls-app.log; do",
        "  if ! start-stop-daemon --status --pidfile /run/tls-app.pid; then",
        "    echo 'the app exited:' >&2; tail -n 5 /tmp/tls-app.log >&2; exit 1",
        "  fi",
        "  i=$((i + 1)); [ $i -lt 300 ] || { echo 'the app did not listen in 30 s' >&2; exit 1; }",
        "  sleep 0.1",
        "done", ""])
    ssh(host, "sh -s", stdin=script)


def _https(address: str, cafile: str, host: TargetHost | None = None) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        try:
            return https_get(address, HTTPS_PORT, "/healthz", FQDN, cafile=cafile, timeout=3.0)
        except ssl.SSLCertVerificationError:
            raise
        except OSError as e:
            if time.monotonic() > deadline:
                if host is None:
                    raise
                log = ssh(host, "tail -n 40 /tmp/tls-app.log 2>&1; ss -ltnp 2>&1 | grep -w 8443; true")
                raise AssertionError(f"the app on {host.name} never answered HTTPS ({e}); its log and listener:\n"
                                     f"{log}") from e
            time.sleep(0.2)


def _issued_count(pebble: Any) -> int:
    return len(re.findall(r"Issued certificate serial", pebble.log_path.read_text()))


def _secret_lines(pem: bytes) -> list[str]:
    return [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]


def _assert_never_recorded(state: Path, events: list[Any], secrets_pem: list[bytes]) -> None:
    """No line of any key in the journal, the run folders, or any event (the tls/ cache is where keys live)."""
    lines = [ln for pem in secrets_pem for ln in _secret_lines(pem)]
    assert lines
    texts = [json.dumps(e.to_dict()) for e in events]
    keys_dir = tls_state_dir(state, "microblog")
    for f in state.rglob("*"):
        if f.is_file() and keys_dir not in f.parents:
            texts.append(f.read_bytes().decode("utf-8", "replace"))
    for text in texts:
        for ln in lines:
            assert ln not in text


def test_acme_dns01_certificate_served_over_https_then_kept(cloud_lab: Any, pebble: Any, tmp_path: Path) -> None:
    info = cloud_lab.info
    stack = load_stack(_stack_file(info, "liferaft-tls-acme.yaml", {
        "acme": {"directory": pebble.url, "email": "ops@microblog.test", "ca_bundle": str(pebble.ca_bundle)}}))
    state = tmp_path / "state"
    issued_before = _issued_count(pebble)

    t0 = time.monotonic()
    outcome, result, events, runner = _run(stack, state, "microblog-tls")
    took = time.monotonic() - t0
    assert result["action"] == "issued"
    assert result["names"] == [FQDN]
    assert "Pebble" in result["issuer"]
    assert _issued_count(pebble) == issued_before + 1
    print(f"issued at pebble in {result['timings']['total_s']:.2f} s (step {result['obtain_s']:.2f} s, "
          f"run {took:.2f} s): {result['timings']}")

    # the challenge record is gone from the zone and from the authoritative server's answers
    host_, _, port = info.dns_server.rpartition(":")
    assert txt_answers((host_, int(port)), CHALLENGE) == set()
    kinds = [e.kind for e in events]
    assert "tls.challenge_visible" in kinds and "tls.challenge_removed" in kinds

    # the host serves HTTPS with it: verified for the name against pebble's root, refused without it
    host = _target(info, state, runner, outcome.run_id)
    _serve_https(host)
    status, peer = _https(host.address, str(pebble.issuer_ca), host)
    assert status == 503
    assert ("DNS", FQDN) in peer["subjectAltName"]
    # the check a planner's verify step uses: by name, against the stack's `tls.trust`
    assert service_https_check(stack, "web", host.address, timeout=10) > 0
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(host.address, HTTPS_PORT, "/healthz", FQDN, cafile=str(pebble.ca_bundle))

    # owner-only key on the host, owner-only account key and cache on the controller
    modes = ssh(host, "stat -c '%a %U' /etc/liferaft/web/tls/privkey.pem /etc/liferaft/web/tls/fullchain.pem")
    assert modes.split("\n")[:2] == ["600 root", "644 root"]
    account_key = account_key_path(state, "microblog", pebble.url)
    assert account_key.stat().st_mode & 0o777 == 0o600
    cached_key = tls_state_dir(state, "microblog") / "web" / "privkey.pem"
    assert cached_key.stat().st_mode & 0o777 == 0o600

    # a second move keeps the certificate that is there (no new order at the CA)
    _, result2, events2, _ = _run(stack, state, "microblog-tls")
    assert result2["action"] == "kept"
    assert result2["fingerprint_sha256"] == result["fingerprint_sha256"]
    assert _issued_count(pebble) == issued_before + 1

    # neither the account key nor the certificate's key was journaled or emitted
    _assert_never_recorded(state, events + events2, [account_key.read_bytes(), cached_key.read_bytes()])

    # the certificate is reused from the state dir for a host that lacks it (e.g. a resumed or repeated move)
    ssh(host, "rm -f /etc/liferaft/web/tls/fullchain.pem")
    _, result3, _, _ = _run(stack, state, "microblog-tls")
    assert result3["action"] == "reused"
    assert result3["fingerprint_sha256"] == result["fingerprint_sha256"]
    assert _issued_count(pebble) == issued_before + 1
    ssh(host, STOP_APP)


def test_secret_reference_certificate_installed_and_undone(cloud_lab: Any, pebble: Any, tmp_path: Path) -> None:
    """A certificate and key the stack keeps (file: references) reach the host; rollback removes them."""
    from liferaft.providers import acme

    info = cloud_lab.info
    # a certificate for the name from pebble, kept by the "operator" as the stack's own secret files
    key = acme.new_private_key()
    def set_txt(values: Any) -> None:
        for name, vals in values.items():
            _pdns_txt(info, name, [f'"{v}"' for v in vals])

    def clear_txt(values: Any) -> None:
        for name in values:
            _pdns_txt(info, name, [])

    got = acme.issue(acme.AcmeSettings(pebble.url, ca_bundle=str(pebble.ca_bundle)), acme.new_account_key(), key,
                     [FQDN], publish=set_txt, unpublish=clear_txt)
    secrets_dir = info.secrets_dir
    (secrets_dir / "tls_web.crt").write_bytes(got.fullchain_pem)
    (secrets_dir / "tls_web.key").write_bytes(key)
    (secrets_dir / "tls_web.key").chmod(0o600)
    stack = load_stack(_stack_file(info, "liferaft-tls-secret.yaml", {
        "certificate": "file:secrets/tls_web.crt", "key": "file:secrets/tls_web.key"}))
    state = tmp_path / "state"

    outcome, result, events, runner = _run(stack, state, "microblog-tls-secret")
    assert result["action"] == "installed"
    assert result["fingerprint_sha256"] == cert_info(got.fullchain_pem).fingerprint_sha256
    host = _target(info, state, runner, outcome.run_id)
    assert cert_info(ssh(host, "cat /etc/liferaft/web/tls/fullchain.pem")).fingerprint_sha256 == \
        result["fingerprint_sha256"]
    assert ssh(host, "stat -c %a /etc/liferaft/web/tls/privkey.pem").strip() == "600"
    _serve_https(host)
    _, peer = _https(host.address, str(pebble.issuer_ca), host)
    assert ("DNS", FQDN) in peer["subjectAltName"]
    with pytest.raises(CheckFailed, match="does not verify"):  # no `tls.trust`: the system's roots refuse pebble's
        service_https_check(stack, "web", host.address, timeout=5)
    ssh(host, STOP_APP)

    # again: kept, since the host holds exactly the stack's certificate
    _, again, events2, _ = _run(stack, state, "microblog-tls-secret")
    assert again["action"] == "kept"
    _assert_never_recorded(state, events + events2, [key])

    # rolling back the run that installed them removes the files from the host
    rolled = runner.rollback(outcome.run_id)
    assert "tls.removed" in [e.kind for e in events], rolled.to_dict()
    assert ssh(host, "ls /etc/liferaft/web/tls 2>/dev/null || echo gone").strip() == "gone"


def test_challenge_record_removed_when_the_order_fails(cloud_lab: Any, pebble: Acme, tmp_path: Path) -> None:
    """The authoritative server never answers the TXT (a wrong `dns.nameserver`): the run stops naming it, and the
    record set at the DNS provider is put back as it was (here: an operator's own TXT value stays)."""
    from liferaft.errors import RunFailed
    from liferaft.lab._proc import free_udp_tcp_port

    info = cloud_lab.info
    host_, _, port = info.dns_server.rpartition(":")
    server = (host_, int(port))
    _pdns_txt(info, CHALLENGE, ['"operator-value"'])
    path = _stack_file(info, "liferaft-tls-fail.yaml", {
        "acme": {"directory": pebble.url, "ca_bundle": str(pebble.ca_bundle), "propagation_timeout": "1s"}})
    data = yaml.safe_load(path.read_text())
    data["dns"]["nameserver"] = f"127.0.0.1:{free_udp_tcp_port('127.0.0.1')}"  # nobody answers there
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    stack = load_stack(path)
    try:
        with pytest.raises(RunFailed, match="did not answer the challenge TXT record"):
            Runner(tmp_path / "state", stack=stack).start(_plan(stack, "microblog-tls-fail"))
        assert txt_answers(server, CHALLENGE) == {"operator-value"}
    finally:
        _pdns_txt(info, CHALLENGE, [])


def test_unreachable_acme_server_is_a_provider_error(cloud_lab: Any, tmp_path: Path) -> None:
    from liferaft.errors import RunFailed
    from liferaft.lab._proc import free_port

    info = cloud_lab.info
    stack = load_stack(_stack_file(info, "liferaft-tls-down.yaml", {
        "acme": {"directory": f"https://127.0.0.1:{free_port('127.0.0.1')}/dir"}}))
    with pytest.raises(RunFailed, match=r"provider 'acme': account failed: .*ConnectionError"):
        Runner(tmp_path / "state", stack=stack).start(_plan(stack, "microblog-tls-down"))


def _pdns_txt(info: Any, name: str, contents: list[str]) -> None:
    """Set (or, empty, delete) a TXT record set directly through the lab PowerDNS's API."""
    rrset: dict[str, Any] = {"name": name, "type": "TXT"}
    if contents:
        rrset.update(ttl=5, changetype="REPLACE", records=[{"content": c, "disabled": False} for c in contents])
    else:
        rrset["changetype"] = "DELETE"
    req = urllib.request.Request(f"{info.direct['dnshost']}/api/v1/servers/localhost/zones/{info.zone}",
                                 data=json.dumps({"rrsets": [rrset]}).encode(), method="PATCH",
                                 headers={"X-API-Key": info.secret("pdns_api_key"),
                                          "Content-Type": "application/json"})
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10).read()


def test_example_app_deployed_by_its_playbook_serves_https(cloud_lab: Any, pebble: Acme, tmp_path: Path) -> None:
    """The order a planner uses: allocate, tls.certificate, then the service's playbook (PostgreSQL + the app),
    which points the app at the delivered files: the app answers /healthz 200 over HTTPS, verified by name."""
    from liferaft.configure.deploy import deploy_service
    from liferaft.lab.example import _create_bucket, lab_target_host
    from liferaft.providers.appenv import s3_settings

    info = cloud_lab.info
    stack = load_stack(_stack_file(info, "liferaft-tls-deploy.yaml", {
        "acme": {"directory": pebble.url, "ca_bundle": str(pebble.ca_bundle)}}, expect_status=200))
    state = tmp_path / "state"
    for pool_host in ("b", "c"):  # whichever the pool gives: it starts without a certificate
        ssh(lab_target_host(info, pool_host), "rm -rf /etc/liferaft/web/tls")
    outcome, result, _, runner = _run(stack, state, "microblog-tls-deploy")
    assert result["action"] == "issued"
    host = _target(info, state, runner, outcome.run_id)
    for key in stack.model.services["web"].buckets:
        _create_bucket(s3_settings(stack.provider(stack.site("alt-b").objects), stack.secret),
                       stack.model.data.buckets[key].name)
    t0 = time.monotonic()
    deploy_service(stack, "web", "alt-b", host, allowed_networks=[f"{info.bridge_address}/24"],
                   run_options={"state_dir": state})
    print(f"playbooks (PostgreSQL + app with TLS) in {time.monotonic() - t0:.1f} s")
    assert service_https_check(stack, "web", host.address, timeout=30) > 0
    owner = ssh(host, "stat -c '%a %U' /etc/liferaft/web/tls/privkey.pem").strip()
    assert owner == "600 microblog"  # the playbook gave the app's user its key, still owner-only
    # a renewed certificate keeps that owner (the step keeps the owner the playbook gave the files)
    ssh(host, "rm -f /etc/liferaft/web/tls/fullchain.pem")
    _, again, _, _ = _run(stack, state, "microblog-tls-deploy")
    assert again["action"] == "reused"
    assert ssh(host, "stat -c '%a %U' /etc/liferaft/web/tls/privkey.pem").strip() == "600 microblog"
    assert service_https_check(stack, "web", host.address, timeout=30) > 0
    ssh(host, "sh -s", stdin="\n".join(stop_services_lines(["web"])) + "\n")


@pytest.mark.reliability
def test_crash_while_the_challenge_is_published_then_resume(cloud_lab: Any, pebble: Acme, tmp_path: Path) -> None:
    """SIGKILL right after the challenge TXT became visible: the record stays behind (journaled); `resume`
    removes it before ordering again, and finishes with a certificate on the host."""
    info = cloud_lab.info
    path = _stack_file(info, "liferaft-tls-crash.yaml", {
        "acme": {"directory": pebble.url, "ca_bundle": str(pebble.ca_bundle)}})
    state = tmp_path / "state"
    for pool_host in ("b", "c"):
        ssh(_lab_host(info, pool_host), "rm -rf /etc/liferaft/web/tls")
    code = ("import sys; from pathlib import Path; from liferaft.engine import Runner; "
            "from liferaft.stack import load_stack; from tests.integration.test_tls_lab import _plan; "
            "stack = load_stack(sys.argv[1]); Runner(Path(sys.argv[2]), stack=stack).start(_plan(stack, 'crash'))")
    env = {**os.environ, "LIFERAFT_TEST_KILL_ON_EVENT": "tls.challenge_visible", "PYTHONPATH": str(REPO)}
    cp = subprocess.run([sys.executable, "-c", code, str(path), str(state)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120, check=False)
    assert cp.returncode == -signal.SIGKILL, cp.stderr[-2000:]
    host_, _, port = info.dns_server.rpartition(":")
    left = txt_answers((host_, int(port)), CHALLENGE)
    assert len(left) == 1  # the crash left the challenge record in the zone

    stack = load_stack(path)
    runner = Runner(state, stack=stack)
    outcome = runner.resume("last")
    assert outcome.status == "done"
    with runner.journal() as j:
        rec = j.step(outcome.run_id, "tls:web")
    assert rec.result["action"] == "issued" and not rec.memo.get("txt_previous")
    assert txt_answers((host_, int(port)), CHALLENGE) == set()
    host = _target(info, state, runner, outcome.run_id)
    assert cert_info(ssh(host, "cat /etc/liferaft/web/tls/fullchain.pem")).covers([FQDN])


def _lab_host(info: Any, name: str) -> TargetHost:
    from liferaft.lab.example import lab_target_host

    return lab_target_host(info, name)
