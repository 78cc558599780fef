"""Error translation and the bounded throttling retry (pure logic: real botocore/libcloud exception objects,
no servers)."""

from __future__ import annotations

import pytest

from liferaft.errors import AuthRejected, Conflict, NotFound, ProviderError, Throttled, Unreachable
from liferaft.providers import _errors
from liferaft.providers._errors import RetryPolicy, error_for, set_retry_policy


@pytest.mark.parametrize(("status", "code", "cls"), [
    (403, "AccessDenied", AuthRejected), (403, "InvalidAccessKeyId", AuthRejected), (401, "AuthFailure", AuthRejected),
    (403, "SignatureDoesNotMatch", AuthRejected), (403, "InvalidClientTokenId", AuthRejected),
    (404, "NoSuchBucket", NotFound), (404, "NoSuchKey", NotFound), (404, None, NotFound),
    (409, "BucketAlreadyExists", Conflict), (429, None, Throttled), (503, "SlowDown", Throttled),
    (400, "Throttling", Throttled), (500, "InternalError", ProviderError),
])
def test_error_for_maps_status_and_code(status: int, code: str | None, cls: type) -> None:
    """Statuses and vendor codes land in the right class, which names provider and call."""
    err = error_for("p", "get x", "detail", status=status, code=code)
    assert type(err) is cls
    assert "provider 'p': get x failed: detail" in str(err) and err.exit_code == 3


def test_botocore_errors_are_translated() -> None:
    """ClientError (with Retry-After) and connection errors become liferaft errors."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    from liferaft.providers.aws import classify

    ce = ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce"},
                      "ResponseMetadata": {"HTTPStatusCode": 503, "HTTPHeaders": {"retry-after": "3"}}}, "PutObject")
    err = classify(ce, "aws", "put")
    assert isinstance(err, Throttled) and err.retry_after  # type: ignore[attr-defined] == 3.0
    assert isinstance(classify(EndpointConnectionError(endpoint_url="http://x"), "aws", "put"), Unreachable)


def test_libcloud_errors_are_translated() -> None:
    """InvalidCredsError, 429 with Retry-After, missing objects and requests' connection errors."""
    import requests
    from libcloud.common.exceptions import RateLimitReachedError
    from libcloud.common.types import InvalidCredsError
    from libcloud.storage.types import ObjectDoesNotExistError

    from liferaft.providers._libcloud_common import classify

    assert isinstance(classify(InvalidCredsError("no"), "p", "op"), AuthRejected)
    rl = classify(RateLimitReachedError(headers={"retry-after": "2"}), "p", "op")
    assert isinstance(rl, Throttled) and rl.retry_after  # type: ignore[attr-defined] == 2.0
    assert isinstance(classify(ObjectDoesNotExistError(None, None, "k"), "p", "op"), NotFound)
    assert isinstance(classify(requests.exceptions.ConnectionError("refused"), "p", "op"), Unreachable)


def test_translating_never_lets_foreign_errors_out() -> None:
    """Unknown exceptions become ProviderError; socket errors Unreachable; liferaft errors pass unchanged."""
    with pytest.raises(ProviderError) as info, _errors.translating("p", "op", lambda e, p, o: None):
        raise KeyError("weird")
    assert type(info.value) is ProviderError and "KeyError" in info.value.detail
    with pytest.raises(Unreachable), _errors.translating("p", "op", lambda e, p, o: None):
        raise ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(NotFound), _errors.translating("p", "op", lambda e, p, o: None):
        raise NotFound("p", "op", "gone")


def test_call_retries_throttling_boundedly_honouring_retry_after() -> None:
    """Throttled is retried `attempts` times with Retry-After (capped) as the delay, then Throttled."""
    sleeps: list[float] = []
    calls = 0

    def throttled() -> None:
        nonlocal calls
        calls += 1
        raise error_for("p", "op", "slow", status=503, code="SlowDown", retry_after=1.5)

    old = set_retry_policy(RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0))
    try:
        with pytest.raises(Throttled) as info:
            _errors.call("p", "op", lambda e, p, o: None, throttled, sleep=sleeps.append)
    finally:
        set_retry_policy(old)
    assert calls == 3 and sleeps == [1.0, 1.0]  # Retry-After 1.5 capped at max_delay
    assert "after 3 attempts" in info.value.message


def test_call_recovers_and_does_not_retry_auth() -> None:
    """A throttle burst is absorbed; AuthRejected is raised at once (retrying cannot help)."""
    results = iter([error_for("p", "op", "x", status=429), "ok"])

    def flaky() -> str:
        r = next(results)
        if isinstance(r, Exception):
            raise r
        return r

    assert _errors.call("p", "op", lambda e, p, o: None, flaky, sleep=lambda s: None) == "ok"
    calls = 0

    def denied() -> None:
        nonlocal calls
        calls += 1
        raise error_for("p", "op", "no", status=403)

    with pytest.raises(AuthRejected):
        _errors.call("p", "op", lambda e, p, o: None, denied, sleep=lambda s: None)
    assert calls == 1


def test_backoff_grows_and_is_capped() -> None:
    """Exponential backoff from base_delay, never above max_delay; Retry-After raises it, never lowers it."""
    p = RetryPolicy(attempts=5, base_delay=0.25, max_delay=2.0)
    assert [p.delay(i, None) for i in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert p.delay(0, 1.0) == 1.0 and p.delay(2, 0.1) == 1.0
