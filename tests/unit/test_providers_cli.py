"""`liferaft providers`: the capability matrix of the types, and of a stack's providers when there is one."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import invoke

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "microblog" / "liferaft.yaml"


def test_providers_without_stack_lists_types(tmp_path: Path) -> None:
    """No stack file needed: the four types and what each can offer."""
    r = invoke("--stack", str(tmp_path / "absent.yaml"), "providers", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {t["type"]: t["capabilities"] for t in data["types"]} == {
        "aws": ["compute", "objects", "dns", "account"], "libcloud": ["compute", "objects", "dns", "account"],
        "ssh": ["compute", "account"], "hcloud": ["compute", "account"], "digitalocean": ["compute", "account"]}
    assert data["providers"] == []
    human = invoke("--stack", str(tmp_path / "absent.yaml"), "providers")
    assert human.exit_code == 0 and "libcloud" in human.stdout and "types only" in human.stdout


def test_providers_with_stack_shows_configured_matrix() -> None:
    """With a stack, each configured provider and the capabilities its config enables."""
    r = invoke("--stack", str(EXAMPLE), "providers", "--json")
    assert r.exit_code == 0, r.output
    got = {p["name"]: p["capabilities"] for p in json.loads(r.stdout)["providers"]}
    assert got["dnshost"] == ["dns", "account"] and got["objstore"] == ["objects", "account"]
    assert got["colo-a"] == ["compute", "account"] and got["aws"] == ["compute", "objects", "dns", "account"]
    human = invoke("--stack", str(EXAMPLE), "providers")
    assert "dnshost" in human.stdout and "providers in" in human.stdout
