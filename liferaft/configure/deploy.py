"""Deploy a stack's service (and the databases it uses) to a host at a site: the variables every playbook gets.

Every service playbook receives the same variables (documented in liferaft/playbooks/README.md):

    liferaft_service          {name, artifact, ports, health {path, port, expect_status, scheme}, create_schema,
                               tls: {certificate, key} (paths on the host) or None}
    liferaft_site             the site's name
    liferaft_listen_address   the address of the host being configured
    liferaft_allowed_networks CIDRs allowed to reach databases (the controller; a move's target is admitted at
                              the source by its `source-access` step, not beforehand)
    liferaft_databases        [{key, engine, version, name, owner, port, host, replication}]
    liferaft_buckets          [{key, name, endpoint_url, region}]
    liferaft_service_env      {NAME: value}: the service's plain settings (`services.<name>.env`)
    liferaft_paths            {etc, app, lib, log, run, pidfile, start, unit}: where the service's files go
                              (liferaft.configure.paths): a drill's teardown and a rollback remove exactly those
    liferaft_secrets          (secret vars file only) {databases: {key: {password}},
                               buckets: {key: {access_key_id, secret_access_key}},
                               service: {NAME: value}}  (the service's `secrets`, resolved)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liferaft.configure._runner import run_playbook
from liferaft.configure._types import PlaybookResult, TargetHost, TaskEvent
from liferaft.configure.paths import service_paths
from liferaft.providers.appenv import s3_settings


def tls_paths(service: str) -> dict[str, str]:
    """Where a service's certificate (then its chain) and private key live on a host, in its config root
    (`/etc/liferaft/<service>/tls/`): liferaft's tls.certificate step writes them there (root-owned, the key 0600),
    the service's playbook points the service at them."""
    d = service_paths(service).tls_dir
    return {"certificate": f"{d}/fullchain.pem", "key": f"{d}/privkey.pem"}


@dataclass(frozen=True)
class ServiceVars:
    """The non-secret and secret variables for one service's playbooks."""

    variables: dict[str, Any] = field(hash=False)
    secret_variables: dict[str, Any] = field(hash=False, repr=False)


def service_vars(stack: Any, service: str, site: str, host: TargetHost, *, db_host: str | None = None,
                 allowed_networks: Sequence[str] = (), create_schema: bool = True) -> ServiceVars:
    """Variables for `service` deployed at `site` on `host` (databases on `db_host`, default the same host)."""
    svc = stack.services[service]
    site_cfg = stack.site(site)
    artifact = stack.artifact_path(service)
    health = svc.health
    dbs, db_secrets = [], {}
    for key in svc.databases:
        d = stack.data.databases[key]
        dbs.append({"key": key, "engine": d.engine, "version": d.version, "name": d.name, "owner": d.owner,
                    "port": d.port, "host": db_host or host.address, "replication": True})
        db_secrets[key] = {"password": stack.secret(d.password)}
    buckets, bucket_secrets = [], {}
    if svc.buckets:
        s3 = s3_settings(stack.provider(site_cfg.objects), stack.secret)
        for key in svc.buckets:
            buckets.append({"key": key, "name": stack.data.buckets[key].name, **s3.public()})
            bucket_secrets[key] = s3.secret()
    service_secrets = {name: stack.secret(ref) for name, ref in sorted(svc.secrets.items())}
    variables = {
        "liferaft_service": {
            "name": service, "artifact": str(artifact) if artifact else None, "ports": list(svc.ports),
            "health": ({"path": health.path, "port": health.port, "expect_status": health.expect_status,
                        "scheme": health.scheme} if health else None),
            "create_schema": create_schema,
            "tls": tls_paths(service) if getattr(svc, "tls", None) is not None else None,
        },
        "liferaft_site": site,
        "liferaft_listen_address": host.address,
        "liferaft_allowed_networks": list(allowed_networks),
        "liferaft_databases": dbs,
        "liferaft_buckets": buckets,
        "liferaft_service_env": dict(sorted(svc.env.items())),
        "liferaft_paths": service_paths(service).variables(),
    }
    return ServiceVars(variables, {"liferaft_secrets": {"databases": db_secrets, "buckets": bucket_secrets,
                                                        "service": service_secrets}})


def deploy_service(stack: Any, service: str, site: str, host: TargetHost, *, with_databases: bool = True,
                   db_host: str | None = None, allowed_networks: Sequence[str] = (), create_schema: bool = True,
                   on_event: Callable[[TaskEvent], None] | None = None, timeout: float = 600,
                   run_options: Mapping[str, Any] | None = None) -> PlaybookResult:
    """Prepare `host`, install the service's PostgreSQL databases there (unless `with_databases` is False) and run
    the service's playbook: one ansible-runner run. Raises PlaybookFailed naming host and task.
    `run_options` go to `run_playbook` as they are (e.g. `state_dir`, `tmp_root`, or `keep_dir` in tests)."""
    sv = service_vars(stack, service, site, host, db_host=db_host, allowed_networks=allowed_networks,
                      create_schema=create_schema)
    books: list[str | os.PathLike[str]] = ["prepare.yml"]
    if with_databases and sv.variables["liferaft_databases"]:
        books.append("postgresql.yml")
    books.append(stack.playbook_path(service))
    return run_playbook(books, [host], variables=sv.variables, secret_variables=sv.secret_variables,
                        on_event=on_event, timeout=timeout, base_dir=stack.base_dir, **dict(run_options or {}))

