"""The `digitalocean` adapter: DigitalOcean droplets through apache-libcloud's DigitalOcean driver (API v2).

Compute as the `hcloud` adapter does it: droplets created with liferaft's SSH key, a host key liferaft generated and
injected through cloud-init user data (pinned in `<state_dir>/providers/<name>/host_keys.json` before the droplet
exists), tags naming the stack and the run, and a cloud firewall of their own (SSH from the controller only, the
private ports from the controller and the peers, the service ports from anywhere; outbound open -- a DigitalOcean
firewall drops whatever its rules do not allow, outbound too). The firewall targets a tag the droplet is created
with, so it applies from the droplet's first boot. `wait_reachable` returns only after a real login with the pinned
key succeeded.

The droplet calls are libcloud's own (`create_node`, `list_nodes`, `ex_get_node_details`, `destroy_node`,
`list_key_pairs`, `create_key_pair`, `list_sizes`, `list_locations`, `get_image`, `ex_account_info`); libcloud has no
firewall or tag calls, so those go through the driver's connection to the documented v2 endpoints (/v2/firewalls,
/v2/tags). libcloud drops the driver's host/port arguments for DigitalOcean: a non-default `endpoint` (the lab) is
set on the connection. Every call goes through the client's `call`: libcloud errors become liferaft errors (401 ->
AuthRejected naming the account, 422 "droplet limit" -> QuotaExceeded, 429 -> Throttled, retried within liferaft's
budget, waiting until DigitalOcean's `ratelimit-reset`).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from liferaft.errors import AuthRejected, NotFound, ProviderError, QuotaExceeded, Throttled, Unreachable
from liferaft.providers import _errors, _pinned
from liferaft.providers._cloudinit import generate_host_key, user_data
from liferaft.providers._net import known_hosts_lines
from liferaft.providers._pinned import PinnedKeys
from liferaft.providers.base import Host, HostSpec, ProbeResult, Provider, Quota, SshAccess
from liferaft.statedir import owner_only_dir

T = TypeVar("T")

DEFAULT_ENDPOINT = "https://api.digitalocean.com"
DEFAULT_REGION = "fra1"
DEFAULT_SIZE = "s-1vcpu-1gb"
DEFAULT_IMAGE = "debian-12-x64"
TIMEOUT = 30  # seconds per HTTP request
MANAGED_TAG = "liferaft"  # on every droplet liferaft creates
HOST_TAG = "liferaft-host"  # liferaft-host:<droplet name>: what the droplet's own firewall targets
STATUS_MAP = {"new": "pending", "active": "running", "off": "stopped", "archive": "terminated"}
_TAG_BAD = re.compile(r"[^A-Za-z0-9_:-]")
_LIMIT = re.compile(r"limit", re.IGNORECASE)


def tag(key: str, value: str | None = None) -> str:
    """A DigitalOcean tag (letters, digits, ':', '-', '_'; at most 255): `key:value`, other characters as '-'."""
    text = key if value is None else f"{key}:{value}"
    return _TAG_BAD.sub("-", text)[:255]


def _retry_after(headers: dict[str, Any]) -> float | None:
    """Seconds until DigitalOcean's rate limit resets: Retry-After if sent, else its `ratelimit-reset` (unix time)."""
    h = {str(k).lower(): v for k, v in (headers or {}).items()}
    ra = _errors.parse_retry_after(h.get("retry-after"))
    if ra:
        return ra
    try:
        return max(0.0, float(h["ratelimit-reset"]) - time.time())
    except (KeyError, TypeError, ValueError):
        return None


