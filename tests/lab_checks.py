"""Checks of a running lab from outside liferaft, shared by the lab journeys: DNS as the lab's PowerDNS answers it,
the object stores through their direct (un-proxied) URLs, the example's database, and every secret value there is
(to search outputs for leaks)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def app_records(info: Any) -> list[str]:
    """The app's A records as the lab's authoritative server answers them."""
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    host, port = info.dns_address
    r.nameservers, r.port, r.lifetime = [host], port, 3.0
    return sorted(a.to_text() for a in r.resolve(info.app_fqdn, "A"))


def direct_s3(info: Any, provider: str) -> Any:
    """A boto3 client on a lab object store behind its fault proxy ("aws" = moto, else s3rver)."""
    import boto3
    from botocore.config import Config

    keys = ("aws_access_key_id", "aws_secret_access_key") if provider == "aws" else ("s3rver_key", "s3rver_secret")
    return boto3.client("s3", endpoint_url=info.direct[provider], region_name="us-east-1",
                        aws_access_key_id=info.secret(keys[0]), aws_secret_access_key=info.secret(keys[1]),
                        config=Config(s3={"addressing_style": "path"}))


def bucket_hashes(info: Any, provider: str, bucket: str) -> dict[str, str]:
    """key -> sha256 of every object in a lab bucket, read directly."""
    s3 = direct_s3(info, provider)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = hashlib.sha256(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()).hexdigest()
    return out


def owner_dsn(info: Any, address: str) -> dict[str, Any]:
    """The example database at `address`, as its owner."""
    return {"host": address, "port": 5432, "dbname": "microblog", "user": "microblog",
            "password": info.secret("db_password")}


def _key_preamble(line: str) -> bool:
    """Whether a private key's base64 line holds only the OpenSSH format's fixed preamble (magic, cipher and KDF
    "none", the key count, the start of the key type's name): the same first line in every unencrypted ed25519 key
    (e.g. the folder kind's push key in the state dir), so no secret of this one."""
    import base64
    import binascii

    try:
        raw = base64.b64decode(line[:len(line) // 4 * 4], validate=True)  # a wrapped line is not padded
    except (binascii.Error, ValueError):
        return False
    preamble = (b"openssh-key-v1\x00" + b"\x00\x00\x00\x04none" * 2 + b"\x00\x00\x00\x00\x00\x00\x00\x01"
                + b"\x00\x00\x00\x33\x00\x00\x00\x0bssh-ed25519")
    return len(raw) > 0 and preamble.startswith(raw)


def secret_values(info: Any, state: Path) -> dict[str, str]:
    """Every secret value of the lab and the ones liferaft generated in its state dir, by name."""
    values: dict[str, str] = {}
    for p in sorted(Path(info.secrets_dir).iterdir()):
        if p.suffix == ".pub":
            continue
        text = p.read_text().strip()
        if p.name == "id_ed25519":  # a private key: its base64 body lines are the secret
            values.update({f"id_ed25519 line {i}": line for i, line in enumerate(text.splitlines())
                           if line and not line.startswith("-----") and not _key_preamble(line)})
        else:
            values[p.name] = text
    values.update({f"state:{p.name}": p.read_text().strip() for p in Path(state).rglob("*.secret")})
    # s3rver's fixed public default key ("S3RVER") is no secret: it is in s3rver's documentation.
    return {k: v for k, v in values.items() if len(v) >= 8}
