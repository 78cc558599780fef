"""The stack file's model, schema version 1: the application described once, provider-neutral.

Pydantic models, frozen, unknown keys forbidden. Names that end up in shell commands, SQL, DNS or Ansible are
constrained by patterns here, so hostile values are rejected at the edge instead of escaped everywhere.
Secrets are only ever references (`env:NAME`, `file:PATH`); the value is read when used, never stored here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from liferaft.stack.model_files import DirectoryData, SqliteData

# ---------------------------------------------------------------------------------------------- constrained values
NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
SQL_NAME_RE = r"^[a-z_][a-z0-9_]{0,62}$"
BUCKET_RE = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
HOST_KEY_RE = r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}$"
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# What each pattern means, for error messages a person can act on.
PATTERN_HELP = {
    NAME_RE: "a name of lowercase letters, digits and '-', starting with a letter (at most 63)",
    SQL_NAME_RE: "a PostgreSQL identifier: lowercase letters, digits and '_', not starting with a digit",
    BUCKET_RE: "a bucket name: 3-63 lowercase letters, digits, '.' and '-'",
    ENV_NAME_RE: "a setting name of letters, digits and '_', not starting with a digit (an environment variable's "
                 "name, at most 128)",
    HOST_KEY_RE: "a public host key as '<type> <base64>', e.g. 'ssh-ed25519 AAAAC3Nza...' (the host's "
                 "/etc/ssh/ssh_host_ed25519_key.pub without the comment)",
}
Name = Annotated[str, StringConstraints(pattern=NAME_RE)]
SqlName = Annotated[str, StringConstraints(pattern=SQL_NAME_RE)]
BucketName = Annotated[str, StringConstraints(pattern=BUCKET_RE)]
Hostname = Annotated[
    str, StringConstraints(pattern=r"^(\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-fA-F:]+\]?|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)$")
]
Port = Annotated[int, Field(ge=1, le=65535)]
HostKey = Annotated[str, StringConstraints(pattern=HOST_KEY_RE)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.\[\]:_-]+(/[A-Za-z0-9._~/-]*)?$")]
RelPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/ -]+$", max_length=4096)]
DnsLabel = Annotated[
    str, StringConstraints(pattern=r"^(@|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?(\.[a-z0-9_]([a-z0-9-]{0,61}[a-z0-9])?)*)$")
]
Zone = Annotated[str, StringConstraints(pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+$")]
# Who runs a provider (the company you would lose): optional, derived from the provider when absent.
VendorName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._@:-]{0,80}$")]
SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:[^\x00\n]+)$")


def _check_secret_ref(value: str) -> str:
    if not SECRET_REF.match(value):
        # Never echo the value: it may be a real secret pasted inline.
        raise ValueError(
            "inline secrets are not allowed: reference the secret instead, "
            "e.g. `env:MY_SECRET` (an environment variable) or `file:secrets/my_secret` (a file, relative to the "
            "stack file)"
        )
    return value


SecretRef = Annotated[str, AfterValidator(_check_secret_ref)]


def _check_plain_setting(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a setting cannot hold a NUL character")
    if SECRET_REF.match(value):
        raise ValueError("this looks like a secret reference: `env` holds plain settings, given to the service as "
                         "they are; put secret references under the service's `secrets` instead")
    return value


EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_RE)]
# A plain (non-secret) setting of a service: a string (quote numbers and booleans in YAML).
EnvValue = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_check_plain_setting)]


MAX_DURATION_S = 366 * 86400.0  # a year: anything longer is a typo, and `inf` overflows every timer it reaches


def parse_duration(value: Any) -> float:
    """'90s', '5m', '1h', '1h30m', 0, 12.5 -> seconds. Finite, not negative, at most a year (`.inf` and `.nan`
    would pass every `< 0` test and then overflow a timer or make every comparison false)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")  # noqa: TRY004 (pydantic reports ValueErrors)
    seconds: float | None = None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):  # (an int of 400 digits overflows isfinite)
            raise ValueError("expected a finite duration such as 30s, 5m or 1h (not .inf or .nan)")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        seconds = float(value) if value <= MAX_DURATION_S else math.inf
    elif isinstance(value, str):
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", value)
        if parts and any(parts.groups()):
            h, m, s = (float(g) if g else 0.0 for g in parts.groups())
            seconds = h * 3600 + m * 60 + s
    if seconds is None:
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if not seconds <= MAX_DURATION_S:  # also catches a 400-digit number that became inf
        raise ValueError(f"a duration is at most {MAX_DURATION_S / 86400:.0f} days")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------------------------------ providers
