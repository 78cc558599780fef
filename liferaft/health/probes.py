"""The probes: what `liferaft health` asks each provider and each site, as `ProbeTask`s for the runner.

Control plane (per provider): account (credentials accepted? latency), buckets present at the primary site's objects
provider, hosts running at each site's compute provider, the zone at the DNS provider.
Data plane: each service's health endpoint on each host of the primary site (for an ssh pool the hosts are the pool's
addresses; for an API provider, the running hosts it lists), the TLS certificate where a check uses https, the DNS
answers from the authoritative server compared with what the stack expects, and the optional write canary.

HTTP, TLS and DNS probes talk to the network directly (http.client, ssl, dnspython): no proxies from the
environment, no redirects, the probe's own timeout on every socket.
"""

from __future__ import annotations

import http.client
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from liferaft.errors import NotFound
from liferaft.health.evidence import ProbeFailed
from liferaft.health.runner import Found, ProbeTask
from liferaft.providers.base import Provider

Opener = Callable[[str], Provider]
TLS_WARN_DAYS = 14.0
CANARY_PREFIX = ".liferaft-canary/"


# ------------------------------------------------------------------------------------------- network probes
def http_probe(scheme: str, address: str, port: int, path: str, *, expect_status: int, timeout: float,
               server_hostname: str | None = None, cafile: str | None = None) -> Found:
    """GET scheme://address:port/path; ok when the status is the expected one. `cafile`: the CA the service's
    certificate is verified with (the stack's `tls.trust`), default the system's."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    conn: http.client.HTTPConnection
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=cafile)
        conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        if scheme == "https" and server_hostname:
            # verify the certificate for the name users reach, while connecting to this very host
            sock = socket.create_connection((address, port), timeout=timeout)
            conn.sock = ctx.wrap_socket(sock, server_hostname=server_hostname)
        conn.request("GET", path, headers={"Host": f"{server_hostname or host}:{port}",
                                           "User-Agent": "liferaft-health", "Connection": "close"})
        resp = conn.getresponse()
        resp.read(65536)
        status = resp.status
    finally:
        conn.close()
    if status != expect_status:
        raise ProbeFailed(f"HTTP {status}, expected {expect_status}", status=status, code=f"HTTP_{status}")
    return Found(detail=f"HTTP {status}", status=status)


def tls_probe(address: str, port: int, *, timeout: float, server_hostname: str | None = None,
              warn_days: float = TLS_WARN_DAYS, now: float | None = None, cafile: str | None = None) -> Found:
    """Handshake and read the certificate's expiry: failed when unverifiable, expired or expiring within warn_days."""
    name = server_hostname or address
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=name) as tls:
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as e:
        raise ProbeFailed(f"certificate not trusted for {name}: {e.verify_message}",
                          code="CERT_VERIFY_FAILED") from None
    not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    days = (not_after - (time.time() if now is None else now)) / 86400
    data = {"not_after": cert["notAfter"], "days_left": round(days, 2)}
    if days < 0:
        raise ProbeFailed(f"certificate expired {-days:.1f} days ago", code="CERT_EXPIRED", data=data)
    if days < warn_days:
        raise ProbeFailed(f"certificate expires in {days:.1f} days", code="CERT_EXPIRING", data=data)
    return Found(detail=f"certificate valid for {days:.0f} more days", data=data)


def _norm(value: str) -> str:
    return value.strip().strip('"').rstrip(".").lower()


