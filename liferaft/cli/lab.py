"""`liferaft lab`: start, inspect, fault and stop the local lab (real provider servers, hosts, fault proxies)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from liferaft.cli._common import emit_json, event_printer, finite_seconds, json_option, stdout_console
from liferaft.errors import EXIT_CHECK_FAILED, UsageError

if TYPE_CHECKING:
    from liferaft.lab.core import Lab

CUT_MODES = ("deny", "down", "throttle", "error")


def _set_lab_dir(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(dict)["lab_dir"] = value


def lab_dir_option(f: Any) -> Any:
    """`--lab-dir` also after the subcommand (`liferaft lab status --lab-dir DIR`)."""
    return click.option("--lab-dir", type=click.Path(file_okay=False), expose_value=False, is_eager=True,
                        callback=_set_lab_dir, help="The lab's directory (same as before the subcommand).")(f)


def _lab(ctx: click.Context, as_json: bool) -> Lab:
    from liferaft.lab.core import Lab

    verbose = getattr(ctx.find_root().obj, "verbose", 0)
    return Lab(ctx.obj["lab_dir"], events=event_printer(as_json, verbose))


@click.group()
@click.option("--lab-dir", type=click.Path(file_okay=False), envvar="LIFERAFT_LAB_DIR", default=None,
              help="The lab's directory. Env: LIFERAFT_LAB_DIR. Default: $XDG_STATE_HOME/liferaft/lab.")
@click.pass_context
def lab(ctx: click.Context, lab_dir: str | None) -> None:
    """The local lab: moto ("aws"), s3rver ("objstore"), PowerDNS ("dnshost"), fault proxies and SSH hosts a, b, c.

    \b
    liferaft lab up                    start it all, deploy (`liferaft deploy`) and seed the example app on host a
    liferaft lab status [--json]       what runs where, healthy or not
    liferaft lab cut aws --mode deny   make a provider answer like a suspended account (or down/throttle/error)
    liferaft lab cut-host a            cut a host's network
    liferaft lab heal                  undo every cut
    liferaft lab down                  stop everything, remove every namespace, link and mount
    """
    from liferaft.lab.core import default_lab_dir

    ctx.obj = {"lab_dir": lab_dir or str(default_lab_dir()), "parent": ctx.obj}


@lab.command()
@click.option("--timeout", type=float, callback=finite_seconds(), default=300.0, show_default=True,
              help="Seconds to wait until ready.")
@click.option("--no-example", is_flag=True, help="Do not deploy the example app on host a (`liferaft deploy` then "
                                                  "stands it up).")
@lab_dir_option
@json_option
@click.pass_context
def up(ctx: click.Context, timeout: float, no_example: bool, as_json: bool) -> int:
    """Start the lab in the background and wait until it is ready; prints where the stack file is."""
    the_lab = _lab(ctx, as_json)
    info = the_lab.up(timeout=timeout, example=not no_example)
    status = the_lab.status()
    if as_json:
        emit_json({"ok": status["healthy"], **status})
    else:
        con = stdout_console()
        con.print(f"lab up in {the_lab.directory}")
        con.print(f"  stack file:  {info.stack_file}")
        con.print(f"  app:         http://{info.app_fqdn}:{info.app_port}/ (A -> {info.primary_address}), "
                  f"DNS server {info.dns_server}")
        app = status.get("app", {})
        if not app.get("deployed"):
            con.print(f"  [yellow]{app.get('reason', 'example app not deployed')}[/yellow]")
        elif app.get("run"):
            con.print(f"  deployed:    by `liferaft deploy` run {app['run']} (journal: liferaft --state-dir "
                      f"{app.get('state_dir')} runs)")
        con.print(f"  try:         liferaft --stack {info.stack_file} health")
    return 0 if status["healthy"] else EXIT_CHECK_FAILED


@lab.command()
@lab_dir_option
@json_option
@click.pass_context
def down(ctx: click.Context, as_json: bool) -> int:
    """Stop every lab process and remove its namespaces, links and mounts."""
    result = _lab(ctx, as_json).down()
    if as_json:
        emit_json({"ok": True, **result})
    elif result.get("stopped"):
        click.echo(f"lab down in {result['seconds']:.1f} s")
    else:
        click.echo(f"nothing to stop: {result.get('reason')}")
    return 0


@lab.command()
@lab_dir_option
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> int:
    """What runs, where, and whether it is healthy (exit 1 when not)."""
    st = _lab(ctx, as_json).status()
    if as_json:
        emit_json(st)
    else:
        _render_status(st)
    return 0 if st["healthy"] else EXIT_CHECK_FAILED


def _render_status(st: dict[str, Any]) -> None:
    from rich.table import Table

    con = stdout_console()
    if not st["running"]:
        con.print(f"lab in {st['directory']}: [red]not running[/red] ({st.get('reason', st.get('status'))})")
        return
    verdict = "[green]healthy[/green]" if st["healthy"] else "[red]not healthy[/red]"
    con.print(f"lab in {st['directory']}: {verdict}")
    table = Table("process", "pid", "where", "health", "detail")
    for p in st["processes"]:
        where = p.get("url") or p.get("address") or ""
        detail = p.get("mode") or ("cut" if p.get("cut") else "")
        if p["kind"] == "host":
            detail = ("cut, " if p.get("cut") else "") + f"{p.get('ssh_sessions', 0)} ssh sessions"
        colour = "green" if p["health"] == "healthy" else "red"
        table.add_row(p["name"], str(p["pid"]), where, f"[{colour}]{p['health']}[/{colour}]", detail)
    con.print(table)
    app = st.get("app", {})
    app_line = app.get("health") if app.get("deployed") else app.get("reason", "not deployed")
    con.print(f"app {st['app_fqdn']}:{st['app_port']} on {st['primary_address']}: {app_line}")
    con.print(f"DNS server {st['dns_server']}  stack file {st['stack_file']}  alternates "
              f"{', '.join(st['alternate_sites'])}")


@lab.command()
@click.argument("provider")
@click.option("--mode", type=click.Choice(CUT_MODES), default="deny", show_default=True,
              help="deny: 403/401 like a suspended account; down: connections dropped; throttle: 503 SlowDown; "
                   "error: 500.")
@lab_dir_option
@json_option
@click.pass_context
def cut(ctx: click.Context, provider: str, mode: str, as_json: bool) -> int:
    """Make PROVIDER (aws, objstore, dnshost) fail through its fault proxy."""
    _lab(ctx, as_json).cut(provider, mode)
    if as_json:
        emit_json({"ok": True, "provider": provider, "mode": mode})
    else:
        click.echo(f"{provider}: {mode}")
    return 0


@lab.command("cut-host")
@click.argument("host")
@lab_dir_option
@json_option
@click.pass_context
def cut_host(ctx: click.Context, host: str, as_json: bool) -> int:
    """Cut HOST's network (a, b, c): connections to it time out."""
    _lab(ctx, as_json).cut_host(host)
    if as_json:
        emit_json({"ok": True, "host": host, "cut": True})
    else:
        click.echo(f"host {host}: network cut")
    return 0


