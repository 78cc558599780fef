"""`liferaft replicate --to SITE [--watch | --stop]`: keep the standby's data current and report the lag (live RPO
exposure); `--stop` stops keeping it (subscription, and the slot at the source, dropped; the record forgotten).

Thin: parse, call liferaft.standby, render. Holds the site's lock (liferaft.engine.lock.SiteLock) while it runs:
a drill into the site is refused meanwhile, and it is refused while a drill or a run holds the site. It holds the
site as a keeper that yields: a failover run into the site sends it SIGTERM, and it ends its round in progress (or
its set-up), releases the site and exits 0. Exit codes: 0 every dataset synced in the last round, or stopped by
SIGTERM; 3 the source did not answer (the standby keeps its last copy; the state file says how stale it grows); the
lock's exit code when the site is in use; other liferaft errors as usual.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click

from liferaft.cli._common import (
    GlobalOptions,
    emit_json,
    event_printer,
    finite_seconds,
    json_option,
    pass_opts,
    stdout_console,
)
from liferaft.errors import EXIT_OK, EXIT_PROVIDER, UsageError


def _render(summary: dict[str, Any]) -> None:
    con = stdout_console()
    if "error" in summary and "databases" not in summary:
        con.print(f"[red]round failed:[/red] {summary['error']}")
        return
    rows = [("database", k, v) for k, v in summary["databases"].items()]
    rows += [("bucket", k, v) for k, v in summary["buckets"].items()]
    from liferaft.datasets.base import record_groups

    rows += [(g.removesuffix("s"), k, v) for g in record_groups() if g not in ("databases", "buckets")
             for k, v in (summary.get(g) or {}).items()]  # the other kinds (mysqls...)
    for kind, key, v in rows:
        state = "ok" if v.get("ok") else f"STALE ({(v.get('error') or '')[:80]})"
        con.print(f"{kind:<8} {key:<12} lag {v.get('lag_seconds', '?')} s, {v.get('lag_bytes', '?')} B  {state}")
    for key, v in (summary.get("images") or {}).items():
        state = "ok" if v.get("ok") else f"NOT MIRRORED ({(v.get('error') or '')[:80]})"
        con.print(f"{'image':<8} {key:<12} {v.get('lag_images', '?')} behind, lag {v.get('lag_seconds', '?')} s, "
                  f"{str(v.get('digest') or '-')[:19]} at {v.get('registry', '?')}  {state}")
    for key, v in (summary.get("services") or {}).items():
        state = "ok" if v.get("ok", True) else f"NOT CURRENT ({(v.get('error') or '')[:80]})"
        con.print(f"{'service':<8} {key:<12} {v.get('state', '?')} at the standby, digest "
                  f"{str(v.get('digest') or '-')[:12]}  {state}")
    tier = summary.get("tier") or "pilot-light"
    con.print(f"RPO exposure at {summary['target']}: {summary.get('rpo_exposure_s')} s; standby tier {tier} ("
              + ("services deployed and stopped: a cold failover starts them" if tier == "warm" else
                 "data only: a cold failover deploys the services") + ")")


@click.command("replicate")
@click.option("--to", "to", required=True, metavar="SITE", help="The alternate site holding the standby.")
@click.option("--watch", is_flag=True, help="Keep going: a round every --interval seconds.")
@click.option("--interval", type=float, callback=finite_seconds(0.2), default=None, metavar="S",
              help="Seconds between rounds (default: the stack's health.interval, at most 30).")
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="K",
              help="Stop after K rounds (with --watch).")
@click.option("--source-timeout", type=float, callback=finite_seconds(0.5), default=None, metavar="S",
              help="Give up on a source call after S seconds (default: the stack's health.timeout).")
@click.option("--prometheus", "prom_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Write the lag in Prometheus text format to FILE after each round (atomic).")
@click.option("--lower-ttl", type=click.IntRange(min=1, max=86400), default=None, metavar="S",
              help="Lower the service records' DNS TTLs to S seconds now, so resolvers follow a failover within S "
                   "seconds (the originals are kept and restored by --stop).")
@click.option("--status", "status", is_flag=True,
              help="Show what is recorded of the standby at SITE (tier, host, lag per dataset, services kept warm) "
                   "and change nothing: no set-up, no round, no lock.")
@click.option("--stop", "stop_it", is_flag=True,
              help="Stop keeping the standby: drop its subscription, and the replication slot and publication at "
                   "the source (a slot nobody reads keeps WAL there forever); forget it. Its host and copies stay.")
@json_option
@pass_opts
def replicate(opts: GlobalOptions, to: str, watch: bool, interval: float | None, count: int | None,
              source_timeout: float | None, prom_file: str | None, lower_ttl: int | None, status: bool,
              stop_it: bool, as_json: bool) -> int:
    """Keep the standby at SITE current: PostgreSQL by logical replication (or periodic dumps), buckets by
    incremental sync; report lag per dataset in seconds and bytes, and record it for failover, drill and audit."""
    from liferaft.engine.lock import SiteLock
    from liferaft.standby.keeper import ReplicateOptions

    if count is not None and not watch:
        raise UsageError("--count needs --watch")
    if stop_it and (watch or prom_file or interval is not None or lower_ttl is not None):
        raise UsageError("--stop takes none of --watch, --count, --interval, --prometheus, --lower-ttl")
    if status and (watch or stop_it or prom_file or interval is not None or lower_ttl is not None or count):
        raise UsageError("--status takes none of --watch, --count, --interval, --prometheus, --lower-ttl, --stop")
    stack = opts.stack()
    stack.site(to)  # an unknown site is a usage error, before any lock file is made for it
    if status:
        return _status(opts, stack, to, as_json)
    from liferaft.cli.status import fence_before_contact

    fence_before_contact(opts, stack, to, as_json)  # an old primary a cold failover left: fenced before anything
    if not stop_it:
        from liferaft.events import Events
        from liferaft.standby.fence import set_aside_old_copies

        # failback: the old primary's own copies set aside (kept, read-only) before a standby of the active site
        set_aside_old_copies(stack, opts.state_dir, to, Events(event_printer(as_json, opts.verbose)))
    health = stack.model.health
    ropts = ReplicateOptions(target=to, interval=interval or min(30.0, float(health.interval)),
                             source_timeout=source_timeout or float(health.timeout), lower_ttl=lower_ttl)
    # The site is this process's while it keeps the standby there: a drill or a failover run into the same site
    # would promote the standby this loop keeps syncing into (and it would undo their work).
    # A keeper yields the site to a failover run (SIGTERM: it ends its round, releases, exits 0); `--stop` is short
    # and must not be cut halfway, so it does not yield.
    by = "replicate --stop" if stop_it else "replicate --watch" if watch else "replicate"
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if not stop_it else None
    try:
        with SiteLock(opts.state_dir, stack.model.name, to).acquire(by=by, yields=not stop_it):
            if stop_it:
                return _stop(opts, stack, ropts, as_json)
            return _replicate(opts, stack, ropts, watch, count, prom_file, as_json, stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _status(opts: GlobalOptions, stack: Any, to: str, as_json: bool) -> int:
    """The standby record as it is (read-only); exit 0 when one is recorded, 2 (usage) when none is."""
    from liferaft.engine.standby_state import load_standby
    from liferaft.standby.keeper import summary_of

    rec = load_standby(opts.state_dir, stack.model.name, to)
    if rec is None or not rec.standby_host:
        tier = str(getattr(stack.site(to), "standby", "pilot-light"))
        raise UsageError(f"no standby is recorded at {to!r} (declared tier: {tier})",
                         hint=f"keep one with `liferaft replicate --to {to} --watch`")
    summary = summary_of(stack, to, rec.data)
    if as_json:
        emit_json({"ok": True, **summary})
        return EXIT_OK
    host = rec.standby_host
    answered = "answered" if summary.get("source_reachable") else "did NOT answer"
    stdout_console().print(f"standby at {to}: host {host.get('name')} ({host.get('address')}), tier "
                           f"{summary['tier']}; the source {answered} in the last round")
    _render(summary)
    return EXIT_OK


def _stop(opts: GlobalOptions, stack: Any, ropts: Any, as_json: bool) -> int:
    from liferaft.events import Events
    from liferaft.standby.keeper import Replicator

    with Replicator(stack, opts.state_dir, ropts, events=Events(event_printer(as_json, opts.verbose))) as rep:
        result = rep.stop()
    if as_json:
        emit_json({"ok": True, **result})
    else:
        stdout_console().print(f"the standby at {result['target']} is no longer kept (host {result['standby_host']} "
                               "and its copies left as they are)")
    return EXIT_OK


def _replicate(opts: GlobalOptions, stack: Any, ropts: Any, watch: bool, count: int | None, prom_file: str | None,
               as_json: bool, stop: threading.Event) -> int:
    from liferaft.events import Events
    from liferaft.standby.keeper import Replicator

    with Replicator(stack, opts.state_dir, ropts, events=Events(event_printer(as_json, opts.verbose))) as rep:
        return _keep(rep, stack, ropts, watch, count, prom_file, as_json, stop)


def _keep(rep: Any, stack: Any, ropts: Any, watch: bool, count: int | None, prom_file: str | None, as_json: bool,
          stop: threading.Event) -> int:
    from liferaft.health.report import write_atomic
    from liferaft.standby.exposure import prometheus_text
    from liferaft.standby.keeper import watch as watch_loop

    rep.setup_or_attach()
    rep.lower_ttls()

    def on_round(summary: dict[str, Any]) -> None:
        if prom_file:
            write_atomic(prom_file, prometheus_text(stack.model.name, rep.record))
        if as_json:
            click.echo(json.dumps(summary) if watch else "", nl=watch)
        elif watch:
            _render(summary)

    watched = watch_loop(rep, interval=ropts.interval, count=count if watch else 1, on_round=on_round, stop=stop)
    last = watched.last if watched.last is not None else rep.summary()
    if not watch:
        if as_json:
            emit_json({"ok": bool(last.get("source_reachable")), **last})
        else:
            _render(last)
    if stop.is_set():  # asked to stop (an operator, or a failover run taking the site): done as asked
        rep.emit("replicate.stopped_by_signal", f"stopped by SIGTERM after {watched.rounds} round(s); the site is "
                 "released", rounds=watched.rounds)
        return EXIT_OK
    return EXIT_OK if last.get("source_reachable") else EXIT_PROVIDER