class AwsCredentials(_Model):
    access_key_id: SecretRef
    secret_access_key: SecretRef
    session_token: SecretRef | None = None


class AwsProvider(_Model):
    """AWS through boto3: EC2, S3, Route53, STS."""

    type: Literal["aws"]
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] = "us-east-1"
    endpoint: Url | None = None  # for S3/EC2-compatible endpoints and the lab; absent means AWS itself
    credentials: AwsCredentials
    # compute defaults for hosts liferaft creates here
    image: Annotated[str, StringConstraints(pattern=r"^ami-[0-9a-f]{8,17}$")] | None = None
    instance_type: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+\.[a-z0-9]+$")] = "t3.small"
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "admin"  # SSH user of images
    private_key: SecretRef | None = None  # SSH key for hosts liferaft creates (its public half is installed)
    vendor_name: VendorName | None = Field(default=None, alias="vendor")

    @property
    def vendor(self) -> str:
        return self.vendor_name or "aws"


class LibcloudDriver(_Model):
    """A libcloud driver chosen by name; other keys are that driver's keyword settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    driver: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,40}$")]
    host: Hostname | None = None
    port: Port | None = None
    secure: bool = True


class LibcloudCredentials(_Model):
    key: SecretRef | None = None
    secret: SecretRef | None = None


class LibcloudProvider(_Model):
    """Any libcloud storage, DNS or compute driver: S3-compatible stores, PowerDNS, Cloudflare, DigitalOcean..."""

    type: Literal["libcloud"]
    storage: LibcloudDriver | None = None
    dns: LibcloudDriver | None = None
    compute: LibcloudDriver | None = None
    credentials: LibcloudCredentials = LibcloudCredentials()
    vendor_name: VendorName | None = Field(default=None, alias="vendor")

    @property
    def vendor(self) -> str:
        if self.vendor_name:
            return self.vendor_name
        drivers = [d for d in (self.storage, self.dns, self.compute) if d is not None]
        return ",".join(sorted({f"{d.driver}@{d.host}" if d.host else d.driver for d in drivers})) or "libcloud"


class SshHost(_Model):
    name: Name
    address: Hostname
    port: Port = 22
    host_keys: Annotated[list[HostKey], Field(min_length=1)]


class SshProvider(_Model):
    """Hosts you bring (colo, bare metal, a VPS without an API): a pool of addresses with pinned host keys."""

    type: Literal["ssh"]
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"
    private_key: SecretRef | None = None
    hosts: Annotated[list[SshHost], Field(min_length=1)]
    vendor_name: VendorName | None = Field(default=None, alias="vendor")

    @property
    def vendor(self) -> str:
        if self.vendor_name:
            return self.vendor_name
        return "ssh:" + ",".join(h.address for h in self.hosts)


class HcloudCredentials(_Model):
    token: SecretRef  # a project's API token (read & write)


class HcloudProvider(_Model):
    """Hetzner Cloud through its official library: servers with their own firewall, labels and pinned host keys."""

    type: Literal["hcloud"]
    endpoint: Url | None = None  # the lab's Hetzner-compatible API; absent means https://api.hetzner.cloud/v1
    credentials: HcloudCredentials
    location: Annotated[str, StringConstraints(pattern=r"^[a-z]{3}[0-9]{0,2}$")] | None = None  # fsn1, nbg1, ash ...
    server_type: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,30}$")] = "cx22"
    image: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")] = "debian-12"
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"  # SSH user of the image
    private_key: SecretRef | None = None  # SSH key for the servers (its public half is uploaded)
    # Who may reach SSH through each server's firewall; default: this controller's address toward the API.
    ssh_sources: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F.:]+/\d{1,3}$")]] = []
    # The project's server limit as Hetzner's console shows it (its API does not publish it): `plan` and the
    # failover stop before creating anything when the site's hosts would not fit.
    server_limit: Annotated[int, Field(ge=1)] | None = None
    vendor_name: VendorName | None = Field(default=None, alias="vendor")

    @property
    def vendor(self) -> str:
        return self.vendor_name or "hetzner"


class DigitalOceanCredentials(_Model):
    token: SecretRef  # a personal access token (read & write)


class DigitalOceanProvider(_Model):
    """DigitalOcean droplets through libcloud's DigitalOcean driver: a cloud firewall, tags and pinned host keys."""

    type: Literal["digitalocean"]
    endpoint: Url | None = None  # the lab's DigitalOcean-compatible API; absent means https://api.digitalocean.com
    credentials: DigitalOceanCredentials
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{3}[0-9]$")] = "fra1"  # nyc3, ams3, fra1, sgp1 ...
    size: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")] = "s-1vcpu-1gb"  # a size slug
    image: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,62}$")] = "debian-12-x64"  # slug or id
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "root"  # SSH user of the image
    private_key: SecretRef | None = None  # SSH key for the droplets (its public half is uploaded)
    # Who may reach SSH through each droplet's firewall; default: this controller's address toward the API.
    ssh_sources: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F.:]+/\d{1,3}$")]] = []
    vendor_name: VendorName | None = Field(default=None, alias="vendor")

    @property
    def vendor(self) -> str:
        return self.vendor_name or "digitalocean"