def classify(exc: BaseException, provider: str, operation: str) -> ProviderError | None:
    """libcloud DigitalOcean errors -> liferaft errors (None: the generic libcloud classifier decides)."""
    from liferaft.providers._libcloud_common import IMPORT_LOCK
    from liferaft.providers._libcloud_common import classify as libcloud_classify

    with IMPORT_LOCK:
        from libcloud.common import exceptions as lx
        from libcloud.common import types as lt

    if isinstance(exc, lt.InvalidCredsError):
        message = str(getattr(exc, "value", exc))
        return AuthRejected(provider, operation, f"the API token of account {provider!r} was rejected "
                            f"(401 unauthorized: {message})", status=401, code="unauthorized",
                            hint="the token referenced in the stack file (a personal access token with read and "
                                 "write scope), and whether the account was locked")
    if isinstance(exc, lx.BaseHTTPError):
        status = int(exc.code)
        message = str(exc.message)[:300]
        if status == 422 and _LIMIT.search(message):
            return QuotaExceeded(provider, operation, f"droplet limit: {message}", status=422, code="droplet_limit")
        if status == 429:
            err = Throttled(provider, operation, f"HTTP 429 too_many_requests: {message}", status=429,
                            code="too_many_requests")
            err.retry_after = _retry_after(dict(exc.headers or {}))  # type: ignore[attr-defined]
            return err
        return _errors.error_for(provider, operation, f"HTTP {status}: {message}", status=status)
    return libcloud_classify(exc, provider, operation)


