#!/usr/bin/python3
"""microblog: the example application liferaft moves between providers.

Posts (author, body, optional image) live in PostgreSQL; images live in an S3 bucket. Runs on a plain Debian
/usr/bin/python3 with only the standard library plus python3-psycopg2 and python3-boto3.

    /usr/bin/python3 microblog.py --config /etc/liferaft/web/config.json      (or MICROBLOG_CONFIG=PATH)

The config file (JSON, mode 0600) holds the database DSN parts and the bucket's endpoint, region, keys and name:
secrets never travel on the command line. See ../config.example.json (kept outside app/, so the deploy artifact
is this one file).

HTTP API:
    POST /posts                 JSON {"author", "body", "image"?: base64, "image_type"?: mime}      -> 201 {"id", ...}
    POST /posts?author=&body=   raw image body (Content-Type image/*)                               -> 201 {"id", ...}
    GET  /posts/<id>            one post
    GET  /posts?limit=N&before=ID
    GET  /images/<key>          the image bytes
    GET  /healthz               200 only if a database query AND a bucket HEAD succeed; else 503 saying which failed

HTTPS when the config names a certificate and key: {"tls": {"certificate": PEM path, "key": PEM path}} (re-read
when either file changes: a renewed certificate needs no restart).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import signal
import ssl
import stat
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import psycopg2
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

MAX_BODY = 16 * 1024 * 1024  # request size limit (an image up to ~12 MiB base64-encoded)
MAX_LIMIT = 500
IMAGE_KEY = re.compile(r"^images/[0-9a-f]{32}\.(png|jpg|gif|webp|bin)$")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS posts (
    id           bigserial PRIMARY KEY,
    author_id    bigint NOT NULL REFERENCES users(id),
    body         text NOT NULL,
    body_sha256  text NOT NULL,
    image_key    text,
    image_size   bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS posts_author_idx ON posts (author_id);
"""


class ConfigError(Exception):
    pass