@lab.command()
@lab_dir_option
@json_option
@click.pass_context
def heal(ctx: click.Context, as_json: bool) -> int:
    """Undo every cut: all providers forward, all hosts reachable."""
    _lab(ctx, as_json).heal()
    if as_json:
        emit_json({"ok": True})
    else:
        click.echo("healed: all providers forward, all hosts reachable")
    return 0


def _hook(ctx: click.Context, fn_name: str) -> int:
    import json
    import sys

    from liferaft.lab import drillcut

    try:
        request = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        raise UsageError("the drill hook reads one JSON object on stdin (see liferaft.drill.cut)") from None
    if not isinstance(request, dict):
        raise UsageError("the drill hook reads one JSON object on stdin (see liferaft.drill.cut)")
    emit_json(getattr(drillcut, fn_name)(ctx.obj["lab_dir"], request))
    return 0


@lab.command("drill-cut")
@lab_dir_option
@click.pass_context
def drill_cut(ctx: click.Context) -> int:
    """The lab's no-notice drill hook (`drill.cut` in the lab's stack file): reads the hook's JSON on stdin, cuts the
    source site's lab providers and host off, prints what it cut as JSON."""
    return _hook(ctx, "cut")


@lab.command("drill-heal")
@lab_dir_option
@click.pass_context
def drill_heal(ctx: click.Context) -> int:
    """The lab's heal hook (`drill.heal`): undoes exactly the cut described in the JSON on stdin."""
    return _hook(ctx, "heal")