AnyProvider = AwsProvider | LibcloudProvider | SshProvider | HcloudProvider | DigitalOceanProvider
ProviderConfig = Annotated[AnyProvider, Field(discriminator="type")]


def provider_capabilities(p: AnyProvider) -> tuple[str, ...]:
    """Which capabilities a configured provider offers (from its config alone; no SDK is imported)."""
    from liferaft.providers.registry import (
        capabilities_of,  # the one place that knows each type's capabilities
    )

    return tuple(capabilities_of(p))


# ------------------------------------------------------------------------------------------- sites and services
StandbyTier = Literal["pilot-light", "warm"]
STANDBY_TIERS: tuple[str, ...] = ("pilot-light", "warm")


class ImageRegistry(_Model):
    """An OCI (docker distribution) registry: the primary vendor's (ECR, GCR...) or one the stack keeps elsewhere."""

    url: Url  # http(s)://host[:port]; a path after the host is a prefix of every repository
    vendor_name: VendorName | None = Field(default=None, alias="vendor")  # who runs it (the company you would lose)
    username: SecretRef | None = None
    password: SecretRef | None = None
    # ECR: an `aws` provider whose credentials log in (GetAuthorizationToken through boto3) instead of a password.
    provider: Name | None = None

    @property
    def vendor(self) -> str:
        return self.vendor_name or self.url.split("://", 1)[1].split("/", 1)[0]

    @model_validator(mode="after")
    def _both_or_neither(self) -> ImageRegistry:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both `username` and `password` (secret references), or neither")
        if self.provider is not None and self.username is not None:
            raise ValueError("give either `provider` (an aws provider logs in to ECR) or `username` and `password`")
        return self


class TerraformSettings(_Model):
    """Where Terraform keeps its state for a site: never at the primary provider (it would die with it)."""

    backend: Literal["local", "s3"] = "local"  # local: in liferaft's state dir
    provider: Name | None = None  # for s3: an objects provider (not the primary's)
    bucket: BucketName | None = None
    key: RelPath = "liferaft/terraform.tfstate"


class Site(_Model):
    compute: Name
    objects: Name
    description: str | None = None
    provision: Literal["api", "terraform"] = "api"  # how hosts are created at this site
    hosts: Annotated[int, Field(ge=1, le=100)] = 1  # hosts to create or allocate when moving here
    terraform: TerraformSettings = TerraformSettings()
    # The standby tier when this site is an alternate kept by `liferaft replicate`: `pilot-light` keeps the data
    # (hosts' services deployed at failover), `warm` also keeps the services deployed there, stopped, at the current
    # version (a cold failover is then promote + start + DNS). Ignored while the site is the primary.
    standby: StandbyTier = "pilot-light"
    # The OCI registry container services pull their images from when they run at this site.
    registry: ImageRegistry | None = None
    # Where the bytes of a move INTO this site flow (buckets): `target` -- liferaft's mover runs on this site's
    # hosts, objects go store to store from there (the controller sees listings and progress only); `controller` --
    # through the machine running liferaft; `auto` (default) -- the target's hosts when the run has some and they
    # can reach both stores, else the controller (said in the run's events).
    data_path: Literal["auto", "target", "controller"] = "auto"


