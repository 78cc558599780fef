"""`liferaft sync`: copy one bucket to another provider, incrementally, verified by content hash."""

from __future__ import annotations

from typing import Any

import click

from liferaft.cli._common import GlobalOptions, emit_json, event_printer, json_option, pass_opts
from liferaft.errors import UsageError


def _parse_side(text: str) -> tuple[str, str, str]:
    provider, sep, rest = text.partition(":")
    if not sep or not provider or not rest:
        raise UsageError(f"{text!r} is not PROVIDER:BUCKET[/PREFIX]", hint="e.g. aws:microblog-images")
    bucket, _, prefix = rest.partition("/")
    return provider, bucket, prefix


def _endpoint(opts: GlobalOptions, provider: str, bucket: str, prefix: str) -> Any:
    from liferaft.movers.objects import Endpoint
    from liferaft.providers.registry import open_provider

    stack = opts.stack()
    cfg = stack.provider(provider)

    def make() -> Any:
        p = open_provider(provider, cfg, stack.secret, state_dir=opts.state_dir, base_dir=stack.base_dir,
                          capabilities=("objects",))
        return p.require("objects")

    # one Objects per worker thread: SDK clients are not all thread-safe
    return Endpoint(provider, make(), bucket, prefix, factory=make)


def _sides(opts: GlobalOptions, source: str | None, target: str | None, bucket: str | None, from_site: str | None,
           to_site: str | None) -> tuple[Any, Any]:
    if source and target:
        if bucket or from_site or to_site:
            raise UsageError("give either SOURCE TARGET or --bucket/--from/--to, not both")
        return _endpoint(opts, *_parse_side(source)), _endpoint(opts, *_parse_side(target))
    if not (bucket and to_site):
        raise UsageError("give SOURCE TARGET (PROVIDER:BUCKET) or --bucket NAME --to SITE [--from SITE]")
    stack = opts.stack()
    buckets = stack.model.data.buckets
    if bucket not in buckets:
        raise UsageError(f"no bucket named {bucket!r} in the stack's data.buckets",
                         hint=f"buckets: {', '.join(buckets) or 'none'}")
    name = buckets[bucket].name
    src_site = stack.site(from_site or stack.model.primary)
    dst_site = stack.site(to_site)
    return _endpoint(opts, src_site.objects, name, ""), _endpoint(opts, dst_site.objects, name, "")


@click.command("sync")
@click.argument("source", required=False)
@click.argument("target", required=False)
@click.option("--bucket", help="A bucket of the stack (data.buckets) instead of SOURCE TARGET.")
@click.option("--from", "from_site", help="Source site (default: the stack's primary).")
@click.option("--to", "to_site", help="Target site.")
@click.option("--delete", is_flag=True, help="Also delete target objects that the source does not have.")
@click.option("--verify", is_flag=True, help="Afterwards read both sides and compare sha256 of every object.")
@click.option("--dry-run", is_flag=True, help="List and compare only; copy nothing.")
@click.option("--workers", type=click.IntRange(1, 128), default=16, show_default=True,
              help="Concurrent transfers.")
@json_option
@pass_opts
def sync(opts: GlobalOptions, source: str | None, target: str | None, bucket: str | None, from_site: str | None,
         to_site: str | None, delete: bool, verify: bool, dry_run: bool, workers: int, as_json: bool) -> int:
    """Copy SOURCE to TARGET (each PROVIDER:BUCKET[/PREFIX], providers from the stack file).

    \b
    Incremental: a manifest in the state dir remembers what was copied (size and sha256 at both ends), so a
    second run copies only what changed, and a run killed at any moment resumes without recopying finished
    objects. Deletes at the target only with --delete. --verify compares content hashes, never ETags, and marks
    what differs (e.g. corrupted at rest at the target) stale, so the same command again repairs it. The target
    bucket is created if it does not exist (not with --dry-run).
    Exit codes: 0 done (and verified), 1 verification found differences, 3 provider error, 4 copy failures.
    """
    from liferaft.events import as_events
    from liferaft.movers.objects import SyncOptions, verify_sync
    from liferaft.movers.objects import sync as do_sync

    src, dst = _sides(opts, source, target, bucket, from_site, to_site)
    events = as_events(event_printer(as_json, opts.verbose))
    result = do_sync(src, dst, opts.state_dir, SyncOptions(workers=workers, delete=delete, dry_run=dry_run,
                                                           create_target=True), events=events)
    out: dict[str, Any] = {"ok": True, "sync": result.to_dict()}
    report = None
    if verify and not dry_run:
        report = verify_sync(src, dst, workers=workers, allow_extra=not delete, raise_on_difference=False,
                             events=events, state_dir=opts.state_dir)
        out["verify"] = report.to_dict()
        out["ok"] = not report.missing and not report.differing and (not delete or not report.extra)
        if not out["ok"]:
            out["repair"] = _again(opts, source, target, bucket, from_site, to_site, delete)
    if as_json:
        emit_json(out)
    else:
        r = result
        n = r.listed - r.skipped if r.dry_run else r.copied
        click.echo(f"{r.source} -> {r.target}: {'would copy' if r.dry_run else 'copied'} {n}, current {r.skipped}, deleted {r.deleted}, {r.bytes_copied / 1e6:.1f} MB in {r.seconds:.2f} s "
                   f"({r.objects_per_s:.0f} objects/s, {r.mb_per_s:.1f} MB/s)")
        if report is not None:
            click.echo(f"verify: {report.checked} objects, {'ok' if out['ok'] else 'DIFFERENT'}")
            for p in report.problems()[:20]:
                click.echo(f"  {p}")
    if not out["ok"]:
        from liferaft.errors import EXIT_CHECK_FAILED, CheckFailed

        assert report is not None
        if as_json:  # the JSON document above already says what differs
            return EXIT_CHECK_FAILED
        again = out["repair"]
        stale = len(report.missing) + len(report.differing)
        raise CheckFailed(f"{dst.label()} differs from {src.label()}: {len(report.missing)} missing, "
                          f"{len(report.differing)} differing, {len(report.extra)} extra",
                          hint=(f"the {stale} missing or differing objects are marked stale; `{again}` copies them "
                                "again and verifies" if stale else f"objects appeared at the target meanwhile; `{again}` removes them"))
    return 0


def _again(opts: GlobalOptions, source: str | None, target: str | None, bucket: str | None, from_site: str | None,
           to_site: str | None, delete: bool) -> str:
    """The command that repairs what verification found: the same sync, with --verify."""
    import shlex

    argv = ["liferaft"]
    if opts.stack_path != "liferaft.yaml":
        argv += ["--stack", opts.stack_path]
    if opts.state_dir_opt:
        argv += ["--state-dir", opts.state_dir_opt]
    argv.append("sync")
    if source and target:
        argv += [source, target]
    else:
        argv += ["--bucket", str(bucket), "--to", str(to_site)] + (["--from", from_site] if from_site else [])
    argv += (["--delete"] if delete else []) + ["--verify"]
    return shlex.join(argv)