def dns_probe(nameserver: str, fqdn: str, rtype: str, expected: set[str], *, timeout: float) -> Found:
    """Ask the authoritative server directly; ok when the answer set equals `expected`."""
    import dns.exception
    import dns.resolver

    host, _, port = nameserver.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host.strip("[]")]
    resolver.port = int(port)
    resolver.lifetime = timeout
    resolver.timeout = timeout
    try:
        answer = resolver.resolve(fqdn, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        raise ProbeFailed(f"{fqdn} does not exist (NXDOMAIN)", code="NXDOMAIN") from None
    except dns.resolver.LifetimeTimeout:
        raise TimeoutError(f"no DNS answer from {nameserver} within {timeout:g} s") from None
    except dns.resolver.NoNameservers as e:
        raise ProbeFailed(f"the server refused or failed: {e}", code="SERVFAIL") from None
    except dns.exception.DNSException as e:
        raise ProbeFailed(f"{type(e).__name__}: {e}", code=type(e).__name__) from None
    got = {_norm(r.to_text()) for r in (answer.rrset or [])}
    want = {_norm(v) for v in expected}
    data = {"answer": sorted(got), "expected": sorted(want)}
    if not got:
        raise ProbeFailed(f"no {rtype} record for {fqdn}", code="NOANSWER", data=data)
    if want and got != want:
        raise ProbeFailed(f"{fqdn} {rtype} points at {', '.join(sorted(got))}; the stack expects "
                          f"{', '.join(sorted(want))}", code="MISMATCH", data=data)
    return Found(detail=f"{rtype} {', '.join(sorted(got))}", data=data)


# ------------------------------------------------------------------------------------------- provider access
class Providers:
    """Opens each provider once, on first use, from whichever probe thread needs it first."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._opened: dict[str, Provider | BaseException] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> Provider:
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._opened:
                try:
                    self._opened[name] = self._opener(name)
                except BaseException as e:  # noqa: BLE001 - remembered and re-raised per probe
                    self._opened[name] = e
            got = self._opened[name]
        if isinstance(got, BaseException):
            raise got
        return got


@contextmanager
def fail_fast_retries() -> Iterator[None]:
    """While health probes run, a throttled answer is evidence (a busy provider), not something to retry until the
    probe's deadline passes and it looks like silence (an unreachable one). Process-wide: use it where the process
    does nothing else (the `liferaft health` command)."""
    from liferaft.providers import RetryPolicy, set_retry_policy

    old = set_retry_policy(RetryPolicy(attempts=1))
    try:
        yield
    finally:
        set_retry_policy(old)


def default_opener(stack: Any, state_dir: str | None = None) -> Opener:
    """Open providers through the one registry (adapters import their SDKs lazily, in the probe threads)."""

    def open_(name: str) -> Provider:
        from liferaft.providers.registry import open_provider

        return open_provider(name, stack.model.providers[name], stack.secret, state_dir=state_dir,
                             base_dir=stack.base_dir)

    return open_


def caching_opener(opener: Opener) -> Opener:
    """Keep successfully opened providers across checks (`--watch`): SDK clients and their connection pools are
    reused; a provider that failed to open is tried again next time."""
    cache: dict[str, Provider] = {}
    lock = threading.Lock()

    def open_(name: str) -> Provider:
        with lock:
            if name in cache:
                return cache[name]
        provider = opener(name)
        with lock:
            return cache.setdefault(name, provider)

    return open_


# ------------------------------------------------------------------------------------------- planning
def _account(provs: Providers, name: str) -> Callable[[], Found]:
    def fn() -> Found:
        result = provs.get(name).require("account").probe()
        who = f"account {result.account}" if result.account else "credentials accepted"
        return Found(detail=f"{who}{'; ' + result.detail if result.detail else ''}", latency_s=result.latency_s)

    return fn


def _bucket(provs: Providers, name: str, bucket: str) -> Callable[[], Found]:
    def fn() -> Found:
        if not provs.get(name).require("objects").bucket_exists(bucket):
            raise NotFound(name, "bucket_exists", f"bucket {bucket!r} does not exist", code="NoSuchBucket",
                           status=404)
        return Found(detail=f"bucket {bucket} exists")

    return fn


def _canary(provs: Providers, name: str, bucket: str) -> Callable[[], Found]:
    def fn() -> Found:
        objects = provs.get(name).require("objects")
        key = CANARY_PREFIX + secrets.token_hex(8)
        body = b"liferaft canary " + key.encode()
        objects.put_object(bucket, key, [body], size=len(body))
        try:
            got = b"".join(objects.get_object(bucket, key))
        finally:
            objects.delete_object(bucket, key)
        if got != body:
            raise ProbeFailed(f"read back {len(got)} bytes that differ from the {len(body)} written",
                              code="CANARY_MISMATCH")
        return Found(detail=f"put/get/delete {bucket}/{key}")

    return fn


def _zone(provs: Providers, name: str, zone: str) -> Callable[[], Found]:
    def fn() -> Found:
        zones = provs.get(name).require("dns").list_zones()
        if zone not in zones:
            raise NotFound(name, "list_zones", f"zone {zone} is not served ({len(zones)} zones)",
                           code="NoSuchZone", status=404)
        return Found(detail=f"zone {zone} served")

    return fn


def registry_subject(site: str) -> str:
    """The name a site's image registry is judged under (beside the stack's providers)."""
    return f"registry@{site}"


def _registry(stack: Any, site: str) -> Callable[[], Found]:
    def fn() -> Found:
        from liferaft.providers.registry_oci import site_registry

        reg = site_registry(stack, site)
        reg.ping()
        return Found(detail=f"registry {reg.host} answers the distribution API")

    return fn


def _image(stack: Any, site: str, image: str) -> Callable[[], Found]:
    def fn() -> Found:
        from liferaft.providers.registry_oci import Image, site_registry

        reg = site_registry(stack, site)
        return Found(detail=f"{image} held ({reg.require(Image.parse(image))})")

    return fn


def expected_service_hosts(stack: Any, provs: Providers, site: str) -> list[str]:
    """Addresses of the hosts that run the services at `site`: an ssh pool's addresses, else its running hosts."""
    from liferaft.stack.model import SshProvider

    compute = stack.model.sites[site].compute
    cfg = stack.model.providers[compute]
    recorded = getattr(stack, "active_hosts", None)
    if recorded and site == stack.model.primary:
        return list(recorded)  # where a failover put the stack (its active site's record), not the whole pool
    if isinstance(cfg, SshProvider):
        return [h.address for h in cfg.hosts]
    return [h.address for h in provs.get(compute).require("compute").list_hosts()
            if h.state == "running" and h.address]


