"""`liferaft init --from-compose FILE`: a stack file written from a docker compose file.

What is taken: each service's image (its path inside the registry: the registry's host goes to the sites), command,
the ports it listens on (the container side of each mapping: liferaft runs containers on the host's network), and
its environment -- plain settings under `env`, and anything that looks secret (a name with PASSWORD, SECRET, TOKEN,
KEY ..., or a URL carrying a password) under `secrets` as an `env:NAME` reference: the value is NEVER copied.
PostgreSQL services become `data.databases` entries (their password by reference); MySQL/MariaDB and Redis services
are named in a comment where a human must decide (their dataset kinds are separate work). Volumes, depends_on,
builds and health checks are left as comments. The providers and sites are a starting point that validates: the
primary where the images come from today, an alternate elsewhere with no registry yet (validate warns until it has
one).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from liferaft.errors import UsageError

SECRET_NAME = re.compile(r"(PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|PRIVATE|AUTH|SALT|DSN|CERT)", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
INTERPOLATED = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
POSTGRES = ("postgres", "postgis/postgis", "bitnami/postgresql", "timescale/timescaledb")
MYSQL = ("mysql", "mariadb", "bitnami/mysql", "bitnami/mariadb")
REDIS = ("redis", "valkey/valkey", "bitnami/redis", "eqalpha/keydb")
DOCKER_HUB = "registry-1.docker.io"
NAME_RE = re.compile(r"[^a-z0-9-]+")


def _name(value: str, default: str = "app") -> str:
    out = NAME_RE.sub("-", value.lower()).strip("-")
    if not out or not out[0].isalpha():
        out = f"{default}-{out}".strip("-")
    return out[:63]


def split_image(image: str) -> tuple[str, str]:
    """`ghcr.io/org/app:1` -> ("ghcr.io", "org/app:1"); `postgres:16` -> (Docker Hub, "library/postgres:16")."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, image if "/" in image else f"library/{image}"
    return ("registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host), path.lower()


def _repo(path: str) -> str:
    ref = path.split("@", 1)[0]
    return ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref


def _kind(path: str) -> str | None:
    repo = _repo(path).removeprefix("library/")
    for kind, names in (("postgres", POSTGRES), ("mysql", MYSQL), ("redis", REDIS)):
        if repo in names:
            return kind
    return None


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            name, _, value = str(item).partition("=")
            out[name.strip()] = value
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _ports(svc: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for p in svc.get("ports") or []:
        target = p.get("target") if isinstance(p, dict) else str(p).split("/", 1)[0].rsplit(":", 1)[-1]
        try:
            port = int(str(target))
        except ValueError:
            continue  # a range: named in a comment
        if 1 <= port <= 65535 and port not in out:
            out.append(port)
    return out


def _volumes(svc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(named volumes as `name:/path`, bind mounts as compose wrote them)."""
    named: list[str] = []
    binds: list[str] = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            source, target, kind = str(v.get("source") or ""), str(v.get("target") or ""), v.get("type", "volume")
        else:
            parts = str(v).split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        if kind == "volume" and source and target.startswith("/"):
            named.append(f"{_name(source, 'vol')}:{target}")
        else:
            binds.append(str(v))
    return named, binds


def looks_secret(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name) or URL_WITH_PASSWORD.search(value))


def from_compose(text: str, source: str = "docker-compose.yml") -> str:
    """The stack file (YAML text with comments) for compose file `text`. Never holds a secret value of it."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{source} is not YAML: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
        raise UsageError(f"{source} has no `services:` section")
    stack_name = _name(str(doc.get("name") or Path(source).resolve().parent.name or "app"))
    services: dict[str, Any] = {}
    databases: dict[str, Any] = {}
    notes: dict[str, list[str]] = {}
    decide: list[str] = []
    registries: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for raw_name, svc in doc["services"].items():
        svc = svc or {}
        name = _name(str(raw_name), "svc")
        image = str(svc.get("image") or "")
        host, path = split_image(image) if image else (DOCKER_HUB, f"{stack_name}/{name}:latest")
        kind = _kind(path) if image else None
        env = _environment(svc)
        if kind == "postgres":
            kinds[str(raw_name)] = name
            user = env.get("POSTGRES_USER") or "postgres"
            db = env.get("POSTGRES_DB") or user
            version = re.match(r"(\d+)", path.rsplit(":", 1)[-1]) if ":" in path.rsplit("/", 1)[-1] else None
            databases[name] = {"engine": "postgresql",
                               "version": int(version.group(1)) if version and 12 <= int(version.group(1)) <= 18
                               else 15,
                               "name": _sql(db), "owner": _sql(user), "password": "env:POSTGRES_PASSWORD"}
            notes[f"db:{name}"] = [(f"from compose service {raw_name!r} (image {image}): a PostgreSQL dataset; check "
                                    "`version` (the image's major version) and export POSTGRES_PASSWORD")]
            continue
        if kind in ("mysql", "redis"):
            what = {"mysql": "a MySQL/MariaDB database", "redis": "a Redis dataset"}[kind]
            decide.append(f"compose service {raw_name!r} (image {image}) is {what}: declare it under `data:` once "
                          "liferaft's dataset kind for it is in your version, or run it as a container service "
                          "(its data then stays behind at a failover)")
            continue
        registries[host] = registries.get(host, 0) + 1
        entry: dict[str, Any] = {"image": path}
        lines = [f"from compose service {raw_name!r}" + (f" (image {image})" if image else ""),
                 "pin the image by digest (`@sha256:...`) once it is mirrored: a tag can move"]
        if not image:
            lines.append(f"built from {svc.get('build')!r} in compose: build it, push it to your registries")
        if svc.get("command"):
            cmd = svc["command"]
            entry["command"] = [str(c) for c in cmd] if isinstance(cmd, list) else shlex.split(str(cmd))
        if svc.get("entrypoint"):
            lines.append("compose sets an entrypoint: bake it into the image (liferaft keeps the image's)")
        ports = _ports(svc)
        if ports:
            entry["ports"] = ports
        plain, secret = {}, {}
        for key, value in sorted(env.items()):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key):
                continue
            if looks_secret(key, value):
                secret[key] = f"env:{key}"
            else:
                plain[key] = value
                if INTERPOLATED.search(value):
                    lines.append(f"{key} is interpolated by compose ({value}): give it its value")
        if plain:
            entry["env"] = plain
        if secret:
            entry["secrets"] = secret
            lines.append(f"secrets by reference, values NOT copied: export {', '.join(sorted(secret))}")
        if svc.get("env_file"):
            lines.append(f"compose reads env_file {svc['env_file']!r}: its values are not copied; add its plain "
                         "settings under env and its secrets under secrets")
        named, binds = _volumes(svc)
        if named:
            entry["volumes"] = named
            lines.append("its named volumes are created empty at a new site: their data does not move with a "
                         "failover yet (directory datasets)")
        if binds:
            lines.append(f"bind mounts {binds!r}: a host path is not carried to another host; use a named volume")
        if svc.get("healthcheck"):
            lines.append("compose has a healthcheck: give liferaft an HTTP one (`health: {path: /, port: ...}`)")
        deps = svc.get("depends_on") or []
        entry["_deps"] = list(deps) if isinstance(deps, (list, dict)) else []
        notes[f"svc:{name}"] = lines
        services[name] = entry
    for name, entry in services.items():
        dbs = [kinds[str(d)] for d in entry.pop("_deps") if str(d) in kinds]
        if dbs:
            entry["databases"] = dbs
    if not services:
        raise UsageError(f"{source}: every service is a database; liferaft needs at least one service to run")
    primary_registry = max(registries, key=lambda h: registries[h])
    return _render(stack_name, source, primary_registry, services, databases, notes, decide)


def _sql(value: str) -> str:
    out = re.sub(r"[^a-z0-9_]+", "_", value.lower()).strip("_") or "app"
    return out if not out[0].isdigit() else f"db_{out}"[:63]


def _render(name: str, source: str, registry: str, services: dict[str, Any], databases: dict[str, Any],
            notes: dict[str, list[str]], decide: list[str]) -> str:
    vendor = {"registry-1.docker.io": "docker", "ghcr.io": "github", "quay.io": "red-hat"}.get(registry, registry)

    def block(data: Any, indent: int) -> str:
        text: str = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)
        return "".join(" " * indent + line + "\n" for line in text.splitlines())

    out = [f"# Written by `liferaft init --from-compose {source}`. Secrets are references (env:NAME), never values:",
           "# export each one named below before `liferaft validate --check-secrets`.",
           "# The providers and sites are a starting point: the primary where the images come from today, an alternate",
           "# at another vendor. Give the alternate a `registry` outside the primary vendor, then `liferaft replicate`",
           "# mirrors the images there by digest. Add a `dns:` section to cut your name over.",
           "version: 1", f"name: {name}", "", "providers:",
           "  aws:", "    type: aws", "    region: us-east-1", "    credentials:",
           "      access_key_id: env:AWS_ACCESS_KEY_ID", "      secret_access_key: env:AWS_SECRET_ACCESS_KEY",
           "  hetzner:", "    type: hcloud", "    credentials:", "      token: env:HCLOUD_TOKEN",
           "  hetzner-objects:", "    type: libcloud",
           "    storage: {driver: s3, host: fsn1.your-objectstorage.com, port: 443, secure: true}",
           "    credentials: {key: env:HETZNER_S3_KEY, secret: env:HETZNER_S3_SECRET}", "",
           "sites:", "  main:", "    compute: aws", "    objects: aws",
           f"    registry: {{url: 'https://{registry}', vendor: {vendor}}}   # where the compose file's images come from",
           "  refuge:", "    compute: hetzner", "    objects: hetzner-objects",
           "    # registry: {url: 'https://registry.your-refuge.net'}   # a registry outside the primary vendor", "",
           "primary: main", "alternates: [refuge]", "", "services:"]
    for svc, entry in services.items():
        out += [f"  # {line}" for line in notes.get(f"svc:{svc}", [])]
        out.append(f"  {svc}:")
        out.append(block(entry, 4).rstrip("\n"))
    if decide:
        out += ["", "# A human must decide:"] + [f"# - {d}" for d in decide]
    if databases:
        out += ["", "data:", "  databases:"]
        for key, db in databases.items():
            out += [f"    # {line}" for line in notes.get(f"db:{key}", [])]
            out.append(f"    {key}:")
            out.append(block(db, 6).rstrip("\n"))
    return "\n".join(out) + "\n"
