"""Provisioning a site with Terraform, for the failover engine's provision step (`provision: terraform`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.events import Events
from liferaft.stack import Stack
from liferaft.terraform.export import credentials_env, export_site
from liferaft.terraform.runner import Terraform, TerraformPlan


@dataclass(frozen=True)
class Provisioned:
    plan: TerraformPlan
    hosts: tuple[dict[str, Any], ...]
    buckets: tuple[str, ...]


def site_workdir(stack: Stack, site: str, state_dir: Path) -> Path:
    return state_dir / "terraform" / f"{stack.model.name}-{site}"


Resolve = Callable[[str], str]


def _terraform(stack: Stack, site: str, state_dir: Path, events: Events | None, resolve: Resolve | None) -> Terraform:
    workdir = site_workdir(stack, site, state_dir)
    export_site(stack, site, workdir, state_dir)
    tf = Terraform(workdir, env=credentials_env(stack, site, resolve), events=events, label=stack.site(site).compute)
    tf.init()
    return tf


def plan_site(stack: Stack, site: str, state_dir: Path, events: Events | None = None,
              resolve: Resolve | None = None) -> TerraformPlan:
    """terraform plan for the site: what provisioning would create (read-only against the provider)."""
    return _terraform(stack, site, state_dir, events, resolve).plan()


def provision_site(stack: Stack, site: str, state_dir: Path, events: Events | None = None,
                   resolve: Resolve | None = None) -> Provisioned:
    """init, plan, apply; returns the hosts and buckets Terraform manages. Idempotent: a re-run changes nothing."""
    tf = _terraform(stack, site, state_dir, events, resolve)
    plan = tf.plan()
    if not plan.no_changes:
        tf.apply(plan)
    out = tf.output()
    return Provisioned(plan, tuple(out.get("hosts") or ()), tuple(out.get("buckets") or ()))


def destroy_site(stack: Stack, site: str, state_dir: Path, events: Events | None = None,
                 resolve: Resolve | None = None) -> None:
    """terraform destroy: the rollback of provisioning."""
    _terraform(stack, site, state_dir, events, resolve).destroy()
