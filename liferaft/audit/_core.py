"""Vendor-concentration audit: which single vendor's termination takes down both the service and its way out.

Each layer of the stack is mapped to the vendor that runs it. A finding names a vendor whose loss breaks the way out,
with a severity and the fix. The rules, in order of the layers:

| layer | finding | severity |
|---|---|---|
| sites | no alternate site | critical |
| compute | every alternate's compute is at the primary's compute vendor | critical |
| object storage / standby copies | every alternate's object store is at a primary vendor | critical |
| DNS hosting | the zone is hosted at a primary vendor | critical |
| NS delegation | the zone's NS records point at a primary vendor's nameservers | critical |
| backups | kept at, or encrypted with keys held by, a primary vendor | critical |
| IaC state | Terraform state (or declared IaC state) at a primary vendor | critical |
| secrets / KMS | held by a primary vendor | warning |
| artifacts / images | only at a primary vendor | warning |
| TLS | certificates issued by a primary vendor (not exportable, e.g. ACM) | warning |
| TLS | an HTTPS service with no `tls:` source: its only certificate copy is on the primary's hosts | warning |
| monitoring | alerting runs at a primary vendor: nobody is told when it goes | warning |
| identity | operators sign in through a primary vendor | warning |
| standby | no replication state recorded for an alternate (`liferaft replicate` never ran) | info |
| standby tier | an alternate declared `standby: warm` whose recorded standby holds no services kept stopped | info |

Each alternate's standby tier (`sites.<alt>.standby`: pilot-light or warm) is listed as the `standby tier` layer,
with what its recorded standby holds.

Score: 100, minus 25 per critical and 8 per warning finding, floored at 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from liferaft.stack import Stack

Severity = Literal["critical", "warning", "info"]
WEIGHTS = {"critical": 25, "warning": 8, "info": 0}

# Nameserver host suffixes of well-known DNS vendors.
NS_VENDORS = {
    "awsdns": "aws", "cloudflare.com": "cloudflare", "digitalocean.com": "digitalocean", "linode.com": "linode",
    "googledomains.com": "google", "domaincontrol.com": "godaddy", "gandi.net": "gandi", "ovh.net": "ovh",
    "vultr.com": "vultr", "hetzner.com": "hetzner", "azure-dns": "azure", "nsone.net": "ns1",
}


@dataclass(frozen=True)
class Layer:
    name: str
    vendors: tuple[str, ...]
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.name, "vendors": list(self.vendors), "detail": self.detail}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    layer: str
    vendor: str
    message: str
    fix: str

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "layer": self.layer, "vendor": self.vendor, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class AuditReport:
    stack: str
    primary_vendors: tuple[str, ...]
    layers: tuple[Layer, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def score(self) -> int:
        return max(0, 100 - sum(WEIGHTS[f.severity] for f in self.findings))

    @property
    def critical(self) -> int:
        return sum(1 for f in self.findings if f.severity == "critical")

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "score": self.score, "critical": self.critical,
                "primary_vendors": list(self.primary_vendors), "layers": [x.to_dict() for x in self.layers],
                "findings": [f.to_dict() for f in self.findings], "notes": list(self.notes)}


def _vendor(stack: Stack, name: str) -> str:
    """A provider name from the stack resolves to its vendor; anything else is taken as a vendor's name."""
    prov = stack.model.providers.get(name)
    return prov.vendor if prov is not None else name


def ns_vendor(nameserver_host: str, zone: str, dns_vendor: str) -> str:
    host = nameserver_host.rstrip(".").lower()
    if host.endswith(zone.rstrip(".").lower()):
        return dns_vendor  # in-zone nameservers are served by whoever hosts the zone
    for suffix, vendor in NS_VENDORS.items():
        if suffix in host:
            return vendor
    return ".".join(host.split(".")[-2:])


def lookup_ns(stack: Stack, timeout: float = 2.0) -> list[str] | None:
    """The zone's NS records, asked of the stack's authoritative nameserver (None when that is not possible)."""
    cfg = stack.model.dns
    if cfg is None or cfg.nameserver is None:
        return None
    import dns.exception
    import dns.resolver

    host, _, port = cfg.nameserver.rpartition(":")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host.strip("[]")]
    resolver.port = int(port)
    resolver.lifetime = timeout
    try:
        return sorted(str(r.target) for r in resolver.resolve(cfg.zone, "NS"))
    except (dns.exception.DNSException, OSError):
        return None


