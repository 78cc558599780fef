"""What an application needs to reach its bucket at a given objects provider: endpoint, region, keys.

The ONLY place that maps vendor-specific provider fields (aws: region/endpoint/access_key_id; libcloud S3-compatible
storage: host/port/secure/key/secret) to the S3 settings apps understand. Deploy code passes the result to
playbooks (the keys through the secret vars file); nothing else looks inside a provider's config for this.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import UsageError

# libcloud storage drivers that speak the S3 API (apps reach them with any S3 client).
S3_COMPATIBLE_DRIVERS = frozenset({"s3", "minio", "ceph", "rgw", "aurora", "digitalocean_spaces", "scaleway",
                                   "ovh", "wasabi", "backblaze_b2_s3", "linode", "cloudflare_r2"})
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """How an app reaches a bucket over the S3 API. `endpoint_url` None means AWS itself."""

    endpoint_url: str | None
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)

    def public(self) -> dict[str, Any]:
        """The non-secret part (for extravars, plans, logs)."""
        return {"endpoint_url": self.endpoint_url, "region": self.region}

    def secret(self) -> dict[str, str]:
        """The secret part (for the 0600 secret vars file only)."""
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}


def _as_mapping(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        result: Mapping[str, Any] = dump()
        return result
    raise UsageError(f"provider config of type {type(config).__name__} is not understood")


def s3_settings(provider_config: Any, secret_resolver: Callable[[str], str]) -> S3Settings:
    """Map an `aws` or S3-compatible `libcloud` provider config (model or mapping) to S3Settings.

    `secret_resolver` turns a reference (`env:NAME`, `file:PATH`) into its value, e.g. `stack.secret`.
    """
    cfg = _as_mapping(provider_config)
    kind = cfg.get("type")
    creds = cfg.get("credentials") or {}
    if kind == "aws":
        if not creds.get("access_key_id") or not creds.get("secret_access_key"):
            raise UsageError("aws provider: credentials.access_key_id and secret_access_key are required")
        return S3Settings(endpoint_url=cfg.get("endpoint") or None, region=cfg.get("region") or DEFAULT_REGION,
                          access_key_id=secret_resolver(creds["access_key_id"]),
                          secret_access_key=secret_resolver(creds["secret_access_key"]))
    if kind == "libcloud":
        storage = cfg.get("storage")
        if not storage:
            raise UsageError("libcloud provider has no storage driver: it cannot hold a bucket")
        driver = str(storage.get("driver", ""))
        if driver not in S3_COMPATIBLE_DRIVERS:
            raise UsageError(f"libcloud storage driver {driver!r} does not speak the S3 API",
                             hint=f"S3-compatible drivers: {', '.join(sorted(S3_COMPATIBLE_DRIVERS))}")
        host = storage.get("host")
        endpoint = None
        if host:
            secure = bool(storage.get("secure", True))
            port = storage.get("port")
            scheme = "https" if secure else "http"
            default_port = 443 if secure else 80
            endpoint = f"{scheme}://{host}" + (f":{port}" if port and int(port) != default_port else "")
        elif driver != "s3":
            raise UsageError(f"libcloud storage driver {driver!r} needs a host for its S3 endpoint")
        if not creds.get("key") or not creds.get("secret"):
            raise UsageError("libcloud storage provider: credentials.key and credentials.secret are required")
        region = storage.get("region") or storage.get("ex_location_name") or DEFAULT_REGION
        return S3Settings(endpoint_url=endpoint, region=str(region), access_key_id=secret_resolver(creds["key"]),
                          secret_access_key=secret_resolver(creds["secret"]))
    raise UsageError(f"provider type {kind!r} offers no S3-compatible object storage for apps")
