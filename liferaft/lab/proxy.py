"""An HTTP-aware fault proxy in front of one provider endpoint, to simulate a provider cutting you off.

Each proxy is its own process (`python -m liferaft.lab.proxy ...`, started by `FaultProxy.start()`). Modes:
  forward   stream requests and responses both ways (bodies are never buffered whole; chunked and
            `Expect: 100-continue` pass through)
  deny      answer as a suspended account does, with the provider's own status and error body
            (aws: chosen by the SigV4 credential scope's service -- s3 403 AccessDenied, ec2 401 AuthFailure,
            route53 403 AccessDenied, sts/iam 403 InvalidClientTokenId; s3: 403 AccessDenied; powerdns: 401
            "Unauthorized" text/plain with WWW-Authenticate, byte for byte what pdns 4.7 sends for a wrong key)
  down      close the listening socket (connects are refused) and abort every open connection
  throttle  503 SlowDown (S3) or 429 (others) with Retry-After
  error     500 InternalError in the provider's shape
  hang      accept and read requests but never answer (a black-holed provider: clients hit their read timeout);
            held requests are dropped at the next mode change
Fault modes take `count=N`: fault the next N requests, then forward again. Every mode takes `delay=S`: wait S
seconds before handling each request (a slow provider). A mode change applies to the very next request, on
kept-alive connections too.

Control from any process: the proxy serves a small JSON endpoint on 127.0.0.1 (its own port) and writes its
ports and a random control token to `<workdir>/<name>.proxy.json` (mode 0600). `FaultProxy.attach(name, workdir)`
reads that file, so `liferaft lab cut` in another process can change modes and read stats:
  GET /state  ->  {"mode", "count", "stats", ...}     POST /mode {"mode", "count", "retry_after", "delay"}
  POST /stats/reset                                   POST /shutdown          (header X-Proxy-Token)

Stats count requests received since start or reset: by method, and "mutating" ones: any method but GET, HEAD and
OPTIONS -- except AWS Query/JSON calls (EC2, STS, IAM post every call) whose action starts with Describe, List,
Get, Lookup, Search, Scan or Query, which are read-only; those are counted per action too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Literal, Self, get_args

from liferaft.errors import LiferaftError, UsageError
from liferaft.lab._proc import OPENER, Child, url_host, wait_until
from liferaft.lab._proxy_wire import (
    CHUNK,
    HEAD_LIMIT,
    Request,
    Stats,
    copy,
    copy_body,
    copy_chunked,
    fault_response,
    parse_head,
)

log = logging.getLogger("liferaft.lab.proxy")

Mode = Literal["forward", "deny", "down", "throttle", "error", "hang"]
Flavour = Literal["aws", "s3", "powerdns", "hcloud", "digitalocean", "registry"]
MODES: tuple[str, ...] = get_args(Mode)
FLAVOURS: tuple[str, ...] = get_args(Flavour)
Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _StaleUpstream(Exception):
    """A reused upstream connection was found closed before any byte of the response."""


class ProxyServer:
    """The proxy's event loop side. Runs in the proxy process; see `main`."""

    def __init__(self, name: str, listen: tuple[str, int], upstream: tuple[str, int], flavour: str,
                 state_file: Path) -> None:
        self.name, self.listen, self.upstream, self.flavour = name, listen, upstream, flavour
        self.state_file = state_file
        self.token = secrets.token_urlsafe(24)
        self.mode, self.count, self.retry_after, self.delay = "forward", 0, 1, 0.0
        self.mode_changed = asyncio.Event()
        self.stats = Stats()
        self.conns: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.control: asyncio.Server | None = None
        self.stopping = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self._listen()
        self.control = await asyncio.start_server(self._control, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self._write_state()
        await self.stopping.wait()
        self._unlisten()
        self.control.close()
        if self.tasks:  # let aborted connections end on their own, not by cancellation at loop exit
            await asyncio.wait(self.tasks, timeout=2)

    async def _listen(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._client, self.listen[0], self.listen[1],
                                                     limit=HEAD_LIMIT, reuse_address=True)
            self.listen = (self.listen[0], int(self.server.sockets[0].getsockname()[1]))

    def _unlisten(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.conns):
            w.transport.abort()
        self.conns.clear()

    def _write_state(self) -> None:
        assert self.control is not None
        state = {"name": self.name, "pid": os.getpid(), "listen_address": self.listen[0], "port": self.listen[1],
                 "control_port": self.control.sockets[0].getsockname()[1], "token": self.token,
                 "upstream": f"http://{url_host(self.upstream[0])}:{self.upstream[1]}", "flavour": self.flavour}
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)

    async def set_mode(self, mode: str, count: int = 0, retry_after: int = 1, delay: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.count, self.retry_after = mode, max(0, int(count)), max(0, int(retry_after))
        self.delay = max(0.0, float(delay))
        self.mode_changed.set()  # releases held ("hang") requests, which then drop their connections
        self.mode_changed = asyncio.Event()
        log.info("mode %s%s%s", mode, f" for {self.count} requests" if self.count else "",
                 f", {self.delay:g} s delay" if self.delay else "")
        if mode == "down":
            self._unlisten()
        else:
            await self._listen()

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "count": self.count, "retry_after": self.retry_after,
                "delay": self.delay,
                "listening": self.server is not None, "stats": self.stats.to_dict()}

    # ---------------------------------------------------------------- data path
    def _decide(self) -> str:
        mode = self.mode
        if mode in ("deny", "throttle", "error", "hang") and self.count:
            self.count -= 1
            if self.count == 0:
                self.mode = "forward"
        return mode

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns.add(writer)
        writer.transport.set_write_buffer_limits(high=4 * CHUNK)
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        up: Upstream | None = None
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                start, headers = parse_head(raw)
                method, target, version = (start.split(" ", 2) + ["", ""])[:3]
                req = Request(method.upper(), target, version, headers, raw)
                if (self.flavour == "aws" and req.method == "POST" and not req.chunked and req.length <= CHUNK
                        and "x-www-form-urlencoded" in (req.header("content-type") or "")
                        and not req.header("expect")):
                    req.body = await reader.readexactly(req.length)
                self.stats.account(req, self.flavour)
                client = str((writer.get_extra_info("peername") or ("?",))[0])
                self.stats.client_bytes(client, up=0 if req.chunked else req.length)
                if self.delay:
                    await asyncio.sleep(self.delay)
                mode = self._decide()
                if mode == "forward":
                    self.stats.forwarded += 1
                    up, keep = await self._forward(req, reader, writer, up)
                elif mode in ("down", "hang"):  # down: accepted just before the listener closed
                    self.stats.faulted[mode] += 1
                    if mode == "hang":
                        await self.mode_changed.wait()
                    writer.transport.abort()
                    return
                else:
                    self.stats.faulted[mode] += 1
                    keep = await self._fault(mode, req, reader, writer)
                if not keep or req.wants_close():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self.conns.discard(writer)
            writer.close()
            if up is not None:
                up[1].transport.abort()

    async def _fault(self, mode: str, req: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        expect = (req.header("expect") or "").lower() == "100-continue"
        if not expect:
            await copy_body(req, reader, None)  # discard the body so the connection stays usable
        response = fault_response(self.flavour, mode, req, self.retry_after)
        if expect and (req.chunked or req.length):
            response = response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        writer.write(response)
        await writer.drain()
        return not (expect and (req.chunked or req.length))

    async def _connect(self, writer: asyncio.StreamWriter) -> Upstream | None:
        """A new upstream connection, or None after answering the client 502 (the server itself is down)."""
        try:
            up = await asyncio.open_connection(*self.upstream, limit=HEAD_LIMIT)
            up[1].transport.set_write_buffer_limits(high=4 * CHUNK)
            return up
        except OSError as e:
            log.warning("upstream %s:%s unreachable: %s", *self.upstream, e)
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return None

    async def _forward(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       up: Upstream | None) -> tuple[Upstream | None, bool]:
        """Relay one request and its response. Returns the upstream connection to reuse (or None) and whether
        the client connection can carry another request."""
        reused = up is not None and not up[1].transport.is_closing() and not up[0].at_eof()
        if not reused:
            if up is not None:
                up[1].transport.abort()
            up = await self._connect(writer)
            if up is None:
                return None, False
        assert up is not None
        try:
            return await self._exchange(req, reader, writer, up)
        except _StaleUpstream:
            # The kept-alive upstream connection was closed by the server before it answered a single byte.
            # Nothing reached the client yet; a request whose body we hold whole is safe to send once more.
            if not (reused and (req.body is not None or (not req.chunked and req.length == 0))):
                raise ConnectionError("upstream closed the connection before answering") from None
            up = await self._connect(writer)
            if up is None:
                return None, False
            return await self._exchange(req, reader, writer, up)

    async def _exchange(self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        up: Upstream) -> tuple[Upstream | None, bool]:
        ureader, uwriter = up
        uwriter.write(req.raw)
        pump = asyncio.create_task(copy_body(req, reader, uwriter))

        def body_failed(task: asyncio.Task[None]) -> None:  # the client went away mid-body: end the exchange
            if not task.cancelled() and task.exception() is not None:
                uwriter.transport.abort()

        pump.add_done_callback(body_failed)
        try:
            first = True
            while True:
                try:
                    head = await ureader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionResetError) as e:
                    if first and not getattr(e, "partial", b""):
                        raise _StaleUpstream() from None
                    raise
                first = False
                status_line, headers = parse_head(head)
                status = int(status_line.split(" ", 2)[1])
                writer.write(head)
                if 100 <= status < 200:
                    await writer.drain()
                    continue
                break
            resp = Request("", "", status_line.split(" ", 1)[0], headers, head)
            if req.method != "HEAD" and resp.header("content-length") is not None:
                self.stats.client_bytes(str((writer.get_extra_info("peername") or ("?",))[0]), down=resp.length)
            keep = not resp.wants_close()
            if req.method == "HEAD" or status in (204, 304):
                pass
            elif resp.chunked:
                await copy_chunked(ureader, writer)
            elif resp.header("content-length") is not None:
                await copy(ureader, writer, resp.length)
            else:
                keep = False
                while data := await ureader.read(CHUNK):
                    writer.write(data)
                    await writer.drain()
            await writer.drain()
            if not pump.done():  # answered before the whole request body arrived: the framing is lost
                pump.cancel()
                keep = False
            else:
                await pump
        except BaseException:
            pump.cancel()
            uwriter.transport.abort()
            raise
        if not keep:
            uwriter.transport.abort()
            return None, False
        return up, True

    # ---------------------------------------------------------------- control endpoint
    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, payload = 200, dict[str, Any]()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            start, headers = parse_head(raw)
            method, target, version = (start.split(" ", 2) + ["", ""])[:3]
            req = Request(method, target, version, headers, raw)
            body = await reader.readexactly(req.length) if req.length else b"{}"
            if not secrets.compare_digest(req.header("x-proxy-token") or "", self.token):
                status, payload = 403, {"error": "bad token"}
            elif req.method == "GET" and req.target == "/state":
                payload = self.state()
            elif req.method == "POST" and req.target == "/mode":
                opts = json.loads(body)
                await self.set_mode(opts["mode"], opts.get("count") or 0, opts.get("retry_after") or 1,
                                    opts.get("delay") or 0.0)
                payload = self.state()
            elif req.method == "POST" and req.target == "/stats/reset":
                self.stats = Stats()
                payload = self.state()
            elif req.method == "POST" and req.target == "/shutdown":
                self.stopping.set()
                payload = {"stopping": True}
            else:
                status, payload = 404, {"error": "no such control path"}
        except (ValueError, KeyError, OSError, asyncio.IncompleteReadError) as e:
            status, payload = 400, {"error": str(e)}
        data = json.dumps(payload).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


