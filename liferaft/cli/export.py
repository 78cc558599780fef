"""`liferaft export terraform`: write a ready Terraform root module for a target site."""

from __future__ import annotations

from pathlib import Path

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts


@click.group()
def export() -> None:
    """Export the stack to other tools' formats."""


@export.command("terraform")
@click.option("--to", "site", required=True, help="The target site to provision.")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--ssh-public-key", type=click.Path(exists=True, dir_okay=False),
              help="Public key to install on the hosts (default: derived from the provider's private_key).")
@json_option
@pass_opts
def terraform_cmd(opts: GlobalOptions, site: str, directory: str, ssh_public_key: str | None, as_json: bool) -> int:
    """Write a Terraform root module for SITE into DIRECTORY (tfvars from the stack; state never at the primary)."""
    from liferaft.terraform import export_site

    stack = opts.stack()
    pub = Path(ssh_public_key).read_text().strip() if ssh_public_key else None
    result = export_site(stack, site, Path(directory), opts.state_dir, ssh_public_key=pub)
    if as_json:
        emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(f"wrote {result.directory}: module {result.module}, state backend {result.backend}")
        click.echo(f"  next: cd {result.directory} && terraform init && terraform plan   "
                   "(credentials from the environment)")
    return 0
