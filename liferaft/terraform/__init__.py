"""Terraform: modules shipped with liferaft, a root-module export, and a runner for provisioning."""

from liferaft.terraform.export import Export, credentials_env, export_site, module_for
from liferaft.terraform.runner import Terraform, TerraformPlan, find_mirror, find_terraform

__all__ = ["Export", "Terraform", "TerraformPlan", "credentials_env", "export_site", "find_mirror",
           "find_terraform", "module_for"]
