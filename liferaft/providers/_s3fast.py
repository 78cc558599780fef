"""A lean request path for the hot S3 operations of object sync: GET, HEAD and single PUT of one object.

Why: object sync is thousands of small requests, and on a small machine the client's CPU per request decides the
speed. botocore spends ~1.4 ms of CPU per request (model-driven serialisation, endpoint rules, event hooks,
signing, parsing); this path builds the request itself, signs it with AWS Signature Version 4 (signing key cached
per day and region), sends it over pooled keep-alive connections and reads only what the adapter needs (status,
ETag, a few headers; an XML error body -> code and message). The connections are the standard library's
http.client ones: measured on a 4 KiB GET, urllib3's pool added as much client CPU again (0.33 vs 0.16 ms).

What it handles (anything else stays on boto3, see `S3Fast.usable`): static credentials (with or without a
session token), path-style addressing when an endpoint is configured, virtual-hosted addressing on AWS for DNS-safe
bucket names without dots, no HTTP proxy. A bucket that answers with a redirect to another region is handed back
to boto3 (`UseBoto3`), which follows it.

Errors are mapped as `aws.classify` maps botocore's: HTTP status and S3 error code -> `_errors.error_for`
(AuthRejected, Throttled with Retry-After, NotFound, ...), connection failures and timeouts -> Unreachable naming
the endpoint only. Credentials never appear in reprs, logs or messages.

Only the standard library: nothing here slows `liferaft --help` (ssl is imported for the first https request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import os
import re
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from liferaft.errors import Unreachable
from liferaft.providers import _errors

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
ERROR_BODY_LIMIT = 64 * 1024  # an error body is a few hundred bytes; never read a misbehaving server's gigabytes
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")  # virtual-hosted over https: no dots (certificate)
_REDIRECT_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "TemporaryRedirect",
                             "IllegalLocationConstraintException"})
_SPACES = re.compile(r"\s+")
# How a kept-alive connection that the server closed fails when reused: retried at once on a new connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class UseBoto3(Exception):
    """This request is better made by boto3 (e.g. the bucket lives in another region: botocore follows that)."""


# ---------------------------------------------------------------------------------------------------- SigV4
def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """SigV4's UriEncode: UTF-8, every byte percent-encoded except A-Z a-z 0-9 - _ . ~ (and '/' in S3 paths)."""
    return quote(value, safe="/~" if keep_slash else "~")


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(params.items()))


class SigV4Signer:
    """AWS Signature Version 4 for one set of credentials, one region, one service.

    The derived signing key depends only on the date (UTC day), region and service: it is computed once per day
    instead of four HMACs per request."""

    def __init__(self, access_key: str, secret_key: str, region: str, service: str = "s3",
                 session_token: str | None = None) -> None:
        self.region = region
        self.service = service
        self.__access_key = access_key
        self.__secret = secret_key
        self.__token = session_token
        self._key_cache: tuple[str, bytes] | None = None

    def __repr__(self) -> str:  # never show credentials
        return f"SigV4Signer(region={self.region!r}, service={self.service!r})"

    def _signing_key(self, day: str) -> bytes:
        cached = self._key_cache
        if cached is not None and cached[0] == day:
            return cached[1]
        k = hmac.new(("AWS4" + self.__secret).encode(), day.encode(), hashlib.sha256).digest()
        for part in (self.region, self.service, "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        self._key_cache = (day, k)
        return k

    def sign(self, method: str, path: str, query: str, headers: dict[str, str], payload_hash: str,
             amz_date: str | None = None) -> dict[str, str]:
        """Add x-amz-date, x-amz-content-sha256, the session token and Authorization to `headers` (names in lower
        case, `host` included) and return them. `path` is the URI as sent (already encoded once: S3 is not
        double-encoded); `query` the canonical query string."""
        amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers["x-amz-date"] = amz_date
        headers["x-amz-content-sha256"] = payload_hash
        if self.__token:
            headers["x-amz-security-token"] = self.__token
        names = sorted(headers)
        canonical_headers = "".join(f"{n}:{_SPACES.sub(' ', headers[n].strip())}\n" for n in names)
        signed = ";".join(names)
        canonical = f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload_hash}"
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.__access_key}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")
        return headers