class DigitalOceanClient:
    """One libcloud DigitalOcean driver per thread (libcloud connections keep per-request state), built on first use
    (libcloud is imported only then), pointed at `endpoint`; and the translating call."""

    def __init__(self, name: str, token: str | None, endpoint: str | None) -> None:
        self.name = name
        self._token = token
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/").removesuffix("/v2")
        self._local = threading.local()

    def __repr__(self) -> str:  # never the token
        return f"DigitalOceanClient(name={self.name!r}, endpoint={self.endpoint!r})"

    @property
    def driver(self) -> Any:
        driver = getattr(self._local, "driver", None)
        if driver is None:
            if not self._token:
                raise AuthRejected(self.name, "open client", "no API token was configured",
                                   hint="set credentials.token to a secret reference (env: or file:)")
            from liferaft.providers._libcloud_common import IMPORT_LOCK

            with IMPORT_LOCK:
                from libcloud.compute.drivers.digitalocean import DigitalOceanNodeDriver
            # libcloud 3.9's DigitalOcean drivers take the token only (its __new__ hands any keyword argument to
            # object.__new__, which refuses it; its __init__ drops host and port): the rest is set on the connection
            driver = DigitalOceanNodeDriver(self._token)  # type: ignore[no-untyped-call]
            url = urllib.parse.urlsplit(self.endpoint)
            conn = driver.connection
            conn.timeout = TIMEOUT
            conn.secure = 1 if url.scheme == "https" else 0
            conn.host = url.hostname or "api.digitalocean.com"
            conn.port = url.port or (443 if url.scheme == "https" else 80)
            # the driver connected to api.digitalocean.com at init (no request sent yet): connect again, here
            conn.connect()  # type: ignore[no-untyped-call]
            self._local.driver = driver
        return driver

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        return _errors.call(self.name, operation, classify, fn)

    def request(self, operation: str, path: str, *, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        """A documented v2 endpoint libcloud has no method for, through the driver's connection: the parsed JSON
        (None for 204)."""
        def go() -> Any:
            data = json.dumps(body) if body is not None else None
            return self.driver.connection.request(path, method=method, data=data).object
        return self.call(operation, go)

    def paged(self, operation: str, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paginated list (libcloud's own pager: it reads `links.pages.last`)."""
        return list(self.call(operation, lambda: self.driver._paginated_request(path, key)))


class DigitalOceanCompute:
    """DigitalOcean droplets, named by their name (create is idempotent by it among liferaft's droplets)."""

    def __init__(self, client: DigitalOceanClient, state_dir: Path, *, size: str = DEFAULT_SIZE,
                 image: str = DEFAULT_IMAGE, region: str = DEFAULT_REGION, ssh_user: str = "root",
                 private_key_file: str | None = None, ssh_sources: Iterable[str] = (),
                 poll_interval: float = 0.25) -> None:
        self._c = client
        self.size = size
        self.image = image
        self.region = region
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
    def _to_host(self, node: Any, host_key: str | None = None) -> Host:
        extra = node.extra or {}
        ipv4 = (node.public_ips or [None])[0]
        status = _status_of(node)
        ssh = None
        if host_key and ipv4:
            ssh = SshAccess(address=ipv4, port=22, user=self.ssh_user, known_hosts=known_hosts_lines(ipv4, 22, (host_key,)),
                            private_key_file=self.private_key_file)
        return Host(id=str(node.id), name=str(node.name), address=ipv4, state=STATUS_MAP.get(status, "unknown"),
                    ssh=ssh, extra={"do_status": status, "tags": list(extra.get("tags") or []), "host_key": host_key,
                                    "size": extra.get("size_slug"), "region": extra.get("region")})

    def _nodes(self, tag_name: str | None = None) -> list[Any]:
        if tag_name is None:
            return self._c.call("list droplets", lambda: list(self._c.driver.list_nodes()))
        q = urllib.parse.urlencode({"tag_name": tag_name})
        rows = self._c.paged(f"list droplets tagged {tag_name}", f"/v2/droplets?{q}", "droplets")
        return [self._c.driver._to_node(r) for r in rows]

    def list_hosts(self, tag_name: str | None = None) -> list[Host]:
        """Every droplet in the account, or those carrying `tag_name` (DigitalOcean filters by one tag)."""
        nodes = self._nodes(tag_name)
        with self.pinned.edit() as keys:
            return [self._to_host(n, (keys.get(n.name) or {}).get("host_key")) for n in nodes]

    def reachable_hosts(self) -> list[Host]:
        return [h for h in self.list_hosts() if h.ssh is not None and h.state == "running"]

    def _node(self, host_id: str) -> Any:
        return self._c.call(f"get droplet {host_id}", lambda: self._c.driver.ex_get_node_details(host_id))

    def get_host(self, host_id: str) -> Host:
        node = self._node(host_id)
        return self._to_host(node, self.pinned.get(node.name))

    def _find(self, name: str) -> Any | None:
        return next((n for n in self._nodes(tag(HOST_TAG, name)) if n.name == name), None)

    def offer(self, spec: HostSpec) -> dict[str, Any]:
        """What creating `spec` would get, read from the API (creates nothing): size, region, image, the hourly price
        DigitalOcean quotes (USD, before taxes) and the account's droplet limit against the droplets it has. Unknown
        names are NotFound now, not at creation."""
        size_name, image, region = spec.size or self.size, spec.image or self.image, self.region
        sizes = self._c.call("list sizes", lambda: list(self._c.driver.list_sizes()))
        size = next((s for s in sizes if s.name == size_name), None)
        if size is None:
            raise NotFound(self.name, f"get size {size_name}", f"no size {size_name!r} at this provider")
        if region not in (size.extra or {}).get("regions", []):
            raise NotFound(self.name, f"price of {size_name}", f"size {size_name!r} is not offered in {region!r}")
        self._c.call(f"get image {image}", lambda: self._c.driver.get_image(image))
        quota = self.quota()
        price = f"{float(size.price):.5f}"
        return {"server_type": size_name, "location": region, "image": image, "hourly_net": price,
                "hourly_gross": price, "currency": "USD", "taxes": "excluded",
                "droplet_limit": quota.limit, "droplets": quota.used}

    def quota(self) -> Quota:
        """The account's droplets against its `droplet_limit` (GET /v2/account)."""
        account = self._c.call("get account", lambda: self._c.driver.ex_account_info())
        droplets = self._c.paged("count droplets", "/v2/droplets", "droplets")
        limit = account.get("droplet_limit")
        return Quota("droplet_limit", int(limit) if limit is not None else None, len(droplets),
                     tuple(str(d.get("name")) for d in droplets))

    # ------------------------------------------------------------------------------------------ creating
    def _ssh_key(self) -> Any:
        """liferaft's SSH key in the account (uploaded once, found again by its public key)."""
        return _pinned.ssh_key(
            self.name, self.private_key_file, "droplets",
            lambda: self._c.call("list ssh keys", lambda: list(self._c.driver.list_key_pairs())),
            lambda name, public: self._c.call(f"upload ssh key {name}",
                                              lambda: self._c.driver.create_key_pair(name, public)))

    def _sources(self) -> list[str]:
        return _pinned.ssh_sources(self.name, self.ssh_sources, self._c.endpoint)

    def firewall_rules(self, ports: Iterable[int], private_ports: Iterable[int] = (),
                       peers: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(inbound, outbound) rules in DigitalOcean's shape: SSH from the controller only (and the peers when
        `private_ports` has 22: a folder pushed from the source host); `private_ports` (databases) from the
        controller and the peers (the source host); the service ports from anywhere (IPv4 and IPv6); outbound all
        open (a DigitalOcean firewall with no outbound rule blocks every outbound packet)."""
        ssh, trusted, private = _pinned.inbound_sources(self._sources(), private_ports, peers)
        inbound = [{"protocol": "tcp", "ports": "22", "sources": {"addresses": ssh}}]
        inbound += [{"protocol": "tcp", "ports": str(p), "sources": {"addresses": trusted}} for p in private]
        inbound += [{"protocol": "tcp", "ports": str(p), "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}
                    for p in sorted({int(p) for p in ports})]
        anywhere = {"addresses": ["0.0.0.0/0", "::/0"]}
        outbound = [{"protocol": "tcp", "ports": "0", "destinations": anywhere},  # "0": every port (API v2)
                    {"protocol": "udp", "ports": "0", "destinations": anywhere},
                    {"protocol": "icmp", "destinations": anywhere}]
        return inbound, outbound

    def _firewall_by_name(self, name: str) -> dict[str, Any] | None:
        return next((f for f in self._c.paged("list firewalls", "/v2/firewalls", "firewalls")
                     if f.get("name") == name), None)

    def _firewall(self, droplet: str, spec: HostSpec) -> None:
        """The droplet's own firewall, targeting its host tag (made first: a firewall may only name existing tags)."""
        name, host_tag = f"liferaft-{droplet}"[:255], tag(HOST_TAG, droplet)
        inbound, outbound = self.firewall_rules(spec.ports, spec.private_ports, spec.peers)
        try:
            self._c.request(f"create tag {host_tag}", "/v2/tags", method="POST", body={"name": host_tag})
        except ProviderError as exc:
            if exc.status not in (409, 422):  # an existing tag is what we want
                raise
        body = {"name": name, "inbound_rules": inbound, "outbound_rules": outbound, "tags": [host_tag],
                "droplet_ids": []}
        existing = self._firewall_by_name(name)
        if existing is not None:
            self._c.request(f"update firewall {name}", f"/v2/firewalls/{existing['id']}", method="PUT", body=body)
        else:
            self._c.request(f"create firewall {name}", "/v2/firewalls", method="POST", body=body)

    def set_firewall(self, spec: HostSpec) -> None:
        """Set droplet `spec.name`'s firewall to what `spec` asks (e.g. its peers, once the other hosts of its site
        have addresses)."""
        self._firewall(spec.name, spec)

    def create_host(self, spec: HostSpec) -> Host:
        from liferaft.providers._libcloud_common import IMPORT_LOCK

        with IMPORT_LOCK:
            from libcloud.compute.base import NodeImage, NodeLocation, NodeSize
        existing = self._find(spec.name)
        if existing is not None:
            return self._to_host(existing, self.pinned.get(spec.name))
        tags = [MANAGED_TAG, tag(HOST_TAG, spec.name), *(tag(k, v) for k, v in spec.tags.items())]
        key = self._ssh_key()
        self._firewall(spec.name, spec)
        host_key = generate_host_key()
        with self.pinned.edit() as keys:  # pinned before the droplet exists: its first answer is already checked
            keys[spec.name] = {"id": None, "host_key": host_key.public}
        driver = self._c.driver
        size_name, image = spec.size or self.size, spec.image or self.image
        attempts = 0

        def create() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # a 5xx may come after the droplet was made, and DigitalOcean allows a second of
                found = self._find(spec.name)  # the same name: look before creating again
                if found is not None:
                    return found
            return self._c.driver.create_node(
                name=spec.name, size=NodeSize(id=size_name, name=size_name, ram=0, disk=0, bandwidth=0, price=0,
                                              driver=driver),
                image=NodeImage(id=image, name=image, driver=driver),
                location=NodeLocation(id=self.region, name=self.region, country="", driver=driver),
                ex_create_attr={"ssh_keys": [key.extra["id"]], "tags": tags, "ipv6": False},
                ex_user_data=user_data(host_key, hostname=spec.name))

        with _pinned.undo_if_refused(self.pinned, spec.name, self._delete_firewall):
            node = self._c.call(f"create droplet {spec.name}", create)
        with self.pinned.edit() as keys:
            keys[spec.name]["id"] = node.id
        return self._to_host(node, host_key.public)

    def destroy_host(self, host_id: str, timeout: float = 120.0) -> None:
        """Delete the droplet and wait until the API no longer knows it, then its firewall and tag. A missing
        droplet is not an error."""
        try:
            node = self._node(host_id)
        except NotFound:
            return
        self._c.call(f"delete droplet {host_id}", lambda: self._c.driver.destroy_node(node))
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._node(host_id)
            except NotFound:
                break
            if time.monotonic() >= deadline:
                raise Unreachable(self.name, f"wait for deletion of droplet {host_id}",
                                  f"still listed {timeout:.0f} s after its deletion")
            time.sleep(self.poll_interval)
        self._delete_firewall(node.name)
        with self.pinned.edit() as keys:
            keys.pop(node.name, None)

    def _delete_firewall(self, droplet: str) -> None:
        fw = self._firewall_by_name(f"liferaft-{droplet}"[:255])
        for op, path in ([(f"delete firewall liferaft-{droplet}", f"/v2/firewalls/{fw['id']}")] if fw else []) + [
                (f"delete tag {tag(HOST_TAG, droplet)}", f"/v2/tags/{tag(HOST_TAG, droplet)}")]:
            try:
                self._c.request(op, path, method="DELETE")
            except NotFound:
                pass

    # ------------------------------------------------------------------------------------------ waiting
    def wait_running(self, host_id: str, timeout: float = 120.0) -> Host:
        return _pinned.wait_running(self.name, self.get_host, host_id, timeout, self.poll_interval, "droplet", "do_status")

    def wait_reachable(self, host: Host, timeout: float = 120.0) -> Host:
        """Active, the SSH port answers, and a login with the pinned host key succeeds."""
        start = time.monotonic()
        return _pinned.wait_reachable(self.name, host.id, self.wait_running(host.id, timeout), start, timeout,
                                      self.dir, "droplet")


def _status_of(node: Any) -> str:
    """DigitalOcean's status back from libcloud's NodeState (libcloud keeps only its own state)."""
    state = str(node.state).lower().rsplit(".", 1)[-1]
    return {"pending": "new", "running": "active", "stopped": "off", "terminated": "archive"}.get(state, state)


class DigitalOceanAccount:
    """GET /v2/account (libcloud's ex_account_info): the token works, and the account is not locked."""

    def __init__(self, client: DigitalOceanClient) -> None:
        self._c = client

    def probe(self) -> ProbeResult:
        start = time.monotonic()
        account = self._c.call("get account", lambda: self._c.driver.ex_account_info())
        if account.get("status") == "locked":
            raise AuthRejected(self._c.name, "get account", f"the account is locked: "
                               f"{account.get('status_message') or 'no reason given'}", code="locked")
        return ProbeResult(latency_s=time.monotonic() - start, account=account.get("uuid"),
                           detail=f"account {account.get('status')}, droplet limit {account.get('droplet_limit')} "
                                  f"at {self._c.endpoint}")


class DigitalOceanAdapter:
    """One DigitalOcean account (a personal access token): compute and an account probe."""

    def __init__(self, name: str, token: str | None, state_dir: str | Path, *, endpoint: str | None = None,
                 size: str = DEFAULT_SIZE, image: str = DEFAULT_IMAGE, region: str = DEFAULT_REGION,
                 ssh_user: str = "root", private_key_file: str | None = None,
                 ssh_sources: Iterable[str] = ()) -> None:
        self.name = name
        self.client = DigitalOceanClient(name, token, endpoint)
        self.compute = DigitalOceanCompute(self.client, Path(state_dir), size=size, image=image, region=region,
                                           ssh_user=ssh_user, private_key_file=private_key_file,
                                           ssh_sources=ssh_sources)
        self.account = DigitalOceanAccount(self.client)

    def __repr__(self) -> str:
        return f"DigitalOceanAdapter({self.client!r})"

    def provider(self, capabilities: Iterable[str] = ("compute", "account")) -> Provider:
        wanted = set(capabilities)
        return Provider(name=self.name, type="digitalocean", compute=self.compute if "compute" in wanted else None,
                        account=self.account if "account" in wanted else None)