# ------------------------------------------------------------------------------------------ the Python API
class FaultProxy:
    """Controller-side handle of one fault proxy process (started here, or attached from its state file)."""

    kind = "proxy"

    def __init__(self, name: str, workdir: str | Path, listen_address: str, upstream_url: str,
                 flavour: str = "aws", *, port: int = 0, die_with_parent: bool = True) -> None:
        if flavour not in FLAVOURS:
            raise UsageError(f"unknown proxy flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")
        parts = urllib.parse.urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise UsageError(f"proxy upstream must be http://host:port, not {upstream_url!r}")
        self.name, self.workdir, self.address = name, Path(workdir), listen_address
        self.upstream_url, self.flavour, self.port = upstream_url, flavour, port
        self.die_with_parent = die_with_parent
        self._child: Child | None = None
        self._state: dict[str, Any] | None = None

    @classmethod
    def attach(cls, name: str, workdir: str | Path) -> FaultProxy:
        """A handle on a proxy started by another process (reads `<workdir>/<name>.proxy.json`)."""
        path = Path(workdir) / f"{name}.proxy.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LiferaftError(f"no running fault proxy {name!r} in {workdir}: {e}") from None
        proxy = cls(name, workdir, state["listen_address"], state["upstream"], state["flavour"], port=state["port"])
        proxy._state = state
        return proxy

    @property
    def state_file(self) -> Path:
        return self.workdir / f"{self.name}.proxy.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{url_host(self.address)}:{self.port}"

    @property
    def pid(self) -> int | None:
        return int(self._state["pid"]) if self._state else None

    @property
    def running(self) -> bool:
        if self._child is not None:
            return self._child.running()
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self) -> Self:
        if self._child is not None and self._child.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "liferaft.lab.proxy", "--name", self.name,
                "--listen", f"{self.address}:{self.port}", "--upstream", self.upstream_url,
                "--flavour", self.flavour, "--state-file", str(self.state_file)]
        child = Child(f"proxy {self.name}", argv, self.log_path, die_with_parent=self.die_with_parent)
        child.start()
        self._child = child

        def ready() -> bool:
            state = json.loads(self.state_file.read_text())
            if state.get("pid") != child.pid:
                return False
            self._state = state
            return True

        try:
            wait_until(child, ready, 15.0, what="wrote no state file")
        except LiferaftError:
            child.stop()
            self._child = None
            raise
        self.port = int(self._state["port"]) if self._state else self.port
        return self

    def stop(self) -> None:
        """Stop the proxy process (ask, then terminate, then kill). Idempotent."""
        if self._child is not None:
            with contextlib.suppress(LiferaftError):
                self._control("POST", "/shutdown", timeout=1.0)
            self._child.stop()
            self._child = None
        elif self.running and self.pid:
            with contextlib.suppress(LiferaftError):
                self._control("POST", "/shutdown", timeout=1.0)
            deadline = time.monotonic() + 5
            while self.running and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        self._state = None

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float = 5.0) -> dict[str, Any]:
        if not self._state:
            raise LiferaftError(f"fault proxy {self.name!r} is not running")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self._state['control_port']}{path}", data=data,
                                     method=method, headers={"X-Proxy-Token": self._state["token"],
                                                             "Content-Type": "application/json"})
        try:
            with OPENER.open(req, timeout=timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as e:
            raise LiferaftError(f"fault proxy {self.name!r}: {e.read().decode('utf-8', 'replace')}") from None
        except OSError as e:
            raise LiferaftError(f"fault proxy {self.name!r} does not answer its control port: {e}") from None

    def set_mode(self, mode: str, *, count: int = 0, retry_after: int = 1, delay: float = 0.0) -> dict[str, Any]:
        """Switch mode; applies to the next request. `count` > 0 faults that many requests, then forwards;
        `retry_after` is the throttle's Retry-After; `delay` adds seconds before each request in any mode."""
        if mode not in MODES:
            raise UsageError(f"unknown proxy mode {mode!r}; expected one of {', '.join(MODES)}")
        return self._control("POST", "/mode", {"mode": mode, "count": count, "retry_after": retry_after,
                                               "delay": delay})

    def heal(self) -> None:
        self.set_mode("forward")

    @property
    def mode(self) -> str:
        return str(self._control("GET", "/state")["mode"])

    def stats(self) -> dict[str, Any]:
        """Requests received since start / reset: requests, mutating, forwarded, by_method, by_action, faulted."""
        result: dict[str, Any] = self._control("GET", "/state")["stats"]
        return result

    def reset_stats(self) -> None:
        self._control("POST", "/stats/reset")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "flavour": self.flavour,
                             "address": self.address, "port": self.port, "url": self.url,
                             "upstream": self.upstream_url, "pid": self.pid, "running": self.running,
                             "log_path": str(self.log_path), "state_file": str(self.state_file),
                             "workdir": str(self.workdir)}
        if d["running"]:
            with contextlib.suppress(LiferaftError):
                state = self._control("GET", "/state", timeout=1.0)
                d.update(mode=state["mode"], count=state["count"], stats=state["stats"])
        return d

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.name} {self.url} -> {self.upstream_url} pid={self.pid}>"


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the proxy process."""
    p = argparse.ArgumentParser(prog="python -m liferaft.lab.proxy", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--listen", required=True, help="address:port (port 0 picks a free one)")
    p.add_argument("--upstream", required=True, help="http://host:port")
    p.add_argument("--flavour", choices=FLAVOURS, default="aws")
    p.add_argument("--state-file", required=True, type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    up = urllib.parse.urlsplit(args.upstream)
    server = ProxyServer(args.name, _hostport(args.listen), (up.hostname or "", up.port or 80), args.flavour,
                         args.state_file)
    asyncio.run(server.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
