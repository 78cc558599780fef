"""The stack file: the application described once, provider-neutral."""

from liferaft.stack._stack import Stack, load_stack
from liferaft.stack.loader import default_stack_path
from liferaft.stack.model import (
    AwsProvider,
    Bucket,
    Database,
    DigitalOceanProvider,
    DnsConfig,
    HcloudProvider,
    LibcloudProvider,
    Record,
    Service,
    Site,
    SshHost,
    SshProvider,
    StackModel,
    parse_duration,
    provider_capabilities,
)

__all__ = [
    "AwsProvider",
    "Bucket",
    "Database",
    "DigitalOceanProvider",
    "DnsConfig",
    "HcloudProvider",
    "LibcloudProvider",
    "Record",
    "Service",
    "Site",
    "SshHost",
    "SshProvider",
    "Stack",
    "StackModel",
    "default_stack_path",
    "load_stack",
    "parse_duration",
    "provider_capabilities",
]
