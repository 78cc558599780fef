"""The lean S3 path's pure parts: SigV4 against AWS's published examples, SigV4 encoding of odd keys, error and
listing parsing, when the path applies, and that credentials never show."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from liferaft.errors import NotFound, Throttled, Unreachable
from liferaft.providers import _s3fast
from liferaft.providers._s3fast import SigV4Signer, canonical_query, parse_error, parse_listing, uri_encode
from liferaft.providers.aws import AwsAdapter

# The example credentials of the S3 documentation ("Signature Calculations for the Authorization Header").
AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_DATE = "20130524T000000Z"


def _signature(headers: dict[str, str]) -> str:
    return headers["authorization"].rsplit("Signature=", 1)[1]


def test_sigv4_matches_the_documented_get_object_example() -> None:
    """GET /test.txt with a Range header: AWS's published signature f0e8bd...bdb41."""
    signer = SigV4Signer(AKID, SECRET, "us-east-1")
    headers = signer.sign("GET", "/test.txt", "", {"host": "examplebucket.s3.amazonaws.com", "range": "bytes=0-9"},
                          _s3fast.EMPTY_SHA256, amz_date=EXAMPLE_DATE)
    assert _signature(headers) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ")


def test_sigv4_matches_the_documented_put_object_example() -> None:
    """PUT /test$file.text with a signed payload hash: the key's '$' is percent-encoded in the canonical URI."""
    body = b"Welcome to Amazon S3."
    signer = SigV4Signer(AKID, SECRET, "us-east-1")
    headers = signer.sign("PUT", "/" + uri_encode("test$file.text", keep_slash=True), "",
                          {"host": "examplebucket.s3.amazonaws.com", "date": "Fri, 24 May 2013 00:00:00 GMT",
                           "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                          hashlib.sha256(body).hexdigest(), amz_date=EXAMPLE_DATE)
    assert _signature(headers) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_sigv4_matches_the_documented_list_objects_example() -> None:
    """GET /?max-keys=2&prefix=J: the canonical query string is sorted and encoded."""
    signer = SigV4Signer(AKID, SECRET, "us-east-1")
    headers = signer.sign("GET", "/", canonical_query({"prefix": "J", "max-keys": "2"}),
                          {"host": "examplebucket.s3.amazonaws.com"}, _s3fast.EMPTY_SHA256, amz_date=EXAMPLE_DATE)
    assert _signature(headers) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"


def test_session_token_is_signed() -> None:
    """A session token travels as x-amz-security-token and is one of the signed headers."""
    headers = SigV4Signer(AKID, SECRET, "eu-west-1", session_token="tok/en+=").sign(
        "GET", "/k", "", {"host": "h"}, _s3fast.EMPTY_SHA256, amz_date=EXAMPLE_DATE)
    assert headers["x-amz-security-token"] == "tok/en+="
    assert "x-amz-security-token" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert "/eu-west-1/s3/aws4_request" in headers["authorization"]


@pytest.mark.parametrize(("key", "path"), [
    ("with space", "with%20space"), ("a+b", "a%2Bb"), ("til~de", "til~de"), ("dir/sub/x", "dir/sub/x"),
    ("uni/ü", "uni/%C3%BC"), ("q?x&y=z", "q%3Fx%26y%3Dz"), ("pct%20", "pct%2520"), ("star*", "star%2A"),
])
def test_keys_are_uri_encoded_once_as_sigv4_requires(key: str, path: str) -> None:
    """Unreserved characters and '/' stay; every other byte of the UTF-8 key is %XX (S3: encoded once)."""
    assert uri_encode(key, keep_slash=True) == path


def test_query_values_encode_slash_and_space() -> None:
    assert canonical_query({"prefix": "a b/c", "list-type": "2"}) == "list-type=2&prefix=a%20b%2Fc"


def test_error_bodies_give_code_and_message() -> None:
    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
    assert parse_error(body) == ("SlowDown", "Please reduce your request rate.")
    assert parse_error(b"") == (None, "")
    assert parse_error(b"<html>proxy error") == (None, "")


def test_listing_decodes_url_encoded_keys_only_when_told() -> None:
    """S3 encodes keys when asked (encoding-type=url, '+' for space); s3rver ignores the request: raw keys."""
    encoded = (b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url</EncodingType>'
               b"<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>"
               b"<Contents><Key>a+b%2Bc%01</Key><LastModified>2026-11-24T22:08:00.000Z</LastModified>"
               b"<ETag>&quot;abc&quot;</ETag><Size>5</Size></Contents></ListBucketResult>")
    page = parse_listing(encoded)
    assert [(i.key, i.size, i.etag) for i in page.items] == [("a b+c\x01", 5, "abc")]
    assert page.truncated and page.next_token == "t1" and page.items[0].modified == datetime(2026, 11, 24, 22, 8, tzinfo=UTC).timestamp()
    raw = (b'<ListBucketResult xmlns="http://doc.s3.amazonaws.com/2006-03-01/"><IsTruncated>false</IsTruncated>'
           b"<Contents><Key>a+b%20</Key><Size>1</Size></Contents></ListBucketResult>")
    page = parse_listing(raw)
    assert [i.key for i in page.items] == ["a+b%20"] and not page.truncated and page.next_token is None
    with pytest.raises(ValueError):
        parse_listing(b"<Error><Code>InternalError</Code></Error>")


def test_lean_path_applies_only_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static keys and no proxy: yes. Missing keys, a proxy, FIPS, China, or LIFERAFT_S3_LEAN=0: boto3."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "LIFERAFT_S3_LEAN"):
        monkeypatch.delenv(var, raising=False)
    assert _s3fast.usable("http://127.0.0.1:9000", "us-east-1", "k", "s")
    assert _s3fast.usable(None, "eu-west-1", "k", "s")
    assert not _s3fast.usable(None, "cn-north-1", "k", "s")
    assert not _s3fast.usable("http://127.0.0.1:9000", "us-east-1", None, None)
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    assert not _s3fast.usable(None, "us-east-1", "k", "s")
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert not _s3fast.usable(None, "us-east-1", "k", "s")
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("LIFERAFT_S3_LEAN", "0")
    assert not _s3fast.usable("http://127.0.0.1:9000", "us-east-1", "k", "s")


def test_addressing_path_style_with_an_endpoint_virtual_hosted_on_aws() -> None:
    """An endpoint: path-style, port in the host header. AWS: <bucket>.s3.<region>.amazonaws.com; a bucket name
    with dots (its TLS certificate would not match) is left to boto3."""
    lab = _s3fast.S3Fast("p", "us-east-1", "http://127.0.0.1:9000/base/", "k", "s")
    assert lab._where("bkt", "a b/c") == ("127.0.0.1:9000", "/base/bkt/a%20b/c")
    aws = _s3fast.S3Fast("p", "eu-west-1", None, "k", "s")
    assert aws._where("bkt", "a b/c") == ("bkt.s3.eu-west-1.amazonaws.com", "/a%20b/c")
    assert aws.serves("my-bucket") and not aws.serves("my.bucket") and not aws.serves("My_Bucket")


def test_credentials_never_show_in_reprs() -> None:
    secret, token = "s3cr3t-VALUE-never-shown", "t0ken-VALUE-never-shown"
    adapter = AwsAdapter("p", endpoint="http://127.0.0.1:1", access_key_id="AKIDSHOWN",
                         secret_access_key=secret, session_token=token)
    fast = adapter.clients.fast_s3()
    assert fast is not None
    for text in (repr(adapter), repr(adapter.clients), repr(fast), repr(fast._signer), str(vars(fast))):
        assert secret not in text and token not in text


# ------------------------------------------------------------------------------ the wire, faked (not the SDK)
class _Wire(BaseHTTPRequestHandler):
    """Records each request; answers what the test put in `script` for its path."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []
    script: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}
    connections: ClassVar[list[int]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status, headers, payload = self.script.get(self.path, (200, {"ETag": '"e"'}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if "Content-Length" in headers or "X-Hang-Up" in headers:  # cut short, or keep-alive then hang up
            self.close_connection = True

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def wire() -> Iterator[tuple[str, type[_Wire]]]:
    _Wire.seen, _Wire.script, _Wire.connections = [], {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Wire)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Wire
    finally:
        server.shutdown()
        server.server_close()


def test_put_declares_the_sha256_signed_and_as_a_checksum(wire: tuple[str, type[_Wire]]) -> None:
    """A single PUT carries the body's sha256 three ways: signed x-amz-content-sha256 (S3 refuses other bytes),
    x-amz-checksum-sha256 (base64), and liferaft's metadata; nothing hashes the body again (the caller did)."""
    url, handler = wire
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    body = b"some bytes" * 100
    digest = hashlib.sha256(body).hexdigest()
    answer = fast.put("put", "bkt", "a b", body, digest, {"liferaft-sha256": digest})
    method, path, headers, sent = handler.seen[-1]
    assert (method, path, sent, answer.etag) == ("PUT", "/bkt/a%20b", body, "e")
    assert headers["x-amz-content-sha256"] == digest and headers["x-amz-meta-liferaft-sha256"] == digest
    assert headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(digest)).decode()
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-content-sha256", "x-amz-checksum-sha256", "x-amz-meta-liferaft-sha256"} <= set(signed)


def test_a_redirected_bucket_is_handed_to_boto3(wire: tuple[str, type[_Wire]]) -> None:
    """301 PermanentRedirect (the bucket lives in another region): UseBoto3, and the bucket stays with boto3."""
    url, handler = wire
    handler.script["/far/k"] = (301, {}, b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>")
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    with pytest.raises(_s3fast.UseBoto3):
        fast.head("head", "far", "k")
    assert not fast.serves("far") and fast.serves("near")


def test_a_body_cut_short_is_unreachable(wire: tuple[str, type[_Wire]]) -> None:
    """Content-Length 1000, 10 bytes, hang up: Unreachable while reading, whatever the chunk size."""
    url, handler = wire
    handler.script["/bkt/k"] = (200, {"Content-Length": "1000"}, b"0123456789")
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    for chunk_size in (100, 10_000):
        _, body = fast.get("get", "bkt", "k", chunk_size)
        with pytest.raises(Unreachable):
            b"".join(body)


def test_errors_map_like_botocore_s(wire: tuple[str, type[_Wire]]) -> None:
    """SlowDown 503 with Retry-After -> Throttled carrying it; a body-less 404 -> NotFound '404: Not Found'."""
    url, handler = wire
    handler.script["/bkt/slow"] = (503, {"Retry-After": "2"}, b"<Error><Code>SlowDown</Code><Message>m</Message></Error>")
    handler.script["/bkt/gone"] = (404, {}, b"")
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    with pytest.raises(Throttled) as slow:
        fast.get("get", "bkt", "slow", 100)
    assert slow.value.code == "SlowDown" and getattr(slow.value, "retry_after", None) == 2.0
    with pytest.raises(NotFound) as gone:
        fast.head("head", "bkt", "gone")
    assert gone.value.code == "404" and "404: Not Found" in str(gone.value)


def test_kept_alive_connections_are_reused_and_a_closed_one_is_replaced(wire: tuple[str, type[_Wire]]) -> None:
    """Keep-alive: many requests, one connection. A server that hangs up after answering (as idle keep-alive
    timeouts do): every next request still succeeds, on a new connection, without counting as a failure."""
    url, handler = wire
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    for _ in range(10):
        fast.head("head", "bkt", "k")
    assert len(handler.connections) == 1
    handler.script["/bkt/bye"] = (200, {"X-Hang-Up": "1", "ETag": '"e"'}, b"")
    for _ in range(20):
        assert fast.head("head", "bkt", "bye").etag == "e"
    assert len(handler.connections) == 20  # the first "bye" came on the kept-alive one


def test_a_stale_connection_found_only_when_used_is_retried_on_a_new_one(wire: tuple[str, type[_Wire]],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """When the hang-up is only seen on use (the close raced with taking the connection), the request is sent
    again on a new connection at once: no error, no retry counted against the endpoint."""
    url, handler = wire
    monkeypatch.setattr(_s3fast, "_readable", lambda sock: False)
    handler.script["/bkt/bye"] = (200, {"X-Hang-Up": "1", "ETag": '"e"'}, b"")
    fast = _s3fast.S3Fast("p", "us-east-1", url, "AKID", "secret")
    for _ in range(5):
        assert fast.put("put", "bkt", "bye", b"body", hashlib.sha256(b"body").hexdigest(), {}).etag == "e"
    assert len(handler.connections) == 5 and len(handler.seen) == 5