class HealthCheck(_Model):
    path: Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9._~/?=&-]*$")] = "/"
    port: Port
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    timeout: Duration = 5.0
    scheme: Literal["http", "https"] = "http"


FqdnName = Annotated[str, StringConstraints(
    pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$", max_length=253)]
HttpsUrl = Annotated[str, StringConstraints(pattern=r"^https://[A-Za-z0-9.\[\]:_-]+(/[A-Za-z0-9._~/-]*)?$")]
Email = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")]


class AcmeIssuer(_Model):
    """An ACME v2 CA (Let's Encrypt, ZeroSSL, a private step-ca, the lab's pebble), answered by DNS-01 at the
    stack's DNS provider. The account key is generated once per stack and kept in liferaft's state directory."""

    directory: HttpsUrl  # e.g. https://acme-v02.api.letsencrypt.org/directory
    email: Email | None = None  # the account's contact (expiry notices)
    ca_bundle: RelPath | None = None  # PEM file trusted for the directory's HTTPS (private CAs; relative to the stack)
    propagation_timeout: Duration = 60.0  # wait this long for the authoritative server to answer the TXT record


class TlsSettings(_Model):
    """Where a service's certificate comes from at a site it moves to: an ACME CA (`acme`) or a certificate and key
    the stack keeps outside the primary (`certificate` + `key`, secret references). Exactly one of the two."""

    acme: AcmeIssuer | None = None
    certificate: SecretRef | None = None  # PEM: the certificate, then its chain
    key: SecretRef | None = None  # PEM private key
    names: list[FqdnName] = []  # default: the names of the DNS records that point at the service
    trust: RelPath | None = None  # a CA file clients use to verify it (a private CA; default: the system's)
    renew_before: Annotated[float, Field(gt=0, lt=1)] = 2 / 3  # reissue when less than this share of life is left

    @model_validator(mode="after")
    def _one_source(self) -> TlsSettings:
        has_pair = self.certificate is not None or self.key is not None
        if self.acme is not None and has_pair:
            raise ValueError("give either `acme` (a CA issues the certificate) or `certificate` and `key` (you "
                             "keep them), not both")
        if self.acme is None and not (self.certificate and self.key):
            raise ValueError("a certificate source is needed: `acme: {directory: URL}` or both `certificate` and "
                             "`key` (secret references such as file:secrets/web.crt)")
        return self


# A container image inside a site's registry: `repo/path[:tag][@sha256:<64 hex>]` (the registry's host comes from
# the site, so one reference resolves at every site's registry).
IMAGE_RE = (r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
            r"(@sha256:[0-9a-f]{64})?$")
PATTERN_HELP[IMAGE_RE] = ("an image inside the site's registry, `path/name:tag` or `path/name@sha256:<digest>` (no "
                          "registry host: the site's `registry` gives it)")
ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_RE, max_length=512)]


class Service(_Model):
    # How it runs: an Ansible playbook (the `playbook` kind) or a container image (the `container` kind).
    playbook: RelPath | None = None
    image: ImageRef | None = None
    command: list[Annotated[str, StringConstraints(max_length=4096)]] = []  # container: argv (default: the image's)
    # container: named volumes, `name:/path/in/container` (podman volumes `liferaft-<service>-<name>` on the host)
    volumes: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}:/[A-Za-z0-9._/-]{0,1023}$")]] = []
    artifact: RelPath | None = None
    ports: list[Port] = []
    health: HealthCheck | None = None
    databases: list[Name] = []
    buckets: list[Name] = []
    # Plain settings (strings), given to the playbook as `liferaft_service_env`: journaled and shown in plans.
    env: dict[EnvName, EnvValue] = {}
    # App secrets, name -> reference (`env:NAME`, `file:PATH`), equal at every site (a signing key, a salt): resolved
    # when deployed, given to the playbook only in its secret variables (`liferaft_secrets.service`).
    secrets: dict[EnvName, SecretRef] = {}
    tls: TlsSettings | None = None  # the service answers HTTPS: how it gets its certificate at a new site
    # Services of the stack (on the same host) this one needs running first: deployed and started after them,
    # stopped and removed before them (`service_order`).
    depends_on: list[Name] = []

    @model_validator(mode="after")
    def _one_way_to_run(self) -> Service:
        if (self.playbook is None) == (self.image is None):
            raise ValueError("give either `playbook` (an Ansible playbook runs the service) or `image` (a container "
                             "image runs it), not both and not neither")
        first = (self.image or "").split("/", 1)[0]
        if self.image is not None and "/" in self.image and ("." in first or first == "localhost"):
            raise ValueError(f"`image` is a path inside the site's registry, without the registry's host "
                             f"({first!r}): each site's `registry` gives the host, so one image resolves at every "
                             "site")
        if self.image is not None and self.artifact is not None:
            raise ValueError("`artifact` goes with `playbook`: a container service ships in its image")
        if self.command and self.image is None:
            raise ValueError("`command` goes with `image`")
        if self.volumes and self.image is None:
            raise ValueError("`volumes` go with `image` (a container's named volumes)")
        return self

    @property
    def runs(self) -> str:
        """What runs the service, for titles: the playbook or the image."""
        return self.playbook or f"image {self.image}"


