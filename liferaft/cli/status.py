"""`liferaft status`: where the stack runs now (its active site, since when, by which run), the standbys kept and
their lag, the last drill, and the fencing of the site it left. Reads the state dir only: no network, creates
nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from liferaft.cli._common import GlobalOptions, emit_json, json_option, pass_opts, stdout_console
from liferaft.errors import EXIT_OK


def status_document(stack_name: str, file_primary: str, state_dir: Path, now: float | None = None) -> dict[str, Any]:
    """What the state dir says of the stack (pure reading; the shape `status --json` prints)."""
    from liferaft.drill import history
    from liferaft.engine.active import active_site, load_active
    from liferaft.engine.standby_state import load_state
    from liferaft.standby.exposure import rpo_exposure

    now = time.time() if now is None else now
    rec = load_active(state_dir, stack_name)
    site = active_site(rec, file_primary)
    standbys: dict[str, Any] = {}
    if (state_dir / "readiness" / f"{stack_name}.json").exists():
        for target, sb in sorted(load_state(state_dir, stack_name)["standbys"].items()):
            if not isinstance(sb, dict) or target == site:
                continue  # the active site's own former standby record: it was promoted, it is no standby now
            updated = sb.get("updated_at")
            standbys[target] = {
                "source": sb.get("source"), "host": (sb.get("standby_host") or {}).get("name"),
                "address": (sb.get("standby_host") or {}).get("address"),
                "rpo_exposure_s": rpo_exposure(sb), "last_round_at": updated,
                "last_round_ago_s": round(now - float(updated), 1) if updated else None,
                "source_error": sb.get("source_error"),
                # kept from the active site, and since the stack runs there (an older record is the copy a move
                # promoted, or one kept from a site the stack has left)
                "current": sb.get("source") == site and (rec is None or float(updated or 0) >= float(rec["since"])),
                "lag": {f"{group[:-1]}:{key}": {"lag_seconds": d.get("lag_seconds"), "lag_bytes": d.get("lag_bytes"),
                                                 "ok": d.get("ok")}
                        for group in ("databases", "buckets") for key, d in sorted((sb.get(group) or {}).items())
                        if isinstance(d, dict)}}
    drills = history.entries(state_dir, stack_name) if history.history_path(state_dir).exists() else []
    last = drills[-1].to_dict() if drills else None
    return {"stack": stack_name, "stack_file_primary": file_primary, "active_site": site,
            "moved": rec is not None, "since": (rec or {}).get("since"), "run": (rec or {}).get("run"),
            "mode": (rec or {}).get("mode"), "source": (rec or {}).get("source"),
            "hosts": (rec or {}).get("hosts") or [], "fence": (rec or {}).get("fence"),
            "standbys": standbys, "last_drill": last}


def _when(ts: Any) -> str:
    if not ts:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))


@click.command("status")
@json_option
@pass_opts
def status(opts: GlobalOptions, as_json: bool) -> int:
    """Where the stack runs now: active site, since when, by which run; standbys and their lag; the last drill;
    the fencing of the site it left. Reads the state dir only."""
    stack = opts.stack()
    file_primary = stack.file_primary or stack.model.primary
    doc = status_document(stack.model.name, file_primary, opts.state_dir_path)
    if as_json:
        emit_json(doc)
        return EXIT_OK
    con = stdout_console()
    if doc["moved"]:
        hosts = ", ".join(f"{h.get('name')} ({h.get('address')})" for h in doc["hosts"]) or "?"
        con.print(f"active site: [bold]{doc['active_site']}[/] since {_when(doc['since'])}, by run {doc['run']} "
                  + (f"({doc['mode']} from {doc['source']})" if doc['source'] != doc['active_site']
                     else f"({doc['mode']})") + f"; hosts: {hosts}")
        con.print(f"  the stack file is unchanged: it still names {file_primary} as primary")
    else:
        con.print(f"active site: [bold]{doc['active_site']}[/] (the stack file's primary; never moved)")
    fence = doc["fence"]
    if fence:
        host = (fence.get("host") or {}).get("address") or "?"
        con.print(f"old site {fence.get('site')} ({host}): {fence_words(fence)}")
        if fence.get("set_aside"):
            con.print("  its old copies, set aside there by the failback (kept, never deleted by liferaft): "
                      + "; ".join(str(d) for d in fence["set_aside"]))
    if not doc["standbys"]:
        con.print(f"standby: none kept from {doc['active_site']} ([dim]liferaft replicate --to SITE[/])")
    for target, sb in doc["standbys"].items():
        rpo = sb["rpo_exposure_s"]
        line = (f"standby at {target} on {sb['host']} ({sb['address']}), from {sb['source']}: lag "
                f"{'?' if rpo is None else f'{rpo:g} s'}, last round {_when(sb['last_round_at'])}")
        if not sb["current"]:
            line += " [yellow](not kept from the active site since the stack runs there: stale)[/]"
        con.print(line)
    d = doc["last_drill"]
    con.print("last drill: none" if d is None else
              f"last drill: {d['id']} {d['source']} -> {d['target']} ({d['scenario']}), "
              f"{'passed' if d['passed'] else 'FAILED'}, RTO {d['rto_s']} s, RPO {d['rpo_s']} s, "
              f"{_when(d['started'])}")
    return EXIT_OK


def fence_words(fence: dict[str, Any]) -> str:
    state = fence.get("state")
    if state == "pending":
        return ("NOT FENCED YET: a cold failover never reached it; the next liferaft command that reaches it "
                "(health, replicate --to it) stops its services and makes its databases read-only first")
    if state == "read-only":
        return "read-only: the live failover's freeze left its databases read-only"
    if state == "fenced":
        detail = [str(d) for d in fence.get("detail") or []]
        return f"fenced at {_when(fence.get('fenced_at'))}: " + ("; ".join(detail) if detail else
                                                                 "services stopped, databases read-only")
    return str(state)


def fence_before_contact(opts: GlobalOptions, stack: Any, site: str, as_json: bool) -> None:
    """A command about to touch `site` (replicate --to it, failover --to it): if a cold failover left it unfenced,
    fence it first (liferaft.standby.fence); if that cannot be done now, refuse (exit 3) before anything touches
    it, since its services could still take writes nobody carries over."""
    from liferaft.cli._common import event_printer
    from liferaft.engine.active import fence_pending, load_active
    from liferaft.errors import ProviderError
    from liferaft.events import Events
    from liferaft.standby.fence import fence_pending_site

    if fence_pending(load_active(opts.state_dir_path, stack.model.name), site) is None:
        return
    fence = fence_pending_site(stack, opts.state_dir, Events(event_printer(as_json, opts.verbose)), site=site,
                               timeout=float(stack.model.health.timeout))
    if fence is not None and fence.get("state") == "pending":
        raise ProviderError(site, "fence", f"the old site {site} is not fenced yet and must be before liferaft "
                            f"touches it: {fence.get('error')}",
                            hint="bring its host back (or fence it by hand: stop its services, make its databases "
                                 "read-only), then run the command again; `liferaft status` shows the fence")
