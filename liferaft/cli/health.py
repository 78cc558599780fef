"""`liferaft health`: is each provider still serving me? A verdict per provider and site, with the evidence."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from liferaft.cli._common import (
    GlobalOptions,
    VerdictCommand,
    console,
    emit_json,
    event_printer,
    finite_seconds,
    json_option,
    pass_opts,
    stdout_console,
)
from liferaft.events import Event, Events

VERDICT_STYLE = {"healthy": "green", "degraded": "yellow", "unreachable": "red", "terminated": "bold red",
                 "unknown": "dim"}
EXIT_HELP = ("Exit codes: 0 healthy, 1 degraded, 2 unreachable, 3 terminated (the worst verdict wins); no verdict: "
             "64 usage error, 78 invalid stack file or unreadable credentials, 69 another error, 70 a bug.")


def _styled(verdict: str) -> str:
    return f"[{VERDICT_STYLE.get(verdict, '')}]{verdict}[/]"


def render_report(report: Any, con: Any) -> None:
    from rich.table import Table

    t = Table(title=f"liferaft health: {report.stack} — {report.verdict.value} ({report.duration_s:.2f} s)",
              title_justify="left")
    for col in ("provider/site", "verdict", "rule", "why"):
        t.add_column(col, overflow="fold")
    for j in report.providers:
        t.add_row(f"provider {j.name}", _styled(j.verdict.value), j.rule, j.reason)
    for j in report.sites:
        parts = ", ".join(f"{p}={v}" for p, v in j.parts.items())
        certs = j.certificates
        expiry = (f"; certificate expires in {certs[0]['days_left']:.0f} days ("
                  + ", ".join(x for x in (certs[0]["not_after"] or "",
                                          f"soonest of {len(certs)}" if len(certs) > 1 else "") if x)
                  + ")") if certs else ""
        t.add_row(f"site {j.name} ({j.role})", _styled(j.verdict.value), j.rule,
                  f"{j.reason}{expiry} [dim]({parts})[/]")
    con.print(t)
    e = Table(title="evidence", title_justify="left")
    for col in ("subject", "probe", "outcome", "status/code", "latency", "detail"):
        e.add_column(col, overflow="fold")
    for ev in report.evidence:
        sc = " ".join(x for x in (str(ev.status) if ev.status else "", ev.code or "") if x)
        lat = f"{ev.latency_s * 1000:.0f} ms" if ev.latency_s is not None else ""
        style = "green" if ev.ok else "red" if ev.outcome in ("auth_rejected", "unreachable", "timeout") else "yellow"
        e.add_row(ev.subject.split(":", 1)[1], ev.probe, f"[{style}]{ev.outcome}[/]", sc, lat, ev.detail)
    con.print(e)


def _render_explain(x: dict[str, Any], con: Any) -> None:
    con.print(f"verdict now: {_styled(x['verdict'])}")
    con.print(f"policy: failover_on={x['failover_on']}, target={x['target'] or '(none)'}")
    if x["would_failover"]:
        con.print(f"[bold]would start:[/] liferaft {' '.join(x['command'][2:])}  [dim](not started: --explain)[/]")
        con.print(f"mode {x['mode']}: {x['mode_why']}")
    else:
        con.print("would not fail over")
    con.print(f"because: {x['why']}")
    con.print(f"hook: {' '.join(x['hook']) if x['hook'] else '(none)'}; webhook: {x['webhook'] or '(none)'}")
    con.print(f"[dim]{x['note']}[/]")


@click.command("health", cls=VerdictCommand, epilog=EXIT_HELP)
@json_option
@click.option("--prometheus", "prom_file", type=click.Path(dir_okay=False), default=None,
              help="Also write Prometheus text exposition to FILE (atomically; for node_exporter's textfile "
                   "collector). Rewritten every round under --watch.")
@click.option("--timeout", type=float, callback=finite_seconds(), default=None,
              help="Per-probe timeout in seconds (default: stack file).")
@click.option("--canary/--no-canary", default=None,
              help="Put/get/delete a tiny object at the primary site's objects provider (default: stack file).")
@click.option("--watch", is_flag=True, help="Repeat; change a verdict only after --confirm agreeing results.")
@click.option("--interval", type=float, callback=finite_seconds(), default=None,
              help="Seconds between checks under --watch.")
@click.option("--confirm", type=click.IntRange(1, 100), default=None,
              help="Agreeing results in a row before a verdict changes (default: stack file).")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop --watch after this many checks.")
@click.option("--explain", is_flag=True, help="Show what the watch policy would do now, without doing it.")
@pass_opts
def health(opts: GlobalOptions, as_json: bool, prom_file: str | None, timeout: float | None, canary: bool | None,
           watch: bool, interval: float | None, confirm: int | None, count: int | None, explain: bool) -> int:
    """Probe every provider and site: a verdict each (healthy, degraded, unreachable, terminated) with evidence.

    Probes run concurrently, each with its own timeout: account, buckets, hosts, zone, the services' health
    endpoints, TLS expiry, DNS answers from the authoritative server, and an optional write canary.
    """
    from liferaft.health.probes import fail_fast_retries

    if not watch and (count is not None or interval is not None):
        raise click.UsageError("--count and --interval need --watch")
    if watch and explain:
        raise click.UsageError("--explain shows what --watch would do; use one or the other")
    with fail_fast_retries():
        return _health(opts, as_json, prom_file, timeout, canary, watch, interval, confirm, count, explain)


def _health(opts: GlobalOptions, as_json: bool, prom_file: str | None, timeout: float | None, canary: bool | None,
            watch: bool, interval: float | None, confirm: int | None, count: int | None, explain: bool) -> int:
    from liferaft.health import check_health, prometheus_text, write_atomic
    from liferaft.health import explain as explain_policy
    from liferaft.health import watch as watch_loop
    from liferaft.health.probes import caching_opener, default_opener

    stack = opts.stack()
    _check_credentials(stack)
    settings = stack.model.health
    confirm_n = confirm or settings.confirm
    state_dir = opts.state_dir
    opener = caching_opener(default_opener(stack, str(state_dir)))

    fenced: dict[str, Any] = {}

    def check() -> Any:
        fenced["fence"] = _fence_first(opts, stack, timeout)  # before any probe, at every round of a watch too
        report = check_health(stack, opener=opener, timeout=timeout, canary=canary)
        if prom_file:
            write_atomic(prom_file, prometheus_text(report))
        return report

    standby_at, moved = _readiness(state_dir, stack.model.name)
    standing_run = _standing_run(state_dir, stack.model.name)
    if explain:
        report = check()
        x = explain_policy(stack, report, confirm=confirm_n, standby_at=standby_at, moved=moved())
        if as_json:
            emit_json({"report": report.to_dict(), "explain": x})
        else:
            render_report(report, stdout_console())
            _render_explain(x, stdout_console())
        return int(report.exit_code)

    if not watch:
        report = check()
        fence = fenced.get("fence")
        standbys = _standbys(state_dir, stack.model.name)
        moved_to = _safe(moved)
        if as_json:
            emit_json({**report.to_dict(), "standbys": standbys, "moved": moved_to, "fence": fence})
        else:
            render_report(report, stdout_console())
            _render_standbys(standbys, stdout_console())
            if moved_to and moved_to.get("site") != (stack.file_primary or stack.model.primary):
                stdout_console().print(f"moved: the stack runs at {moved_to.get('site')} since run "
                                       f"{moved_to.get('run')} ({moved_to.get('mode')}); the stack file still names "
                                       f"{stack.file_primary or stack.model.primary} as primary")
            if fence:
                from liferaft.cli.status import fence_words

                stdout_console().print(f"old site {fence.get('site')}: {fence_words(fence)}")
        return int(report.exit_code)

    events = Events(_watch_renderer(as_json, opts.verbose))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        result = watch_loop(stack, check, interval=settings.interval if interval is None else interval,
                            confirm=confirm_n, count=count, state_dir=state_dir, events=events, stop=stop,
                            standby_at=standby_at, moved=moved, standing_run=standing_run)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        emit_json({"watch": result.to_dict()})
    else:
        con = stdout_console()
        confirmed = ", ".join(f"{s}={_styled(v.value)}" for s, v in sorted(result.confirmed.items())) or "none yet"
        con.print(f"watch: {result.rounds} round(s); confirmed: {confirmed}; verdict {_styled(result.verdict.value)}")
        if result.moved and (result.failover or {}).get("outcome") == "moved":
            con.print(f"the stack moved to {result.moved['site']} (run {result.moved['run']}): the watch ended")
    if (result.failover or {}).get("outcome") == "moved":
        return 0  # this watch's failover completed: the stack is served from the alternate
    return int(result.verdict.exit_code)


def _fence_first(opts: GlobalOptions, stack: Any, timeout: float | None) -> dict[str, Any] | None:
    """Before any probe: a site a cold failover left, answering again, is fenced now (its services stopped, its
    databases read-only: liferaft.standby.fence). The fence record as it stands after (None: nothing moved)."""
    from liferaft.engine.active import load_active
    from liferaft.errors import LiferaftError
    from liferaft.standby.fence import fence_pending_site

    try:
        rec = load_active(opts.state_dir_path, stack.model.name)
        if rec is None or not rec.get("fence"):
            return None
        wait = min(3.0, stack.model.health.timeout if timeout is None else timeout)  # a host still cut: no hang
        after = fence_pending_site(stack, opts.state_dir, Events(event_printer(False, opts.verbose)), timeout=wait)
        return after or rec.get("fence")
    except LiferaftError as e:
        return {"error": str(e)}


def _check_credentials(stack: Any) -> None:
    """Every provider's secret references must resolve before any probe runs: an unreadable credential is a
    configuration error (exit 78) naming the reference, not a 'degraded' verdict for every provider."""
    from liferaft.errors import SecretError
    from liferaft.stack.secrets import secret_refs

    problems = []
    for where, ref in secret_refs(stack.model):
        if not where.startswith("providers."):
            continue  # database passwords and the like: health never reads them
        try:
            stack.secret(ref)
        except SecretError as e:
            problems.append(f"{where}: {e.message}")
    if problems:
        raise SecretError("cannot read the credentials health needs (no provider was probed):\n  "
                          + "\n  ".join(problems),
                          hint="set the environment variables or create the files the stack file references; "
                               "`liferaft validate --check-secrets` lists them all")


def _safe(moved: Any) -> Any:
    """The move record for a report: an unreadable one is said, never fatal to a health check."""
    from liferaft.errors import LiferaftError

    try:
        return moved()
    except LiferaftError as e:
        return {"error": str(e)}


def _standing_run(state_dir: Any, stack: str) -> Any:
    """site -> the newest failover run into it left failed or stopped (not a drill), for the watch to resume
    instead of starting a second run."""
    from liferaft.engine.journal import Journal, journal_path
    from liferaft.steps.drill import is_drill

    def find(site: str) -> str | None:
        path = journal_path(state_dir, stack)
        if not path.exists():
            return None
        with Journal(path) as journal:
            for r in journal.runs():
                if (r.target == site and r.status in ("failed", "stopped", "running") and r.mode != "standby"
                        and not is_drill(r.plan.steps)):  # a standby set-up moves nothing
                    return r.id
        return None

    return find


def _readiness(state_dir: Any, stack: str) -> tuple[Any, Any]:
    """What the watch reads from the readiness state: is a standby recorded at a site (cold failover possible)?
    and the stack's move record (a failover moved it: never fail over from the old primary again)."""
    from liferaft.engine.standby_state import load_move, load_standby
    from liferaft.errors import LiferaftError

    def standby_at(site: str) -> bool:
        try:
            rec = load_standby(state_dir, stack, site)
        except LiferaftError:
            return False
        return bool(rec and rec.standby_host)

    def moved() -> dict[str, Any] | None:
        return load_move(state_dir, stack)

    return standby_at, moved