def _data_plane(stack: Any, site: str, addresses: list[str], timeout: float) -> list[ProbeTask]:
    tasks: list[ProbeTask] = []
    tls_seen: set[tuple[str, int]] = set()
    for svc_name, svc in stack.model.services.items():
        check = svc.health
        if check is None:
            continue
        sni = _service_fqdn(stack, svc_name)
        ca = _trust_file(stack, svc)
        t = min(check.timeout, timeout)
        for addr in addresses:
            url = f"{check.scheme}://{addr}:{check.port}{check.path}"
            tasks.append(ProbeTask(
                probe=f"http:{svc_name}@{addr}:{check.port}", kind="http", plane="data", site=site, target=url,
                timeout=t, fn=lambda a=addr, c=check, s=sni, t=t, ca=ca: http_probe(  # type: ignore[misc]
                    c.scheme, a, c.port, c.path, expect_status=c.expect_status, timeout=t, server_hostname=s,
                    cafile=ca)))
            if check.scheme == "https" and (addr, check.port) not in tls_seen:
                tls_seen.add((addr, check.port))
                tasks.append(ProbeTask(
                    probe=f"tls:{addr}:{check.port}", kind="tls", plane="data", site=site,
                    target=f"{addr}:{check.port}", timeout=t,
                    fn=lambda a=addr, p=check.port, s=sni, t=t, ca=ca: tls_probe(  # type: ignore[misc]
                        a, p, timeout=t, server_hostname=s, cafile=ca)))
    return tasks


def _trust_file(stack: Any, svc: Any) -> str | None:
    """The CA file a service's certificate is verified with: its `tls.trust` (relative to the stack file)."""
    trust = getattr(getattr(svc, "tls", None), "trust", None)
    if not trust:
        return None
    path = Path(trust)
    return str(path if path.is_absolute() else Path(stack.base_dir) / path)


def _service_fqdn(stack: Any, service: str) -> str | None:
    dns_cfg = stack.model.dns
    if dns_cfg is None:
        return None
    for rec in dns_cfg.records:
        if rec.service == service:
            return str(dns_cfg.fqdn(rec.name)).rstrip(".")
    return None