def load_config(path: str) -> dict[str, Any]:
    """Read the JSON config; refuse a file others can read (it holds the database password and bucket keys)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"config {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for section, keys in {"db": ("host", "port", "name", "user", "password"),
                          "s3": ("region", "access_key_id", "secret_access_key", "bucket")}.items():
        missing = [k for k in keys if k not in cfg.get(section, {})]
        if missing:
            raise ConfigError(f"config {path}: {section} lacks {', '.join(missing)}")
    return cfg


class _Pool:
    """Idle connections kept for reuse (psycopg2's pools close every connection above minconn, and a new
    connection costs a SCRAM handshake). Connects lazily, so the app starts even while the database is down."""

    def __init__(self, dsn: dict[str, Any], size: int) -> None:
        self._dsn = dsn
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else psycopg2.connect(**self._dsn)

    def put(self, conn: Any, *, broken: bool = False) -> None:
        if not broken and not conn.closed:
            with self._lock:
                if len(self._idle) < self._size:
                    self._idle.append(conn)
                    return
        try:
            conn.close()
        except psycopg2.Error:
            pass

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Store:
    """Database pool + bucket client. Every method is safe to call from many request threads."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        db = cfg["db"]
        self._dsn = {"host": db["host"], "port": int(db["port"]), "dbname": db["name"], "user": db["user"],
                     "password": db["password"], "connect_timeout": int(db.get("connect_timeout", 3)),
                     "application_name": "microblog"}
        self._pool = _Pool(self._dsn, int(cfg.get("db_pool_size", 8)))
        s3 = cfg["s3"]
        self.bucket = s3["bucket"]
        self._s3 = boto3.session.Session().client(
            "s3", endpoint_url=s3.get("endpoint_url") or None, region_name=s3["region"],
            aws_access_key_id=s3["access_key_id"], aws_secret_access_key=s3["secret_access_key"],
            config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=3, read_timeout=10,
                              retries={"max_attempts": 2, "mode": "standard"}))
        self._create_schema = bool(cfg.get("create_schema", True))
        self._schema_done = False
        self._schema_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ database
    def _run(self, fn: Any) -> Any:
        """Run fn(cursor) in one transaction; a broken connection is dropped so the next call reconnects."""
        conn = self._pool.get()
        broken = False
        try:
            with conn, conn.cursor() as cur:
                return fn(cur)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            self._pool.put(conn, broken=broken)

    def ensure_schema(self) -> None:
        with self._schema_lock:
            if self._schema_done or not self._create_schema:
                return

            def create(cur: Any) -> None:
                cur.execute("SELECT pg_advisory_xact_lock(727100)")  # two app instances starting at once
                cur.execute(SCHEMA)

            self._run(create)
            self._schema_done = True

    def create_post(self, author: str, body: str, image: bytes | None, image_type: str | None) -> dict[str, Any]:
        image_key = None
        if image is not None:
            ext = EXTENSIONS.get((image_type or "").lower(), "bin")
            image_key = f"images/{uuid.uuid4().hex}.{ext}"
            # The image first: a row never points at an object that was not stored.
            self._s3.put_object(Bucket=self.bucket, Key=image_key, Body=image,
                                ContentType=image_type or "application/octet-stream",
                                Metadata={"sha256": hashlib.sha256(image).hexdigest()})
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()

        def insert(cur: Any) -> dict[str, Any]:
            cur.execute(
                "WITH u AS (INSERT INTO users (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id) "
                "SELECT id FROM u UNION ALL SELECT id FROM users WHERE name = %s LIMIT 1", (author, author))
            author_id = cur.fetchone()[0]
            cur.execute("INSERT INTO posts (author_id, body, body_sha256, image_key, image_size) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id, created_at",
                        (author_id, body, digest, image_key, len(image) if image is not None else None))
            pid, created = cur.fetchone()
            return {"id": pid, "author": author, "body_sha256": digest, "image_key": image_key,
                    "created_at": created.isoformat()}

        return self._run(insert)

    def get_post(self, post_id: int) -> dict[str, Any] | None:
        def q(cur: Any) -> Any:
            cur.execute("SELECT p.id, u.name, p.body, p.body_sha256, p.image_key, p.image_size, p.created_at "
                        "FROM posts p JOIN users u ON u.id = p.author_id WHERE p.id = %s", (post_id,))
            return cur.fetchone()

        row = self._run(q)
        return _post(row) if row else None

    def list_posts(self, limit: int, before: int | None) -> list[dict[str, Any]]:
        def q(cur: Any) -> Any:
            cur.execute("SELECT p.id, u.name, p.body, p.body_sha256, p.image_key, p.image_size, p.created_at "
                        "FROM posts p JOIN users u ON u.id = p.author_id WHERE (%s::bigint IS NULL OR p.id < %s) "
                        "ORDER BY p.id DESC LIMIT %s", (before, before, limit))
            return cur.fetchall()

        return [_post(r) for r in self._run(q)]

    # ------------------------------------------------------------------------------------------------ bucket
    def get_image(self, key: str) -> tuple[str, int, Any]:
        obj = self._s3.get_object(Bucket=self.bucket, Key=key)
        return obj.get("ContentType", "application/octet-stream"), obj["ContentLength"], obj["Body"]

    def health(self) -> dict[str, str]:
        result = {"database": "ok", "bucket": "ok"}
        for attempt in (1, 2):  # a pooled connection the server closed meanwhile (a restart) fails once, then is new
            try:
                self.ensure_schema()
                self._run(lambda cur: (cur.execute("SELECT count(*) FROM (SELECT 1 FROM posts LIMIT 1) s"),
                                       cur.fetchone()))
                break
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
                if attempt == 1:
                    continue
                result["database"] = f"error: {type(e).__name__}: {_first_line(e)}"
            except psycopg2.Error as e:
                result["database"] = f"error: {type(e).__name__}: {_first_line(e)}"
                break
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            err = e.response.get("Error", {})
            result["bucket"] = f"error: {err.get('Code', '?')} {err.get('Message', '')}".rstrip()
        except BotoCoreError as e:
            result["bucket"] = f"error: {type(e).__name__}"
        return result

    def close(self) -> None:
        self._pool.close()