def _standbys(state_dir: Any, stack: str) -> dict[str, Any]:
    """The recorded standbys' RPO exposure (readiness state file; unreadable -> reported, never fatal)."""
    from liferaft.errors import LiferaftError
    from liferaft.standby.exposure import exposure

    try:
        return exposure(state_dir, stack)
    except LiferaftError as e:
        return {"error": str(e)}


def _render_standbys(standbys: dict[str, Any], con: Any) -> None:
    if "error" in standbys:
        con.print(f"standby: [yellow]{standbys['error']}[/]")
        return
    if not standbys:
        con.print("standby: none recorded; a no-notice cut would lose everything not copied elsewhere "
                  "([dim]liferaft replicate --to SITE --watch[/])")
        return
    for target, s in standbys.items():
        rpo = s["rpo_exposure_s"]
        age = s["measured_ago_s"]
        line = (f"standby at {target} ({s['standby_host']}): a cut now would lose about "
                f"{'?' if rpo is None else f'{rpo:g}'} s of writes (measured {'?' if age is None else f'{age:g}'} s ago)")
        if s.get("source_error"):
            line += f"; last replicate error: {s['source_error']}"
        con.print(line)


def _watch_renderer(as_json: bool, verbose: int) -> Any:
    """Per round: a JSON line on stdout (--json) or one line on stderr; changes and actions as they happen."""
    plain = event_printer(as_json, verbose)
    con = None if as_json else console()
    out_lock = threading.Lock()  # failover events come from the supervisor's thread

    def observe(event: Event) -> None:
        if event.kind == "health.probe":
            return
        if as_json and event.kind.startswith("health.failover."):  # the automatic failover, as it happens
            with out_lock:
                sys.stdout.write(json.dumps({"failover": event.data["failover"]}) + "\n")
                sys.stdout.flush()
        if event.kind == "health.round":
            report = event.data["report"]
            if as_json:
                with out_lock:
                    sys.stdout.write(json.dumps({"round": event.data["round"], "confirmed": event.data["confirmed"],
                                                 "report": report.to_dict()}) + "\n")
                    sys.stdout.flush()
            else:
                assert con is not None
                raw = ", ".join(f"{s}={_styled(v.value)}" for s, v in report.verdicts().items())
                con.print(f"[dim]round {event.data['round']}[/] {_styled(report.verdict.value)} "
                          f"({report.duration_s:.2f} s): {raw}")
            return
        with out_lock:
            plain(event)

    return observe
