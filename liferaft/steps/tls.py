"""TLS at the target: the `tls.certificate` step puts a certificate and its key on the new site's hosts.

Where the certificate comes from is the service's `tls:` setting in the stack file:

- `acme`: an ACME CA issues it through a DNS-01 challenge answered at the stack's own DNS provider (the one the
  cutover uses, independent of the primary): the `_acme-challenge` TXT record is set, liferaft waits until the zone's
  authoritative server answers it, the CA validates, the order is finalized, the chain downloaded, and the TXT record
  is restored to what it was. The ACME account key is generated once per stack and CA and kept owner-only in the
  state directory (`<state>/<stack>/tls/`), as is the last certificate and key issued (a resumed or later move
  reuses them while they have enough life left).
- `certificate` + `key`: secret references to a certificate and key the stack keeps outside the primary.

The files land on every host the allocate step made, through SSH with pinned host keys (the key travels on stdin,
never a command line): `/etc/liferaft/tls/<service>/fullchain.pem` (0644) and `privkey.pem` (0600), where the
service's playbook points the service (see liferaft/playbooks/README.md). Keys are registered as the run's secrets:
the journal refuses to store them, and no event or result carries them.

Idempotent: a host that already has a certificate for the names with more than `renew_before` (2/3) of its lifetime
left keeps it. Undo removes the files from the hosts the step wrote to.

A planner inserts the steps with `tls_steps(stack, target_site, after=<the allocate or configure step id>)` and
makes the service deploy steps depend on them (the service starts with its certificate in place).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from liferaft.configure import host_from_dict
from liferaft.configure.deploy import tls_paths
from liferaft.configure.remote import ssh
from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.errors import CheckFailed, RunFailed, UsageError

KIND = "tls.certificate"
TXT_TTL = 60


# ------------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class TlsCertificateParams:
    """What one `tls.certificate` step does: the service, the names its certificate covers, where it comes from,
    and which earlier step's result lists the hosts to put it on."""

    service: str
    names: tuple[str, ...]
    source: Literal["acme", "secret"]
    site: str
    hosts_from: str = "allocate"

    def to_params(self) -> dict[str, Any]:
        return {"service": self.service, "names": list(self.names), "source": self.source, "site": self.site,
                "hosts_from": self.hosts_from}

    @classmethod
    def from_step(cls, step: Step) -> TlsCertificateParams:
        p = step.params
        source = p["source"]
        if source not in ("acme", "secret"):
            raise UsageError(f"step {step.id}: unknown certificate source {source!r}")
        return cls(service=str(p["service"]), names=tuple(str(n) for n in p["names"]), source=source,
                   site=str(p.get("site", "")), hosts_from=str(p.get("hosts_from", "allocate")))


def tls_steps(stack: Any, target_site: str, after: str, *, hosts_from: str = "allocate") -> list[Step]:
    """The `tls.certificate` steps for a move to `target_site`: one per service with a `tls:` setting, each after
    step `after` (the host must exist; put it before the service's deploy step, which should depend on it).
    `hosts_from` names the step whose result lists the target hosts (the allocate step)."""
    from liferaft.stack.checks import tls_names

    model = getattr(stack, "model", stack)
    out = []
    for name, svc in model.services.items():
        if svc.tls is None:
            continue
        params = TlsCertificateParams(service=name, names=tuple(tls_names(model, name)),
                                      source="acme" if svc.tls.acme is not None else "secret", site=target_site,
                                      hosts_from=hosts_from)
        how = (f"from {svc.tls.acme.directory} (DNS-01)" if svc.tls.acme is not None
               else "from the stack's secret references")
        out.append(Step(id=f"tls:{name}", kind=KIND, title=f"certificate for {', '.join(params.names)} "
                        f"({name}) {how}", params=params.to_params(), depends_on=(after,)))
    return out