def _hosts(stack: Any, provs: Providers, name: str, site: str | None, timeout: float) -> Callable[[], Found]:
    """List an API provider's hosts. At the primary site at least one must run, and the running hosts' health
    endpoints are probed next. (An ssh pool has no listing worth the name: its account probe reaches every host.)"""

    def fn() -> Found:
        hosts = provs.get(name).require("compute").list_hosts()
        states: dict[str, int] = {}
        for h in hosts:
            states[h.state] = states.get(h.state, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no hosts"
        data = {"hosts": [{"name": h.name, "address": h.address, "state": h.state} for h in hosts]}
        if site is None:
            return Found(detail=summary, data=data)
        running = [h for h in hosts if h.state == "running"]
        if not running:
            raise NotFound(name, "list_hosts", f"no running host ({summary})", code="NoRunningHost")
        then = tuple(_data_plane(stack, site, [h.address for h in running if h.address], timeout))
        return Found(detail=summary, data=data, then=then)

    return fn


def _dns_answer(stack: Any, provs: Providers, record: Any, timeout: float) -> Callable[[], Found]:
    dns_cfg = stack.model.dns
    fqdn = dns_cfg.fqdn(record.name)

    def fn() -> Found:
        expected = set(record.values)
        if record.service:
            expected |= set(expected_service_hosts(stack, provs, stack.model.primary))
        return dns_probe(dns_cfg.nameserver, fqdn, record.type, expected, timeout=timeout)

    return fn


def plan_probes(stack: Any, opener: Opener, *, timeout: float, canary: bool = False) -> list[ProbeTask]:
    """Every probe for the stack; each provider is probed once even when several sites use it."""
    from liferaft.stack.model import SshProvider

    m = stack.model
    provs = Providers(opener)
    tasks: list[ProbeTask] = []

    def add(probe: str, kind: str, plane: str, fn: Callable[[], Found], *, provider: str | None = None,
            site: str | None = None, target: str = "") -> None:
        tasks.append(ProbeTask(probe=probe, kind=kind, plane=plane, fn=fn, timeout=timeout, provider=provider,
                               site=site, target=target))

    for name in m.providers:
        add("account", "account", "control", _account(provs, name), provider=name, target=name)

    primary = m.sites[m.primary]
    for bucket in m.data.buckets.values():
        add(f"bucket:{bucket.name}", "bucket", "control", _bucket(provs, primary.objects, bucket.name),
            provider=primary.objects, target=bucket.name)
    if canary and m.data.buckets:
        bucket_name = next(iter(m.data.buckets.values())).name
        add(f"canary:{bucket_name}", "canary", "data", _canary(provs, primary.objects, bucket_name),
            provider=primary.objects, target=bucket_name)

    compute_seen: set[str] = set()
    for site_name in [m.primary, *[s for s in m.sites if s != m.primary]]:
        compute = m.sites[site_name].compute
        if compute in compute_seen or isinstance(m.providers[compute], SshProvider):
            continue
        compute_seen.add(compute)
        active = site_name if site_name == m.primary else None
        add("hosts", "hosts", "control", _hosts(stack, provs, compute, active, timeout), provider=compute,
            target=compute)

    if isinstance(m.providers[primary.compute], SshProvider):
        tasks.extend(_data_plane(stack, m.primary, getattr(stack, "active_hosts", None)
                                 or [h.address for h in m.providers[primary.compute].hosts], timeout))

    for site_name, site in m.sites.items():  # image registries: the registry answers, and holds each image
        if getattr(site, "registry", None) is None:
            continue
        subject = registry_subject(site_name)
        add("account", "account", "control", _registry(stack, site_name), provider=subject, target=site.registry.url)
        for svc_name, svc in m.services.items():
            if getattr(svc, "image", None):
                add(f"image:{svc_name}", "image", "control", _image(stack, site_name, svc.image), provider=subject,
                    target=svc.image)

    if m.dns is not None:
        add(f"zone:{m.dns.zone}", "zone", "control", _zone(provs, m.dns.provider, m.dns.zone),
            provider=m.dns.provider, target=m.dns.zone)
        if m.dns.nameserver:
            for rec in m.dns.records:
                if rec.service or rec.values:
                    fqdn = m.dns.fqdn(rec.name)
                    add(f"dns:{fqdn}{rec.type}", "dns", "data", _dns_answer(stack, provs, rec, timeout),
                        provider=m.dns.provider, target=f"{fqdn} {rec.type} @{m.dns.nameserver}")
    return tasks

