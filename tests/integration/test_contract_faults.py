"""Fault mapping contract: for every adapter and capability, the lab's fault proxy in `deny` gives AuthRejected,
in `down` gives Unreachable (fast), in `throttle` gives Throttled after a bounded retry honouring Retry-After.
SSH pools: a refused key and a changed host key give AuthRejected, a cut host gives Unreachable."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import AuthRejected, ProviderError, Throttled, Unreachable
from liferaft.providers._errors import RetryPolicy
from liferaft.providers.base import Provider
from tests.contract_shims.libcloud_ec2 import moto_ec2_namespace
from tests.contract_shims.targets import (
    aws_provider,
    cloud_provider,
    faulted,
    libcloud_ec2_provider,
    libcloud_pdns_provider,
    libcloud_s3_provider,
    ssh_provider,
)

pytestmark = [pytest.mark.lab, pytest.mark.contract]

# (target, capability) pairs: every capability of every networked adapter.
CASES = [
    ("aws", "account"), ("aws", "objects"), ("aws", "compute"), ("aws", "dns"),
    ("libcloud-s3@s3rver", "account"), ("libcloud-s3@s3rver", "objects"),
    ("libcloud-s3@moto", "objects"),
    ("libcloud-powerdns", "account"), ("libcloud-powerdns", "dns"),
    ("libcloud-ec2@moto", "compute"),
    ("digitalocean", "account"), ("digitalocean", "compute"),
]

CALLS: dict[str, Callable[[Any], object]] = {
    "account": lambda p: p.account.probe(),
    "objects": lambda p: list(p.objects.list_objects("liferaft-faults")),
    "compute": lambda p: p.compute.list_hosts(),
    "dns": lambda p: p.dns.list_zones(),
}


def _open(name: str, request: pytest.FixtureRequest, tmp: Path) -> tuple[Provider, Any,
                                                                          Callable[[], AbstractContextManager[None]]]:
    if name == "digitalocean":
        provider, proxy = cloud_provider("digitalocean", request.getfixturevalue("cloud_lab"), tmp)
        return provider, proxy, nullcontext
    if name == "libcloud-s3@s3rver":
        ep = request.getfixturevalue("s3rver_endpoint")
        return libcloud_s3_provider("objstore", ep, tmp), ep.proxy, nullcontext
    if name == "libcloud-powerdns":
        ep = request.getfixturevalue("pdns_endpoint")
        return libcloud_pdns_provider(ep, tmp), ep.proxy, nullcontext
    ep = request.getfixturevalue("aws_endpoint")
    if name == "aws":
        return aws_provider(ep, tmp), ep.proxy, nullcontext
    if name == "libcloud-s3@moto":
        return libcloud_s3_provider("lc-moto", ep, tmp), ep.proxy, nullcontext
    return libcloud_ec2_provider(ep, tmp), ep.proxy, moto_ec2_namespace


@pytest.mark.parametrize(("name", "capability"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_contract_forward_works(name: str, capability: str, request: pytest.FixtureRequest,
                                tmp_path: Path) -> None:
    """Through the proxy in forward mode the call succeeds (so the faults below are the proxy's doing)."""
    provider, proxy, shim = _open(name, request, tmp_path)
    if capability == "objects":
        provider.objects.create_bucket("liferaft-faults")  # type: ignore[union-attr]
    with shim():
        CALLS[capability](provider)
    assert proxy.stats()["requests"] > 0


@pytest.mark.parametrize(("name", "capability"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_contract_deny_is_auth_rejected(name: str, capability: str, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    """A suspended account (proxy deny: the provider's own 401/403 body) -> AuthRejected naming the provider."""
    provider, proxy, shim = _open(name, request, tmp_path)
    with shim(), faulted(proxy, "deny"), pytest.raises(AuthRejected) as info:
        CALLS[capability](provider)
    assert info.value.provider == provider.name and info.value.exit_code == 3


@pytest.mark.parametrize(("name", "capability"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_contract_down_is_unreachable_fast(name: str, capability: str, request: pytest.FixtureRequest,
                                           tmp_path: Path) -> None:
    """A switched-off endpoint (proxy down: connections refused) -> Unreachable within a few seconds."""
    provider, proxy, shim = _open(name, request, tmp_path)
    start = time.monotonic()
    with shim(), faulted(proxy, "down"), pytest.raises(Unreachable):
        CALLS[capability](provider)
    assert time.monotonic() - start < 4.0


# Where the SDK hands the Retry-After header to the adapter. libcloud's S3 driver turns a 503 into a bare
# LibcloudError and drops the headers: there the adapter can only back off exponentially. DigitalOcean sends no
# Retry-After but `ratelimit-reset` (unix time), which the adapter reads from libcloud's RateLimitReachedError.
RETRY_AFTER_VISIBLE = {"aws": True, "libcloud-s3@s3rver": False, "libcloud-powerdns": True, "digitalocean": True}


@pytest.mark.parametrize("name", list(RETRY_AFTER_VISIBLE))
def test_contract_throttle_is_retried_then_throttled(name: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                     fast_retries: RetryPolicy) -> None:
    """Throttling (503 SlowDown / 429 with Retry-After) is retried a bounded number of times, honouring
    Retry-After where the SDK exposes it, then Throttled; a short burst of throttling is absorbed."""
    provider, proxy, _ = _open(name, request, tmp_path)
    proxy.reset_stats()
    start = time.monotonic()
    with faulted(proxy, "throttle", retry_after=1), pytest.raises(Throttled) as info:
        provider.account.probe()  # type: ignore[union-attr]
    elapsed = time.monotonic() - start
    throttled = proxy.stats()["faulted"].get("throttle", 0)
    assert fast_retries.attempts <= throttled <= 2 * fast_retries.attempts  # bounded (botocore retries once)
    assert "after 3 attempts" in info.value.message
    if RETRY_AFTER_VISIBLE[name]:
        assert elapsed >= (fast_retries.attempts - 1) * 1.0, elapsed  # slept Retry-After between attempts
    assert elapsed < 10
    proxy.set_mode("throttle", count=1, retry_after=0)
    provider.account.probe()  # type: ignore[union-attr]


def test_contract_server_error_is_provider_error(request: pytest.FixtureRequest, tmp_path: Path,
                                                 fast_retries: RetryPolicy) -> None:
    """A provider's 500s are retried boundedly, then reported as a ProviderError -- never an SDK exception."""
    for name, capability in dict(CASES).items():  # one capability per adapter: the mapping is per SDK
        provider, proxy, shim = _open(name, request, tmp_path)
        with shim(), faulted(proxy, "error"), pytest.raises(ProviderError) as info:
            CALLS[capability](provider)
        assert type(info.value) is ProviderError and info.value.provider == provider.name, (name, capability)


# ------------------------------------------------------------------------------------------------ ssh
@pytest.fixture
def wrong_key(tmp_path: Path) -> Path:
    key = tmp_path / "wrong_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_contract_ssh_refused_key_is_auth_rejected(lab_hosts: Any, tmp_path: Path, wrong_key: Path) -> None:
    """A key the hosts do not accept (the colo revoked us) -> AuthRejected."""
    provider = ssh_provider("colo", lab_hosts, tmp_path, names=("a",), key_file=wrong_key)
    with pytest.raises(AuthRejected) as info:
        provider.account.probe()  # type: ignore[union-attr]
    assert info.value.code == "PermissionDenied"


def test_contract_ssh_changed_host_key_is_refused(lab_hosts: Any, tmp_path: Path) -> None:
    """A host whose key is not the pinned one is never logged into: AuthRejected saying so."""
    provider = ssh_provider("colo", lab_hosts, tmp_path, names=("a",),
                            host_keys={"a": lab_hosts["b"].host_public_key})
    before = lab_hosts["a"].ssh_count() if hasattr(lab_hosts["a"], "ssh_count") else None
    with pytest.raises(AuthRejected) as info:
        provider.account.probe()  # type: ignore[union-attr]
    assert "does not match the pinned" in info.value.message and info.value.code == "HostKeyMismatch"
    if before is not None:
        assert lab_hosts["a"].ssh_count() == before  # no session was opened


def test_contract_ssh_cut_host_is_unreachable(lab_hosts: Any, tmp_path: Path) -> None:
    """A host cut off the network -> Unreachable, within the connect timeout; healed, it answers again."""
    provider = ssh_provider("colo", lab_hosts, tmp_path, names=("c",))
    provider.account.probe()  # type: ignore[union-attr]
    lab_hosts["c"].cut()
    try:
        start = time.monotonic()
        with pytest.raises(Unreachable):
            provider.account.probe()  # type: ignore[union-attr]
        assert time.monotonic() - start < 6
    finally:
        lab_hosts["c"].heal()
    provider.account.probe()  # type: ignore[union-attr]