def audit(stack: Stack, *, state_dir: Path | None = None, ns_records: list[str] | None = None,
          check_ns: bool = True) -> AuditReport:
    """Map layers to vendors and flag single points of vendor failure. Pure given the stack and the NS records."""
    m = stack.model
    primary = m.sites[m.primary]
    pv = (_vendor(stack, primary.compute), _vendor(stack, primary.objects))
    primary_vendors = tuple(dict.fromkeys(pv))
    layers: list[Layer] = []
    findings: list[Finding] = []
    notes: list[str] = []

    def flag(severity: Severity, layer: str, vendor: str, message: str, fix: str) -> None:
        findings.append(Finding(severity, layer, vendor, message, fix))

    alts = [m.sites[a] for a in m.alternates]
    layers.append(Layer("compute", tuple(dict.fromkeys([pv[0], *(_vendor(stack, s.compute) for s in alts)])),
                        f"primary at {pv[0]}"))
    layers.append(Layer("object storage", tuple(dict.fromkeys([pv[1], *(_vendor(stack, s.objects) for s in alts)])),
                        f"primary at {pv[1]}"))
    if m.data.databases:
        layers.append(Layer("databases", (pv[0],), "PostgreSQL runs on the site's hosts"))
    if not alts:
        flag("critical", "sites", primary_vendors[0], "there is no alternate site: nowhere to go",
             "add an alternate site at another vendor and list it under `alternates`")
    else:
        if all(_vendor(stack, s.compute) in primary_vendors for s in alts):
            flag("critical", "compute", pv[0], "every alternate site's compute is at a primary vendor",
                 "add an alternate site whose compute provider is another vendor (hosts you bring, another cloud)")
        if all(_vendor(stack, s.objects) in primary_vendors for s in alts):
            flag("critical", "standby copies", pv[1],
                 "standby data would live only at a primary vendor: a termination takes the copies too",
                 "give an alternate site an object store at another vendor and keep it warm with `liferaft "
                 "replicate`")

    if m.dns is not None:
        dns_vendor = _vendor(stack, m.dns.provider)
        layers.append(Layer("DNS hosting", (dns_vendor,), m.dns.zone))
        if dns_vendor in primary_vendors:
            flag("critical", "DNS hosting", dns_vendor, f"zone {m.dns.zone} is hosted at the primary's vendor: "
                 "cut off, you cannot point your name elsewhere", "host the zone at an independent DNS provider")
        ns = ns_records if ns_records is not None else (lookup_ns(stack) if check_ns else None)
        if ns is None:
            notes.append("NS delegation not checked: no reachable `dns.nameserver` (pass --ns or set it)")
        else:
            ns_vendors = tuple(dict.fromkeys(ns_vendor(h, m.dns.zone, dns_vendor) for h in ns))
            layers.append(Layer("NS delegation", ns_vendors, ", ".join(ns)))
            at_primary = [v for v in ns_vendors if v in primary_vendors]
            if at_primary:
                flag("critical", "NS delegation", at_primary[0], "the zone's NS records point at the primary "
                     "vendor's nameservers", "delegate the zone to the independent DNS provider's nameservers at "
                     "your registrar")
    else:
        notes.append("no `dns` section: DNS cannot be cut over by liferaft")

    for name, site in m.sites.items():
        if site.provision == "terraform":
            tf = site.terraform
            where = "local state dir" if tf.backend == "local" else _vendor(stack, tf.provider or "")
            layers.append(Layer("IaC state", (where,), f"site {name}: terraform {tf.backend} backend"))

    deps = m.dependencies
    _dependency(stack, "backups", deps.backups, primary_vendors, layers, flag, "critical",
                "backups are kept at a primary vendor", "keep backups at another vendor")
    if deps.backups and deps.backups.encrypted_with and _vendor(stack, deps.backups.encrypted_with) in primary_vendors:
        flag("critical", "backups", _vendor(stack, deps.backups.encrypted_with),
             "backups are encrypted with keys held by a primary vendor: unreadable once it cuts you off",
             "encrypt backups with keys you hold (age/GPG) or a KMS at another vendor, and escrow the key")
    _dependency(stack, "IaC state", deps.iac_state, primary_vendors, layers, flag, "critical",
                "infrastructure-as-code state lives at a primary vendor", "move the state to another vendor")
    _dependency(stack, "secrets and KMS", deps.secrets, primary_vendors, layers, flag, "warning",
                "secrets are held by a primary vendor", "keep an escrowed copy of the secrets the alternate needs")
    _dependency(stack, "artifacts and images", deps.images, primary_vendors, layers, flag, "warning",
                "artifacts and images are only at a primary vendor", "mirror images to a registry elsewhere")
    _container_images(stack, primary_vendors, layers, flag)
    _service_certificates(stack, pv[0], layers, flag, primary_vendors)
    _dependency(stack, "TLS certificates", deps.tls, primary_vendors, layers, flag, "warning",
                "certificates are issued by a primary vendor and cannot be taken along",
                "use an ACME issuer (e.g. Let's Encrypt) that works at any host")
    _dependency(stack, "monitoring and alerting", deps.monitoring, primary_vendors, layers, flag, "warning",
                "monitoring and alerting run at a primary vendor: nobody is told when it goes",
                "run liferaft health and the alerting from outside the primary")
    _dependency(stack, "identity", deps.identity, primary_vendors, layers, flag, "warning",
                "operators sign in through a primary vendor", "keep break-glass access that does not depend on it")

    if state_dir is not None and alts and not _replication_recorded(state_dir, m.name):
        flag("info", "standby", "-", "no standby replication recorded: a no-notice cut loses everything since the "
             "last copy", "run `liferaft replicate --to <alternate> --watch`")
    for name in m.alternates:
        site = m.sites[name]
        tier = str(getattr(site, "standby", "pilot-light"))
        rec = _standby_recorded(state_dir, m.name, name) if state_dir is not None else None
        held = sorted((rec or {}).get("services") or {})
        detail = (f"site {name}: {tier}" + ("" if rec is None else " (standby recorded" + (
            f"; services {', '.join(held)} kept deployed and stopped)" if held else ")")))
        layers.append(Layer("standby tier", (_vendor(stack, site.compute),), detail))
        if tier == "warm" and rec is not None and not held and m.services:
            flag("info", "standby tier", _vendor(stack, site.compute), f"site {name} is declared warm but its "
                 "standby holds no services kept deployed: a cold failover deploys them (~15 s more)",
                 f"run `liferaft replicate --to {name}` so it deploys them at the standby")
    return AuditReport(m.name, primary_vendors, tuple(layers), tuple(findings), tuple(notes))