# ---------------------------------------------------------------------------------------------------- client
@dataclass(frozen=True)
class Answer:
    """What the adapter needs of a successful answer: status and headers (lower-case names)."""

    status: int
    headers: dict[str, str]

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag", "").strip('"') or None


def _proxied(scheme: str, host: str) -> bool:
    """An HTTP(S) proxy configured for this host (botocore would use it; this path does not: boto3 then)."""
    from urllib.request import getproxies, proxy_bypass

    return scheme in getproxies() and not proxy_bypass(host)


def usable(endpoint: str | None, region: str, access_key: str | None, secret_key: str | None) -> bool:
    """Can the lean path serve this account? Static credentials, an http(s) endpoint or AWS itself (its
    commercial partition), no proxy, no FIPS/dual-stack endpoint asked for by environment, and not switched off
    (LIFERAFT_S3_LEAN=0)."""
    if os.environ.get("LIFERAFT_S3_LEAN", "1") == "0" or not access_key or not secret_key:
        return False
    if endpoint is None and region.startswith(("cn-", "us-iso")):  # other domains: botocore's endpoint rules
        return False
    if any(os.environ.get(v, "").lower() == "true" for v in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
                                                              "AWS_S3_USE_ACCELERATE_ENDPOINT")):
        return False
    if endpoint is None:
        return not _proxied("https", "s3.amazonaws.com")
    u = urlsplit(endpoint)
    host = u.hostname or ""
    # An IPv6 literal would need brackets in the Host header: boto3 does that.
    return u.scheme in ("http", "https") and bool(host) and ":" not in host and not u.query \
        and not _proxied(u.scheme, host)


def _readable(sock: Any) -> bool:
    """Has an idle connection's socket something to read? For a kept-alive HTTP connection: the server's EOF."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Pool:
    """Keep-alive HTTP(S) connections to one host (http.client's: urllib3's bookkeeping doubled the client CPU of
    a small GET). Connections are taken for one request and its whole answer, then put back if still usable."""

    def __init__(self, scheme: str, host: str, port: int | None, connect_timeout: float, read_timeout: float,
                 size: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.connect_timeout, self.read_timeout, self.size = connect_timeout, read_timeout, size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl: Any = None

    def take(self, *, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection, whether it was used before). An idle one the server has closed meanwhile (its socket
        reads as ready: EOF) is dropped; `fresh` asks for a new connection."""
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                idle = self._idle.pop()
            if idle.sock is not None and not _readable(idle.sock):
                return idle, True
            idle.close()
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            if self._ssl is None:
                import ssl

                self._ssl = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        conn.connect()  # under the connect timeout; answers may take the (longer) read timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.read_timeout)
        return conn, False

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()


