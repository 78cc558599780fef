"""Shared parts of the libcloud adapter: error translation and one configured driver section."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from liferaft.errors import AuthRejected, NotFound, ProviderError, Unreachable, UsageError
from liferaft.providers import _errors
from liferaft.providers.base import ProbeResult

T = TypeVar("T")
TIMEOUT = 15  # seconds per HTTP request; libcloud's default is 60
_STATUS_IN_MESSAGE = re.compile(r"[Ss]tatus(?: code)?[:=]\s*(\d{3})|HTTP Code: (\d{3})")


def classify(exc: BaseException, provider: str, operation: str) -> ProviderError | None:
    """libcloud / requests exception -> liferaft error."""
    import requests

    with IMPORT_LOCK:
        from libcloud.common import exceptions as lx
        from libcloud.common import types as lt
        from libcloud.dns import types as dt
        from libcloud.storage import types as st

    if isinstance(exc, lt.InvalidCredsError):
        return AuthRejected(provider, operation, "credentials rejected", status=401)
    if isinstance(exc, (st.ContainerDoesNotExistError, st.ObjectDoesNotExistError, dt.ZoneDoesNotExistError,
                        dt.RecordDoesNotExistError)):
        what = {"ContainerDoesNotExistError": "no such bucket", "ObjectDoesNotExistError": "no such object",
                "ZoneDoesNotExistError": "no such zone", "RecordDoesNotExistError": "no such record"}
        return NotFound(provider, operation, what.get(type(exc).__name__, type(exc).__name__))
    if isinstance(exc, (st.ContainerAlreadyExistsError, dt.ZoneAlreadyExistsError, st.ContainerIsNotEmptyError)):
        return _errors.error_for(provider, operation, f"{type(exc).__name__}", status=409)
    if isinstance(exc, st.InvalidContainerNameError) and "already exists" in str(getattr(exc, "value", "")):
        # libcloud's S3 driver reports a 409 without BucketAlreadyOwnedByYou (s3rver, or a name taken by
        # someone else) as an invalid name.
        return _errors.error_for(provider, operation, "bucket name already exists", status=409)
    if isinstance(exc, lx.BaseHTTPError):
        headers = getattr(exc, "headers", None) or {}
        ra = getattr(exc, "retry_after", None) or _errors.parse_retry_after(
            {k.lower(): v for k, v in dict(headers).items()}.get("retry-after"))
        return _errors.error_for(provider, operation, f"HTTP {exc.code}: {str(exc.message)[:200]}",
                                 status=int(exc.code), retry_after=ra)
    if isinstance(exc, FileNotFoundError):
        # The local driver: a file or folder vanished under us (its delete also prunes empty parent folders,
        # which races with a concurrent delete in the same folder).
        return NotFound(provider, operation, f"no such file: {exc.filename}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return Unreachable(provider, operation, f"endpoint did not answer ({type(exc).__name__})")
    if isinstance(exc, lt.MalformedResponseError):
        return ProviderError(provider, operation, "the server answered something that is not its API's format",
                             hint="the endpoint address: is it this provider's API?")
    if isinstance(exc, lt.LibcloudError):
        text = str(getattr(exc, "value", exc))
        m = _STATUS_IN_MESSAGE.search(text)
        status = int(m.group(1) or m.group(2)) if m else None
        return _errors.error_for(provider, operation, text[:300], status=status)
    return None


# Two threads importing libcloud's storage and DNS packages at once deadlock on libcloud.common.types (the import
# system raises _DeadlockError): health probes open providers concurrently. All libcloud imports go through this lock.
IMPORT_LOCK = threading.RLock()


def _load_driver(kind: str, name: str) -> Any:
    """libcloud's own registry: `get_driver(name)` of libcloud.storage / dns / compute."""
    import importlib

    with IMPORT_LOCK:
        importlib.import_module("libcloud.common.types")
        providers = importlib.import_module(f"libcloud.{kind}.providers")
    try:
        return providers.get_driver(name)
    except AttributeError:
        raise UsageError(f"libcloud has no {kind} driver named {name!r}",
                         hint=f"see libcloud's supported {kind} providers (e.g. s3, minio, local, powerdns, ec2)"
                         ) from None


class Section:
    """One configured libcloud driver (storage, dns or compute) with error translation."""

    kind = ""

    def __init__(self, provider: str, settings: dict[str, Any], key: str | None, secret: str | None) -> None:
        self.provider = provider
        settings = dict(settings)
        self.driver_name = str(settings.pop("driver"))
        self._settings = settings
        self.__creds = (key, secret)
        # libcloud Connection objects keep per-request state (action, method, params): not thread-safe.
        # Each thread gets its own driver.
        self._local = threading.local()

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}(provider={self.provider!r}, driver={self.driver_name!r})"

    def _build(self, cls: Any, settings: dict[str, Any], key: str | None, secret: str | None) -> Any:
        settings.setdefault("timeout", TIMEOUT)
        return cls(key, secret, **settings) if secret is not None else cls(key, **settings)

    @property
    def driver(self) -> Any:
        driver = getattr(self._local, "driver", None)
        if driver is None:
            cls = _load_driver(self.kind, self.driver_name)
            key, secret = self.__creds
            with _errors.translating(self.provider, f"open {self.kind} driver {self.driver_name}", classify):
                driver = self._build(cls, dict(self._settings), key, secret)
            self._local.driver = driver
        return driver

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        return _errors.call(self.provider, operation, classify, fn)

    def probe(self) -> ProbeResult:
        raise NotImplementedError
