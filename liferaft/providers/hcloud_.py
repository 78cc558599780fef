"""The `hcloud` adapter: Hetzner Cloud servers through Hetzner's official library (PyPI `hcloud`).

Compute: servers created with liferaft's SSH key, a firewall of their own (SSH from the controller only, the service
ports from anywhere), labels naming the stack, and a host key liferaft generated and injected through cloud-init user
data (see `_cloudinit`): the public half is pinned in `<state_dir>/providers/<name>/host_keys.json` before the server
exists, so the first SSH connection is already checked. `wait_reachable` returns only after a real login with that
pinned key succeeded. Every SDK call goes through `_call`, which translates hcloud errors into liferaft.errors and
retries rate limiting within liferaft's budget (the library's own retries are off: 5 tries up to 60 s each).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from liferaft.errors import AuthRejected, NotFound, ProviderError, QuotaExceeded, Unreachable
from liferaft.providers import _errors, _pinned
from liferaft.providers._cloudinit import generate_host_key, user_data
from liferaft.providers._net import known_hosts_lines
from liferaft.providers._pinned import PinnedKeys
from liferaft.providers.base import Host, HostSpec, ProbeResult, Provider, Quota, SshAccess
from liferaft.statedir import owner_only_dir

T = TypeVar("T")

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
DEFAULT_SERVER_TYPE = "cx22"
DEFAULT_IMAGE = "debian-12"
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
MANAGED_LABEL = "liferaft"  # value "managed" on every server, SSH key and firewall liferaft creates

STATUS_MAP = {
    "initializing": "pending", "starting": "pending", "rebuilding": "pending", "migrating": "pending",
    "running": "running", "stopping": "stopped", "off": "stopped", "deleting": "terminated",
}
# Hetzner error codes (docs.hetzner.cloud, "Errors") -> the HTTP status they come with, for the shared classifier.
CODE_STATUS = {
    "unauthorized": 401, "forbidden": 403, "token_readonly": 403, "not_found": 404, "uniqueness_error": 409,
    "conflict": 409, "rate_limit_exceeded": 429, "server_error": 500, "service_error": 503, "unavailable": 503,
    "maintenance": 503, "timeout": 504, "invalid_input": 400, "json_error": 400, "locked": 423, "protected": 423,
}
LIMIT_CODES = frozenset({"resource_limit_exceeded", "no_space_left_in_location", "resource_unavailable"})


def classify(exc: BaseException, provider: str, operation: str) -> ProviderError | None:
    """hcloud / requests exception -> liferaft error (None: the generic fallback decides)."""
    from hcloud import APIException
    from hcloud.actions import ActionFailedException, ActionTimeoutException

    if isinstance(exc, APIException):
        code = str(exc.code)
        message = str(exc.message or "").strip()
        if code in LIMIT_CODES:
            limits = _limit_names(exc.details)
            named = f" ({', '.join(limits)})" if limits else ""
            return QuotaExceeded(provider, operation, f"{code}{named}: {message}", status=403, code=code)
        status = CODE_STATUS.get(code) or (int(code) if code.isdigit() else None)
        if code == "unauthorized":
            return AuthRejected(provider, operation, f"the API token of account {provider!r} was rejected "
                                f"({code}: {message})", status=401, code=code,
                                hint="the token referenced in the stack file (a project's API token, read & "
                                     "write), and whether the project or account was locked")
        return _errors.error_for(provider, operation, f"{code}: {message}", status=status, code=code)
    if isinstance(exc, ActionFailedException):
        err = getattr(exc.action, "error", None) or {}
        return ProviderError(provider, operation, f"action {exc.action.command} failed: "
                             f"{err.get('code', '?')}: {err.get('message', '')}", code=err.get("code"))
    if isinstance(exc, ActionTimeoutException):
        return Unreachable(provider, operation, f"action {exc.action.command} still running after polling")
    import requests

    if isinstance(exc, requests.exceptions.RequestException):
        return Unreachable(provider, operation, f"endpoint did not answer ({type(exc).__name__})")
    return None


def _limit_names(details: Any) -> list[str]:
    if isinstance(details, dict):
        return [str(x.get("name")) for x in details.get("limits") or [] if isinstance(x, dict) and x.get("name")]
    return []


def label_value(value: str) -> str:
    """A Hetzner label value: up to 63 of [a-zA-Z0-9._-], starting and ending alphanumeric (or empty)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in value)[:63]
    return cleaned.strip("._-")


