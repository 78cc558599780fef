"""Checks across sections of a stack file: references resolve, names are unique, risky choices are warned about."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liferaft.errors import Problem
from liferaft.stack._files import real_path
from liferaft.stack.model import StackModel, dependency_problems, provider_capabilities

Loc = tuple[str | int, ...]

SHIPPED_PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"


def _inside(base: Path, relative: str) -> Path | None:
    """`base / relative` resolved (symlinks followed), or None when that leaves `base` (`..`, a symlink out).
    An absolute path is the operator's explicit choice and is returned as it is (resolved)."""
    candidate = Path(relative)
    if candidate.is_absolute():
        return real_path(candidate)
    real_base = real_path(base)
    resolved = real_path(real_base / candidate)
    return resolved if resolved == real_base or real_base in resolved.parents else None


def resolve_playbook(stack_dir: Path, playbook: str) -> Path | None:
    """A playbook named in the stack: a path relative to the stack file, else one shipped with liferaft.
    A relative path may not climb out of its folder (stack folder or the shipped playbooks)."""
    for base in (stack_dir, SHIPPED_PLAYBOOKS):
        candidate = _inside(base, playbook)
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def resolve_artifact(stack_dir: Path, artifact: str) -> Path | None:
    """An artifact path relative to the stack file (or absolute); None when a relative one leaves the folder."""
    return _inside(stack_dir, artifact)


def _escapes(stack_dir: Path, relative: str) -> bool:
    return not Path(relative).is_absolute() and _inside(stack_dir, relative) is None


def _secret_files(m: StackModel, stack_dir: Path) -> list[Path]:
    from liferaft.stack.secrets import secret_refs

    out = []
    for _, ref in secret_refs(m):
        kind, _, target = ref.partition(":")
        if kind == "file":
            p = Path(target)
            out.append(real_path(p if p.is_absolute() else stack_dir / p))
    return out


# Values that cannot be real: documentation-only addresses (RFC 5737), the reserved example domains (RFC 2606) and
# host keys marked as placeholders. `liferaft init`'s starter holds them so that it fails validation until filled in.
_DOC_NETS = ("192.0.2.", "198.51.100.", "203.0.113.")
_EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
_PLACEHOLDER_KEY_MARKS = ("replacewith", "placeholder")
_ADDRESS_FIELDS = {"address", "host", "endpoint", "zone", "nameserver", "webhook"}


def _placeholder(field: str, value: str) -> str | None:
    """Why `value` (of a field named `field`) is a placeholder, or None."""
    if field == "host_keys" and any(mark in value.lower() for mark in _PLACEHOLDER_KEY_MARKS):
        return ("a placeholder host key: replace it with the host's real public key (its "
                "/etc/ssh/ssh_host_ed25519_key.pub, or `ssh-keyscan -t ed25519 HOST` checked out of band)")
    if field not in _ADDRESS_FIELDS:
        return None
    host = value.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0] if field != "zone" else value
    host = host.strip("[]").rstrip(".").lower()
    if host.startswith(_DOC_NETS):
        return f"{host} is a documentation-only address (RFC 5737), a placeholder: replace it with the real address"
    if any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS):
        return f"{host} is a reserved example domain (RFC 2606), a placeholder: replace it with your real one"
    return None


