"""The lab's provider servers: moto ("aws"), s3rver (an alternate S3 store) and PowerDNS (independent DNS).

Each server runs as its own process (see `liferaft.lab._proc` for how: own session, SIGKILLed by the kernel when
the thread that started it dies, output appended to `<workdir>/<name>.log`), keeps its data under
`<workdir>/<name>/`, picks a free port when given port 0, and is polled until ready or fails with the log's tail.

    with MotoServer(workdir) as moto:          # or .start() / .stop()
        boto3.client("s3", endpoint_url=moto.url, ...)
        moto.reset()

Common surface of every server: `name, address, port, url, log_path, pid, running, start(), stop(), reset(),
to_dict()` (JSON-safe, never a secret). The fault proxy (`liferaft.lab.proxy.FaultProxy`) goes in front of `url`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from liferaft.errors import LiferaftError, ToolMissing
from liferaft.lab._proc import (
    OPENER,
    Child,
    free_port,
    free_udp_tcp_port,
    http_status,
    url_host,
    wait_until,
)

PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
START_ATTEMPTS = 3  # a port picked free may be taken by another program before the server binds it


class LabServer:
    """Base of the lab servers: one child process, one port, one log, one data directory."""

    kind: ClassVar[str] = "server"
    ready_timeout: ClassVar[float] = 30.0

    def __init__(self, workdir: str | Path, address: str = "127.0.0.1", port: int = 0, *,
                 name: str | None = None, die_with_parent: bool = True) -> None:
        self.workdir = Path(workdir)
        self.address = address
        self.name = name or self.kind
        self._requested_port = port
        self.port = port
        self.die_with_parent = die_with_parent
        self._child: Child | None = None

    # ------------------------------------------------------------------ overridden by each server
    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _prepare(self) -> None:
        """Write config / data before a start (ports are already chosen)."""

    def _choose_ports(self) -> None:
        self.port = self._requested_port or free_port(self.address)

    def _ready(self) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ common
    @property
    def data_dir(self) -> Path:
        return self.workdir / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{url_host(self.address)}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running()

    def start(self) -> Self:
        """Start the process and wait until it answers; retries on a fresh port if a picked port was taken."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last: LiferaftError | None = None
        for _ in range(START_ATTEMPTS if not self._requested_port else 1):
            self._choose_ports()
            self._prepare()
            child = Child(self.name, self._argv(), self.log_path, env=self._env(), cwd=self.data_dir,
                          die_with_parent=self.die_with_parent)
            child.start()
            self._child = child
            try:
                wait_until(child, self._ready, self.ready_timeout, what="did not answer")
                return self
            except LiferaftError as e:
                last = e
                exited_early = not child.running()
                child.stop()
                self._child = None
                if not exited_early:  # a timeout: a new port would not help
                    break
        assert last is not None
        raise last

    def stop(self) -> None:
        """Terminate, then kill after a grace period; wait for the process. Idempotent."""
        if self._child is not None:
            self._child.stop()
            self._child = None

    def reset(self) -> None:
        """Forget all state (buckets, instances, zones ...) without restarting when the server allows it."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "name": self.name, "address": self.address, "port": self.port, "url": self.url,
            "pid": self.pid, "running": self.running, "log_path": str(self.log_path),
            "data_dir": str(self.data_dir),
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.url} pid={self.pid}>"


class MotoServer(LabServer):
    """moto in server mode: the lab's "aws" (S3, EC2, Route53, STS, IAM). Any access key works."""

    kind = "moto"
    access_key = "testing"
    secret_key = "testing"
    region = "us-east-1"

    def __init__(self, workdir: str | Path, address: str = "127.0.0.1", port: int = 0, account_id: str | None = None,
                 *, name: str | None = None, die_with_parent: bool = True) -> None:
        super().__init__(workdir, address, port, name=name, die_with_parent=die_with_parent)
        self.account_id = account_id

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.address, "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        if self.account_id:
            env["MOTO_ACCOUNT_ID"] = self.account_id
        return env

    def _ready(self) -> bool:
        return http_status(self.url + "/moto-api/", timeout=1.0) == 200

    def reset(self) -> None:
        status = http_status(self.url + "/moto-api/reset", method="POST", data=b"")
        if status != 200:
            raise LiferaftError(f"{self.name}: reset answered HTTP {status}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "account_id": self.account_id, "region": self.region}


def find_s3rver() -> Path:
    """s3rver's JS entry point: $LIFERAFT_S3RVER, else `s3rver` on PATH resolved through its symlinks."""
    hint = "npm install -g s3rver@3 (or set LIFERAFT_S3RVER to s3rver's bin/s3rver.js)"
    configured = os.environ.get("LIFERAFT_S3RVER")
    if configured:
        path = Path(configured).resolve()
        if not path.is_file():
            raise ToolMissing(f"LIFERAFT_S3RVER points at {configured}, which is not a file", hint=hint)
        return path
    found = shutil.which("s3rver")
    if not found:
        raise ToolMissing("s3rver is not installed (not on PATH)", hint=hint)
    return Path(found).resolve()


class S3rverServer(LabServer):
    """s3rver, a second S3 implementation (node). Checks the access key id, never the secret."""

    kind = "s3rver"
    access_key = "S3RVER"
    secret_key = "S3RVER"
    region = "us-east-1"

    def _argv(self) -> list[str]:
        node = shutil.which("node")
        if not node:
            raise ToolMissing("node is not installed (s3rver needs it)", hint="apt-get install nodejs npm")
        # Without the legacy provider, listings with a second page fail with 500 on Node 20.
        return [node, "--openssl-legacy-provider", str(find_s3rver()), "-d", str(self.store_dir),
                "-a", self.address, "-p", str(self.port), "--silent"]

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def _prepare(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def _ready(self) -> bool:
        return http_status(self.url + "/", timeout=1.0) == 200

    def reset(self) -> None:
        """Delete every bucket and object (s3rver reads its store from disk on each request)."""
        if self.store_dir.exists():
            for entry in self.store_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


class PowerDNSServer(LabServer):
    """PowerDNS authoritative with the sqlite backend and its HTTP API. `port` / `url` are the API's; DNS answers
    on `dns_address` (UDP and TCP). The API key lives only in `pdns.conf` (mode 0600) and in memory."""

    kind = "pdns"
    server_id = "localhost"

    def __init__(self, workdir: str | Path, address: str = "127.0.0.1", dns_port: int = 0, api_port: int = 0,
                 api_key: str | None = None, *, name: str | None = None, die_with_parent: bool = True,
                 allow_from: Iterable[str] | None = None) -> None:
        super().__init__(workdir, address, api_port, name=name, die_with_parent=die_with_parent)
        self._requested_dns_port = dns_port
        self.dns_port = dns_port
        self.api_key = api_key or secrets.token_urlsafe(24)
        if allow_from is None:
            allow_from = ["127.0.0.0/8"]
            if not address.startswith("127."):
                allow_from.append(f"{address}/24" if ":" not in address else f"{address}/64")
        self.allow_from = list(allow_from)

    @property
    def api_port(self) -> int:
        return self.port

    @property
    def dns_address(self) -> tuple[str, int]:
        return (self.address, self.dns_port)

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "pdns.conf"

    @property
    def _sock_dir(self) -> Path:
        """Where pdns puts its control socket: under the data dir when the socket's path fits a UNIX socket's 107
        bytes, else a short directory in /tmp named after the data dir (a pytest-xdist worker's tmp paths are long
        enough that pdns refused to start: 'not a valid UNIX socket path')."""
        import hashlib
        import tempfile

        here = self.data_dir / "run"
        if len(str(here / "pdns.controlsocket").encode()) <= 100:
            return here
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"liferaft-pdns-{digest}"

    def stop(self) -> None:
        super().stop()
        if self._sock_dir != self.data_dir / "run":
            import shutil

            shutil.rmtree(self._sock_dir, ignore_errors=True)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pdns.sqlite3"

    def _choose_ports(self) -> None:
        self.port = self._requested_port or free_port(self.address)
        self.dns_port = self._requested_dns_port or free_udp_tcp_port(self.address)

    def _prepare(self) -> None:
        if not self.db_path.exists():
            if not PDNS_SCHEMA.is_file():
                raise ToolMissing(f"the PowerDNS sqlite schema {PDNS_SCHEMA} is missing",
                                  hint="apt-get install pdns-server pdns-backend-sqlite3")
            with sqlite3.connect(self.db_path) as db:
                db.executescript(PDNS_SCHEMA.read_text())
        sock_dir = self._sock_dir
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        conf = "\n".join([
            "launch=gsqlite3",
            f"gsqlite3-database={self.db_path}",
            "gsqlite3-dnssec=no",
            f"local-address={self.address}",
            f"local-port={self.dns_port}",
            "daemon=no",
            "guardian=no",
            f"socket-dir={sock_dir}",
            "disable-syslog=yes",
            "security-poll-suffix=",
            "webserver=yes",
            f"webserver-address={self.address}",
            f"webserver-port={self.port}",
            f"webserver-allow-from={','.join(self.allow_from)}",
            "api=yes",
            f"api-key={self.api_key}",
            "default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 3600",
            "loglevel=4",
            "",
        ])
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(conf)
        os.chmod(self.conf_path, 0o600)

    def _argv(self) -> list[str]:
        pdns = shutil.which("pdns_server") or "/usr/sbin/pdns_server"
        if not Path(pdns).exists():
            raise ToolMissing("pdns_server is not installed", hint="apt-get install pdns-server pdns-backend-sqlite3")
        return [pdns, f"--config-dir={self.data_dir}"]

    def _ready(self) -> bool:
        return http_status(self.url + "/api/v1/servers", headers={"X-API-Key": self.api_key}, timeout=1.0) == 200

    # ------------------------------------------------------------------ HTTP API (urllib: independent of libcloud)
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the PowerDNS API (`path` below /api/v1/servers/localhost); JSON in, JSON out (None when empty)."""
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v1/servers/{self.server_id}{path}", data=data, method=method,
                                     headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
        try:
            with OPENER.open(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise LiferaftError(f"{self.name}: {method} {path} answered HTTP {e.code}: {detail}") from None
        return json.loads(raw) if raw.strip() else None

    def create_zone(self, zone: str, records: Mapping[tuple[str, str], Iterable[str]] | None = None, *,
                    ttl: int = 300, nameservers: Iterable[str] | None = None) -> dict[str, Any]:
        """Create a native zone with SOA (from default-soa-content) and NS records, plus `records`:
        {(name, type): [content, ...]}; names relative to the zone ("www", "@") or absolute ("www.example.test.").
        Returns the zone as the API shows it."""
        zone = _fqdn(zone)
        ns = [_fqdn(n) for n in (nameservers or [f"ns1.{zone}"])]
        rrsets = [
            {"name": _absolute(name, zone), "type": rtype.upper(), "ttl": ttl, "changetype": "REPLACE",
             "records": [{"content": c, "disabled": False} for c in contents]}
            for (name, rtype), contents in (records or {}).items()
        ]
        self.api("POST", "/zones", {"name": zone, "kind": "Native", "nameservers": ns, "rrsets": rrsets})
        result: dict[str, Any] = self.api("GET", f"/zones/{zone}")
        return result

    def set_records(self, zone: str, name: str, rtype: str, contents: Iterable[str], ttl: int = 300) -> None:
        """Replace one record set (an empty `contents` deletes it)."""
        zone = _fqdn(zone)
        contents = list(contents)
        rrset: dict[str, Any] = {"name": _absolute(name, zone), "type": rtype.upper()}
        if contents:
            rrset.update(ttl=ttl, changetype="REPLACE", records=[{"content": c, "disabled": False} for c in contents])
        else:
            rrset["changetype"] = "DELETE"
        self.api("PATCH", f"/zones/{zone}", {"rrsets": [rrset]})

    def list_zones(self) -> list[str]:
        return sorted(z["name"] for z in self.api("GET", "/zones"))

    def delete_zone(self, zone: str) -> None:
        self.api("DELETE", f"/zones/{_fqdn(zone)}")

    def reset(self) -> None:
        """Delete every zone."""
        for zone in self.list_zones():
            self.delete_zone(zone)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "api_port": self.port, "dns_port": self.dns_port,
                "dns_server": f"{self.address}:{self.dns_port}", "conf_path": str(self.conf_path)}


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _absolute(name: str, zone: str) -> str:
    if name in ("@", "", zone):
        return zone
    if name.endswith("."):
        return name
    return f"{name}.{zone}"


def _lab_ca(directory: Path, address: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `address` (and localhost): for pebble's own HTTPS endpoints.
    Returns (ca.pem, server.pem, server.key); the key is 0600."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "liferaft lab ACME server CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        sans.append(x509.DNSName(address))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class PebbleServer(LabServer):
    """pebble, the ACME test CA Let's Encrypt publishes (Debian's `pebble`): the lab's certificate authority.

    `url` is the ACME directory (`.../dir`, HTTPS with a certificate from a throwaway CA: `ca_bundle`). DNS-01
    challenges are looked up at `dns_server` (the lab's PowerDNS). Issued certificates chain to a root pebble makes
    at each start; `issuer_ca` is that root as a PEM file (written once ready), for clients that verify them.
    Started with PEBBLE_VA_NOSLEEP=1 (validates at once) and PEBBLE_WFE_NONCEREJECT=0 (no random bad nonces)."""

    kind = "pebble"

    def __init__(self, workdir: str | Path, address: str = "127.0.0.1", port: int = 0, *, dns_server: str,
                 name: str | None = None, die_with_parent: bool = True) -> None:
        super().__init__(workdir, address, port, name=name, die_with_parent=die_with_parent)
        self.dns_server = dns_server
        self.management_port = 0

    @property
    def url(self) -> str:
        return f"https://{url_host(self.address)}:{self.port}/dir"

    @property
    def ca_bundle(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def issuer_ca(self) -> Path:
        return self.data_dir / "issuer-root.pem"

    def _choose_ports(self) -> None:
        self.port = self._requested_port or free_port(self.address)
        self.management_port = free_port(self.address)

    def _prepare(self) -> None:
        _, cert, key = _lab_ca(self.data_dir / "tls", self.address)
        self.issuer_ca.unlink(missing_ok=True)
        config = {"pebble": {
            "listenAddress": f"{url_host(self.address)}:{self.port}",
            "managementListenAddress": f"{url_host(self.address)}:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key),
            # HTTP-01 / TLS-ALPN-01 ports: unused (DNS-01 only) but pebble wants them
            "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        (self.data_dir / "pebble-config.json").write_text(json.dumps(config, indent=2))

    def _argv(self) -> list[str]:
        exe = shutil.which("pebble") or "/usr/bin/pebble"
        if not Path(exe).exists():
            raise ToolMissing("pebble is not installed", hint="apt-get install pebble")
        return [exe, "-config", str(self.data_dir / "pebble-config.json"), "-dnsserver", self.dns_server]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                "PEBBLE_AUTHZREUSE": "0"}

    def _get(self, url: str) -> bytes | None:
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
        try:
            with opener.open(url, timeout=1.0) as r:
                return bytes(r.read())
        except OSError:
            return None

    def _ready(self) -> bool:
        root = self._get(f"https://{url_host(self.address)}:{self.management_port}/roots/0")
        if root is None or self._get(self.url) is None:
            return False
        self.issuer_ca.write_bytes(root)
        return True

    def reset(self) -> None:
        """pebble keeps everything in memory: a restart forgets accounts, orders and its root."""
        self.stop()
        self.start()

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "directory": self.url, "management_port": self.management_port,
                "ca_bundle": str(self.ca_bundle), "issuer_ca": str(self.issuer_ca), "dns_server": self.dns_server}