class S3Fast:
    """Signed S3 requests over pooled keep-alive connections for one account. Thread-safe."""

    def __init__(self, provider: str, region: str, endpoint: str | None, access_key: str, secret_key: str,
                 session_token: str | None = None, *, connect_timeout: float = 2.0, read_timeout: float = 30.0,
                 pool_size: int = 64) -> None:
        self.provider = provider
        self.region = region
        self.endpoint = endpoint
        self._signer = SigV4Signer(access_key, secret_key, region, "s3", session_token)
        self._timeouts = (connect_timeout, read_timeout)
        self._pool_size = pool_size
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        if endpoint:
            u = urlsplit(endpoint)
            self._scheme, self._host, self._port = u.scheme, u.hostname or "", u.port
            self._base = u.path.rstrip("/")
        else:
            self._scheme, self._host, self._port, self._base = "https", "", None, ""
        self._boto3_buckets: set[str] = set()  # buckets that redirected: boto3 knows their region

    def __repr__(self) -> str:
        return f"S3Fast(provider={self.provider!r}, region={self.region!r}, endpoint={self.endpoint!r})"

    def serves(self, bucket: str) -> bool:
        """Path-style always; virtual-hosted (AWS) only for DNS-safe names without dots; never a redirected one."""
        if bucket in self._boto3_buckets:
            return False
        return bool(self.endpoint) or bool(_DNS_BUCKET.match(bucket))

    # ------------------------------------------------------------------------------------------ transport
    def _pool(self, host: str) -> _Pool:
        pool = self._pools.get(host)
        if pool is None:
            with self._lock:
                pool = self._pools.get(host)
                if pool is None:
                    connect, read = self._timeouts
                    name = self._host if self.endpoint else host
                    pool = self._pools[host] = _Pool(self._scheme, name, self._port, connect, read,
                                                     self._pool_size)
        return pool

    def _where(self, bucket: str, key: str | None) -> tuple[str, str]:
        """(host header, path as sent and signed)."""
        tail = "" if key is None else "/" + uri_encode(key, keep_slash=True)
        if self.endpoint:
            host = self._host if self._port is None else f"{self._host}:{self._port}"
            return host, f"{self._base}/{bucket}{tail}"
        return f"{bucket}.s3.{self.region}.amazonaws.com", tail or "/"

    def request(self, operation: str, method: str, bucket: str, key: str | None, *, body: bytes | None = None,
                payload_hash: str = EMPTY_SHA256, headers: dict[str, str] | None = None,
                query: dict[str, str] | None = None, stream: bool = False) -> Response:
        """Send one signed request; return the answer (its body unread if `stream`: the caller then reads it and
        calls `done`). A failed connection or an answer cut short is retried once on a new connection (as botocore
        retries once); statuses >= 300 raise liferaft errors here, so `_errors.call` retries throttling and 5xx
        as it does for boto3."""
        host, path = self._where(bucket, key)
        qs = canonical_query(query) if query else ""
        url = f"{path}?{qs}" if qs else path
        pool = self._pool(host)
        failures, fresh = 0, False
        while True:
            hdrs = {"host": host}
            if headers:
                hdrs.update(headers)
            self._signer.sign(method, path, qs, hdrs, payload_hash)
            conn: http.client.HTTPConnection | None = None
            reused = False
            try:
                conn, reused = pool.take(fresh=fresh)
                conn.request(method, url, body=body, headers=hdrs)
                raw = conn.getresponse()
                resp = Response(raw, conn, pool)
                if resp.status >= 300:
                    self._fail(operation, bucket, resp)
                if not stream:
                    resp.data = raw.read()
                    resp.done()
                return resp
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                fresh = True
                if reused and isinstance(exc, _STALE):  # a kept-alive connection the server had closed meanwhile
                    continue
                failures += 1
                if failures >= 2:
                    raise self.unreachable(operation, exc) from None

    def unreachable(self, operation: str, exc: BaseException) -> Unreachable:
        where = self.endpoint or "S3"
        return Unreachable(self.provider, operation, f"{where} did not answer ({type(exc).__name__})")

    def _fail(self, operation: str, bucket: str, resp: Response) -> None:
        try:
            raw = resp.raw.read(ERROR_BODY_LIMIT) if resp.status != 304 else b""
        except (OSError, http.client.HTTPException):  # an unreadable error body still has a status
            raw = b""
        resp.close()
        code, message = parse_error(raw)
        if resp.status in (301, 307) or code in _REDIRECT_CODES:
            self._boto3_buckets.add(bucket)  # another region (or a moved endpoint): botocore follows those
            raise UseBoto3(code or str(resp.status))
        if code is None:  # a body-less error (HEAD): botocore's code is the status, its message the reason
            code, message = str(resp.status), message or resp.raw.reason or ""
        detail = f"{code}: {message}" if message else f"{code} (HTTP {resp.status})"
        raise _errors.error_for(self.provider, operation, detail, status=resp.status, code=code,
                                retry_after=_errors.parse_retry_after(resp.header("retry-after")))

    # ------------------------------------------------------------------------------------------ operations
    def head(self, operation: str, bucket: str, key: str) -> Answer:
        return self.request(operation, "HEAD", bucket, key).answer()

    def get(self, operation: str, bucket: str, key: str, chunk_size: int) -> tuple[Answer, Iterator[bytes]]:
        """GET; the answer's headers now, the body as an iterator of chunks of up to `chunk_size` bytes (one
        chunk, read in one go, when the whole body fits)."""
        resp = self.request(operation, "GET", bucket, key, stream=True)
        return resp.answer(), self._body(operation, resp, chunk_size)

    def _body(self, operation: str, resp: Response, chunk_size: int) -> Iterator[bytes]:
        ok = False
        try:
            length = resp.raw.length  # None: chunked or until close
            if length is not None and length <= chunk_size:
                data = resp.raw.read()  # IncompleteRead if cut short
                ok = True
                resp.done()
                yield data
                return
            got = 0
            while chunk := resp.raw.read(chunk_size):
                got += len(chunk)
                yield chunk
            expected = resp.header("content-length")
            if expected is not None and got != int(expected):
                raise http.client.IncompleteRead(b"", int(expected) - got)
            ok = True
            resp.done()
        except (OSError, http.client.HTTPException) as exc:  # a body cut short is the endpoint's failure
            raise self.unreachable(operation, exc) from None
        finally:
            if not ok:  # abandoned or failed midway: the connection is in an unknown state
                resp.close()

    def put(self, operation: str, bucket: str, key: str, data: bytes, sha256_hex: str,
            metadata: dict[str, str]) -> Answer:
        """PUT one object whose sha256 is known: it is the signed x-amz-content-sha256 (S3 refuses bytes that do
        not match it: XAmzContentSHA256Mismatch) and x-amz-checksum-sha256 (stored, checked by S3's flexible
        checksums). No second hash pass: the caller computed it while reading."""
        headers = {f"x-amz-meta-{k}": v for k, v in metadata.items()}
        headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        return self.request(operation, "PUT", bucket, key, body=data, payload_hash=sha256_hex,
                            headers=headers).answer()

    def list_page(self, operation: str, bucket: str, prefix: str, max_keys: int, token: str | None) -> Page:
        """One ListObjectsV2 page. Keys are asked URL-encoded (XML 1.0 cannot carry every byte a key may hold)
        and decoded when the server says it encoded them (s3rver does not)."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys), "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        resp = self.request(operation, "GET", bucket, None, query=query)
        return parse_listing(resp.data)


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str | None
    modified: float | None


@dataclass(frozen=True)
class Page:
    items: list[Listed]
    truncated: bool
    next_token: str | None


def parse_listing(body: bytes) -> Page:
    """A ListBucketResult (S3's namespace, s3rver's other one, or none) -> Page. Malformed -> ValueError."""
    from datetime import datetime
    from urllib.parse import unquote_plus
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"unreadable listing: {exc}") from None
    if not root.tag.endswith("ListBucketResult"):
        raise ValueError(f"not a listing: {root.tag[:80]}")
    ns = root.tag[:-len("ListBucketResult")]
    encoded = (root.findtext(ns + "EncodingType") or "").lower() == "url"
    items = []
    for node in root.iterfind(ns + "Contents"):
        key = node.findtext(ns + "Key") or ""
        modified = node.findtext(ns + "LastModified")
        etag = node.findtext(ns + "ETag")
        items.append(Listed(key=unquote_plus(key) if encoded else key, size=int(node.findtext(ns + "Size") or 0),
                            etag=etag.strip('"') if etag else None,
                            modified=datetime.fromisoformat(modified).timestamp() if modified else None))
    truncated = (root.findtext(ns + "IsTruncated") or "").strip().lower() == "true"
    return Page(items, truncated, root.findtext(ns + "NextContinuationToken") or None)


class Response:
    """One answer and the connection it came on; `done()` after the body is read returns the connection."""

    def __init__(self, raw: http.client.HTTPResponse, conn: http.client.HTTPConnection, pool: _Pool) -> None:
        self.raw, self._conn, self._pool = raw, conn, pool
        self.status = raw.status
        self.data = b""

    def header(self, name: str) -> str | None:
        return self.raw.getheader(name)

    def answer(self) -> Answer:
        return Answer(self.status, {k.lower(): v for k, v in self.raw.getheaders()})

    def done(self) -> None:
        if self.raw.will_close:
            self._conn.close()
        else:
            self._pool.give_back(self._conn)

    def close(self) -> None:
        self._conn.close()


def parse_error(body: bytes) -> tuple[str | None, str]:
    """S3's XML error body -> (Code, Message); (None, "") when there is none or it is not XML."""
    if not body or b"<" not in body:
        return None, ""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None, ""
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    return (root.findtext(ns + "Code") or None), (root.findtext(ns + "Message") or "").strip()