# ----------------------------------------------------------------------------------------------------------- data
class WriteLedger(_Model):
    """The rows a write ledger's acknowledged writes created: `table`.`key` = the ledger's row key, and the sha256 of
    `value` (as text) = the ledger's value_sha256."""

    table: SqlName
    key: SqlName
    value: SqlName


class Database(_Model):
    engine: Literal["postgresql"] = "postgresql"
    version: Annotated[int, Field(ge=12, le=18)] = 15
    name: SqlName
    owner: SqlName
    password: SecretRef
    port: Port = 5432
    migrate: Literal["logical", "dump"] = "logical"
    # `full`: a logical migration sets REPLICA IDENTITY FULL at the source on the tables without a primary key (so
    # their UPDATEs and DELETEs replicate; slower at the target) and says so; `default`: such tables stop the plan
    replica_identity: Literal["default", "full"] = "default"
    ledger: WriteLedger | None = None  # where a write ledger's acknowledged writes land (liferaft.movers.ledger)


class Bucket(_Model):
    name: BucketName


class RedisStore(_Model):
    """A Redis server on the service's host (`data.redis.<key>`), moved by replication (`REPLICAOF`): the whole
    server is replicated; `db` is the database the service uses and the one verified. `ephemeral`: a cache, created
    empty at the target and never copied."""

    port: Port = 6379
    address: Hostname | None = None  # where it listens at the source; default: the source host's address
    password: SecretRef | None = None  # requirepass (the same at the target); None: no password
    db: Annotated[int, Field(ge=0, le=15)] = 0
    ephemeral: bool = False
    maxmemory: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}(kb|mb|gb|k|m|g)?$")] | None = None

    @property
    def name(self) -> str:
        return f"redis:{self.port}/{self.db}"
class MysqlDatabase(_Model):
    """A MySQL/MariaDB database on the service's host at each site (`data.mysql.<key>`): the server listens on
    `port` there; `user` (with `password`, a secret reference) is the application's account, given every privilege
    on database `name` at the target. liferaft moves it with its own account (see liferaft.datasets.mariadb)."""

    name: SqlName
    user: SqlName
    password: SecretRef
    port: Port = 3306


class Data(_Model):
    databases: dict[Name, Database] = {}
    buckets: dict[Name, Bucket] = {}
    redis: dict[Name, RedisStore] = {}
    mysql: dict[Name, MysqlDatabase] = {}
    directories: dict[Name, DirectoryData] = {}  # liferaft.stack.model_files
    sqlite: dict[Name, SqliteData] = {}


# ------------------------------------------------------------------------------------------------------------ dns
class Record(_Model):
    name: DnsLabel
    type: Literal["A", "AAAA", "CNAME", "TXT"] = "A"
    ttl: Annotated[int, Field(ge=1, le=86400)] = 60
    service: Name | None = None  # points at the hosts running this service at the active site
    values: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:_ =\"-]{1,255}$")]] = []


class DnsConfig(_Model):
    provider: Name
    zone: Zone
    records: list[Record] = []
    drill_record: DnsLabel | None = "drill"
    nameserver: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\[\]:-]+:\d{1,5}$")] | None = None

    def fqdn(self, label: str) -> str:
        return self.zone if label == "@" else f"{label}.{self.zone}"