# ------------------------------------------------------------------------------------------------ certificates
@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]
    not_before: float
    not_after: float
    fingerprint_sha256: str
    issuer: str
    serial: str

    def covers(self, names: tuple[str, ...] | list[str]) -> bool:
        mine = {n.lower() for n in self.names}
        return all(n.lower() in mine or (n.count(".") > 1 and "*." + n.split(".", 1)[1].lower() in mine)
                   for n in names)

    def life_left(self, now: float | None = None) -> float:
        """The share of the certificate's lifetime still ahead (0 when expired)."""
        now = time.time() if now is None else now
        total = max(1.0, self.not_after - self.not_before)
        return max(0.0, min(1.0, (self.not_after - now) / total))

    def public(self) -> dict[str, Any]:
        return {"names": list(self.names), "not_after": _iso(self.not_after), "issuer": self.issuer,
                "serial": self.serial, "fingerprint_sha256": self.fingerprint_sha256}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cert_info(pem: bytes | str) -> CertInfo:
    """The first certificate of a PEM chain: its DNS names, validity, issuer and sha256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(names=names, not_before=cert.not_valid_before_utc.timestamp(),
                    not_after=cert.not_valid_after_utc.timestamp(),
                    fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(), issuer=cert.issuer.rfc4514_string(),
                    serial=format(cert.serial_number, "x"))


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pub = x509.load_pem_x509_certificate(cert_pem).public_key()
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(pub.public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def _register_key(ctx: RunContext, key_pem: bytes) -> None:
    """The key (and each line of its body, so a partial copy is caught too) is a secret of the run."""
    text = key_pem.decode()
    ctx.add_secret(text.strip())
    for line in text.splitlines():
        if len(line) >= 16 and not line.startswith("-----"):
            ctx.add_secret(line)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def tls_state_dir(state_dir: Path, stack: str) -> Path:
    """`<state>/<stack>/tls/` (0700): the ACME account keys and the last certificate issued per service."""
    from liferaft.engine.journal import stack_dir

    d = stack_dir(state_dir, stack) / "tls"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def account_key_path(state_dir: Path, stack: str, directory: str) -> Path:
    """One account key per stack and CA (the directory URL)."""
    tag = hashlib.sha256(directory.encode()).hexdigest()[:12]
    return tls_state_dir(state_dir, stack) / f"acme-account-{tag}.key"


def _account_key(ctx: RunContext, directory: str) -> bytes:
    from liferaft.providers.acme import new_account_key

    path = account_key_path(ctx.state_dir, ctx.plan.stack, directory)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another run made it meanwhile
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(new_account_key())
    key = path.read_bytes()
    _register_key(ctx, key)
    return key


# ---------------------------------------------------------------------------------------------- DNS-01 at the
# stack's DNS provider
def authoritative_servers(dns_cfg: Any) -> list[tuple[str, int]]:
    """Where to ask whether the TXT record is visible: the stack's `dns.nameserver`, else the zone's NS hosts."""
    import dns.resolver

    if dns_cfg.nameserver:
        host, _, port = dns_cfg.nameserver.rpartition(":")
        return [(host.strip("[]"), int(port))]
    out = []
    for ns in dns.resolver.resolve(dns_cfg.zone, "NS"):
        for rtype in ("A", "AAAA"):
            try:
                out += [(a.to_text(), 53) for a in dns.resolver.resolve(ns.target, rtype)]
            except dns.exception.DNSException:
                continue
    return out


def txt_answers(server: tuple[str, int], name: str, timeout: float = 2.0) -> set[str]:
    import dns.exception
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime, r.cache = [server[0]], server[1], timeout, None
    try:
        answer = r.resolve(name, "TXT", raise_on_no_answer=False, search=False)
    except dns.exception.DNSException:
        return set()
    return {b"".join(rd.strings).decode() for rd in (answer.rrset or [])}


class _Dns01:
    """Publishes the challenge TXT values at the stack's DNS provider, keeping whatever the record held before
    (journaled first, so a crash leaves something to restore), and waits until the authoritative server answers."""

    def __init__(self, ctx: RunContext, timeout: float) -> None:
        stack = ctx.require_stack()
        if stack.model.dns is None:
            raise UsageError("ACME DNS-01 needs the stack's `dns:` section (its provider and zone)")
        self.ctx, self.cfg, self.timeout = ctx, stack.model.dns, timeout
        self.dns = ctx.provider(self.cfg.provider).require("dns")

    def publish(self, challenges: Any) -> None:
        from liferaft.providers.base import RecordSet

        pending = dict(self.ctx.memo.get("txt_previous") or {})
        for name in challenges:
            if name not in pending:
                pending[name] = [v for rs in self.dns.get_records(self.cfg.zone, name, "TXT") if rs.type == "TXT"
                                 for v in rs.values]
        self.ctx.remember(txt_previous=pending)  # before touching the zone
        for name, values in challenges.items():
            self.dns.upsert_record(self.cfg.zone, RecordSet(name, "TXT", TXT_TTL,
                                                            (*pending[name], *(f'"{v}"' for v in values))))
        servers = authoritative_servers(self.cfg)
        deadline = time.monotonic() + self.timeout
        t0 = time.monotonic()
        for name, values in challenges.items():
            for server in servers:
                while not set(values) <= txt_answers(server, name):
                    if time.monotonic() > deadline:
                        raise RunFailed(f"the authoritative server {server[0]}:{server[1]} did not answer the "
                                        f"challenge TXT record {name} within {self.timeout:.0f} s")
                    time.sleep(0.1)
        self.ctx.emit("tls.challenge_visible", f"{', '.join(challenges)} answered by {len(servers)} authoritative "
                      f"server(s) after {time.monotonic() - t0:.2f} s", names=list(challenges))

    def unpublish(self, challenges: Any = None) -> None:
        restore_txt(self.ctx, self.dns, self.cfg.zone)


def restore_txt(ctx: RunContext, dns: Any, zone: str) -> None:
    """Put every `_acme-challenge` record this step touched back as it was (deleted if it did not exist)."""
    from liferaft.providers.base import RecordSet

    pending = ctx.memo.get("txt_previous") or {}
    for name, previous in pending.items():
        if previous:
            dns.upsert_record(zone, RecordSet(name, "TXT", TXT_TTL, tuple(previous)))
        else:
            dns.delete_record(zone, name, "TXT")
        ctx.emit("tls.challenge_removed", f"{name} TXT restored", name=name)
    if pending:
        ctx.remember(txt_previous={})


# ------------------------------------------------------------------------------------------------- the hosts
def _hosts(ctx: RunContext, p: TlsCertificateParams) -> list[Any]:
    out = ctx.output(p.hosts_from)
    return [host_from_dict(h) for h in (out.get("hosts") or [out])]


def _read_remote_cert(host: Any, service: str) -> bytes:
    path = tls_paths(service)["certificate"]
    return ssh(host, f"cat {path} 2>/dev/null || true", what=f"read the certificate of {service}").encode()


def _install_script(service: str, cert_pem: bytes, key_pem: bytes) -> str:
    paths = tls_paths(service)
    d = os.path.dirname(paths["key"])
    cert, key = cert_pem.decode().strip(), key_pem.decode().strip()
    if "LIFERAFT_TLS_EOF" in cert + key:
        raise CheckFailed("the certificate or key contains liferaft's heredoc marker")
    return "\n".join([
        "set -eu", f"d={d}",
        # traversable folders (the service's user reads its key through them); the key itself is 0600
        f'[ -d {os.path.dirname(os.path.dirname(d))} ] || install -d -m 0755 {os.path.dirname(os.path.dirname(d))}',
        f'[ -d {os.path.dirname(d)} ] || install -d -m 0755 {os.path.dirname(d)}',
        '[ -d "$d" ] || install -d -m 0755 "$d"', "umask 077",
        "cat > \"$d/.privkey.pem.new\" <<'LIFERAFT_TLS_EOF'", key, "LIFERAFT_TLS_EOF",
        "cat > \"$d/.fullchain.pem.new\" <<'LIFERAFT_TLS_EOF'", cert, "LIFERAFT_TLS_EOF",
        'chmod 0600 "$d/.privkey.pem.new"', 'chmod 0644 "$d/.fullchain.pem.new"',
        # keep the owner the service's playbook gave the files (the service's user reads its key)
        '[ -e "$d/privkey.pem" ] && chown --reference="$d/privkey.pem" "$d/.privkey.pem.new"',
        '[ -e "$d/fullchain.pem" ] && chown --reference="$d/fullchain.pem" "$d/.fullchain.pem.new"',
        'mv -f "$d/.privkey.pem.new" "$d/privkey.pem"', 'mv -f "$d/.fullchain.pem.new" "$d/fullchain.pem"', "",
    ])


def _remove_script(service: str) -> str:
    paths = tls_paths(service)
    d = os.path.dirname(paths["key"])
    return f"set -eu\nrm -f {paths['key']} {paths['certificate']} {d}/.privkey.pem.new {d}/.fullchain.pem.new\n" \
           f"rmdir {d} 2>/dev/null || true\n"


# ---------------------------------------------------------------------------------------------------- the step
@register
class TlsCertificate(StepKind):
    """Get the service's certificate (ACME DNS-01, or the stack's secret references) onto the target hosts."""

    name = KIND
    undoable = True
    # One order at a time: two services certifying the same name would overwrite each other's challenge record.
    serial = "tls"
    phase: ClassVar[str | None] = "configure"
    drill: ClassVar[str | None] = "keep"  # acts on the target hosts and a challenge record only, both undone

    def describe(self, step: Step) -> str:
        return step.title

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        p = TlsCertificateParams.from_step(step)
        tls = ctx.require_stack().model.services[p.service].tls
        cached = self._cached(ctx, p, create=False)
        return {"names": list(p.names), "source": p.source,
                "directory": tls.acme.directory if tls is not None and tls.acme is not None else None,
                "cached_certificate": cached[0].public() if cached else None}

    def _settings(self, ctx: RunContext, p: TlsCertificateParams) -> Any:
        stack = ctx.require_stack()
        tls = stack.model.services[p.service].tls
        if tls is None:
            raise UsageError(f"service {p.service!r} has no `tls:` setting in the stack file")
        return tls

    # -------------------------------------------------------------------- where the pair comes from
    def _cache_paths(self, ctx: RunContext, p: TlsCertificateParams, *, create: bool = True) -> tuple[Path, Path]:
        if create:
            d = tls_state_dir(ctx.state_dir, ctx.plan.stack) / p.service
            d.mkdir(exist_ok=True, mode=0o700)
        else:  # (preview: read-only)
            from liferaft.engine.journal import _stack_path

            d = _stack_path(ctx.state_dir, ctx.plan.stack) / "tls" / p.service
        return d / "fullchain.pem", d / "privkey.pem"

    def _cached(self, ctx: RunContext, p: TlsCertificateParams, *, create: bool = True
                ) -> tuple[CertInfo, bytes, bytes] | None:
        cert_path, key_path = self._cache_paths(ctx, p, create=create)
        if not (cert_path.is_file() and key_path.is_file()):
            return None
        cert, key = cert_path.read_bytes(), key_path.read_bytes()
        try:
            info = cert_info(cert)
            if not key_matches(cert, key):
                return None
        except ValueError:
            return None
        return info, cert, key

    def _obtain(self, ctx: RunContext, p: TlsCertificateParams, tls: Any) -> tuple[bytes, bytes, str, dict[str, Any]]:
        """(certificate chain, key, how, extra result) -- issued, reused from the state dir, or the stack's own."""
        if p.source == "secret":
            cert = ctx.secret(tls.certificate).encode() + b"\n"
            key = ctx.secret(tls.key).encode() + b"\n"
            _register_key(ctx, key)
            try:
                info, matches = cert_info(cert), key_matches(cert, key)
            except ValueError as e:
                raise CheckFailed(f"service {p.service}: {tls.certificate} / {tls.key} is not a PEM certificate "
                                  f"and private key: {e}") from None
            if not matches:
                raise CheckFailed(f"service {p.service}: the key {tls.key} does not belong to the certificate "
                                  f"{tls.certificate}")
            if not info.covers(p.names):
                raise CheckFailed(f"service {p.service}: the certificate {tls.certificate} covers "
                                  f"{', '.join(info.names) or 'no DNS name'}, not {', '.join(p.names)}")
            if info.life_left() <= 0:
                raise CheckFailed(f"service {p.service}: the certificate {tls.certificate} expired on "
                                  f"{_iso(info.not_after)}")
            return cert, key, "installed", {}
        cached = self._cached(ctx, p)
        if cached and cached[0].covers(p.names) and cached[0].life_left() > tls.renew_before:
            _register_key(ctx, cached[2])
            return cached[1], cached[2], "reused", {}
        return self._issue(ctx, p, tls)

    def _issue(self, ctx: RunContext, p: TlsCertificateParams, tls: Any) -> tuple[bytes, bytes, str, dict[str, Any]]:
        from liferaft.providers import acme

        stack = ctx.require_stack()
        ca_bundle = None
        if tls.acme.ca_bundle:
            path = Path(tls.acme.ca_bundle)
            ca_bundle = str(path if path.is_absolute() else stack.base_dir / path)
        settings = acme.AcmeSettings(directory=tls.acme.directory, email=tls.acme.email, ca_bundle=ca_bundle)
        account_key = _account_key(ctx, tls.acme.directory)
        key = acme.new_private_key()
        _register_key(ctx, key)
        dns01 = _Dns01(ctx, float(tls.acme.propagation_timeout))
        ctx.emit("tls.ordering", f"ordering a certificate for {', '.join(p.names)} from {tls.acme.directory}",
                 names=list(p.names), directory=tls.acme.directory)
        got = acme.issue(settings, account_key, key, list(p.names), publish=dns01.publish,
                         unpublish=dns01.unpublish, on_progress=ctx.emit)
        cert_path, key_path = self._cache_paths(ctx, p)
        _write_private(key_path, key)  # key first: a cert without its key in the cache is never used
        _write_private(cert_path, got.fullchain_pem)
        info = cert_info(got.fullchain_pem)
        ctx.emit("tls.issued", f"certificate for {', '.join(info.names)} issued by {info.issuer} in "
                 f"{got.timings.get('total_s', 0):.2f} s, valid until {_iso(info.not_after)}",
                 names=list(info.names), issuer=info.issuer, not_after=_iso(info.not_after), timings=got.timings)
        return got.fullchain_pem, key, "issued", {"account": got.account_uri, "timings": got.timings}

    # -------------------------------------------------------------------- apply / verify / undo
    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.steps.hosts import refuse_source_host

        p = TlsCertificateParams.from_step(step)
        tls = self._settings(ctx, p)
        dns_cfg = ctx.require_stack().model.dns
        if ctx.memo.get("txt_previous") and dns_cfg is not None:  # an interrupted order left a challenge record
            restore_txt(ctx, ctx.provider(dns_cfg.provider).require("dns"), dns_cfg.zone)
        hosts = _hosts(ctx, p)
        for h in hosts:
            refuse_source_host(ctx, h.address)
        wanted = None
        if p.source == "secret":
            wanted = cert_info(ctx.secret(tls.certificate).encode()).fingerprint_sha256
        todo, kept = [], []
        for h in hosts:
            present = _read_remote_cert(h, p.service)
            try:
                info = cert_info(present) if present.strip() else None
            except ValueError:
                info = None
            if info is not None and info.covers(p.names) and info.life_left() > tls.renew_before and \
                    (wanted is None or info.fingerprint_sha256 == wanted):
                kept.append((h, info))
            else:
                todo.append(h)
        result: dict[str, Any] = {"service": p.service, "names": list(p.names), "source": p.source,
                                  "hosts": [h.name for h in hosts], "kept_on": [h.name for h, _ in kept]}
        if not todo:
            info = kept[0][1]
            ctx.emit("tls.kept", f"{p.service}: the certificate on {', '.join(h.name for h, _ in kept)} covers "
                     f"{', '.join(p.names)} and is valid until {_iso(info.not_after)}: kept",
                     service=p.service, fingerprint_sha256=info.fingerprint_sha256)
            return {**result, "action": "kept", **info.public()}
        t0 = time.monotonic()
        cert, key, action, extra = self._obtain(ctx, p, tls)
        obtain_s = round(time.monotonic() - t0, 3)
        info = cert_info(cert)
        ctx.remember(delivered_to=sorted({*(ctx.memo.get("delivered_to") or []), *(h.name for h in todo)}))
        script = _install_script(p.service, cert, key)
        for h in todo:
            ssh(h, "sh -s", stdin=script, timeout=60.0, what=f"install the certificate of {p.service}")
            ctx.emit("tls.installed", f"{p.service}: certificate for {', '.join(info.names)} ({action}) installed on "
                     f"{h.name} ({h.address})", service=p.service, host=h.name,
                     fingerprint_sha256=info.fingerprint_sha256)
        return {**result, "action": action, "obtain_s": obtain_s, **info.public(), **extra}

    def verify(self, ctx: RunContext, step: Step) -> None:
        p = TlsCertificateParams.from_step(step)
        for h in _hosts(ctx, p):
            present = _read_remote_cert(h, p.service)
            if not present.strip():
                raise CheckFailed(f"{h.name}: no certificate at {tls_paths(p.service)['certificate']}")
            info = cert_info(present)
            if not info.covers(p.names):
                raise CheckFailed(f"{h.name}: the certificate covers {', '.join(info.names)}, not "
                                  f"{', '.join(p.names)}")
            if info.life_left() <= 0:
                raise CheckFailed(f"{h.name}: the certificate expired on {_iso(info.not_after)}")

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.steps.hosts import refuse_source_host

        p = TlsCertificateParams.from_step(step)
        dns_cfg = ctx.require_stack().model.dns
        if ctx.memo.get("txt_previous") and dns_cfg is not None:
            restore_txt(ctx, ctx.provider(dns_cfg.provider).require("dns"), dns_cfg.zone)
        delivered = set(ctx.memo.get("delivered_to") or [])
        if not delivered:
            return
        try:
            hosts = [h for h in _hosts(ctx, p) if h.name in delivered]
        except (RunFailed, KeyError):
            return  # no host was allocated: nothing was delivered
        for h in hosts:
            refuse_source_host(ctx, h.address)
            ssh(h, "sh -s", stdin=_remove_script(p.service), timeout=60.0,
                what=f"remove the certificate of {p.service}")
            ctx.emit("tls.removed", f"{p.service}: certificate and key removed from {h.name}", service=p.service,
                     host=h.name)
        ctx.remember(delivered_to=[])


