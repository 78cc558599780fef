"""moto answers EC2 in the namespace "http://ec2.amazonaws.com/doc/2016-11-15" (no trailing slash); libcloud's EC2
driver parses with the namespace WITH the slash and then silently returns empty lists. Real EC2 uses the slash,
so this is a lab-only difference: patched here, for the duration of a test, never in liferaft."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_ec2_namespace() -> Iterator[None]:
    from libcloud.compute.drivers import ec2

    original = ec2.NAMESPACE
    ec2.NAMESPACE = original.rstrip("/")
    try:
        yield
    finally:
        ec2.NAMESPACE = original