def _container_images(stack: Stack, primary_vendors: tuple[str, ...], layers: list[Layer], flag: Any) -> None:
    """Where the container services' images live: a registry per site. Flagged: images only at a primary vendor
    (no alternate names a registry elsewhere), and images pinned by a bare tag."""
    m = stack.model
    images = {n: s.image for n, s in m.services.items() if s.image is not None}
    if not images:
        return
    primary_reg = m.sites[m.primary].registry
    at_primary = {*primary_vendors, *([primary_reg.vendor] if primary_reg is not None else [])}
    vendors = [r.vendor for r in (m.sites[s].registry for s in [m.primary, *m.alternates]) if r is not None]
    layers.append(Layer("container images", tuple(dict.fromkeys(vendors)) or ("-",),
                        ", ".join(f"{n}: {i}" for n, i in sorted(images.items()))))
    elsewhere = [r.vendor for r in (m.sites[a].registry for a in m.alternates) if r is not None
                 and r.vendor not in at_primary]
    if not elsewhere:
        vendor = primary_reg.vendor if primary_reg is not None else primary_vendors[0]
        flag("critical", "container images", vendor, "container images live only at the primary vendor's registry: "
             "a termination takes them, and no alternate can pull what it must run",
             "give an alternate site a `registry` at another vendor and mirror the images with `liferaft replicate`")
    for name, image in sorted(images.items()):
        if "@sha256:" not in image:
            flag("warning", "container images", "-", f"service {name}'s image {image} is a bare tag: it can move "
                 "between the mirror and the failover", "pin it by digest (`name@sha256:<digest>`)")


