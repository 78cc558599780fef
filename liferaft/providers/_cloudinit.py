"""Host keys liferaft generates and hands to a new server through cloud-init user data, so it can pin them.

A server created through an API answers SSH with a host key nobody has seen yet; accepting whatever answers would
let anyone on the path in. Instead liferaft generates the ed25519 host key pair itself, passes it in the user data
(cloud-init's documented `ssh_keys: {ed25519_private, ed25519_public}`, with key generation and deletion off so the
server keeps exactly that key), and pins the public half. The private half is a secret: it exists in memory and in
the user data sent to the provider's API only -- never in a log, a journal, an event or on a command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class HostKeyPair:
    """One generated ed25519 host key pair. `public` is "ssh-ed25519 <base64>"; `private` never leaves repr."""

    public: str
    private: str = field(repr=False)


def generate_host_key() -> HostKeyPair:
    """A fresh ed25519 key pair, the private half in OpenSSH format (what sshd reads)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return HostKeyPair(public=" ".join(public.split()[:2]), private=private)


def public_key_of(private_key_file: str | Path) -> str:
    """The OpenSSH public line ("<type> <base64>") of a private key file (unencrypted, as ssh -i reads it)."""
    from cryptography.hazmat.primitives import serialization

    data = Path(private_key_file).read_bytes()
    key = serialization.load_ssh_private_key(data, password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return " ".join(public.decode().split()[:2])


def user_data(host_key: HostKeyPair, *, hostname: str | None = None) -> str:
    """cloud-config that installs exactly `host_key` as the server's SSH host key (JSON is valid YAML)."""
    config: dict[str, object] = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_key.private, "ed25519_public": host_key.public},
    }
    if hostname:
        config["hostname"] = hostname
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"
