"""Capability protocols and the value objects they speak.

A provider is a named account at a vendor. It offers some of four capabilities, each a small Protocol:
Compute, Objects, DNS, AccountProbe. Adapters (aws, libcloud, ssh) implement them; nothing outside
`liferaft/providers/` knows which vendor it talks to. Every method raises only `liferaft.errors` errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Capability = Literal["compute", "objects", "dns", "account"]
CAPABILITIES: tuple[Capability, ...] = ("compute", "objects", "dns", "account")

# Chunk size for streaming object bodies; also the multipart part size floor (S3 needs >= 5 MiB parts).
CHUNK_SIZE = 8 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------- compute
@dataclass(frozen=True)
class SshAccess:
    """How to reach a host over SSH. `known_hosts` lines pin its host keys: access is never granted blindly."""

    address: str
    port: int
    user: str
    known_hosts: tuple[str, ...]  # full known_hosts lines: "<address> <keytype> <base64>"
    private_key_file: str | None = None  # a path to the key file; never the key itself


@dataclass(frozen=True)
class Host:
    id: str
    name: str
    address: str | None
    state: str  # normalised: pending | running | stopped | terminated | unknown
    ssh: SshAccess | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Quota:
    """An account's limit on hosts, as its vendor names it (`server_limit`, `droplet_limit`), and how many it has.
    `limit` None: the vendor does not say (and the stack does not either)."""

    name: str
    limit: int | None
    used: int
    existing: tuple[str, ...] = ()  # the names of the hosts it has (a host of the same name is found, not made)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "used": self.used}

    def check_room(self, provider: str, names: list[str] | tuple[str, ...]) -> int:
        """How many of `names` would be created; QuotaExceeded naming the quota when they do not fit (before
        anything is created)."""
        from liferaft.errors import QuotaExceeded

        new = [n for n in names if n not in self.existing]
        if self.limit is not None and self.used + len(new) > self.limit:
            raise QuotaExceeded(provider, f"check {self.name}",
                                f"{self.name} is {self.limit} and the account has {self.used}: {len(new)} new "
                                f"host(s) would exceed it (nothing was created)", code=self.name)
        return len(new)


@dataclass(frozen=True)
class HostSpec:
    name: str
    image: str | None = None
    size: str | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    ports: tuple[int, ...] = ()  # service ports a cloud firewall opens to anyone (SSH: to the controller only)
    private_ports: tuple[int, ...] = ()  # opened to the controller and `peers` only (databases)
    peers: tuple[str, ...] = ()  # addresses besides the controller that reach `private_ports` (the source host)


@runtime_checkable
class Compute(Protocol):
    def list_hosts(self) -> list[Host]: ...

    def reachable_hosts(self) -> list[Host]:
        """Every host here liferaft can reach over SSH (pinned host keys) and that may run the stack -- where a
        failover looks for the source host. An API provider: its existing hosts with SSH access. A pool you bring:
        every host in it, allocated or not (the primary's own hosts were never allocated by liferaft)."""
        ...

    def create_host(self, spec: HostSpec) -> Host:
        """Create (or, for a pool of hosts you bring, allocate) a host. Idempotent by spec.name."""
        ...

    def destroy_host(self, host_id: str) -> None:
        """Destroy (or release back to the pool). Destroying a missing host is not an error."""
        ...

    def wait_reachable(self, host: Host, timeout: float = 120.0) -> Host:
        """Wait until the host runs and its SSH port answers; returns the fresh Host with `ssh` filled in."""
        ...


# ---------------------------------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # sha256 hex of the content where the provider knows it (liferaft stores it as metadata when it writes);
    # None where unknown. ETags are NOT content hashes across providers (multipart ETags differ).
    sha256: str | None = None
    etag: str | None = None
    modified: float | None = None  # unix time


@runtime_checkable
class Objects(Protocol):
    def create_bucket(self, bucket: str) -> None:
        """Create the bucket; an existing bucket of ours is not an error."""
        ...

    def bucket_exists(self, bucket: str) -> bool: ...

    def list_objects(self, bucket: str, prefix: str = "", *, hashes: bool = False) -> Iterator[ObjectInfo]:
        """Every object under prefix, paginating as needed, in key order where the provider gives it.

        Listings rarely carry metadata, so `sha256` may be None; `hashes=True` fills it where the provider knows
        it, at the cost of one HEAD per object on S3-style stores (ask only when you need it)."""
        ...

    def head_object(self, bucket: str, key: str) -> ObjectInfo: ...

    def get_object(self, bucket: str, key: str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the object's body in chunks of up to `chunk_size` bytes; never loads a whole large object into
        memory. A caller that budgeted memory for the whole body passes its size: one chunk, no re-joining."""
        ...

    def put_object(self, bucket: str, key: str, chunks: Iterable[bytes], *, size: int | None = None,
                   sha256: str | None = None, store_sha256: bool = True) -> ObjectInfo:
        """Store a streamed body (multipart for large objects). The sha256 is kept as metadata where the store
        has it: the declared one, or learned by staging a large body once. `store_sha256=False`: a large body of
        unknown sha256 is uploaded as it streams and stored without it (ObjectInfo.sha256 None)."""
        ...

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete the object; a missing one is not an error."""
        ...


# ---------------------------------------------------------------------------------------------------- dns
@dataclass(frozen=True)
class RecordSet:
    name: str  # fully qualified, with the trailing dot: "app.example.test."
    type: str  # A, AAAA, CNAME, TXT, ...
    ttl: int
    values: tuple[str, ...]


@runtime_checkable
class DNS(Protocol):
    def list_zones(self) -> list[str]:
        """Zone names, fully qualified with the trailing dot."""
        ...

    def get_records(self, zone: str, name: str | None = None, type: str | None = None) -> list[RecordSet]: ...

    def upsert_record(self, zone: str, record: RecordSet) -> None:
        """Create or replace the whole record set (name, type)."""
        ...

    def delete_record(self, zone: str, name: str, type: str) -> None:
        """Delete the record set; a missing one is not an error."""
        ...


# ---------------------------------------------------------------------------------------------------- account
@dataclass(frozen=True)
class ProbeResult:
    """Credentials accepted, and how fast the control plane answered."""

    latency_s: float
    account: str | None = None  # an account id or name where the API tells it
    detail: str = ""


@runtime_checkable
class AccountProbe(Protocol):
    def probe(self) -> ProbeResult:
        """Raise AuthRejected when credentials are refused, Unreachable when the endpoint does not answer."""
        ...


# ---------------------------------------------------------------------------------------------------- provider
@dataclass
class Provider:
    """A configured account at a vendor, with the capabilities it offers (None where it offers none)."""

    name: str
    type: str
    compute: Compute | None = None
    objects: Objects | None = None
    dns: DNS | None = None
    account: AccountProbe | None = None

    @property
    def capabilities(self) -> tuple[Capability, ...]:
        return tuple(c for c in CAPABILITIES if getattr(self, c) is not None)

    def require(self, capability: Capability) -> Any:
        from liferaft.errors import UsageError

        impl = getattr(self, capability)
        if impl is None:
            raise UsageError(
                f"provider {self.name!r} (type {self.type}) has no {capability} capability",
                hint=f"it offers: {', '.join(self.capabilities) or 'nothing'}",
            )
        return impl
