"""The digitalocean adapter without a network: error translation of libcloud's exceptions, tags, firewall rules,
the stack model, lazy import. (Against a server: tests/integration/test_do_lab.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liferaft.errors import AuthRejected, Conflict, NotFound, ProviderError, QuotaExceeded, Throttled
from liferaft.providers.digitalocean_ import classify, tag


def _http(code: int, message: str, headers: dict[str, str] | None = None) -> Exception:
    from libcloud.common.exceptions import exception_from_message

    return exception_from_message(code=code, message=f"{message} (code: {code})", headers=headers or {})


def test_unauthorized_names_the_account_and_never_the_token() -> None:
    """libcloud's InvalidCredsError (DigitalOcean's 401) -> AuthRejected naming the provider, status 401."""
    from libcloud.common.types import InvalidCredsError

    err = classify(InvalidCredsError("Unable to authenticate you"), "do", "create droplet x")
    assert isinstance(err, AuthRejected) and err.status == 401 and err.code == "unauthorized"
    assert "account 'do' was rejected" in str(err) and "Unable to authenticate you" in str(err)


def test_droplet_limit_422_is_quota_exceeded() -> None:
    """422 "... will exceed your droplet limit" -> QuotaExceeded naming the droplet limit; another 422 is not."""
    err = classify(_http(422, "creating this/these droplet(s) will exceed your droplet limit"), "do", "create")
    assert isinstance(err, QuotaExceeded) and err.code == "droplet_limit" and "droplet limit" in str(err)
    other = classify(_http(422, "You specified an invalid size for Droplet creation."), "do", "create")
    assert type(other) is ProviderError and other.status == 422


def test_429_is_throttled_with_the_wait_from_ratelimit_reset() -> None:
    """429 with DigitalOcean's ratelimit-reset (unix time, no Retry-After) -> Throttled waiting until then."""
    err = classify(_http(429, "API Rate limit exceeded.", {"ratelimit-reset": str(int(time.time()) + 3)}), "do", "op")
    assert isinstance(err, Throttled) and err.code == "too_many_requests"
    assert 1.0 <= err.retry_after <= 3.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "cls"), [(404, NotFound), (409, Conflict), (403, AuthRejected),
                                              (500, ProviderError)])
def test_statuses_map_to_the_error_tree(status: int, cls: type[ProviderError]) -> None:
    err = classify(_http(status, "m"), "do", "op")
    assert type(err) is cls and err is not None and err.status == status


def test_tags_follow_digitalocean_syntax() -> None:
    assert tag("liferaft-stack", "microblog") == "liferaft-stack:microblog"
    assert tag("liferaft-run", "2026 12/03.x") == "liferaft-run:2026-12-03-x"
    assert len(tag("k", "x" * 300)) == 255


def test_firewall_rules_open_only_what_is_asked(tmp_path: Path) -> None:
    """SSH from the controller, databases from it and the peers, services from anywhere; outbound all open."""
    from liferaft.providers.digitalocean_ import DigitalOceanAdapter

    compute = DigitalOceanAdapter("do", "t", tmp_path, ssh_sources=["203.0.113.7/32"]).compute
    inbound, outbound = compute.firewall_rules((8080,), (5432,), ("198.51.100.2",))
    assert [(r["ports"], r["sources"]["addresses"]) for r in inbound] == [
        ("22", ["203.0.113.7/32"]), ("5432", ["198.51.100.2/32", "203.0.113.7/32"]),
        ("8080", ["0.0.0.0/0", "::/0"])]
    assert {r["protocol"] for r in outbound} == {"tcp", "udp", "icmp"}
    # A folder dataset (private port 22: the source host pushes over SSH): one SSH rule, from both.
    inbound, _ = compute.firewall_rules((8080,), (22, 5432), ("198.51.100.2",))
    assert [(r["ports"], r["sources"]["addresses"]) for r in inbound] == [
        ("22", ["198.51.100.2/32", "203.0.113.7/32"]), ("5432", ["198.51.100.2/32", "203.0.113.7/32"]),
        ("8080", ["0.0.0.0/0", "::/0"])]


