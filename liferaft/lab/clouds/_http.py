"""The HTTP plumbing the lab clouds share: a JSON body in, a JSON answer out with rate-limit headers, bearer-token
and lab-control checks, and the route table lookup. Each cloud keeps its own routes, error bodies and wording."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar

R = TypeVar("R")


def log_line(handler: BaseHTTPRequestHandler, args: tuple[Any, ...]) -> None:
    """One line a request: method, path without the query, status."""
    print(f"{handler.command} {handler.path.split('?')[0]} -> {args[1] if len(args) > 1 else ''}", flush=True)


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any] | None, *,
              content_type: str | None, headers: Iterable[tuple[str, str]]) -> None:
    """`payload` as JSON (an empty body for None), `content_type` when given, then the cloud's own `headers`."""
    data = json.dumps(payload).encode() if payload is not None else b""
    handler.send_response(status)
    if content_type is not None:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def read_json_object(handler: BaseHTTPRequestHandler, error: Callable[[str], Exception],
                     invalid_json: str) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty); `error(message)` for invalid JSON (`invalid_json`) or
    anything but an object."""
    length = int(handler.headers.get("Content-Length") or 0)
    if not length:
        return {}
    try:
        data = json.loads(handler.rfile.read(length))
    except ValueError:
        raise error(invalid_json) from None
    if not isinstance(data, dict):
        raise error("the request body must be a JSON object")
    return data


def bearer_accepted(handler: BaseHTTPRequestHandler, tokens: Iterable[str]) -> bool:
    """Whether the `Authorization: Bearer` token is one of `tokens` (compared in constant time)."""
    token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
    return any(hmac.compare_digest(token, t) for t in tokens)


def lab_token_accepted(handler: BaseHTTPRequestHandler, control_token: str) -> bool:
    """Whether `X-Lab-Token` is the cloud's control token (for /lab/ routes)."""
    return hmac.compare_digest(handler.headers.get("X-Lab-Token") or "", control_token)


def route_for(routes: Iterable[tuple[str, str, R]], method: str, path: str) -> tuple[R, re.Match[str]] | None:
    """The first route whose pattern matches all of `path` for `method`, and the match."""
    for route_method, pattern, route in routes:
        m = re.fullmatch(pattern, path)
        if m and route_method == method:
            return route, m
    return None
