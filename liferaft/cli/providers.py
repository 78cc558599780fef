"""`liferaft providers`: provider types and capabilities; `liferaft providers check`: probe each account."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, stdout_console
from liferaft.errors import EXIT_PROVIDER, LiferaftError
from liferaft.providers.base import CAPABILITIES
from liferaft.providers.registry import CAPABILITY_MATRIX, PROVIDER_TYPES, TYPE_DESCRIPTIONS, capabilities_of


def _mark(on: bool) -> str:
    return "yes" if on else "-"


@click.group("providers", invoke_without_command=True)
@json_option
@pass_opts
@click.pass_context
def providers(ctx: click.Context, opts: GlobalOptions, as_json: bool) -> int:
    """Provider types and their capabilities; with a stack file, also the configured providers.

    \b
    Subcommand:  check   run every configured provider's account probe (credentials accepted? how fast?)
    """
    if ctx.invoked_subcommand is not None:
        return 0
    types = [{"type": t, "capabilities": list(CAPABILITY_MATRIX[t]), "description": TYPE_DESCRIPTIONS[t]}
             for t in PROVIDER_TYPES]
    configured: list[dict[str, Any]] = []
    stack_path = Path(opts.stack_path)
    if stack_path.exists():
        stack = opts.stack()
        for name, cfg in stack.model.providers.items():
            configured.append({"name": name, "type": cfg.type, "vendor": getattr(cfg, "vendor", cfg.type),
                               "capabilities": list(capabilities_of(cfg))})
    if as_json:
        emit_json({"types": types, "stack": str(stack_path) if configured else None, "providers": configured})
        return 0
    from rich.table import Table

    con = stdout_console()
    table = Table(title="provider types", title_justify="left")
    table.add_column("type")
    for c in CAPABILITIES:
        table.add_column(c, justify="center")
    table.add_column("what")
    for t in types:
        caps = list(t["capabilities"])
        table.add_row(str(t["type"]), *(_mark(c in caps) for c in CAPABILITIES), str(t["description"]))
    con.print(table)
    if configured:
        table = Table(title=f"providers in {stack_path}", title_justify="left")
        table.add_column("name")
        table.add_column("type")
        for c in CAPABILITIES:
            table.add_column(c, justify="center")
        table.add_column("vendor")
        for p in configured:
            table.add_row(p["name"], p["type"], *(_mark(c in p["capabilities"]) for c in CAPABILITIES),
                          p["vendor"])
        con.print(table)
    else:
        con.print(f"[dim]no stack file at {stack_path}: showing provider types only[/dim]")
    return 0


def probe_one(name: str, open_it: Any) -> dict[str, Any]:
    """Open one provider and run its account probe; never raises (the result says what failed)."""
    start = time.monotonic()
    try:
        provider = open_it()
        if provider.account is None:
            return {"name": name, "ok": False, "latency_s": None, "error": "UsageError",
                    "message": "this provider has no account probe"}
        result = provider.account.probe()
        return {"name": name, "type": provider.type, "ok": True, "latency_s": round(result.latency_s, 4),
                "account": result.account, "detail": result.detail, "error": None, "message": None}
    except LiferaftError as e:
        return {"name": name, "ok": False, "latency_s": round(time.monotonic() - start, 4),
                "error": type(e).__name__, "message": e.message, "hint": e.hint}


@providers.command("check")
@json_option
@pass_opts
def check(opts: GlobalOptions, as_json: bool) -> int:
    """Run each configured provider's account probe concurrently. Exit 3 if any provider fails."""
    from liferaft.providers.registry import open_provider

    stack = opts.stack()
    state_dir = opts.state_dir
    names = list(stack.model.providers)

    def opener(name: str) -> Any:
        return lambda: open_provider(name, stack.model.providers[name], stack.secret, state_dir=state_dir,
                                     base_dir=stack.base_dir)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as ex:
        results = list(ex.map(lambda n: probe_one(n, opener(n)), names))
    for r in results:
        r.setdefault("type", stack.model.providers[r["name"]].type)
    failed = [r for r in results if not r["ok"]]
    if as_json:
        emit_json({"ok": not failed, "elapsed_s": round(time.monotonic() - start, 3), "providers": results})
    else:
        from rich.table import Table

        table = Table(title="account probes", title_justify="left")
        for col in ("provider", "type", "result", "latency", "account / detail"):
            table.add_column(col)
        for r in results:
            lat = f"{r['latency_s'] * 1000:.0f} ms" if r["latency_s"] is not None else "-"
            if r["ok"]:
                table.add_row(r["name"], r["type"], "[green]ok[/green]", lat,
                              " ".join(x for x in (r.get("account"), r.get("detail")) if x))
            else:
                table.add_row(r["name"], r["type"], f"[red]{r['error']}[/red]", lat, r["message"] or "")
        stdout_console().print(table)
    return EXIT_PROVIDER if failed else 0