class Objectives(_Model):
    rto: Duration = 3600.0
    rpo: Duration = 0.0


class HealthSettings(_Model):
    """How `liferaft health` probes and what `--watch` does when a verdict changes."""

    timeout: Duration = 5.0  # per probe
    interval: Duration = 30.0  # --watch default
    confirm: Annotated[int, Field(ge=1, le=100)] = 3  # agreeing results in a row before a verdict changes
    write_canary: bool = False  # put/get/delete a small object in each objects provider
    hook: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = []  # argv run on each change
    webhook: Url | None = None  # POSTed a JSON body on each change
    failover_on: Literal["never", "terminated"] = "never"  # start `liferaft failover` on a confirmed termination
    failover_to: Name | None = None  # default: the first alternate


class DrillSettings(_Model):
    """How a no-notice drill cuts the primary off: argv hooks (no shell), see liferaft.drill.cut for the protocol."""

    cut: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = []
    heal: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = []


class Dependency(_Model):
    """A layer the stack relies on outside its providers: who runs it, and (for backups) what encrypts it."""

    vendor: VendorName  # a provider name from `providers`, or a vendor's name
    detail: str | None = None
    encrypted_with: VendorName | None = None  # the KMS or key holder (a provider name or vendor)


class Dependencies(_Model):
    """What `liferaft audit` cannot see from the providers alone."""

    tls: Dependency | None = None  # who issues the certificates
    secrets: Dependency | None = None  # secrets manager / KMS
    images: Dependency | None = None  # container images, AMIs, artifacts
    backups: Dependency | None = None
    monitoring: Dependency | None = None  # monitoring and alerting
    iac_state: Dependency | None = None  # infrastructure-as-code state outside liferaft
    identity: Dependency | None = None  # SSO / identity provider of the operators


# ---------------------------------------------------------------------------------------------------------- stack
class StackModel(_Model):
    version: Literal[1]
    name: Name
    providers: Annotated[dict[Name, ProviderConfig], Field(min_length=1)]
    sites: Annotated[dict[Name, Site], Field(min_length=1)]
    primary: Name
    alternates: list[Name] = []
    services: dict[Name, Service] = {}
    data: Data = Data()
    dns: DnsConfig | None = None
    objectives: Objectives = Objectives()
    health: HealthSettings = HealthSettings()
    drill: DrillSettings = DrillSettings()
    dependencies: Dependencies = Dependencies()


# --------------------------------------------------------------------------------------------- service order
def dependency_problems(services: dict[str, Service]) -> list[tuple[str, int | None, str]]:
    """What is wrong with the services' `depends_on`: (service, index in its depends_on or None, message) for a
    service it names that the stack does not have, itself, and each cycle (named once, at its first service)."""
    out: list[tuple[str, int | None, str]] = []
    for name, svc in services.items():
        for i, dep in enumerate(svc.depends_on):
            if dep == name:
                out.append((name, i, f"service {name!r} depends on itself"))
            elif dep not in services:
                out.append((name, i, (f"service {name!r} depends on {dep!r}, which is not a service of the stack "
                                     f"(services: {', '.join(sorted(services)) or '(none)'})")))
    state: dict[str, int] = {}  # 1 visiting, 2 done
    seen_cycles: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in services[name].depends_on:
            if dep == name or dep not in services:
                continue
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    out.append((cycle[0], None, "services depend on each other in a cycle: " + " -> ".join(cycle)))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(services):
        if name not in state:
            visit(name, [name])
    return out


def service_order(services: Mapping[str, Any]) -> list[str]:
    """The services in the order they are deployed and started: each after the services it `depends_on`, ties by
    name. Stop, fence and teardown go in the reverse order. Unknown names and cycles are ignored here (validation
    refuses them, `dependency_problems`): a service in a cycle comes in name order."""
    order: list[str] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def place(name: str) -> None:
        if name in placed or name in visiting:
            return
        visiting.add(name)
        for dep in sorted(getattr(services[name], "depends_on", None) or []):
            if dep in services:
                place(dep)
        visiting.discard(name)
        placed.add(name)
        order.append(name)

    for name in sorted(services):
        place(name)
    return order
