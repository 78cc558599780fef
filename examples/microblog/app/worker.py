#!/usr/bin/python3
"""microblog worker: the example's second service. It keeps, for every post with an image, a local media copy of
the image and a JSON card in a folder, and its own state in Redis. Standard library only (Debian's /usr/bin/python3;
it speaks Redis's protocol itself).

    /usr/bin/python3 worker.py --config /etc/liferaft/worker/config.json     (or MICROBLOG_WORKER_CONFIG=PATH)

The config file (JSON, mode 0600, written by liferaft/playbooks/microblog-worker.yml) holds `env`: the service's
settings and secrets from the stack file:

    MICROBLOG_WEB_URL               the web app (default http://127.0.0.1:8080): new posts are read from its API
    MICROBLOG_WORKER_MEDIA          the folder of media copies and cards (the stack's `data.directories.media`)
    MICROBLOG_WORKER_REDIS          host:port of its Redis (the stack's `data.redis.worker`; default 127.0.0.1:6379)
    MICROBLOG_WORKER_REDIS_PASSWORD its password (a secret)
    MICROBLOG_WORKER_INTERVAL_S     how often it looks for new posts (default 1)

Every interval it lists the posts newer than the last it looked at (`GET /posts`), and for each one with an image:
fetches the image (`GET /images/<key>`), writes `images/<2 hex>/<name>` and `cards/<post id>.json` under the folder
(each written to a temporary name, then renamed), then records the post in Redis:

    mb:card:<post id>  string  the card (JSON: post, author, image_key, bytes, sha256, type, width, height, file)
    mb:cursor          string  the highest post id with an image it processed (it starts again from there, less
                               LOOKBACK ids: posts commit out of id order)
    mb:recent          list    the last 50 processed post ids, newest first
    mb:stats           hash    processed, bytes

It writes only while its Redis is a primary that takes writes: on a replica (a failover's target before the
promotion) or a fenced source (NOREPLICAS) it waits. Posts without an image change nothing (so a write load of text
posts leaves its data as it is). SIGTERM: it stops after the post in hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

RECENT = 50
PAGE = 500
# Posts commit out of id order (ids come from a sequence, concurrent requests commit in any order): every look goes
# this many ids below the highest seen, and a post whose card exists is not processed again.
LOOKBACK = 200
TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


class RedisError(Exception):
    pass


class Redis:
    """A minimal RESP2 client: one connection, reconnected on demand."""

    def __init__(self, host: str, port: int, password: str | None, db: int = 0, timeout: float = 10.0) -> None:
        self.host, self.port, self.password, self.db, self.timeout = host, port, password, db, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> None:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.buf = b""
        if self.password:
            self._call("AUTH", self.password)
        if self.db:
            self._call("SELECT", str(self.db))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self.sock is not None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            assert self.sock is not None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self) -> Any:
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"unexpected reply from redis: {line[:40]!r}")

    def _send(self, *args: str | bytes) -> None:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        assert self.sock is not None
        self.sock.sendall(b"".join(out))

    def _call(self, *args: str | bytes) -> Any:
        self._send(*args)
        return self._reply()

    def call(self, *args: str | bytes) -> Any:
        if self.sock is None:
            self._connect()
        try:
            return self._call(*args)
        except (OSError, ConnectionError):
            self.close()
            raise

    def pipeline(self, commands: list[tuple[str | bytes, ...]]) -> list[Any]:
        """The commands sent at once, inside MULTI/EXEC: all applied or none."""
        if self.sock is None:
            self._connect()
        try:
            for c in [("MULTI",), *commands, ("EXEC",)]:
                self._send(*c)
            replies, error = [], None
            for _ in range(len(commands) + 2):
                try:
                    replies.append(self._reply())
                except RedisError as e:
                    error = error or e
            if error is not None:
                raise error
            return list(replies[-1] or [])
        except (OSError, ConnectionError):
            self.close()
            raise


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height from a PNG's IHDR or a GIF's header (None for other types)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:4] == b"GIF8" and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    return None, None


def write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        self.web = env.get("MICROBLOG_WEB_URL", "http://127.0.0.1:8080").rstrip("/")
        self.media = env.get("MICROBLOG_WORKER_MEDIA", "/var/lib/liferaft/worker/media")
        host, _, port = env.get("MICROBLOG_WORKER_REDIS", "127.0.0.1:6379").rpartition(":")
        self.redis = Redis(host or "127.0.0.1", int(port or 6379), env.get("MICROBLOG_WORKER_REDIS_PASSWORD") or None,
                           int(env.get("MICROBLOG_WORKER_REDIS_DB", "0")))
        self.interval = float(env.get("MICROBLOG_WORKER_INTERVAL_S", "1"))
        self.seen: int | None = None  # the highest post id looked at (in memory; Redis keeps the last processed)
        self.done: set[int] = set()  # image posts known to have their card (in memory)
        self.cursor = 0
        self.stop = threading.Event()
        self.state = ""
        self.tls = ssl._create_unverified_context()  # the web app on this host, by address (no name to check)

    def say(self, state: str) -> None:
        """Log a state once (not every interval)."""
        if state != self.state:
            self.state = state
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {state}", flush=True)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.web + path, timeout=30, context=self.tls) as r:
            return bytes(r.read())

    def writable(self) -> bool:
        role = self.redis.call("ROLE")
        return bool(role) and role[0] == b"master"

    def new_posts(self) -> list[dict[str, Any]]:
        """Posts newer than `seen` - LOOKBACK, oldest first."""
        assert self.seen is not None
        floor = self.seen - LOOKBACK
        out: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            page = json.loads(self.get(f"/posts?limit={PAGE}" + (f"&before={before}" if before else "")))
            posts = page["posts"] if isinstance(page, dict) else page
            fresh = [p for p in posts if int(p["id"]) > floor]
            out += fresh
            if len(fresh) < len(posts) or len(posts) < PAGE:
                break
            before = min(int(p["id"]) for p in posts)
        return sorted(out, key=lambda p: int(p["id"]))

    def process(self, post: dict[str, Any]) -> None:
        key = str(post["image_key"])
        data = self.get(f"/{key}")  # the key is images/<name>: GET /images/<name>
        name = key.rsplit("/", 1)[-1]
        rel = f"images/{name[:2]}/{name}"
        width, height = image_size(data)
        card = {"post": int(post["id"]), "author": post.get("author"), "image_key": key, "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "type": next((t for magic, t in TYPES.items() if data.startswith(magic)), "application/octet-stream"),
                "width": width, "height": height, "file": rel}
        text = json.dumps(card, sort_keys=True)
        write_atomic(os.path.join(self.media, rel), data)
        write_atomic(os.path.join(self.media, "cards", f"{card['post']}.json"), text.encode() + b"\n")
        pid = str(card["post"])
        self.cursor = max(self.cursor, card["post"])
        self.redis.pipeline([("SET", f"mb:card:{pid}", text), ("SET", "mb:cursor", str(self.cursor)),
                             ("LPUSH", "mb:recent", pid),
                             ("LTRIM", "mb:recent", "0", str(RECENT - 1)),
                             ("HINCRBY", "mb:stats", "processed", "1"),
                             ("HINCRBY", "mb:stats", "bytes", str(len(data)))])

    def tick(self) -> None:
        if not self.writable():
            self.say("waiting: this Redis is a replica (not the active site)")
            return
        if self.seen is None:
            self.cursor = self.seen = int(self.redis.call("GET", "mb:cursor") or 0)
            self.done = set()
        for post in self.new_posts():
            if self.stop.is_set():
                return
            pid = int(post["id"])
            if post.get("image_key") and pid not in self.done:
                if not self.redis.call("EXISTS", f"mb:card:{pid}"):
                    self.process(post)
                self.done.add(pid)
            self.seen = max(self.seen, pid)
        self.done = {d for d in self.done if d > self.seen - LOOKBACK}
        self.say("running")

    def run(self) -> int:
        os.makedirs(self.media, mode=0o755, exist_ok=True)
        while not self.stop.is_set():
            try:
                self.tick()
            except RedisError as e:  # NOREPLICAS (a fenced source), READONLY (a replica), ...
                self.say(f"waiting: redis refuses writes: {str(e)[:200]}")
                self.seen = None  # start again from what Redis recorded
            except (OSError, ConnectionError, urllib.error.URLError, ValueError) as e:
                self.say(f"waiting: {type(e).__name__}: {str(e)[:200]}")
                self.redis.close()
                self.seen = None
            self.stop.wait(self.interval)
        self.redis.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="microblog worker: media copies and cards for posts with images")
    ap.add_argument("--config", default=os.environ.get("MICROBLOG_WORKER_CONFIG"),
                    help="JSON config file with `env` (default: $MICROBLOG_WORKER_CONFIG)")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.config:
        with open(args.config) as f:
            env.update({str(k): str(v) for k, v in (json.load(f).get("env") or {}).items()})
    worker = Worker(env)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    signal.signal(signal.SIGINT, lambda *_: worker.stop.set())
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