# ------------------------------------------------------------------------------------------- checking by name
def https_get(address: str, port: int, path: str, server_name: str, *, cafile: str | None = None,
              timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    """GET https://server_name:port/path from `address` (not through DNS), verifying the certificate for
    `server_name` against `cafile` (default: the system's trust store). Returns (status, the peer certificate)."""
    import http.client
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=cafile)
    sock = socket.create_connection((address, port), timeout=timeout)
    conn = http.client.HTTPSConnection(server_name, port, timeout=timeout, context=ctx)
    try:
        conn.sock = ctx.wrap_socket(sock, server_hostname=server_name)
        peer = conn.sock.getpeercert() or {}
        conn.request("GET", path, headers={"Host": f"{server_name}:{port}", "Connection": "close"})
        resp = conn.getresponse()
        resp.read(65536)
        return resp.status, dict(peer)
    finally:
        conn.close()


def service_https_check(stack: Any, service: str, address: str, *, timeout: float = 30.0) -> float:
    """A service's https health check on `address`, the certificate verified for the service's first TLS name (not
    the address) against its `tls.trust` (default: the system's roots). Polls until the expected status answers;
    returns when it did. A certificate that does not verify fails at once (waiting would not fix it)."""
    import ssl

    model = getattr(stack, "model", stack)
    svc = model.services[service]
    health = svc.health
    if health is None or health.scheme != "https":
        raise UsageError(f"service {service!r} has no https health check")
    from liferaft.stack.checks import tls_names

    names = tls_names(model, service)
    if not names:
        raise UsageError(f"service {service!r}: no name to verify its certificate for (set tls.names)")
    cafile = None
    if svc.tls is not None and svc.tls.trust:
        trust = Path(svc.tls.trust)
        cafile = str(trust if trust.is_absolute() else Path(stack.base_dir) / trust)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            status, _ = https_get(address, health.port, health.path, names[0].removeprefix("*."), cafile=cafile,
                                  timeout=min(2.0, float(health.timeout)))
            if status == health.expect_status:
                return time.time()
            last = f"HTTP {status}"
        except ssl.SSLCertVerificationError as e:
            raise CheckFailed(f"https://{names[0]}:{health.port} at {address}: the certificate does not verify: "
                              f"{e.verify_message}") from None
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise CheckFailed(f"https://{names[0]}:{health.port}{health.path} at {address} did not answer "
                              f"{health.expect_status} within {timeout:.0f}s (last: {last})")
        time.sleep(0.1)


def check_health(stack: Any, service: str, health: Any, address: str, *, timeout: float) -> float:
    """A service's health check at `address`: over https with a `tls:` setting, the certificate verified by the
    service's name against its trust (`service_https_check`); else a plain GET (`http_check`)."""
    from liferaft.workloads.probe import http_check

    if health.scheme == "https" and getattr(getattr(stack, "model", stack).services[service], "tls", None):
        return service_https_check(stack, service, address, timeout=timeout)
    return http_check(address, health, timeout=timeout)
