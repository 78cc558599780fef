"""A drill's report in three forms, written side by side: JSON (for machines), Markdown (for a ticket or a wiki)
and a self-contained HTML page (inline CSS and SVG: no scripts, fonts or images from anywhere) with a timeline of
the phases and the objectives against the measured values.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from liferaft.drill.model import PHASES, DrillResult

PHASE_COLOURS = {"standby": "#bab0ac", "provision": "#4e79a7", "configure": "#59a14f", "data": "#f28e2b", "verify": "#b07aa1",
                 "dns": "#76b7b2", "teardown": "#9c755f"}


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    html: Path

    def to_dict(self) -> dict[str, str]:
        return {"json": str(self.json), "markdown": str(self.markdown), "html": str(self.html)}


def seconds(value: float | None) -> str:
    """12.345 -> '12.3 s'; 90 -> '1m 30s'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    if value < 60:
        return f"{value:.1f} s"
    m, s = divmod(round(value), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# ---------------------------------------------------------------------------------------------------- markdown
def to_markdown(r: DrillResult) -> str:
    lines = [f"# Drill {r.id}: {r.stack} {r.source} -> {r.target}", "",
             (f"**Result: {'PASSED' if r.passed else 'FAILED'}** ({r.scenario} scenario"
              + (f", {r.tier} standby" if r.tier else "") + f", {_when(r.started)}, {seconds(r.duration_s)} in all)"),
             ""]
    if r.error:
        lines += [f"Stopped early: {r.error}", ""]
    lines += ["| | measured | objective | |", "|---|---|---|---|",
              f"| RTO | {seconds(r.rto_s)} | {seconds(r.objective_rto_s)} | {_verdict(r.rto_met)} |",
              f"| RPO | {seconds(r.rpo_s)} | {seconds(r.objective_rpo_s)} | {_verdict(r.rpo_met)} |", "",
              ("RTO: from the cut (the primary switched off) to the first healthy answer of the service at the "
               "standby" if r.rto_from == "cut" else
               "RTO: from the start of the drill to the first healthy answer of the service at the target")
              + (f", reached through `{r.drill_record}`" if r.drill_record else "") + ".",
              ("RPO: acknowledged writes made before the cut that are missing at the target (their time span), "
              "else the replication lag at the cut."),
              *([(f"DNS: on the day, resolvers may still send clients to the old address for up to "
                  f"{r.dns_stale_for_s} s after the cut (the production records' TTL; `liferaft replicate "
                  f"--lower-ttl` lowers it ahead of time).")] if r.dns_stale_for_s is not None else []),
              "", "## Phases", "",
              "| phase | start (s) | end (s) | duration | status |", "|---|---|---|---|---|"]
    for p in r.phases:
        lines.append(f"| {p.name} | {p.start - r.started:.1f} | {p.end - r.started:.1f} | {seconds(p.duration_s)} "
                     f"| {p.status} |")
    lines += ["", "## Data", "", f"Verified: {'yes' if r.data.ok else 'NO'}"]
    for k, v in sorted(r.data.checked.items()):
        lines.append(f"- {k}: {v} checked")
    if r.data.replication_lag_s is not None:
        lines.append(f"- replication lag at the cut: {r.data.replication_lag_s:.3f} s"
                     + (f" ({r.data.replication_lag_bytes} bytes)" if r.data.replication_lag_bytes is not None
                        else ""))
    for problem in r.data.problems:
        lines.append(f"- problem: {problem}")
    for n in r.data.notes:
        lines.append(f"- note: {n}")
    if r.ledger:
        lg = r.ledger
        lines += ["", "## Write ledger", "",
                  f"- acknowledged before the cut: {lg.acknowledged_before_cut}",
                  f"- present at the target: {lg.present}",
                  f"- missing at the target: {lg.missing}; differing: {lg.mismatched}",
                  f"- acknowledged after the cut (not expected at the target): {lg.writes_after_cut}"]
    lines += ["", "## Target", "",
              f"- site {r.target}" + (f", address {r.target_address}" if r.target_address else ""),
              f"- drill record: {r.drill_record or '(none)'}; production DNS records untouched",
              f"- torn down: {'yes' if r.torn_down else 'no (kept with --keep)' if r.kept else 'NO'}",
              f"- journaled run: {r.run_id or 'n/a'} (`liferaft show {r.run_id}`)" if r.run_id else "- no run",
              ""]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------- html
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;
margin:0;background:#f4f5f7}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#5b6473}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}
.cards{display:flex;gap:16px;flex-wrap:wrap;margin-top:16px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px;min-width:200px;flex:1}
.card .k{color:#5b6473;font-size:13px}.card .v{font-size:26px;font-weight:700}
.card .o{font-size:13px}.met{color:#2e7d32}.missed{color:#c62828}
.panel{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 16px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3}
th{color:#5b6473;font-weight:600;font-size:13px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;fill:#1d2330}
ul{margin:4px 0;padding-left:20px}
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def timeline_svg(r: DrillResult, width: int = 920) -> str:
    """One bar per phase on a time axis from the drill's start; the measured RTO and the RTO objective as lines."""
    left, right, top, row = 110, 20, 28, 30
    phases = list(r.phases)
    origin = r.rto_origin - r.started  # the RTO's zero on the drill's time axis (the cut, in no-notice)
    span = max([r.duration_s, origin + (r.rto_s or 0.0)] + [p.end - r.started for p in phases] + [1.0])
    show_objective = origin + r.objective_rto_s <= span * 1.5
    axis_max = max(span, origin + r.objective_rto_s if show_objective else 0.0) * 1.04
    plot_w = width - left - right
    height = top + row * max(1, len(phases)) + 58

    def x(t: float) -> float:
        return left + plot_w * max(0.0, t) / axis_max

    out = [(f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="drill timeline">')]
    step = _tick(axis_max)
    t = 0.0
    while t <= axis_max:
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 6}" x2="{x(t):.1f}" y2="{height - 48}" stroke="#eceff3"/>')
        out.append(f'<text x="{x(t):.1f}" y="{height - 32}" text-anchor="middle">{t:g} s</text>')
        t += step
    for i, p in enumerate(phases):
        y = top + i * row
        x0, x1 = x(p.start - r.started), x(p.end - r.started)
        colour = "#c62828" if p.status == "failed" else PHASE_COLOURS.get(p.name, "#888")
        out.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{_esc(p.name)}</text>')
        out.append(f'<rect class="phase-bar" data-phase="{_esc(p.name)}" data-start="{p.start - r.started:.3f}" '
                   f'data-end="{p.end - r.started:.3f}" x="{x0:.1f}" y="{y + 4}" width="{max(2.0, x1 - x0):.1f}" '
                   f'height="{row - 10}" rx="3" fill="{colour}"><title>{_esc(p.name)}: '
                   f'{_esc(seconds(p.duration_s))} ({_esc(p.status)})</title></rect>')
        label = _esc(seconds(p.duration_s))
        if x1 + 60 <= width - right:
            out.append(f'<text x="{x1 + 6:.1f}" y="{y + 17}">{label}</text>')
        else:  # no room on the right: put the figure before the bar
            out.append(f'<text x="{x0 - 6:.1f}" y="{y + 17}" text-anchor="end">{label}</text>')
    bottom = height - 48
    if origin > 0:
        out.append(f'<line id="cut" x1="{x(origin):.1f}" y1="{top - 10}" x2="{x(origin):.1f}" y2="{bottom}" '
                   'stroke="#c62828" stroke-width="1"/>')
        out.append(f'<text x="{x(origin) + 4:.1f}" y="{bottom + 12}" fill="#c62828">cut</text>')
    if r.rto_s is not None:
        at = x(origin + r.rto_s)
        out.append(f'<line id="rto-measured" x1="{at:.1f}" y1="{top - 10}" x2="{at:.1f}" '
                   f'y2="{bottom}" stroke="#1d2330" stroke-width="2"/>')
        near_end = at + 100 > width - right
        out.append(f'<text x="{at + (-4 if near_end else 4):.1f}" y="{top - 14}" '
                   f'text-anchor="{"end" if near_end else "start"}">RTO {_esc(seconds(r.rto_s))}</text>')
    if show_objective:
        at = x(origin + r.objective_rto_s)
        out.append(f'<line id="rto-objective" x1="{at:.1f}" y1="{top - 10}" '
                   f'x2="{at:.1f}" y2="{bottom}" stroke="#c62828" stroke-width="2" '
                   'stroke-dasharray="6 4"/>')
        out.append(f'<text x="{at - 4:.1f}" y="{top - 14}" text-anchor="end" fill="#c62828">'
                   f'objective {_esc(seconds(r.objective_rto_s))}</text>')
    elif r.objective_rto_s > 0:
        out.append(f'<text x="{width - right}" y="{height - 8}" text-anchor="end" fill="#c62828">RTO objective '
                   f'{_esc(seconds(r.objective_rto_s))} (beyond the chart) &#8594;</text>')
    out.append("</svg>")
    return "".join(out)


def _tick(span: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 10:
            return float(step)
    return 7200.0


def gauge_svg(label: str, measured: float | None, objective: float, width: int = 440) -> str:
    """A bar for the measured value against a marker for the objective, on a scale covering both."""
    left, bar_w, h = 60, width - 60 - 90, 54
    scale = max(objective, measured or 0.0, 1e-9) * 1.1
    met = measured is not None and measured <= objective
    colour = "#2e7d32" if met else "#c62828"
    mw = 0.0 if measured is None else bar_w * measured / scale
    ox = left + bar_w * objective / scale
    return (f'<svg class="gauge" data-measure="{_esc(label)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{h}" viewBox="0 0 {width} {h}" role="img" aria-label="{_esc(label)} against its objective">'
            f'<text x="0" y="26">{_esc(label)}</text>'
            f'<rect x="{left}" y="12" width="{bar_w}" height="20" rx="3" fill="#eceff3"/>'
            f'<rect class="measured" x="{left}" y="12" width="{max(mw, 2.0):.1f}" height="20" rx="3" '
            f'fill="{colour}"/>'
            f'<line x1="{ox:.1f}" y1="6" x2="{ox:.1f}" y2="38" stroke="#1d2330" stroke-width="2" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{left + bar_w + 8}" y="26">{_esc(seconds(measured))}</text>'
            f'<text x="{ox:.1f}" y="50" text-anchor="middle">objective {_esc(seconds(objective))}</text></svg>')


def to_html(r: DrillResult) -> str:
    verdict = "PASSED" if r.passed else "FAILED"

    def card(name: str, value: float | None, objective: float, met: bool, ident: str) -> str:
        cls = "met" if met else "missed"
        return (f'<div class="card" id="{ident}"><div class="k">{name}</div>'
                f'<div class="v" data-seconds="{"" if value is None else f"{value:.3f}"}">{_esc(seconds(value))}'
                f'</div><div class="o {cls}">objective {_esc(seconds(objective))}: {_verdict(met)}</div></div>')

    rows = "".join(f"<tr><td>{_esc(p.name)}</td><td>{p.start - r.started:.1f}</td><td>{p.end - r.started:.1f}</td>"
                   f"<td>{_esc(seconds(p.duration_s))}</td><td>{_esc(p.status)}</td></tr>" for p in r.phases)
    data_items = [f"<li>{_esc(k)}: {v} checked</li>" for k, v in sorted(r.data.checked.items())]
    if r.data.replication_lag_s is not None:
        data_items.append(f"<li>replication lag at the cut: {r.data.replication_lag_s:.3f} s</li>")
    data_items += [f'<li class="missed">problem: {_esc(p)}</li>' for p in r.data.problems]
    data_items += [f"<li>{_esc(n)}</li>" for n in r.data.notes]
    ledger = ""
    if r.ledger:
        lg = r.ledger
        ledger = (f'<h2>Write ledger</h2><div class="panel" id="ledger"><ul>'
                  f"<li>acknowledged before the cut: {lg.acknowledged_before_cut}</li>"
                  f"<li>present at the target: {lg.present}</li>"
                  f"<li>missing at the target: {lg.missing}; differing: {lg.mismatched}</li>"
                  f"<li>acknowledged after the cut (not expected at the target): {lg.writes_after_cut}</li>"
                  "</ul></div>")
    error = f'<p class="missed">Stopped early: {_esc(r.error)}</p>' if r.error else ""
    teardown = "yes" if r.torn_down else ("no: kept with --keep" if r.kept else "NO")
    stale = ("" if r.dns_stale_for_s is None else f"<li>on the day, resolvers may still send clients to the old "
             f"address for up to {r.dns_stale_for_s} s after the cut (the production records' TTL)</li>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>liferaft drill {_esc(r.id)}: {verdict}</title><style>{CSS}</style></head>
<body><main>
<h1>Drill {_esc(r.id)} <span class="badge {'pass' if r.passed else 'fail'}" id="verdict">{verdict}</span></h1>
<div class="sub">stack <b>{_esc(r.stack)}</b>: {_esc(r.source)} &rarr; {_esc(r.target)} ({_esc(r.scenario)} scenario{_esc(", " + r.tier + " standby" if r.tier else "")}),
{_esc(_when(r.started))}, {_esc(seconds(r.duration_s))} in all</div>
{error}
<div class="cards">{card("RTO (recovery time)", r.rto_s, r.objective_rto_s, r.rto_met, "rto")}
{card("RPO (data loss window)", r.rpo_s, r.objective_rpo_s, r.rpo_met, "rpo")}</div>
<h2>Timeline</h2><div class="panel">{timeline_svg(r)}</div>
<h2>Objectives against the measured values</h2><div class="panel">
{gauge_svg("RTO", r.rto_s, r.objective_rto_s)}{gauge_svg("RPO", r.rpo_s, r.objective_rpo_s)}</div>
<h2>Phases</h2><div class="panel"><table id="phases"><tr><th>phase</th><th>start (s)</th><th>end (s)</th>
<th>duration</th><th>status</th></tr>{rows}</table></div>
<h2>Data</h2><div class="panel" id="data"><p>Verified: <b>{'yes' if r.data.ok else 'NO'}</b></p>
<ul>{''.join(data_items)}</ul></div>
{ledger}
<h2>Target</h2><div class="panel"><ul><li>site {_esc(r.target)}{', address ' + _esc(r.target_address)
 if r.target_address else ''}</li><li>drill record: {_esc(r.drill_record or '(none)')}; production DNS records
untouched</li><li>torn down: {teardown}</li><li>journaled run: {_esc(r.run_id or 'n/a')}</li>{stale}</ul></div>
<p class="sub">RTO: from the start of the drill to the first healthy answer of the service at the target. RPO:
acknowledged writes made before the cut that are missing at the target (their time span), else the replication lag
at the cut. Generated by liferaft.</p>
</main></body></html>
"""


# ------------------------------------------------------------------------------------------------------- write
def write_report(result: DrillResult, directory: str | Path) -> ReportFiles:
    """Write drill-<id>.json, .md and .html into `directory` (created); each file replaced atomically."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    base = d / f"drill-{result.id}"
    files = ReportFiles(json=base.with_suffix(".json"), markdown=base.with_suffix(".md"),
                        html=base.with_suffix(".html"))
    _atomic(files.json, json.dumps(result.to_dict(), indent=2) + "\n")
    _atomic(files.markdown, to_markdown(result))
    _atomic(files.html, to_html(result))
    return files


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["PHASES", "ReportFiles", "gauge_svg", "seconds", "timeline_svg", "to_html", "to_markdown",
           "write_report"]
