"""`liferaft export terraform`: a ready root module for a target site, from the stack file.

The root module calls one of the shipped modules (copied into DIR so DIR is self-contained), takes its values from
terraform.tfvars.json, and keeps its state off the primary provider. Credentials are never written: terraform reads
them from its environment (see `credentials_env`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.errors import UsageError
from liferaft.stack import AwsProvider, LibcloudProvider, Stack

MODULES = Path(__file__).resolve().parent / "modules"


@dataclass(frozen=True)
class Export:
    directory: Path
    module: str
    variables: dict[str, Any]
    backend: str
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "module": self.module, "backend": self.backend,
                "files": list(self.files), "variables": {k: v for k, v in self.variables.items()
                                                         if k != "ssh_public_key"}}


def module_for(stack: Stack, site: str) -> str:
    """Which shipped module provisions this site's compute provider."""
    compute = stack.provider(stack.site(site).compute)
    if isinstance(compute, AwsProvider):
        return "aws-site"
    if isinstance(compute, LibcloudProvider) and compute.compute and compute.compute.driver == "digitalocean":
        return "digitalocean-site"
    raise UsageError(f"no Terraform module for site {site!r} (compute provider type {compute.type})",
                     hint="shipped modules: aws (type aws) and digitalocean (type libcloud, compute driver "
                          "digitalocean); hosts you bring (type ssh) need no provisioning")


def public_key_of(stack: Stack, private_key_ref: str | None) -> str:
    """The public half of the deploy key (ssh-keygen -y), from the secret reference of the private key."""
    if not private_key_ref:
        raise UsageError("the compute provider has no `private_key`: liferaft needs one to reach the hosts it "
                         "creates", hint="add private_key: file:secrets/id_ed25519 to the provider")
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        key.touch(mode=0o600)
        key.write_text(stack.secret(private_key_ref) + "\n")
        out = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UsageError("the deploy private key could not be read by ssh-keygen (is it an OpenSSH private key?)")
    return out.stdout.strip()


def credentials_env(stack: Stack, site: str, resolve: Callable[[str], str] | None = None) -> dict[str, str]:
    """The environment terraform needs for the site's compute provider (values stay in memory).
    `resolve` turns secret references into values (default: stack.secret; a run passes its own to track them)."""
    secret = resolve or stack.secret
    compute = stack.provider(stack.site(site).compute)
    if isinstance(compute, AwsProvider):
        env = {"AWS_ACCESS_KEY_ID": secret(compute.credentials.access_key_id),
               "AWS_SECRET_ACCESS_KEY": secret(compute.credentials.secret_access_key),
               "AWS_REGION": compute.region}
        if compute.credentials.session_token:
            env["AWS_SESSION_TOKEN"] = secret(compute.credentials.session_token)
        return env
    if isinstance(compute, LibcloudProvider) and compute.credentials.key:
        return {"DIGITALOCEAN_TOKEN": secret(compute.credentials.key)}
    return {}


def _variables(stack: Stack, site: str, module: str, ssh_public_key: str) -> dict[str, Any]:
    m = stack.model
    ports = sorted({22, *(p for svc in m.services.values() for p in svc.ports)})
    s = stack.site(site)
    same_objects = s.objects == s.compute
    values: dict[str, Any] = {
        "name": f"{m.name}-{site}",
        "host_count": s.hosts,
        "ssh_public_key": ssh_public_key,
        "ingress_ports": ports,
        "buckets": [b.name for b in m.data.buckets.values()] if same_objects else [],
    }
    compute = stack.provider(s.compute)
    if module == "aws-site":
        if not compute.image:
            raise UsageError(f"provider {s.compute!r} has no `image` (an AMI id for the hosts)",
                             hint="add image: ami-... to the provider in the stack file")
        values.update(ami=compute.image, instance_type=compute.instance_type, region=compute.region)
    return values


