"""Server fixtures: real moto, s3rver and PowerDNS processes, each behind a fault proxy (liferaft.lab.servers/proxy).

Session-scoped (started once, stopped in finally blocks):
    moto_server, s3rver_server, pdns_server      the servers themselves (direct, no proxy)
Function-scoped views of the proxied endpoints; each test starts and ends with the proxy in `forward` mode and its
stats reset. Server data is NOT wiped between tests; ask for the `clean_*` variant to start from empty state:
    aws_endpoint, s3rver_endpoint, pdns_endpoint          -> Endpoint
    clean_aws_endpoint, clean_s3rver_endpoint, clean_pdns_endpoint
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from liferaft.lab.proxy import FaultProxy
from liferaft.lab.servers import LabServer, MotoServer, PowerDNSServer, S3rverServer
from liferaft.providers._errors import RetryPolicy, set_retry_policy


@dataclass(frozen=True)
class Endpoint:
    """A provider endpoint as a test sees it: the proxy's url and the credentials that work behind it."""

    name: str
    url: str
    address: str
    port: int
    proxy: FaultProxy
    server: LabServer
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    dns: tuple[str, int] | None = None  # PowerDNS: where DNS queries go (not proxied)
    api_key: str | None = field(default=None, repr=False)  # PowerDNS API key (kept out of test reports)

    def client(self, service: str, *, direct: bool = False, **config: Any) -> Any:
        """A boto3 client for `service` through the proxy (or `direct` to the server), path-style S3, and
        botocore Config options from `config` (e.g. retries=..., connect_timeout=...)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service, endpoint_url=self.server.url if direct else self.url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


S = TypeVar("S", bound=LabServer)


def _started(server: S) -> Iterator[S]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lab_servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab-servers")


@pytest.fixture(scope="session")
def moto_server(lab_servers_dir: Path) -> Iterator[MotoServer]:
    yield from _started(MotoServer(lab_servers_dir, account_id="123456789012"))


@pytest.fixture(scope="session")
def s3rver_server(lab_servers_dir: Path) -> Iterator[S3rverServer]:
    yield from _started(S3rverServer(lab_servers_dir))


@pytest.fixture(scope="session")
def pdns_server(lab_servers_dir: Path) -> Iterator[PowerDNSServer]:
    yield from _started(PowerDNSServer(lab_servers_dir))


def _proxy(name: str, workdir: Path, server: LabServer, flavour: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(name, workdir, server.address, server.url, flavour)
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def _aws_proxy(lab_servers_dir: Path, moto_server: MotoServer) -> Iterator[FaultProxy]:
    yield from _proxy("aws-proxy", lab_servers_dir, moto_server, "aws")


@pytest.fixture(scope="session")
def _s3rver_proxy(lab_servers_dir: Path, s3rver_server: S3rverServer) -> Iterator[FaultProxy]:
    yield from _proxy("s3rver-proxy", lab_servers_dir, s3rver_server, "s3")


@pytest.fixture(scope="session")
def _pdns_proxy(lab_servers_dir: Path, pdns_server: PowerDNSServer) -> Iterator[FaultProxy]:
    yield from _proxy("pdns-proxy", lab_servers_dir, pdns_server, "powerdns")


def _healed(endpoint: Endpoint) -> Iterator[Endpoint]:
    endpoint.proxy.set_mode("forward")
    endpoint.proxy.reset_stats()
    try:
        yield endpoint
    finally:
        endpoint.proxy.set_mode("forward")
        endpoint.proxy.reset_stats()


@pytest.fixture
def aws_endpoint(_aws_proxy: FaultProxy, moto_server: MotoServer) -> Iterator[Endpoint]:
    yield from _healed(Endpoint("aws", _aws_proxy.url, _aws_proxy.address, _aws_proxy.port, _aws_proxy,
                                moto_server, MotoServer.access_key, MotoServer.secret_key, MotoServer.region))


@pytest.fixture
def s3rver_endpoint(_s3rver_proxy: FaultProxy, s3rver_server: S3rverServer) -> Iterator[Endpoint]:
    yield from _healed(Endpoint("s3rver", _s3rver_proxy.url, _s3rver_proxy.address, _s3rver_proxy.port,
                                _s3rver_proxy, s3rver_server, S3rverServer.access_key, S3rverServer.secret_key,
                                S3rverServer.region))


@pytest.fixture
def pdns_endpoint(_pdns_proxy: FaultProxy, pdns_server: PowerDNSServer) -> Iterator[Endpoint]:
    yield from _healed(Endpoint("pdns", _pdns_proxy.url, _pdns_proxy.address, _pdns_proxy.port, _pdns_proxy,
                                pdns_server, dns=pdns_server.dns_address, api_key=pdns_server.api_key))


@pytest.fixture
def clean_aws_endpoint(aws_endpoint: Endpoint) -> Endpoint:
    aws_endpoint.server.reset()
    return aws_endpoint


@pytest.fixture
def clean_s3rver_endpoint(s3rver_endpoint: Endpoint) -> Endpoint:
    s3rver_endpoint.server.reset()
    return s3rver_endpoint


@pytest.fixture
def clean_pdns_endpoint(pdns_endpoint: Endpoint) -> Endpoint:
    pdns_endpoint.server.reset()
    return pdns_endpoint


@pytest.fixture
def fast_retries() -> Iterator[RetryPolicy]:
    """The provider retry policy with short waits (fault tests), restored afterwards."""
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=2.0)
    old = set_retry_policy(policy)
    try:
        yield policy
    finally:
        set_retry_policy(old)