def _placeholders(node: object, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _placeholders(v, (*loc, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _placeholders(v, (*loc, i))
    elif isinstance(node, str) and loc:
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        why = _placeholder(field, node)
        if why:
            yield loc, why


def cross_checks(m: StackModel, path: Path, positions: dict[Loc, tuple[int, int]]) -> Iterator[Problem]:
    def problem(loc: Loc, message: str, severity: str = "error") -> Problem:
        line, col = None, None
        for n in range(len(loc), -1, -1):
            if loc[:n] in positions:
                line, col = positions[loc[:n]]
                break
        return Problem(str(path), line, col, ".".join(map(str, loc)), message, severity)

    def need(loc: Loc, provider: str, capability: str) -> Iterator[Problem]:
        if provider not in m.providers:
            yield problem(loc, f"no provider named {provider!r}; providers: {', '.join(m.providers)}")
        elif capability not in provider_capabilities(m.providers[provider]):
            yield problem(loc, f"provider {provider!r} has no {capability} capability "
                               f"(it offers {', '.join(provider_capabilities(m.providers[provider]))})")

    primary_site = m.sites.get(m.primary)
    for name, site in m.sites.items():
        yield from need(("sites", name, "compute"), site.compute, "compute")
        yield from need(("sites", name, "objects"), site.objects, "objects")
        tf = site.terraform
        if tf.backend == "s3":
            if not (tf.provider and tf.bucket):
                yield problem(("sites", name, "terraform"), "an s3 state backend needs `provider` and `bucket`")
            elif primary_site is not None and tf.provider in (primary_site.compute, primary_site.objects):
                yield problem(("sites", name, "terraform", "provider"),
                              "Terraform state at the primary provider would be lost with it: keep it elsewhere")
            else:
                yield from need(("sites", name, "terraform", "provider"), tf.provider, "objects")

    if m.primary not in m.sites:
        yield problem(("primary",), f"no site named {m.primary!r}; sites: {', '.join(m.sites)}")
    seen: set[str] = set()
    for i, alt in enumerate(m.alternates):
        if alt not in m.sites:
            yield problem(("alternates", i), f"no site named {alt!r}; sites: {', '.join(m.sites)}")
        elif alt == m.primary:
            yield problem(("alternates", i), "the primary site cannot also be an alternate")
        elif alt in seen:
            yield problem(("alternates", i), f"site {alt!r} is listed twice")
        seen.add(alt)

    stack_dir = real_path(path).parent
    for name, svc in m.services.items():
        if svc.playbook is None:
            pass  # a container service (liferaft.workloads.container): its image is checked by the workload kind
        elif _escapes(stack_dir, svc.playbook) and _escapes(SHIPPED_PLAYBOOKS, svc.playbook):
            yield problem(("services", name, "playbook"),
                          "a relative playbook path may not leave the stack file's folder ('..' or a symlink "
                          "leading out); use a path inside it, or an absolute path")
        elif resolve_playbook(stack_dir, svc.playbook) is None:
            yield problem(("services", name, "playbook"),
                          f"playbook {svc.playbook!r} not found next to the stack file nor among liferaft's shipped "
                          "playbooks")
        if svc.artifact:
            artifact = resolve_artifact(stack_dir, svc.artifact)
            if artifact is None:
                yield problem(("services", name, "artifact"),
                              "a relative artifact path may not leave the stack file's folder ('..' or a symlink "
                              "leading out); use a path inside it, or an absolute path")
            elif not artifact.exists():
                yield problem(("services", name, "artifact"), f"artifact {svc.artifact!r} does not exist")
            elif any(s == artifact or artifact in s.parents for s in _secret_files(m, stack_dir)):
                yield problem(("services", name, "artifact"),
                              "the artifact contains the stack's secret files, which would be copied to every "
                              "host: point it at the application's own folder")
        for i, db in enumerate(svc.databases):
            if db not in m.data.databases:
                yield problem(("services", name, "databases", i), f"no database named {db!r} under data.databases")
        for i, b in enumerate(svc.buckets):
            if b not in m.data.buckets:
                yield problem(("services", name, "buckets", i), f"no bucket named {b!r} under data.buckets")
        for key in sorted(set(svc.env) & set(svc.secrets)):
            yield problem(("services", name, "secrets", key), f"{key!r} is both a plain setting (`env`) and a secret "
                                                              "(`secrets`): keep one")
        yield from _tls_checks(m, name, stack_dir, problem)
        if svc.image is not None and "@sha256:" not in svc.image:
            yield problem(("services", name, "image"), f"image {svc.image!r} is a bare tag: a tag can move between "
                          "the mirror and the failover, so the alternate may run another image; pin it by digest "
                          f"(`{_repository(svc.image)}@sha256:<digest>`)", "warning")
        if svc.health and svc.ports and svc.health.port not in svc.ports:
            yield problem(("services", name, "health", "port"), "the health check port is not one of the service's "
                                                                "ports", "warning")

    for svc_name, index, message in dependency_problems(m.services):
        yield problem(("services", svc_name, "depends_on", *([] if index is None else [index])), message)

    for site_name, site_cfg in m.sites.items():
        reg = site_cfg.registry
        if reg is not None and reg.provider is not None:
            if reg.provider not in m.providers:
                yield problem(("sites", site_name, "registry", "provider"), f"no provider named {reg.provider!r}")
            elif m.providers[reg.provider].type != "aws":
                yield problem(("sites", site_name, "registry", "provider"), "a registry logs in through an `aws` "
                              f"provider (ECR), and {reg.provider!r} is of type {m.providers[reg.provider].type!r}")
    containers = sorted(n for n, s in m.services.items() if s.image is not None)
    for site_name in dict.fromkeys([m.primary, *m.alternates]):
        if containers and site_name in m.sites and m.sites[site_name].registry is None:
            yield problem(("sites", site_name), f"site {site_name!r} names no image `registry`: container services "
                          f"({', '.join(containers)}) cannot be pulled there", "warning")

    for where, why in _placeholders(m.model_dump(by_alias=True, exclude_defaults=True)):
        yield problem(where, why)

    # Provider, site and service names are mapping keys: duplicates are caught by the YAML reader.
    hostnames: dict[str, Loc] = {}
    for pname, prov in m.providers.items():
        for i, host in enumerate(getattr(prov, "hosts", [])):
            loc: Loc = ("providers", pname, "hosts", i, "name")
            if host.name in hostnames:
                yield problem(loc, f"duplicate host name {host.name!r} (also at {'.'.join(map(str, hostnames[host.name]))})")
            hostnames[host.name] = loc

    if bool(m.drill.cut) != bool(m.drill.heal):
        yield problem(("drill", "heal" if m.drill.cut else "cut"), "a drill cut hook needs its heal hook (and a "
                                                                   "heal hook its cut hook): give both or neither")

    if m.dns is not None:
        yield from need(("dns", "provider"), m.dns.provider, "dns")
        keys: set[tuple[str, str]] = set()
        for i, rec in enumerate(m.dns.records):
            if (rec.name, rec.type) in keys:
                yield problem(("dns", "records", i), f"duplicate record {rec.name} {rec.type}")
            keys.add((rec.name, rec.type))
            if rec.service is None and not rec.values:
                yield problem(("dns", "records", i), "a record needs `service` (points at a service's hosts) or "
                                                      "`values`")
            if rec.service is not None and rec.service not in m.services:
                yield problem(("dns", "records", i, "service"), f"no service named {rec.service!r}")
            if m.dns.drill_record and rec.name == m.dns.drill_record:
                yield problem(("dns", "records", i), "a production record cannot have the drill record's name")
        if m.primary in m.sites and m.dns.provider in m.providers:
            primary = m.sites[m.primary]
            dns_vendor = m.providers[m.dns.provider].vendor
            primary_vendors = {m.providers[p].vendor for p in (primary.compute, primary.objects) if p in m.providers}
            if m.dns.provider in (primary.compute, primary.objects) or dns_vendor in primary_vendors:
                yield problem(("dns", "provider"),
                              f"DNS is hosted at the primary site's vendor ({dns_vendor}): if that vendor cuts you "
                              "off, you cannot point your name elsewhere. Host the zone at an independent provider.",
                              "warning")


def _repository(image: str) -> str:
    """An image reference without its tag and digest."""
    ref = image.split("@", 1)[0]
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def tls_names(m: StackModel, service: str) -> list[str]:
    """The names a service's certificate covers: `tls.names`, else the DNS records that point at the service."""
    svc = m.services[service]
    if svc.tls is not None and svc.tls.names:
        return list(svc.tls.names)
    if m.dns is None:
        return []
    return [m.dns.fqdn(r.name).rstrip(".") for r in m.dns.records if r.service == service and r.type in ("A", "AAAA")]


def _tls_checks(m: StackModel, name: str, stack_dir: Path, problem: Any) -> Iterator[Problem]:
    svc = m.services[name]
    tls = svc.tls
    if tls is None:
        if svc.health is not None and svc.health.scheme == "https":
            yield problem(("services", name, "health", "scheme"),
                          "the service answers HTTPS but has no `tls:` setting: at a new site it would have no "
                          "certificate (add `tls: {acme: {directory: URL}}` or `tls: {certificate: ..., key: ...}`)",
                          "warning")
        return
    loc: Loc = ("services", name, "tls")
    names = tls_names(m, name)
    if not names:
        yield problem((*loc, "names"), "no name to certify: list `names`, or point a DNS record at the service")
    for field in ("ca_bundle", "trust"):
        value = getattr(tls.acme, field, None) if field == "ca_bundle" else tls.trust
        if value is None:
            continue
        where = (*loc, "acme", field) if field == "ca_bundle" else (*loc, field)
        found = resolve_artifact(stack_dir, value)
        if found is None:
            yield problem(where, "a relative path may not leave the stack file's folder; use a path inside it, or "
                                 "an absolute path")
        elif not found.is_file():
            yield problem(where, f"{value!r} is not a file")
    if tls.acme is not None:
        if m.dns is None:
            yield problem((*loc, "acme"), "ACME certificates are validated by DNS-01 at the stack's DNS provider: "
                                          "the stack needs a `dns:` section")
        else:
            zone = m.dns.zone.rstrip(".")
            for i, n in enumerate(names):
                bare = n.removeprefix("*.")
                if bare != zone and not bare.endswith("." + zone):
                    yield problem((*loc, "names", i) if tls.names else (*loc,),
                                  f"{n} is outside the zone {m.dns.zone}: liferaft can only answer DNS-01 "
                                  "challenges in the stack's own zone")
