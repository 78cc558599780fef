"""`liferaft audit`: map each layer to its vendor and flag single points of vendor failure."""

from __future__ import annotations

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, stdout_console
from liferaft.errors import EXIT_CHECK_FAILED

STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


@click.command()
@click.option("--ns", "ns", multiple=True, help="The zone's NS hosts, instead of asking dns.nameserver (repeatable).")
@click.option("--no-dns", is_flag=True, help="Do not query DNS for the zone's NS records.")
@json_option
@pass_opts
def audit(opts: GlobalOptions, ns: tuple[str, ...], no_dns: bool, as_json: bool) -> int:
    """Which single vendor's termination takes down both the service and its way out. Exit 1 on critical findings."""
    from liferaft.audit import audit as run_audit

    stack = opts.stack()
    report = run_audit(stack, state_dir=opts.state_dir_path, ns_records=list(ns) if ns else None, check_ns=not no_dns)
    if as_json:
        emit_json({"ok": report.critical == 0, **report.to_dict()})
    else:
        from rich.table import Table

        con = stdout_console()
        layers = Table(title=f"{report.stack}: layers and their vendors", title_justify="left")
        for col in ("layer", "vendor(s)", "detail"):
            layers.add_column(col)
        for layer in report.layers:
            layers.add_row(layer.name, ", ".join(layer.vendors), layer.detail)
        con.print(layers)
        if report.findings:
            found = Table(title="findings", title_justify="left")
            for col in ("severity", "layer", "vendor", "finding", "fix"):
                found.add_column(col)
            for f in report.findings:
                found.add_row(f"[{STYLE[f.severity]}]{f.severity}[/]", f.layer, f.vendor, f.message, f.fix)
            con.print(found)
        for note in report.notes:
            con.print(f"[dim]note: {note}[/dim]")
        con.print(f"score [bold]{report.score}[/bold]/100, {report.critical} critical finding(s)")
    return EXIT_CHECK_FAILED if report.critical else 0