class HcloudClient:
    """The hcloud.Client, built on first use (the SDK is imported only then), and the translating call."""

    def __init__(self, name: str, token: str | None, endpoint: str | None) -> None:
        self.name = name
        self._token = token
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the token
        return f"HcloudClient(name={self.name!r}, endpoint={self.endpoint!r})"

    @property
    def sdk(self) -> Any:
        with self._lock:
            if self._client is None:
                if not self._token:
                    raise AuthRejected(self.name, "open client", "no API token was configured",
                                       hint="set credentials.token to a secret reference (env: or file:)")
                import hcloud

                from liferaft import __version__

                client = hcloud.Client(token=self._token, api_endpoint=self.endpoint, application_name="liferaft",
                                       application_version=__version__, poll_interval=0.25,
                                       timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
                base = getattr(client, "_client", None)
                if base is not None and hasattr(base, "_retry_max_retries"):
                    base._retry_max_retries = 0  # liferaft's RetryPolicy is the one budget (see _errors.call)
                self._client = client
            return self._client

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        return _errors.call(self.name, operation, classify, fn)


class HcloudCompute:
    """Hetzner Cloud servers, named by their name (create is idempotent by it)."""

    def __init__(self, client: HcloudClient, state_dir: Path, *, server_type: str = DEFAULT_SERVER_TYPE,
                 image: str = DEFAULT_IMAGE, location: str | None = None, ssh_user: str = "root",
                 private_key_file: str | None = None, ssh_sources: Iterable[str] = (),
                 poll_interval: float = 0.25, server_limit: int | None = None) -> None:
        self._c = client
        self.server_limit = server_limit  # the project's limit as Hetzner's console shows it (the API does not say)
        self.server_type = server_type
        self.image = image
        self.location = location
        self.ssh_user = ssh_user
        self.private_key_file = private_key_file
        self.ssh_sources = tuple(ssh_sources)
        self.poll_interval = poll_interval
        self.dir = owner_only_dir(state_dir / "providers" / client.name, parents_from=state_dir)
        self.pinned = PinnedKeys(self.dir)

    @property
    def name(self) -> str:
        return self._c.name

    # ------------------------------------------------------------------------------------------ reading
    def _to_host(self, server: Any, host_key: str | None = None) -> Host:
        ipv4 = server.public_net.ipv4.ip if server.public_net and server.public_net.ipv4 else None
        labels = dict(server.labels or {})
        ssh = None
        if host_key and ipv4:
            ssh = SshAccess(address=ipv4, port=22, user=self.ssh_user, known_hosts=known_hosts_lines(ipv4, 22, (host_key,)),
                            private_key_file=self.private_key_file)
        return Host(id=str(server.id), name=server.name, address=ipv4, state=STATUS_MAP.get(server.status, "unknown"),
                    ssh=ssh, extra={"hcloud_status": server.status, "labels": labels, "host_key": host_key,
                                    "server_type": getattr(server.server_type, "name", None)})

    def list_hosts(self) -> list[Host]:
        servers = self._c.call("list servers", lambda: self._c.sdk.servers.get_all())
        with self.pinned.edit() as keys:
            return [self._to_host(s, (keys.get(s.name) or {}).get("host_key")) for s in servers]

    def reachable_hosts(self) -> list[Host]:
        return [h for h in self.list_hosts() if h.ssh is not None and h.state == "running"]

    def get_host(self, host_id: str) -> Host:
        server = self._c.call(f"get server {host_id}", lambda: self._c.sdk.servers.get_by_id(int(host_id)))
        return self._to_host(server, self.pinned.get(server.name))

    def quota(self) -> Quota:
        """The project's servers against its server limit. Hetzner's API does not publish the limit (a create
        beyond it answers 403 resource_limit_exceeded): it is the stack's `server_limit`, else unknown."""
        servers = self._c.call("list servers", lambda: self._c.sdk.servers.get_all())
        return Quota("server_limit", self.server_limit, len(servers), tuple(s.name for s in servers))

    def offer(self, spec: HostSpec) -> dict[str, Any]:
        """What creating `spec` would get, read from the API (creates nothing): server type, location, image and
        the hourly price the provider quotes (`quota()`: the project's servers against its limit). Unknown names are
        NotFound now, not at creation."""
        size, image, location = spec.size or self.server_type, spec.image or self.image, self.location
        st = self._c.call(f"get server type {size}", lambda: self._c.sdk.server_types.get_by_name(size))
        if st is None:
            raise NotFound(self.name, f"get server type {size}", f"no server type {size!r} at this provider")
        img = self._c.call(f"get image {image}", lambda: self._c.sdk.images.get_by_name_and_architecture(
            image, st.architecture or "x86"))
        if img is None:
            raise NotFound(self.name, f"get image {image}", f"no image {image!r} for {st.architecture or 'x86'}")
        prices = [p for p in st.prices or [] if location is None or p.get("location") == location]
        if not prices:
            raise NotFound(self.name, f"price of {size}", f"server type {size!r} is not offered at {location!r}")
        pricing = self._c.call("get pricing", lambda: self._c.sdk.request("GET", "/pricing"))
        hourly = prices[0]["price_hourly"]
        return {"server_type": size, "location": prices[0].get("location"), "image": image,
                "hourly_net": hourly.get("net"), "hourly_gross": hourly.get("gross"),
                "currency": (pricing.get("pricing") or {}).get("currency", "EUR")}

    # ------------------------------------------------------------------------------------------ creating
    def _ssh_key(self) -> Any:
        """liferaft's SSH key in the project (uploaded once, found again by its public key)."""
        return _pinned.ssh_key(
            self.name, self.private_key_file, "servers",
            lambda: self._c.call("list ssh keys", lambda: self._c.sdk.ssh_keys.get_all()),
            lambda name, public: self._c.call(f"upload ssh key {name}", lambda: self._c.sdk.ssh_keys.create(
                name=name, public_key=public, labels={MANAGED_LABEL: "managed"})))

    def firewall_rules(self, ports: Iterable[int], private_ports: Iterable[int] = (),
                       peers: Iterable[str] = ()) -> list[Any]:
        """SSH from the controller only (and the peers when `private_ports` has 22: a folder pushed from the source
        host); `private_ports` (databases) from the controller and the peers (the source host); the service ports
        from anywhere (IPv4 and IPv6). Outbound stays open, as Hetzner's default is."""
        from hcloud.firewalls import FirewallRule

        sources = _pinned.ssh_sources(self.name, self.ssh_sources, self._c.endpoint)
        ssh, trusted, private = _pinned.inbound_sources(sources, private_ports, peers)
        rules = [FirewallRule(direction="in", protocol="tcp", port="22", source_ips=ssh,
                              description="ssh from the liferaft controller" + (" and the source host"
                                                                               if ssh == trusted else ""))]
        for port in private:
            rules.append(FirewallRule(direction="in", protocol="tcp", port=str(port), source_ips=trusted,
                                      description=f"port {port} from the controller and the source host"))
        for port in sorted({int(p) for p in ports}):
            rules.append(FirewallRule(direction="in", protocol="tcp", port=str(port),
                                      source_ips=["0.0.0.0/0", "::/0"], description=f"service port {port}"))
        return rules

    def _firewall(self, server_name: str, spec: HostSpec, labels: dict[str, str]) -> Any:
        name = f"liferaft-{server_name}"[:63]
        rules = self.firewall_rules(spec.ports, spec.private_ports, spec.peers)
        existing = self._c.call(f"find firewall {name}", lambda: self._c.sdk.firewalls.get_by_name(name))
        if existing is not None:
            self._c.call(f"set firewall rules {name}", lambda: self._c.sdk.firewalls.set_rules(existing, rules))
            return existing
        r = self._c.call(f"create firewall {name}", lambda: self._c.sdk.firewalls.create(
            name=name, rules=rules, labels=labels))
        return r.firewall

    def set_firewall(self, spec: HostSpec) -> None:
        """Set the rules of server `spec.name`'s firewall to what `spec` asks (e.g. its peers, once the other hosts of
        its site have addresses)."""
        labels = {MANAGED_LABEL: "managed", **{label_value(k): label_value(v) for k, v in spec.tags.items()}}
        self._firewall(spec.name, spec, labels)

    def create_host(self, spec: HostSpec) -> Host:
        from hcloud.images import Image
        from hcloud.locations import Location
        from hcloud.server_types import ServerType

        existing = self._c.call(f"find server {spec.name}", lambda: self._c.sdk.servers.get_by_name(spec.name))
        if existing is not None:
            return self._to_host(existing, self.pinned.get(spec.name))
        labels = {MANAGED_LABEL: "managed", **{label_value(k): label_value(v) for k, v in spec.tags.items()}}
        key = self._ssh_key()
        firewall = self._firewall(spec.name, spec, labels)
        host_key = generate_host_key()
        with self.pinned.edit() as keys:  # pinned before the server exists: its first answer is already checked
            keys[spec.name] = {"id": None, "host_key": host_key.public}
        location = Location(name=self.location) if self.location else None
        with _pinned.undo_if_refused(self.pinned, spec.name, self._delete_firewall):
            r = self._c.call(f"create server {spec.name}", lambda: self._c.sdk.servers.create(
                name=spec.name, server_type=ServerType(name=spec.size or self.server_type),
                image=Image(name=spec.image or self.image), ssh_keys=[key], firewalls=[firewall],
                user_data=user_data(host_key, hostname=spec.name), labels=labels, location=location))
        with self.pinned.edit() as keys:
            keys[spec.name]["id"] = r.server.id
        return self._to_host(r.server, host_key.public)

    def destroy_host(self, host_id: str) -> None:
        """Delete the server (waiting for the deletion), then its firewall. A missing server is not an error."""
        try:
            server = self._c.call(f"get server {host_id}", lambda: self._c.sdk.servers.get_by_id(int(host_id)))
        except NotFound:
            return
        action = self._c.call(f"delete server {host_id}", lambda: self._c.sdk.servers.delete(server))
        self._c.call(f"wait for deletion of server {host_id}", lambda: action.wait_until_finished(max_retries=240))
        self._delete_firewall(server.name)
        with self.pinned.edit() as keys:
            keys.pop(server.name, None)

    def _delete_firewall(self, server_name: str) -> None:
        fw_name = f"liferaft-{server_name}"[:63]
        fw = self._c.call(f"find firewall {fw_name}", lambda: self._c.sdk.firewalls.get_by_name(fw_name))
        if fw is not None:
            try:
                self._c.call(f"delete firewall {fw_name}", lambda: self._c.sdk.firewalls.delete(fw))
            except NotFound:
                pass

    # ------------------------------------------------------------------------------------------ waiting
    def wait_running(self, host_id: str, timeout: float = 120.0) -> Host:
        return _pinned.wait_running(self.name, self.get_host, host_id, timeout, self.poll_interval, "server", "hcloud_status")

    def wait_reachable(self, host: Host, timeout: float = 120.0) -> Host:
        """Running, the SSH port answers, and a login with the pinned host key succeeds."""
        start = time.monotonic()
        return _pinned.wait_reachable(self.name, host.id, self.wait_running(host.id, timeout), start, timeout,
                                      self.dir, "server")


class HcloudAccount:
    """The cheapest authenticated call: list locations (needs a valid token, creates nothing)."""

    def __init__(self, client: HcloudClient) -> None:
        self._c = client

    def probe(self) -> ProbeResult:
        start = time.monotonic()
        locations = self._c.call("list locations", lambda: self._c.sdk.locations.get_all())
        return ProbeResult(latency_s=time.monotonic() - start, account=None,
                           detail=f"{len(locations)} locations at {self._c.endpoint}")


class HcloudAdapter:
    """One Hetzner Cloud project (an API token): compute and an account probe."""

    def __init__(self, name: str, token: str | None, state_dir: str | Path, *, endpoint: str | None = None,
                 server_type: str = DEFAULT_SERVER_TYPE, image: str = DEFAULT_IMAGE, location: str | None = None,
                 ssh_user: str = "root", private_key_file: str | None = None,
                 ssh_sources: Iterable[str] = (), server_limit: int | None = None) -> None:
        self.name = name
        self.client = HcloudClient(name, token, endpoint)
        self.compute = HcloudCompute(self.client, Path(state_dir), server_type=server_type, image=image,
                                     location=location, ssh_user=ssh_user, private_key_file=private_key_file,
                                     ssh_sources=ssh_sources, server_limit=server_limit)
        self.account = HcloudAccount(self.client)

    def __repr__(self) -> str:
        return f"HcloudAdapter({self.client!r})"

    def provider(self, capabilities: Iterable[str] = ("compute", "account")) -> Provider:
        wanted = set(capabilities)
        return Provider(name=self.name, type="hcloud", compute=self.compute if "compute" in wanted else None,
                        account=self.account if "account" in wanted else None)
