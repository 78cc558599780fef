"""`liferaft validate` and `liferaft init`: the stack file."""

from __future__ import annotations

from pathlib import Path

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, terminal_safe
from liferaft.errors import EXIT_CHECK_FAILED, SecretError, UsageError


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--check-secrets", is_flag=True, help="Also resolve every secret reference (values are never shown).")
@json_option
@pass_opts
def validate(opts: GlobalOptions, file: str | None, check_secrets: bool, as_json: bool) -> int:
    """Validate a stack file (default: --stack). Reports every problem with file, line, column and field."""
    from liferaft.stack import load_stack
    from liferaft.stack.secrets import secret_refs

    path = file or opts.stack_path
    stack = load_stack(path)
    unresolved: list[dict[str, str]] = []
    if check_secrets:
        for where, ref in secret_refs(stack.model):
            try:
                stack.secret(ref)
            except SecretError as e:
                unresolved.append({"field": where, "problem": e.message})
    m = stack.model
    summary = {"providers": len(m.providers), "sites": len(m.sites), "services": len(m.services),
               "databases": len(m.data.databases), "buckets": len(m.data.buckets),
               "dns_records": len(m.dns.records) if m.dns else 0}
    if as_json:
        emit_json({"ok": not unresolved, "file": str(path), "summary": summary,
                   "warnings": [w.to_dict() for w in stack.warnings], "unresolved_secrets": unresolved})
    else:
        for w in stack.warnings:
            click.echo(click.style("warning: ", fg="yellow") + terminal_safe(str(w)), err=True)
        for u in unresolved:
            click.echo(click.style("secret: ", fg="red") + terminal_safe(f"{u['field']}: {u['problem']}"), err=True)
        parts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items())
        shown = terminal_safe(str(path))
        click.echo(f"{shown}: valid ({parts})" if not unresolved else f"{shown}: valid, but secrets are missing")
    return EXIT_CHECK_FAILED if unresolved else 0


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--from-compose", "compose", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="COMPOSE_FILE", help="Write the services, images, ports and settings of a docker compose file "
              "(secret-looking values become env: references, never copied; PostgreSQL services become databases).")
@json_option
@pass_opts
def init(opts: GlobalOptions, file: str | None, force: bool, compose: str | None, as_json: bool) -> int:
    """Write a commented starter stack file (default: --stack). Refuses to overwrite without --force."""
    from importlib.resources import files

    path = Path(file or opts.stack_path)
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", hint="pass --force to overwrite it")
    if compose is not None:
        from liferaft.stack.compose import from_compose

        path.write_text(from_compose(Path(compose).read_text(encoding="utf-8"), compose), encoding="utf-8")
        if as_json:
            emit_json({"ok": True, "file": str(path), "from_compose": compose})
        else:
            click.echo(f"wrote {path} from {compose}: read its comments (what a human must decide, the secrets to "
                       "export), then run `liferaft validate`")
        return 0
    text = files("liferaft.stack").joinpath("starter.yaml").read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    if as_json:
        emit_json({"ok": True, "file": str(path), "placeholders_to_replace": True})
    else:
        click.echo(f"wrote {path}: replace its placeholders (example addresses and domains, the host key), edit the "
                   "providers and sites, then run `liferaft validate` (it fails until every placeholder is gone)")
    return 0
