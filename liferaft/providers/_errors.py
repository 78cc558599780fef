"""Error translation and bounded retry shared by the adapters.

Each adapter owns a `classify(exc) -> ProviderError | None` that knows its SDK's exceptions; this module turns that
into a context manager (like pypa/build's `_handle_backend`) and a retry loop for throttling that honours
Retry-After. SDK exceptions never leave an adapter: anything unclassified becomes a plain `ProviderError`.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from liferaft.errors import (
    AuthRejected,
    Conflict,
    LiferaftError,
    NotFound,
    ProviderError,
    Throttled,
    Unreachable,
)

T = TypeVar("T")
Classifier = Callable[[BaseException, str, str], ProviderError | None]

AUTH_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "AuthFailure", "SignatureDoesNotMatch", "InvalidClientTokenId",
    "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException", "AccountProblem", "AllAccessDisabled",
    "InvalidToken", "MissingAuthenticationToken", "OptInRequired", "UnauthorizedOperation", "Forbidden", "403",
    "401",
})
NOT_FOUND_CODES = frozenset({
    "NoSuchBucket", "NoSuchKey", "NoSuchHostedZone", "NotFound", "404", "NoSuchUpload",
    "InvalidInstanceID.NotFound", "InvalidKeyPair.NotFound", "InvalidAMIID.NotFound", "InvalidAMIID.Malformed",
})
THROTTLE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "PriorRequestNotComplete", "ServiceUnavailable", "503", "429",
})
CONFLICT_CODES = frozenset({
    "BucketAlreadyExists", "BucketNotEmpty", "OperationAborted", "HostedZoneAlreadyExists", "InvalidChangeBatch",
    "InvalidKeyPair.Duplicate", "409", "Conflict",
})


def error_for(provider: str, operation: str, detail: str, *, status: int | None = None, code: str | None = None,
              retry_after: float | None = None) -> ProviderError:
    """Pick the error class from an HTTP status and/or a vendor error code."""
    cls: type[ProviderError] = ProviderError
    if code in AUTH_CODES or status in (401, 403):
        cls = AuthRejected
    elif code in THROTTLE_CODES or status in (429, 503):
        cls = Throttled
    elif code in NOT_FOUND_CODES or status == 404:
        cls = NotFound
    elif code in CONFLICT_CODES or status == 409:
        cls = Conflict
    err = cls(provider, operation, detail, status=status, code=code)
    if retry_after is not None:
        err.retry_after = retry_after  # type: ignore[attr-defined]
    return err


def is_network_error(exc: BaseException) -> bool:
    """Connection refused/reset/aborted, timeouts, name resolution failures, no route."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED,
                                                      errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE)


def unreachable(provider: str, operation: str, exc: BaseException, endpoint: str | None = None) -> Unreachable:
    where = f" at {endpoint}" if endpoint else ""
    return Unreachable(provider, operation, f"endpoint{where} did not answer ({type(exc).__name__}: {exc})")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (HTTP dates are rare for APIs; they count as unknown)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextmanager
def translating(provider: str, operation: str, classify: Classifier) -> Iterator[None]:
    """Run a block; any non-liferaft exception leaves it as a ProviderError subclass, without the SDK traceback."""
    try:
        yield
    except LiferaftError:
        raise
    except Exception as exc:  # noqa: BLE001 - translating is the point
        err = classify(exc, provider, operation)
        if err is None:
            if is_network_error(exc):
                err = unreachable(provider, operation, exc)
            else:
                err = ProviderError(provider, operation, f"{type(exc).__name__}: {exc}")
        raise err from None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retry for throttling: `attempts` tries in all, exponential backoff, Retry-After honoured (capped)."""

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * (2 ** attempt))
        if retry_after is not None:
            return float(min(self.max_delay, max(backoff, retry_after)))
        return float(backoff)


_policy = RetryPolicy()


def set_retry_policy(policy: RetryPolicy) -> RetryPolicy:
    """Test switch (stamina-style): replace the throttling retry policy; returns the previous one."""
    global _policy
    old, _policy = _policy, policy
    return old


def retry_policy() -> RetryPolicy:
    return _policy


TRANSIENT_STATUS = frozenset({500, 502, 504})  # server errors the S3/EC2 docs say to retry


def call(provider: str, operation: str, classify: Classifier, fn: Callable[[], T],
         sleep: Callable[[float], None] = time.sleep) -> T:
    """Call fn with translation. Throttled (429/503/SlowDown) and transient server errors (500/502/504) are retried
    up to the policy's bound with backoff (Retry-After honoured); then Throttled, or the server error, is raised."""
    policy = _policy
    last: ProviderError | None = None
    for attempt in range(max(1, policy.attempts)):
        try:
            with translating(provider, operation, classify):
                return fn()
        except ProviderError as exc:
            transient = isinstance(exc, Throttled) or (type(exc) is ProviderError and exc.status in TRANSIENT_STATUS)
            if not transient:
                raise
            last = exc
            if attempt + 1 >= policy.attempts:
                break
            sleep(policy.delay(attempt, getattr(exc, "retry_after", None)))
    assert last is not None
    if isinstance(last, Throttled):
        raise Throttled(provider, operation, f"still throttled after {policy.attempts} attempts: {last.detail}",
                        status=last.status, code=last.code) from None
    raise ProviderError(provider, operation, f"server error after {policy.attempts} attempts: {last.detail}",
                        status=last.status, code=last.code) from None
