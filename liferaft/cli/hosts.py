"""`liferaft hosts`: the hosts liferaft holds in the stack's SSH pools; `liferaft hosts release`: give one back."""

from __future__ import annotations

import sys
from typing import Any

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, stdout_console
from liferaft.errors import UsageError


def _pool(opts: GlobalOptions, name: str) -> Any:
    """The compute capability of provider `name` if it is a pool liferaft allocates from (it can release), else
    None."""
    from liferaft.engine.observe import open_provider
    from liferaft.providers.registry import capabilities_of

    stack = opts.stack()
    if "compute" not in capabilities_of(stack.provider(name)):
        return None
    compute = open_provider(stack, name, opts.state_dir).require("compute")
    return compute if callable(getattr(compute, "release", None)) else None


@click.group("hosts", invoke_without_command=True)
@json_option
@pass_opts
@click.pass_context
def hosts(ctx: click.Context, opts: GlobalOptions, as_json: bool) -> int:
    """The hosts of the stack's SSH pools: allocated (to which run's host name) or free.

    \b
    Subcommand:  release PROVIDER HOST   forget an allocation (nothing on the host is touched)
    """
    if ctx.invoked_subcommand is not None:
        return 0
    rows: list[dict[str, Any]] = []
    for name in opts.stack().model.providers:
        pool = _pool(opts, name)
        if pool is None:
            continue
        held = {h.id: h.name for h in pool.list_hosts()}
        for h in pool.reachable_hosts():  # every host of the pool, allocated or not
            rows.append({"provider": name, "host": h.id, "allocated_to": held.get(h.id), "address": h.address})
    if as_json:
        emit_json({"hosts": rows})
        return 0
    from rich.table import Table

    table = Table(title="hosts of the SSH pools", title_justify="left")
    for col in ("provider", "host", "address", "allocated to"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["provider"], r["host"], r["address"], r["allocated_to"] or "[green]free[/green]")
    stdout_console().print(table)
    return 0


@hosts.command("release")
@click.argument("provider")
@click.argument("host")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@json_option
@pass_opts
def release(opts: GlobalOptions, provider: str, host: str, yes: bool, as_json: bool) -> int:
    """Forget that HOST of PROVIDER's SSH pool is allocated (HOST: its pool name or the name it is allocated to).

    Nothing on the host is touched, but a later failover, replicate or drill may take the host and replace what
    runs there: release only allocations of runs that are gone (e.g. from a lab that was taken down).
    """
    stack = opts.stack()
    if provider not in stack.model.providers:
        raise UsageError(f"no provider named {provider!r} in the stack file",
                         hint=f"providers: {', '.join(stack.model.providers)}")
    pool = _pool(opts, provider)
    if pool is None:
        raise UsageError(f"provider {provider!r} is not an SSH pool: liferaft does not allocate its hosts from a list",
                         hint="a host a run created there goes with `liferaft rollback RUN`, or at the provider")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to act without confirmation on a non-interactive terminal", hint="pass --yes")
        if not click.confirm(f"Release host {host} of {provider}? What runs there may be replaced later", default=False,
                             err=True):
            raise click.exceptions.Abort()
    got = pool.release(host)
    if got is None:
        raise UsageError(f"no host {host!r} is allocated in {provider}", hint="`liferaft hosts` lists them")
    if as_json:
        emit_json({"ok": True, "provider": provider, "host": got[0], "was_allocated_to": got[1]})
    else:
        click.echo(f"released {got[0]} of {provider} (was allocated to {got[1]}); nothing on the host was touched")
    return 0
