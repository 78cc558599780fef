"""The aws adapter's lean S3 path (liferaft/providers/_s3fast.py) on the lab's real servers: odd keys round-trip
with signatures a server checks, one request per operation, auth and fault mapping as for boto3, and integrity."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import AuthRejected, CheckFailed, NotFound, ProviderError, Throttled, Unreachable
from liferaft.lab.servers import MotoServer
from liferaft.providers._errors import RetryPolicy
from liferaft.providers.aws import AwsAdapter, AwsObjects
from tests.fixtures_servers import Endpoint as LabEndpoint

pytestmark = pytest.mark.lab

# SigV4 encodes each of these differently from a naive quote(): space, '+', '~', '/', unicode, reserved characters.
ODD_KEYS = ["plain", "with space", "a+b", "til~de", "dir/sub/x", "uni/ü漢字", "q?x&y=z#f", "pct%20", "star*",
            "(paren)!'", "semi;colon,comma", "dollar$at@"]


def _objects(url: str, key: str | None, secret: str | None, *, name: str = "lean",
             token: str | None = None) -> AwsObjects:
    return AwsAdapter(name, endpoint=url, access_key_id=key, secret_access_key=secret, session_token=token).objects


def _bucket(objects: AwsObjects) -> str:
    name = "lean-" + uuid.uuid4().hex[:10]
    objects.create_bucket(name)
    assert objects._lean(name) is not None, "the lean path should serve a static-key account"
    return name


@pytest.fixture(params=["aws", "s3rver"])
def lab(request: pytest.FixtureRequest) -> LabEndpoint:
    return request.getfixturevalue(f"{request.param}_endpoint")  # type: ignore[no-any-return]


def test_odd_keys_round_trip_one_request_each(lab: LabEndpoint) -> None:
    """Each odd key: one PUT, one GET, one HEAD at the server; bytes, size and sha256 come back; one listing
    request finds them all (keys decoded right)."""
    objects = _objects(lab.url, lab.access_key, lab.secret_key)
    bucket = _bucket(objects)
    bodies = {k: os.urandom(100 + i) for i, k in enumerate(ODD_KEYS)}
    lab.proxy.reset_stats()
    for key, body in bodies.items():
        stored = objects.put_object(bucket, key, [body])
        assert stored.sha256 == hashlib.sha256(body).hexdigest() and stored.etag
        assert b"".join(objects.get_object(bucket, key)) == body
        head = objects.head_object(bucket, key)
        assert (head.size, head.sha256, head.etag) == (len(body), stored.sha256, stored.etag), key
        assert head.modified and abs(head.modified - time.time()) < 300
    listed = {o.key: o.size for o in objects.list_objects(bucket)}
    assert listed == {k: len(b) for k, b in bodies.items()}
    n = len(bodies)
    assert lab.proxy.stats()["by_method"] == {"PUT": n, "GET": n + 1, "HEAD": n}


def test_chunked_reads_and_whole_body_reads(lab: LabEndpoint) -> None:
    """A body larger than the chunk size comes in chunks of at most that size; asked whole, in one chunk."""
    objects = _objects(lab.url, lab.access_key, lab.secret_key)
    bucket = _bucket(objects)
    body = os.urandom(3 * 1024 * 1024 + 5)
    objects.put_object(bucket, "big", [body])
    chunks = list(objects.get_object(bucket, "big", chunk_size=1024 * 1024))
    assert [len(c) for c in chunks] == [1024 * 1024] * 3 + [5] and b"".join(chunks) == body
    assert list(objects.get_object(bucket, "big", chunk_size=len(body))) == [body]


def test_declared_sha256_that_does_not_match_is_refused(lab: LabEndpoint) -> None:
    """put_object with a declared sha256 the bytes do not have: CheckFailed, and no object is left behind."""
    objects = _objects(lab.url, lab.access_key, lab.secret_key)
    bucket = _bucket(objects)
    body = os.urandom(4096)
    with pytest.raises(CheckFailed):
        objects.put_object(bucket, "liar", [body], sha256=hashlib.sha256(b"other bytes").hexdigest())
    with pytest.raises(NotFound):
        objects.head_object(bucket, "liar")


def test_missing_object_is_not_found(lab: LabEndpoint) -> None:
    objects = _objects(lab.url, lab.access_key, lab.secret_key)
    bucket = _bucket(objects)
    with pytest.raises(NotFound) as got:
        objects.get_object(bucket, "nope")
    assert got.value.code == "NoSuchKey"
    with pytest.raises(NotFound) as head:
        objects.head_object(bucket, "nope")
    assert head.value.status == 404


def test_s3rver_refuses_an_unknown_access_key(s3rver_endpoint: LabEndpoint) -> None:
    """s3rver checks the key id (never the secret): an unknown one is AuthRejected on every lean operation."""
    good = _objects(s3rver_endpoint.url, s3rver_endpoint.access_key, s3rver_endpoint.secret_key)
    bucket = _bucket(good)
    good.put_object(bucket, "k", [b"x"])
    bad = _objects(s3rver_endpoint.url, "NOT-A-KEY", "whatever", name="bad")
    for call in _calls(bad, bucket):
        with pytest.raises(AuthRejected) as info:
            call()
        assert info.value.provider == "bad" and "whatever" not in str(info.value)


def _calls(objects: AwsObjects, bucket: str) -> list[Callable[[], object]]:
    return [lambda: b"".join(objects.get_object(bucket, "k")), lambda: objects.put_object(bucket, "k2", [b"1"]),
            lambda: objects.head_object(bucket, "k"), lambda: list(objects.list_objects(bucket))]


# ------------------------------------------------------------------------------ moto that checks signatures
@dataclass(frozen=True)
class AuthMoto:
    url: str
    key: str
    secret: str
    role_creds: dict[str, str]


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto of its own with IAM enforcement on (a shared one would refuse every other test): an IAM user's key,
    an assumed role's temporary credentials, then every request must be signed right."""
    import boto3

    server = MotoServer(tmp_path_factory.mktemp("moto-auth"), account_id="210987654321", name="moto-auth")
    server.start()
    try:
        admin = {"endpoint_url": server.url, "region_name": "us-east-1", "aws_access_key_id": "testing",
                 "aws_secret_access_key": "testing"}
        iam = boto3.client("iam", **admin)
        allow_all = json.dumps({"Version": "2012-10-17",
                                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        iam.create_user(UserName="sync")
        iam.put_user_policy(UserName="sync", PolicyName="all", PolicyDocument=allow_all)
        key = iam.create_access_key(UserName="sync")["AccessKey"]
        iam.create_role(RoleName="sync", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))
        iam.put_role_policy(RoleName="sync", PolicyName="all", PolicyDocument=allow_all)
        sts = boto3.client("sts", **{**admin, "aws_access_key_id": key["AccessKeyId"],
                                     "aws_secret_access_key": key["SecretAccessKey"]})
        creds = sts.assume_role(RoleArn="arn:aws:iam::210987654321:role/sync", RoleSessionName="lean")["Credentials"]
        request = urllib.request.Request(server.url + "/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        yield AuthMoto(server.url, key["AccessKeyId"], key["SecretAccessKey"], creds)
    finally:
        server.stop()


def test_moto_checks_the_signatures_of_odd_keys(auth_moto: AuthMoto) -> None:
    """moto recomputes every signature: odd keys are encoded exactly as SigV4 requires (PUT, GET, HEAD, list)."""
    objects = _objects(auth_moto.url, auth_moto.key, auth_moto.secret)
    bucket = _bucket(objects)
    for key in ODD_KEYS:
        objects.put_object(bucket, key, [key.encode()])
        assert b"".join(objects.get_object(bucket, key)) == key.encode()
        assert objects.head_object(bucket, key).size == len(key.encode())
    assert {o.key for o in objects.list_objects(bucket, prefix="uni/")} == {"uni/ü漢字"}


@pytest.mark.parametrize("wrong", ["secret", "key id", "session token"])
def test_wrong_credentials_are_auth_rejected(auth_moto: AuthMoto, wrong: str) -> None:
    """A wrong secret (SignatureDoesNotMatch), an unknown key id (InvalidAccessKeyId), a bad session token
    (InvalidToken): AuthRejected on GET, PUT and listing, and the secret is in no message."""
    good = _objects(auth_moto.url, auth_moto.key, auth_moto.secret)
    bucket = _bucket(good)
    good.put_object(bucket, "k", [b"x"])
    role = auth_moto.role_creds
    bad = {"secret": _objects(auth_moto.url, auth_moto.key, "wrong-secret-value", name="bad"),
           "key id": _objects(auth_moto.url, "AKIANOTAKEY000000000", auth_moto.secret, name="bad"),
           "session token": _objects(auth_moto.url, role["AccessKeyId"], role["SecretAccessKey"], name="bad",
                                     token="not-the-token")}[wrong]
    calls = _calls(bad, bucket)
    for call in (calls[0], calls[1], calls[3]):  # HEAD has no body to say why: its status alone decides
        with pytest.raises(AuthRejected) as info:
            call()
        assert info.value.provider == "bad" and auth_moto.secret not in str(info.value)
        assert "wrong-secret-value" not in str(info.value)


def test_session_token_credentials_work(auth_moto: AuthMoto) -> None:
    """An assumed role's temporary credentials: the token is sent (x-amz-security-token) and accepted."""
    role = auth_moto.role_creds
    objects = _objects(auth_moto.url, role["AccessKeyId"], role["SecretAccessKey"], token=role["SessionToken"])
    bucket = _bucket(objects)
    objects.put_object(bucket, "with space", [b"temporary"])
    assert b"".join(objects.get_object(bucket, "with space")) == b"temporary"


# ------------------------------------------------------------------------------ the fault proxy
@pytest.fixture
def lean_aws(aws_endpoint: LabEndpoint) -> tuple[AwsObjects, str, Any]:
    objects = _objects(aws_endpoint.url, aws_endpoint.access_key, aws_endpoint.secret_key)
    bucket = _bucket(objects)
    objects.put_object(bucket, "k", [b"x"])
    return objects, bucket, aws_endpoint.proxy


def test_deny_is_auth_rejected(lean_aws: tuple[AwsObjects, str, Any]) -> None:
    """A suspended account (the proxy's 403 AccessDenied): AuthRejected on every lean operation."""
    objects, bucket, proxy = lean_aws
    proxy.set_mode("deny")
    for call in _calls(objects, bucket):
        with pytest.raises(AuthRejected):
            call()


def test_down_is_unreachable_fast(lean_aws: tuple[AwsObjects, str, Any]) -> None:
    """Connections dropped: Unreachable naming the endpoint, within a few seconds (one retry, no backoff)."""
    objects, bucket, proxy = lean_aws
    proxy.set_mode("down")
    for call in _calls(objects, bucket):
        start = time.monotonic()
        with pytest.raises(Unreachable) as info:
            call()
        assert time.monotonic() - start < 4.0 and proxy.url.split("//")[1] in str(info.value)


def test_server_error_is_a_provider_error_after_bounded_retries(lean_aws: tuple[AwsObjects, str, Any],
                                                                fast_retries: RetryPolicy) -> None:
    """500s: retried up to the policy's attempts, then a plain ProviderError carrying the status."""
    objects, bucket, proxy = lean_aws
    proxy.set_mode("error")
    for call in _calls(objects, bucket):
        proxy.reset_stats()
        with pytest.raises(ProviderError) as info:
            call()
        assert type(info.value) is ProviderError and info.value.status == 500
        assert proxy.stats()["faulted"].get("error") == fast_retries.attempts


def test_throttling_honours_retry_after_then_is_throttled(lean_aws: tuple[AwsObjects, str, Any],
                                                          fast_retries: RetryPolicy) -> None:
    """503 SlowDown with Retry-After: 1 -> slept ~1 s between the attempts, then Throttled; a single throttled
    answer is absorbed."""
    objects, bucket, proxy = lean_aws
    proxy.set_mode("throttle", retry_after=1)
    start = time.monotonic()
    with pytest.raises(Throttled) as info:
        b"".join(objects.get_object(bucket, "k"))
    assert time.monotonic() - start >= (fast_retries.attempts - 1) * 1.0
    assert "after 3 attempts" in info.value.message
    proxy.set_mode("throttle", count=1, retry_after=0)
    assert objects.put_object(bucket, "k3", [b"ok"]).etag


def test_sync_between_two_lean_accounts_needs_no_boto3_client(aws_endpoint: LabEndpoint,
                                                             s3rver_endpoint: LabEndpoint, tmp_path: Path) -> None:
    """A sync of small objects between two static-key accounts lists, reads and writes on the lean path only."""
    from liferaft.movers.objects import Endpoint, sync, verify_sync

    src = _objects(aws_endpoint.url, aws_endpoint.access_key, aws_endpoint.secret_key, name="src")
    dst = _objects(s3rver_endpoint.url, s3rver_endpoint.access_key, s3rver_endpoint.secret_key, name="dst")
    bucket = _bucket(src)
    dst.create_bucket(bucket)
    for key in ODD_KEYS:
        src.put_object(bucket, key, [key.encode() * 3])
    src._c._clients.clear()
    dst._c._clients.clear()
    result = sync(Endpoint("src", src, bucket), Endpoint("dst", dst, bucket), tmp_path)
    assert result.copied == len(ODD_KEYS) and not result.failed
    assert verify_sync(Endpoint("src", src, bucket), Endpoint("dst", dst, bucket)).ok
    assert src._c._clients == {} and dst._c._clients == {}
