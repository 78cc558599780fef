"""The example's worker (examples/microblog/app/worker.py) against a real redis-server and an HTTP server that
answers the microblog's two read endpoints it uses (`GET /posts`, `GET /images/<name>`): a card and a media copy
per post with an image, its state in Redis, nothing for text posts, and a post that commits after a newer one
(ids out of order) still processed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

WORKER = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "app" / "worker.py"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (7).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"rest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():
        pytest.fail("redis-server is not installed (scripts/setup.sh installs it)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
                             "--requirepass", "pw-of-the-test"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class Posts:
    def __init__(self) -> None:
        self.posts: dict[int, dict[str, Any]] = {}
        self.images: dict[str, bytes] = {}

    def add(self, pid: int, image: bytes | None = None) -> None:
        key = f"images/{pid:032x}.png" if image is not None else None
        if key and image is not None:
            self.images[key] = image
        self.posts[pid] = {"id": pid, "author": "ann", "body": f"post {pid}", "image_key": key}


@pytest.fixture()
def web() -> Iterator[tuple[str, Posts]]:
    posts = Posts()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/posts":
                qs = parse_qs(url.query)
                before = int(qs["before"][0]) if "before" in qs else None
                rows = sorted((p for i, p in posts.posts.items() if before is None or i < before),
                              key=lambda p: -p["id"])[:int(qs["limit"][0])]
                body, ctype = json.dumps({"posts": rows}).encode(), "application/json"
            elif url.path[1:] in posts.images:
                body, ctype = posts.images[url.path[1:]], "image/png"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", posts
    finally:
        srv.shutdown()


def _worker_module() -> Any:
    spec = importlib.util.spec_from_file_location("liferaft_example_worker_under_test", WORKER)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    was, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the deploy artifact
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = was
    return mod


def test_the_worker_keeps_a_card_and_a_media_copy_per_image_post(redis_server: int, web: tuple[str, Posts],
                                                                  tmp_path: Path) -> None:
    import redis

    url, posts = web
    media = tmp_path / "media"
    mod = _worker_module()
    w = mod.Worker({"MICROBLOG_WEB_URL": url, "MICROBLOG_WORKER_MEDIA": str(media),
                    "MICROBLOG_WORKER_REDIS": f"127.0.0.1:{redis_server}",
                    "MICROBLOG_WORKER_REDIS_PASSWORD": "pw-of-the-test"})
    r = redis.Redis(port=redis_server, password="pw-of-the-test")
    for pid in range(1, 6):
        posts.add(pid, PNG + bytes([pid]) if pid % 2 else None)  # 1, 3, 5 have an image
    posts.add(7, PNG + b"\x07")  # 6 commits later than 7 (a concurrent request): ids out of order
    w.tick()
    assert sorted(r.keys("mb:card:*")) == [b"mb:card:1", b"mb:card:3", b"mb:card:5", b"mb:card:7"]
    posts.add(6, PNG + b"\x06")
    posts.add(8)  # a text post: nothing changes
    w.tick()
    w.tick()  # a second look processes nothing again
    card = json.loads(r.get("mb:card:6") or b"")
    data = PNG + b"\x06"
    assert card["sha256"] == hashlib.sha256(data).hexdigest() and (card["width"], card["height"]) == (7, 5)
    assert (media / card["file"]).read_bytes() == data
    assert json.loads((media / "cards" / "6.json").read_text()) == card
    assert r.hgetall("mb:stats") == {b"processed": b"5", b"bytes": str(5 * len(PNG) + 5).encode()}
    assert r.get("mb:cursor") == b"7" and r.lrange("mb:recent", 0, -1) == [b"6", b"7", b"5", b"3", b"1"]
    assert r.dbsize() == 5 + 3
    assert sorted(p.name for p in (media / "cards").iterdir()) == ["1.json", "3.json", "5.json", "6.json", "7.json"]

    # A Redis that refuses writes (a fenced source: NOREPLICAS) makes it wait: no card recorded, nothing counted.
    r.config_set("min-replicas-to-write", 10)
    posts.add(9, PNG + b"\x09")
    with pytest.raises(mod.RedisError, match="NOREPLICAS"):
        w.tick()
    assert r.get("mb:card:9") is None and r.hget("mb:stats", "processed") == b"5"