def _service_certificates(stack: Stack, primary_compute: str, layers: list[Layer], flag: Any,
                          primary_vendors: tuple[str, ...] = ()) -> None:
    """Where each HTTPS service's certificate comes from at an alternate: an ACME CA (its account key is in
    liferaft's state dir, validated through the stack's DNS provider), the stack's secret references, or nowhere --
    then the only copy is on the primary's hosts. Critical when that only copy AND the account that issued it
    (`dependencies.tls`) both sit at a primary vendor: nothing outside it can serve or reissue the certificate."""
    from urllib.parse import urlsplit

    deps = stack.model.dependencies
    issuer = _vendor(stack, deps.tls.vendor) if deps.tls is not None else None
    issuer_at_primary = issuer is not None and issuer in primary_vendors
    secrets_vendor = _vendor(stack, deps.secrets.vendor) if deps.secrets is not None else None
    for name, svc in stack.model.services.items():
        tls = svc.tls
        https = svc.health is not None and svc.health.scheme == "https"
        only_copy = None  # where the certificate's only copy is, when that is at a primary vendor
        if tls is None and https:
            only_copy = f"on the primary's hosts ({primary_compute})"
        elif tls is not None and tls.acme is None and secrets_vendor in primary_vendors:
            only_copy = f"in the stack's secrets, which {secrets_vendor} holds (dependencies.secrets)"
        if only_copy is not None and issuer_at_primary:
            flag("critical", "TLS certificates", issuer,
                 f"service {name}'s certificate: its only copy is {only_copy} and its issuing account is at "
                 f"{issuer} (dependencies.tls), a primary vendor: cut off, you can neither take the certificate "
                 "along nor have it reissued",
                 f"set services.{name}.tls.acme (an ACME CA such as Let's Encrypt, validated by DNS at the "
                 "independent DNS provider), or keep the certificate and key outside the primary vendor")
        elif only_copy is not None and tls is not None:
            flag("warning", "TLS certificates", secrets_vendor or primary_compute,
                 f"service {name}'s certificate and key: the only copy is {only_copy}",
                 "keep an escrowed copy outside the primary vendor, or issue at the new site through `tls.acme`")
        if tls is None:
            if https:
                flag("warning", "TLS certificates", primary_compute,
                     f"service {name} answers HTTPS, but its certificate and key exist only on the primary's hosts "
                     "(no `tls:` setting): a new site has none",
                     f"set services.{name}.tls: an ACME CA (`acme: {{directory: ...}}`, validated by DNS at the "
                     "independent DNS provider) or a copy you keep (`certificate`/`key` secret references)")
            continue
        if tls.acme is not None:
            issuer = urlsplit(tls.acme.directory).hostname or tls.acme.directory
            detail = f"service {name}: ACME at {issuer}, account key in liferaft's state dir"
            layers.append(Layer("TLS certificates", (issuer,), detail))
        else:
            layers.append(Layer("TLS certificates", ("stack secrets",),
                                f"service {name}: certificate and key from the stack's secret references"))


def _dependency(stack: Stack, layer: str, dep: Any, primary_vendors: tuple[str, ...], layers: list[Layer],
                flag: Any, severity: Severity, message: str, fix: str) -> None:
    if dep is None:
        return
    vendor = _vendor(stack, dep.vendor)
    layers.append(Layer(layer, (vendor,), dep.detail or ""))
    if vendor in primary_vendors:
        flag(severity, layer, vendor, message, fix)


def _standby_recorded(state_dir: Path, stack_name: str, target: str) -> dict[str, Any] | None:
    """The standby record `liferaft replicate` keeps for `target` (None when there is none)."""
    try:
        doc = json.loads((state_dir / "readiness" / f"{stack_name}.json").read_text())
    except (OSError, ValueError):
        return None
    rec = (doc.get("standbys") or {}).get(target) if isinstance(doc, dict) else None
    return rec if isinstance(rec, dict) else None


def _replication_recorded(state_dir: Path, stack_name: str) -> bool:
    """Whether `liferaft replicate` has recorded a standby for this stack in the state dir."""
    root = state_dir / "readiness"
    if not root.is_dir():
        return False
    for f in root.glob("*.json"):
        try:
            if stack_name in f.name or json.loads(f.read_text()).get("stack") == stack_name:
                return True
        except (OSError, ValueError):
            continue
    return False
