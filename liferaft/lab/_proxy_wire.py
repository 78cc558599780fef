"""Wire-level pieces of the fault proxy: request heads, body relaying, and faults in each provider's own shape.

Kept apart from `proxy.py` (process, control endpoint, Python API) so each stays small. The fault bodies follow
what the real services send: S3 `<Error><Code>AccessDenied</Code>...`, EC2 `<Response><Errors><Error>...`,
Route53/STS/IAM `<ErrorResponse><Error><Type>Sender</Type>...`, JSON-protocol services `{"__type": ...}`, and for
PowerDNS exactly what pdns 4.7 answers to a wrong API key (401, text/plain "Unauthorized", WWW-Authenticate).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_ACTION = re.compile(r"^(Describe|List|Get|Lookup|Search|Scan|Query)")
CHUNK = 1 << 20
HEAD_LIMIT = 1 << 20

# ------------------------------------------------------------------------------------------ fault responses
_XML = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NS = {"route53": "https://route53.amazonaws.com/doc/2013-04-01/",
       "sts": "https://sts.amazonaws.com/doc/2011-06-15/", "iam": "https://iam.amazonaws.com/doc/2010-05-08/"}
# (service shape, mode) -> (status, code, message)
_FAULTS: dict[tuple[str, str], tuple[int, str, str]] = {
    ("s3", "deny"): (403, "AccessDenied", "Access Denied"),
    ("s3", "throttle"): (503, "SlowDown", "Please reduce your request rate."),
    ("s3", "error"): (500, "InternalError", "We encountered an internal error. Please try again."),
    ("ec2", "deny"): (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
    ("ec2", "throttle"): (429, "RequestLimitExceeded", "Request limit exceeded."),
    ("ec2", "error"): (500, "InternalError", "An internal error has occurred"),
    ("query", "deny"): (403, "AccessDenied", "User is not authorized to perform this action"),
    ("query", "throttle"): (429, "Throttling", "Rate exceeded"),
    ("query", "error"): (500, "InternalFailure", "An internal error has occurred"),
    ("sts", "deny"): (403, "InvalidClientTokenId", "The security token included in the request is invalid."),
    ("json", "deny"): (400, "UnrecognizedClientException", "The security token included in the request is invalid."),
    ("json", "throttle"): (429, "ThrottlingException", "Rate exceeded"),
    ("json", "error"): (500, "InternalFailure", "An internal error has occurred"),
    ("powerdns", "deny"): (401, "", "Unauthorized"),
    ("powerdns", "throttle"): (429, "", "Too Many Requests"),
    ("powerdns", "error"): (500, "", "Internal Server Error"),
    # Hetzner Cloud (docs.hetzner.cloud, "Errors"): a revoked token, rate limiting, a server error.
    ("hcloud", "deny"): (401, "unauthorized", "unable to authenticate"),
    ("hcloud", "throttle"): (429, "rate_limit_exceeded", "limit of 3600 requests per hour reached"),
    ("hcloud", "error"): (500, "server_error", "an internal server error occurred"),
    # DigitalOcean API v2 (`{"id", "message", "request_id"}`): a revoked token, rate limiting, a server error.
    ("digitalocean", "deny"): (401, "unauthorized", "Unable to authenticate you"),
    ("digitalocean", "throttle"): (429, "too_many_requests", "API Rate limit exceeded."),
    ("digitalocean", "error"): (500, "server_error", "Server was unable to give you a response."),
    # An OCI distribution registry (distribution-spec error codes): a suspended account, rate limiting, an error.
    ("registry", "deny"): (401, "UNAUTHORIZED", "authentication required"),
    ("registry", "throttle"): (429, "TOOMANYREQUESTS", "too many requests"),
    ("registry", "error"): (500, "UNKNOWN", "unknown error"),
}
_SCOPE = re.compile(r"Credential=[^/,\s]+/[^/]+/[^/]+/([^/]+)/")


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    raw: bytes
    body: bytes | None = None  # pre-read small form bodies (AWS Query actions)

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()

    @property
    def length(self) -> int:
        return int(self.header("content-length") or 0)

    def wants_close(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" in conn or (self.version == "HTTP/1.0" and "keep-alive" not in conn)

    def aws_service(self) -> str:
        auth = self.header("authorization") or urllib.parse.unquote(self.target)
        m = _SCOPE.search(auth.replace("X-Amz-Credential=", "Credential="))
        return m.group(1).lower() if m else "s3"

    def aws_action(self) -> str | None:
        target = self.header("x-amz-target")
        if target:
            return target.rsplit(".", 1)[-1]
        query = urllib.parse.urlsplit(self.target).query
        if self.body:
            query += "&" + self.body.decode("latin-1")
        actions = urllib.parse.parse_qs(query).get("Action")
        return actions[0] if actions else None


def fault_response(flavour: str, mode: str, req: Request, retry_after: int) -> bytes:
    """The full HTTP response a provider of `flavour` gives in fault `mode` (deny, throttle, error)."""
    rid = secrets.token_hex(8).upper()
    headers = [("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()))]
    if flavour == "hcloud":
        status, code, message = _FAULTS[("hcloud", mode)]
        body, ctype = json.dumps({"error": {"code": code, "message": message, "details": {}}}), "application/json"
        if mode == "throttle":
            headers += [("RateLimit-Limit", "3600"), ("RateLimit-Remaining", "0"),
                        ("RateLimit-Reset", str(int(time.time()) + retry_after))]
    elif flavour == "digitalocean":
        status, code, message = _FAULTS[("digitalocean", mode)]
        body = json.dumps({"id": code, "message": message, "request_id": secrets.token_hex(16)})
        ctype = "application/json; charset=utf-8"
        if mode == "throttle":  # DigitalOcean says when the limit resets (unix time), not Retry-After
            headers += [("ratelimit-limit", "5000"), ("ratelimit-remaining", "0"),
                        ("ratelimit-reset", str(math.ceil(time.time()) + retry_after))]
    elif flavour == "registry":
        status, code, message = _FAULTS[("registry", mode)]
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
        ctype = "application/json; charset=utf-8"
        if mode == "deny":
            headers.append(("WWW-Authenticate", 'Basic realm="registry"'))
    elif flavour == "powerdns":
        status, _, message = _FAULTS[("powerdns", mode)]
        body, ctype = message, "text/plain; charset=utf-8"
        if mode == "deny":
            headers.append(("WWW-Authenticate", 'X-API-Key realm="PowerDNS"'))
    else:
        service = req.aws_service() if flavour == "aws" else "s3"
        shape = service if service in ("s3", "ec2", "sts", "iam", "route53") else (
            "json" if req.header("x-amz-target") else "query")
        if shape in ("sts", "iam") and mode == "deny":
            status, code, message = _FAULTS[("sts", mode)]
        else:
            status, code, message = _FAULTS.get((shape, mode)) or _FAULTS[("query", mode)]
        ctype = "text/xml"
        if shape == "s3":
            ctype = "application/xml"
            body = (f"{_XML}<Error><Code>{code}</Code><Message>{message}</Message>"
                    f"<RequestId>{rid}</RequestId><HostId>{secrets.token_hex(16)}</HostId></Error>")
            headers.append(("x-amz-request-id", rid))
        elif shape == "ec2":
            body = (f"{_XML}<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
                    f"</Errors><RequestID>{rid}</RequestID></Response>")
        elif shape == "json":
            ctype = "application/x-amz-json-1.1"
            body = json.dumps({"__type": code, "message": message})
            headers.append(("x-amzn-RequestId", rid))
        else:
            xmlns = f' xmlns="{_NS[shape]}"' if shape in _NS else ""
            kind = "Receiver" if mode == "error" else "Sender"
            body = (f"{_XML}<ErrorResponse{xmlns}><Error><Type>{kind}</Type><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>")
            headers.append(("x-amzn-RequestId", rid))
    if mode == "throttle" and flavour != "digitalocean":
        headers.append(("Retry-After", str(retry_after)))
    payload = b"" if req.method == "HEAD" else body.encode()
    reason = {401: "Unauthorized", 403: "Forbidden", 400: "Bad Request", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Slow Down"}.get(status, "Error")
    headers += [("Content-Type", ctype), ("Content-Length", str(len(body.encode())))]
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# ------------------------------------------------------------------------------------------ the proxy process
def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return lines[0], headers


async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, CHUNK))
        if not data:
            raise ConnectionError("peer closed mid-body")
        n -= len(data)
        if writer is not None:
            writer.write(data)
            await writer.drain()


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        if writer is not None:
            writer.write(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = await reader.readuntil(b"\r\n")
                if writer is not None:
                    writer.write(trailer)
                if trailer == b"\r\n":
                    break
            if writer is not None:
                await writer.drain()
            return
        await copy(reader, writer, size + 2)


async def copy_body(req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None) -> None:
    if req.body is not None:
        if writer is not None:
            writer.write(req.body)
            await writer.drain()
    elif req.chunked:
        await copy_chunked(reader, writer)
    else:
        await copy(reader, writer, req.length)


@dataclass
class Stats:
    """What a proxy received since start or reset."""

    since: float = field(default_factory=time.time)
    requests: int = 0
    mutating: int = 0
    forwarded: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_action: Counter[str] = field(default_factory=Counter)
    faulted: Counter[str] = field(default_factory=Counter)
    recent_mutating: list[str] = field(default_factory=list)
    # body bytes per client address: [received from it (request bodies), sent to it (response bodies)]
    by_client: dict[str, list[int]] = field(default_factory=dict)

    def client_bytes(self, client: str, up: int = 0, down: int = 0) -> None:
        counts = self.by_client.setdefault(client, [0, 0])
        counts[0] += up
        counts[1] += down

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "requests": self.requests, "mutating": self.mutating,
                "forwarded": self.forwarded, "by_method": dict(self.by_method), "by_action": dict(self.by_action),
                "faulted": dict(self.faulted), "recent_mutating": list(self.recent_mutating),
                "by_client": {k: {"received": v[0], "sent": v[1]} for k, v in self.by_client.items()}}

    def account(self, req: Request, flavour: str) -> None:
        """Count one received request; mutating unless GET/HEAD/OPTIONS or a read-only AWS Query/JSON action."""
        self.requests += 1
        self.by_method[req.method] += 1
        mutating = req.method not in READ_ONLY_METHODS
        if flavour == "aws" and req.method == "POST":
            action = req.aws_action()
            if action:
                self.by_action[action] += 1
                mutating = not READ_ONLY_ACTION.match(action)
        if mutating:
            self.mutating += 1
            self.recent_mutating = (self.recent_mutating + [f"{req.method} {req.target.split('?', 1)[0]}"])[-20:]