def _post(row: Any) -> dict[str, Any]:
    pid, author, body, digest, image_key, image_size, created = row
    return {"id": pid, "author": author, "body": body, "body_sha256": digest, "image_key": image_key,
            "image_size": image_size, "created_at": created.isoformat()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


class Handler(BaseHTTPRequestHandler):
    server_version = "microblog/1"
    protocol_version = "HTTP/1.1"
    store: Store  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("MICROBLOG_ACCESS_LOG"):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/healthz":
                h = self.store.health()
                ok = all(v == "ok" for v in h.values())
                self._send(200 if ok else 503, {"ok": ok, **h})
            elif url.path == "/posts":
                qs = parse_qs(url.query)
                limit = min(max(int(qs.get("limit", ["20"])[0]), 1), MAX_LIMIT)
                before = int(qs["before"][0]) if "before" in qs else None
                self._send(200, {"posts": self.store.list_posts(limit, before)})
            elif m := re.fullmatch(r"/posts/(\d+)", url.path):
                post = self.store.get_post(int(m.group(1)))
                self._send(200, post) if post else self._fail(404, "no such post")
            elif url.path.startswith("/images/"):
                self._image(url.path[1:])
            else:
                self._fail(404, "not found")
        except ValueError:
            self._fail(400, "bad query parameter")
        except psycopg2.Error as e:
            self._fail(503, f"database unavailable: {type(e).__name__}")
        except (ClientError, BotoCoreError) as e:
            self._fail(503, f"bucket unavailable: {type(e).__name__}")

    def _image(self, key: str) -> None:
        if not IMAGE_KEY.fullmatch(key):
            return self._fail(404, "not found")
        try:
            ctype, length, body = self.store.get_image(key)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            return self._fail(404 if code in ("NoSuchKey", "404") else 503, f"image unavailable: {code}")
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for chunk in body.iter_chunks(256 * 1024):
            self.wfile.write(chunk)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/posts":
            return self._fail(404, "not found")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._fail(413, "request too large")
        raw = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                doc = json.loads(raw)
                author, body = str(doc["author"]), str(doc["body"])
                image = base64.b64decode(doc["image"], validate=True) if doc.get("image") else None
                image_type = doc.get("image_type") or ("image/png" if image else None)
            else:
                qs = parse_qs(url.query)
                author, body = qs["author"][0], qs.get("body", [""])[0]
                image, image_type = (raw, ctype) if raw else (None, None)
        except (KeyError, ValueError, TypeError, binascii.Error):
            return self._fail(400, "need JSON {author, body, image?} or ?author=&body= with a raw image body")
        if not author or len(author) > 100:
            return self._fail(400, "author must be 1-100 characters")
        try:
            post = self.store.create_post(author, body, image, image_type)
        except psycopg2.Error as e:
            return self._fail(503, f"database unavailable: {type(e).__name__}: {_first_line(e)}")
        except (ClientError, BotoCoreError) as e:
            return self._fail(503, f"bucket unavailable: {type(e).__name__}")
        self._send(201, post, {"Location": f"/posts/{post['id']}"})


class Server(ThreadingHTTPServer):
    """http.server's threading server without its reverse DNS lookup: HTTPServer.server_bind calls
    socket.getfqdn(host) only to set `server_name`, which this app never uses, and on a host whose resolver does not
    answer that blocks ~10 s (two 5 s resolver timeouts) before the port is even listened on."""

    def server_bind(self) -> None:
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class TlsServer(Server):
    """HTTPS: each accepted connection is wrapped with the certificate and key files named in the config
    (`tls.certificate`, `tls.key`), read again whenever either file changes, so a renewed certificate is served
    without a restart. The handshake happens in the request's own thread."""

    def __init__(self, address: tuple[str, int], handler: Any, certificate: str, key: str) -> None:
        self._files = (certificate, key)
        self._ctx: ssl.SSLContext | None = None
        self._stamp: tuple[int, ...] = ()
        self._ctx_lock = threading.Lock()
        super().__init__(address, handler)
        self.context()  # fail at start, not at the first request, when the files are missing or do not match

    def context(self) -> ssl.SSLContext:
        stamp = tuple(os.stat(p).st_mtime_ns for p in self._files)
        with self._ctx_lock:
            if self._ctx is None or stamp != self._stamp:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(*self._files)
                self._ctx, self._stamp = ctx, stamp
            return self._ctx

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        try:
            return self.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
        except (OSError, ssl.SSLError):
            sock.close()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return  # a client that does not trust the certificate, or hung up mid-handshake
        super().handle_error(request, client_address)


def make_server(cfg: dict[str, Any]) -> tuple[ThreadingHTTPServer, Store]:
    store = Store(cfg)
    handler = type("BoundHandler", (Handler,), {"store": store})
    address = (cfg.get("listen_host", "0.0.0.0"), int(cfg.get("listen_port", 8080)))
    tls = cfg.get("tls") or {}
    server = (TlsServer(address, handler, tls["certificate"], tls["key"]) if tls.get("certificate")
              else Server(address, handler))
    server.daemon_threads = True
    return server, store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="microblog example app")
    ap.add_argument("--config", default=os.environ.get("MICROBLOG_CONFIG"),
                    help="path of the JSON config file (mode 0600); default $MICROBLOG_CONFIG")
    args = ap.parse_args(argv)
    if not args.config:
        ap.error("--config or MICROBLOG_CONFIG is required")
    try:
        cfg = load_config(args.config)
    except (ConfigError, ValueError) as e:
        print(f"microblog: {e}", file=sys.stderr)
        return 2
    # The stack's settings and app secrets for this service (`services.<name>.env` / `.secrets`), as the
    # environment a framework would read them from; none of them is printed.
    os.environ.update({str(k): str(v) for k, v in (cfg.get("env") or {}).items()})
    try:
        server, store = make_server(cfg)
    except (OSError, ssl.SSLError) as e:
        print(f"microblog: cannot serve HTTPS with the configured certificate and key: {e}", file=sys.stderr)
        return 2
    try:
        store.ensure_schema()
    except psycopg2.Error as e:  # the database may come up later: /healthz reports it and retries
        print(f"microblog: schema not created yet: {type(e).__name__}: {_first_line(e)}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    host, port = server.server_address[:2]
    scheme = "https" if isinstance(server, TlsServer) else "http"
    print(f"microblog: listening on {scheme}://{host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