def test_stack_accepts_a_digitalocean_provider_and_rejects_an_inline_token() -> None:
    """A digitalocean provider validates with a token reference and the documented defaults; an inline token is
    refused without being echoed; a region that is not a slug is refused."""
    from pydantic import TypeAdapter, ValidationError

    from liferaft.providers.digitalocean_ import DEFAULT_IMAGE, DEFAULT_REGION, DEFAULT_SIZE
    from liferaft.stack.model import ProviderConfig

    ta: TypeAdapter[object] = TypeAdapter(ProviderConfig)
    p = ta.validate_python({"type": "digitalocean", "credentials": {"token": "env:DIGITALOCEAN_TOKEN"},
                            "private_key": "file:secrets/id"})
    assert p.vendor == "digitalocean"  # type: ignore[attr-defined]
    assert (p.region, p.size, p.image) == (DEFAULT_REGION, DEFAULT_SIZE, DEFAULT_IMAGE)  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as exc:
        ta.validate_python({"type": "digitalocean", "credentials": {"token": "dop_v1_s3cr3t"}})
    assert "dop_v1_s3cr3t" not in str(exc.value).split("input_value")[0]
    with pytest.raises(ValidationError):
        ta.validate_python({"type": "digitalocean", "credentials": {"token": "env:T"}, "region": "Frankfurt"})


def test_opening_a_digitalocean_provider_imports_no_sdk(tmp_path: Path) -> None:
    """The registry opens a digitalocean provider without importing libcloud (its first call does)."""
    code = (
        "import sys, json\n"
        "from liferaft.providers.registry import open_provider\n"
        "p = open_provider('d', {'type': 'digitalocean', 'credentials': {'token': 'env:T'}}, lambda r: 'tok', "
        f"state_dir={str(tmp_path)!r})\n"
        "print(json.dumps([p.capabilities, sorted(m for m in sys.modules if m.split('.')[0] in "
        "('libcloud', 'requests', 'cryptography'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    caps, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert caps == ["compute", "account"] and loaded == []


def test_the_readme_example_is_what_the_model_accepts() -> None:
    """The README's `digitalocean` provider block validates, and every key it shows (commented ones too) is a key
    of the model: the stack file docs cannot drift from the code."""
    import re

    from pydantic import TypeAdapter
    from ruamel.yaml import YAML

    from liferaft.stack.model import DigitalOceanProvider, ProviderConfig

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "type: digitalocean" in b)
    data = YAML(typ="safe").load(block)
    (entry,) = data["providers"].values()
    TypeAdapter(ProviderConfig).validate_python(entry)
    shown = set(entry) | set(re.findall(r"^\s*#\s*([a-z_]+):", block, re.MULTILINE))
    fields = {f.alias or n for n, f in DigitalOceanProvider.model_fields.items()}
    assert shown <= fields and fields - shown <= {"vendor"}, (shown, fields)


@pytest.mark.parametrize(("config", "attrs"), [
    ({"type": "digitalocean", "credentials": {"token": "env:T"}}, {"size": "s-1vcpu-1gb", "image": "debian-12-x64",
                                                                  "region": "fra1"}),
    ({"type": "hcloud", "credentials": {"token": "env:T"}}, {"server_type": "cx22", "image": "debian-12"})])
def test_a_plain_config_without_sizes_gets_the_defaults(config: dict[str, object], attrs: dict[str, str],
                                                        tmp_path: Path) -> None:
    """A provider config given as a plain mapping (tests, benchmarks) without size/image gets the adapter's defaults,
    the same as the stack model's -- not the string "None" (which the hcloud registry entry passed on)."""
    from liferaft.providers.registry import open_provider

    compute = open_provider("p", config, lambda ref: "tok", state_dir=tmp_path).compute
    assert {k: getattr(compute, k) for k in attrs} == attrs