def _backend_block(stack: Stack, site: str, state_dir: Path) -> tuple[str, str]:
    tf = stack.site(site).terraform
    if tf.backend == "local":
        path = state_dir / "terraform" / f"{stack.model.name}-{site}.tfstate"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return "local", f'  backend "local" {{\n    path = {json.dumps(str(path))}\n  }}\n'
    store = stack.provider(tf.provider)
    lines = [f"    bucket = {json.dumps(tf.bucket)}", f"    key    = {json.dumps(tf.key)}"]
    if isinstance(store, AwsProvider):
        lines.append(f"    region = {json.dumps(store.region)}")
        endpoint = store.endpoint
    else:
        lines.append('    region = "us-east-1"')
        d = store.storage
        endpoint = f"{'https' if d.secure else 'http'}://{d.host}:{d.port or (443 if d.secure else 80)}"
        lines += ["    skip_region_validation = true"]
    if endpoint:
        lines += [f"    endpoints = {{ s3 = {json.dumps(endpoint)} }}", "    use_path_style = true",
                  "    skip_credentials_validation = true", "    skip_requesting_account_id = true",
                  "    skip_metadata_api_check = true"]
    lines.append("    # credentials: AWS_PROFILE or AWS_* variables in the environment, never in this file")
    return "s3", '  backend "s3" {\n' + "\n".join(lines) + "\n  }\n"


def _provider_block(stack: Stack, site: str, module: str) -> str:
    compute = stack.provider(stack.site(site).compute)
    if module != "aws-site":
        return 'provider "digitalocean" {}\n'
    body = ["  region = var.region"]
    if compute.endpoint:
        ep = json.dumps(compute.endpoint)
        body += ["  skip_credentials_validation = true", "  skip_metadata_api_check     = true",
                 "  skip_requesting_account_id  = true", "  skip_region_validation      = true",
                 "  s3_use_path_style           = true",
                 (f"  endpoints {{\n    s3      = {ep}\n    ec2     = {ep}\n    route53 = {ep}\n"
                  f"    sts     = {ep}\n    iam     = {ep}\n  }}")]
    return 'provider "aws" {\n' + "\n".join(body) + "\n}\n"


def export_site(stack: Stack, site: str, directory: Path, state_dir: Path, *,
                ssh_public_key: str | None = None) -> Export:
    """Write the root module for `site` into `directory`."""
    if site == stack.model.primary:
        raise UsageError(f"{site!r} is the primary site: export a target site (one of the alternates)")
    module = module_for(stack, site)
    compute = stack.provider(stack.site(site).compute)
    pub = ssh_public_key or public_key_of(stack, getattr(compute, "private_key", None))
    variables = _variables(stack, site, module, pub)
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / "modules" / module
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(MODULES / module, dst)
    backend, backend_block = _backend_block(stack, site, state_dir)

    module_vars = re.findall(r'^variable "(\w+)"', (MODULES / module / "variables.tf").read_text(), flags=re.MULTILINE)
    root_vars = (MODULES / module / "variables.tf").read_text()
    if module == "aws-site":
        root_vars += '\nvariable "region" {\n  description = "AWS region of the site."\n  type        = string\n}\n'
    call = "\n".join(f"  {v} = var.{v}" for v in module_vars)
    main = (
        f"# Generated by `liferaft export terraform --to {site}` from {stack.path.name}. Re-export after changing\n"
        "# the stack file. Credentials come from the environment, never from these files.\n\n"
        f"terraform {{\n{backend_block}}}\n\n"
        f"{_provider_block(stack, site, module)}\n"
        f'module "site" {{\n  source = "./modules/{module}"\n{call}\n}}\n\n'
        'output "hosts" {\n  value = module.site.hosts\n}\n\n'
        'output "buckets" {\n  value = module.site.buckets\n}\n'
    )
    (directory / "main.tf").write_text(main)
    (directory / "variables.tf").write_text(root_vars)
    (directory / "terraform.tfvars.json").write_text(json.dumps(variables, indent=2) + "\n")
    files = ("main.tf", "variables.tf", "terraform.tfvars.json", f"modules/{module}/")
    return Export(directory, module, variables, backend, files)
