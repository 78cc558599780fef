"""How a run or a drill looks while it runs: a live display in a terminal, a short log elsewhere.

`run_display(as_json, verbose)` returns the observer the failover and drill commands give the engine:

- `--json`: every event as a JSON line on stderr (unchanged: scripts read it);
- `-v`: every event as a line on stderr, kind first (the full stream, as before this display existed);
- stderr a terminal: a live view (rich) redrawn in place: the plan's steps with their state (waiting, running with
  the time so far, done with its duration, failed), a progress bar under each running data copy (bytes or objects
  or rows, rate, ETA), the write freeze while it lasts; the few events an operator must see (a failure, the DNS
  cut, the write-unavailability window, a warning) are printed above it. Skipped Ansible tasks never show: a running
  step shows the task it is at;
- otherwise (CI, a pipe, a log file): one line per step start and end, one per 10 % of each data copy, the same few
  notable events, no redraws.

The display is a context manager: the command closes it before printing its summary on stdout.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from liferaft.cli._common import _json_default, terminal_safe

if TYPE_CHECKING:
    from liferaft.events import Event

# Events an operator must see even without -v (besides steps and progress): what changed for users, what went wrong.
NOTABLE = frozenset({
    "run.started", "run.resumed", "run.stopped", "run.done", "rollback.started", "rollback.done",
    "failover.window", "failover.data_loss", "dns.updated", "dns.restored", "db.writable", "site.taking",
    "site.taken", "ansible.unreachable", "ansible.task.failed", "standby.promoted", "standby.source_kept",
    "standby.source_unknown",
})
NOTABLE_PREFIXES = ("drill.",)
QUIET = frozenset({"step.undo_skipped", "run.progress"})  # said by other lines already
FREEZE_KINDS = frozenset({"cutover.freeze"})
DATA_KINDS = frozenset({"data.seed", "cutover.freeze", "standby.objects", "drill.cut"})


def _notable(kind: str) -> bool:
    return (kind in NOTABLE or kind.startswith(NOTABLE_PREFIXES) or kind.endswith((".warning", ".failed"))) \
        and not kind.endswith(".debug")


def _notable_line(ev: Event) -> str:
    k, msg = ev.kind, ev.message
    if k.endswith(".warning"):
        return f"warning: {msg}"
    if k == "ansible.task.failed":
        return f"task failed: {msg}"
    if k == "ansible.unreachable":
        return f"unreachable: {msg}"
    if k.endswith(".failed") and not k.startswith("drill."):
        return f"failed: {msg}"
    return msg


def _plain(ev: Event) -> str:
    """An event's message without its kind in front (movers' messages repeat it: "pg.target.kept database=x")."""
    msg = ev.message.strip()
    if msg.startswith(ev.kind):
        msg = ev.kind.split(".", 1)[-1].replace(".", " ").replace("_", " ") + msg[len(ev.kind):]
    return msg


def human_bytes(n: float) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


@dataclass
class Progress:
    """One data copy's progress, from its events' `done`/`total` (and `bytes`/`total_bytes` when it counts bytes)."""

    unit: str
    done: float = 0
    total: float = 0
    bytes: float | None = None
    total_bytes: float | None = None
    first: tuple[float, float] | None = None  # (ts, amount) of the first sample: the rate is measured from it
    last_ts: float = 0.0
    decile: int = 0  # the last tenth reported: a line at 10 %, 20 % ... 100 %

    def fraction(self) -> float:
        if self.total_bytes:
            return min(1.0, (self.bytes or 0) / self.total_bytes)
        return min(1.0, self.done / self.total) if self.total else 0.0

    def amount(self) -> float:
        return float(self.bytes or 0) if self.total_bytes else float(self.done)

    def rate(self) -> float | None:
        """Per second, bytes when it counts bytes, else units; None until two samples are apart in time."""
        if self.first is None or self.last_ts - self.first[0] < 0.2:
            return None
        return max(0.0, (self.amount() - self.first[1]) / (self.last_ts - self.first[0]))

    def eta(self) -> float | None:
        r = self.rate()
        if not r:
            return None
        left = (self.total_bytes - (self.bytes or 0)) if self.total_bytes else (self.total - self.done)
        return max(0.0, left / r)

    def describe(self) -> str:
        parts = [f"{int(self.done)}/{int(self.total)} {self.unit}"]
        if self.total_bytes:
            parts.append(f"{human_bytes(self.bytes or 0)}/{human_bytes(self.total_bytes)}")
        r = self.rate()
        if r is not None:
            parts.append(f"{human_bytes(r)}/s" if self.total_bytes else f"{r:.0f} {self.unit}/s")
        eta = self.eta()
        if eta is not None and self.fraction() < 1:
            parts.append(f"ETA {human_seconds(eta)}")
        return ", ".join(parts)


def progress_of(event: Event) -> tuple[str, float, float, float | None, float | None] | None:
    """(unit, done, total, bytes, total_bytes) when the event reports a data copy's progress, else None."""
    d = event.data
    if event.kind == "run.progress":
        return None
    if event.kind == "pg.logical.syncing" and isinstance(d.get("tables"), (int, float)):
        tables = float(d["tables"])
        return ("tables", tables - float(d.get("tables_pending") or 0), tables, None, None) if tables else None
    done, total = d.get("done"), d.get("total")
    if not isinstance(done, (int, float)) or not isinstance(total, (int, float)) or isinstance(done, bool) \
            or total <= 0:
        return None
    unit = str(d.get("unit") or ("objects" if event.kind.startswith("objects.") else
                                  "rows" if event.kind.startswith("pg.") else "items"))
    b, tb = d.get("bytes"), d.get("total_bytes")
    if isinstance(b, (int, float)) and isinstance(tb, (int, float)) and tb > 0:
        return unit, float(done), float(total), float(b), float(tb)
    return unit, float(done), float(total), None, None


@dataclass
class StepView:
    id: str
    title: str = ""
    kind: str = ""
    state: str = "waiting"  # waiting | running | done | failed | undoing | undone | skipped
    started: float | None = None
    duration: float | None = None
    error: str = ""
    activity: str = ""
    progress: dict[str, Progress] = field(default_factory=dict)


class RunModel:
    """What the display knows of the run, updated from events (under a lock: events and redraws are on different
    threads). `update` returns the lines to print for the event (non-terminal mode: the whole output)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.header = ""
        self.started: float | None = None
        self.steps: dict[str, StepView] = {}
        self.freeze_started: float | None = None
        self.freeze_ended: float | None = None
        self.window: float | None = None
        self.rollback = False
        self.planning = ""  # what the planner observes, before a run starts

    def _step(self, sid: str) -> StepView:
        if sid not in self.steps:
            self.steps[sid] = StepView(sid)
        return self.steps[sid]

    def update(self, ev: Event) -> list[str]:
        k, d = ev.kind, ev.data
        sid = str(d.get("step") or "")
        with self.lock:
            if k in ("run.started", "rollback.started", "run.resumed"):
                self.header, self.started, self.rollback = ev.message, ev.ts, k == "rollback.started"
                self.planning = ""
                ids = d.get("steps")
                if isinstance(ids, list):
                    self.steps = {str(s): StepView(str(s)) for s in ids}
                    for sid_done in d.get("done") or ():
                        if str(sid_done) in self.steps:
                            self.steps[str(sid_done)].state = "done"
                elif k != "run.resumed":
                    self.steps = {}
                self.freeze_started = self.freeze_ended = None
                return [ev.message]
            if k == "step.started" and sid:
                s = self._step(sid)
                s.state, s.started, s.kind, s.error, s.activity = "running", ev.ts, str(d.get("step_kind") or ""), "", ""
                s.title = ev.message.split("] ", 1)[-1]
                s.progress.clear()
                if s.kind in FREEZE_KINDS and self.freeze_started is None:
                    self.freeze_started = ev.ts
                    return [f"{ev.message}  -- writes frozen at the source from now"]
                return [ev.message]
            if k == "step.done" and sid:
                s = self._step(sid)
                s.state, s.activity = "done", ""
                s.duration = float(d.get("duration_s") or (ev.ts - (s.started or ev.ts)))
                return [ev.message]
            if k == "step.failed" and sid:
                s = self._step(sid)
                s.state, s.error, s.activity = "failed", str(d.get("error") or ev.message), ""
                if s.started is not None:
                    s.duration = ev.ts - s.started
                return [f"FAILED: {ev.message}"]
            if k == "step.undoing" and sid:
                s = self._step(sid)
                s.state, s.started, s.title = "undoing", ev.ts, ev.message
                return [ev.message]
            if k == "step.undone" and sid:
                s = self._step(sid)
                s.state, s.duration = "undone", ev.ts - (s.started or ev.ts)
                return [ev.message]
            if k == "step.undo_skipped" and sid:
                self._step(sid).state = "skipped"
                return []
            if k == "step.skipped" and sid:
                self._step(sid).state = "done"
                return [ev.message]
            if k == "failover.window":
                self.window = float(d.get("window_s") or d.get("write_unavailable_s") or 0) or None
                self.freeze_ended = ev.ts
            if k in ("run.done", "run.stopped", "rollback.done") and self.freeze_started and not self.freeze_ended:
                self.freeze_ended = ev.ts
            prog = progress_of(ev)
            if prog is not None and not sid:
                sid = self._copying_step(k)
            if prog is not None and sid:
                return self._progress(sid, ev, prog)
            if k == "ansible.task.start" and sid in self.steps:
                host, task = d.get("host"), d.get("task") or ev.message
                self.steps[sid].activity = f"{host}: {task}" if host else str(task)
                return []
            if k in QUIET:
                return []
            if _notable(k):
                return [_notable_line(ev)]
            if sid in self.steps and self.steps[sid].state == "running":
                self.steps[sid].activity = _plain(ev)
            elif self.started is None and ev.message:
                self.planning = ev.message
            return []

    def _copying_step(self, kind: str) -> str:
        """The running step a data copy's progress without a step id belongs to (movers are given the run's events,
        not the step's): the one of the same family (objects.progress -> objects.*), else a data step, else the
        only running step. Two copies of one family side by side cannot be told apart: the first gets both."""
        running = [s for s in self.steps.values() if s.state == "running"]
        family = kind.split(".", 1)[0]
        for pick in ([s for s in running if s.kind.split(".", 1)[0] == family],
                     [s for s in running if s.kind in DATA_KINDS], running if len(running) == 1 else []):
            if pick:
                return pick[0].id
        return ""

    def _progress(self, sid: str, ev: Event, prog: tuple[str, float, float, float | None, float | None]
                  ) -> list[str]:
        unit, done, total, b, tb = prog
        s = self._step(sid)
        p = s.progress.get(ev.kind)
        if p is None or done < p.done:  # a new copy (or a restarted one) in the same step
            p = s.progress[ev.kind] = Progress(unit)
        p.done, p.total, p.bytes, p.total_bytes, p.last_ts = done, total, b, tb, ev.ts
        if p.first is None:
            p.first = (ev.ts, p.amount())
        decile = math.floor(p.fraction() * 10 + 1e-9)
        if decile <= p.decile:
            return []
        p.decile = decile
        return [f"  {sid}: {decile * 10}% ({p.describe()})"]

    # ---------------------------------------------------------------------------------------------- live view
    def render(self, height: int, width: int = 100) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        with self.lock:
            if self.started is None:
                return Text(f"... {terminal_safe(self.planning)}", style="dim", no_wrap=True, overflow="ellipsis")
            rows: list[Any] = []
            done = sum(1 for s in self.steps.values() if s.state in ("done", "undone", "skipped"))
            head = Text(terminal_safe(self.header or "starting"), style="bold")
            if self.started is not None:
                head.append(f"   {done}/{len(self.steps)} steps, {human_seconds(now - self.started)}", style="dim")
            rows.append(head)
            table = Table.grid(padding=(0, 1))
            id_w = max([len(s.id) for s in self.steps.values()] + [len("... 99 more waiting")])
            # Fixed widths: a long title is cut (with an ellipsis), never the state mark, the step id or the time.
            table.add_column(width=1, min_width=1, no_wrap=True)
            table.add_column(width=id_w, min_width=id_w, no_wrap=True)
            table.add_column(no_wrap=True, overflow="ellipsis", max_width=max(10, width - id_w - 14))
            table.add_column(justify="right", no_wrap=True, min_width=7)
            steps = list(self.steps.values())
            budget = max(4, height - 6 - sum(len(s.progress) for s in steps if s.state == "running"))
            finished = [s for s in steps if s.state in ("done", "undone", "skipped")]
            if len(steps) > budget and finished:  # fit one screen: the finished ones in one line
                fold = finished[: max(0, len(steps) - budget + 1)]
                table.add_row(Text("✓", style="green"), Text(f"{len(fold)} steps done", style="green"), Text(""),
                              Text(human_seconds(sum(s.duration or 0 for s in fold)), style="dim"))
                steps = [s for s in steps if s not in fold]
            waiting = [s for s in steps if s.state == "waiting"]
            hidden = waiting[max(0, budget - (len(steps) - len(waiting))):] if len(steps) > budget else []
            for s in steps:
                if s in hidden:
                    continue
                self._row(table, s, now, Text, ProgressBar, max(8, min(30, (width - id_w - 14) // 4)))
            if hidden:
                table.add_row(Text("·", style="dim"), Text(f"... {len(hidden)} more waiting", style="dim"), Text(""),
                              Text(""))
            rows.append(table)
            if self.freeze_started is not None:
                if self.freeze_ended is None:
                    rows.append(Text(f"write freeze: {human_seconds(now - self.freeze_started)} so far "
                                     "(the source refuses writes)", style="bold yellow"))
                else:
                    took = self.window if self.window is not None else self.freeze_ended - self.freeze_started
                    rows.append(Text(f"write-unavailability window: {took:.3f}s", style="bold"))
            return Group(*rows)

    @staticmethod
    def _row(table: Any, s: StepView, now: float, text: Any, bar: Any, bar_w: int) -> None:
        title = terminal_safe(s.title or s.id)
        if s.state in ("running", "undoing"):
            tail = text(human_seconds(now - (s.started or now)), style="cyan")
            what = text(title)
            if s.activity:
                what.append(f"  {terminal_safe(s.activity)}", style="dim")
            table.add_row(text("▶", style="cyan"), text(s.id, style="cyan"), what, tail)
            for p in s.progress.values():
                grid = bar(total=1000, completed=int(p.fraction() * 1000), width=bar_w)
                line = text(f"{p.fraction():>4.0%}  {p.describe()}", style="dim")
                from rich.table import Table

                inner = Table.grid(padding=(0, 1))
                inner.add_column(no_wrap=True)
                inner.add_column(no_wrap=True, overflow="ellipsis")
                inner.add_row(grid, line)
                table.add_row(text(""), text(""), inner, text(""))
        elif s.state in ("done", "undone"):
            table.add_row(text("✓", style="green"), text(s.id), text(title, style="dim"),
                          text(human_seconds(s.duration or 0), style="green"))
        elif s.state == "skipped":
            table.add_row(text("-", style="dim"), text(s.id, style="dim"), text("nothing to undo", style="dim"),
                          text(""))
        elif s.state == "failed":
            table.add_row(text("✗", style="bold red"), text(s.id, style="red"),
                          text(terminal_safe(s.error) or title, style="red"),
                          text(human_seconds(s.duration or 0), style="red"))
        else:
            table.add_row(text("·", style="dim"), text(s.id, style="dim"), text("waiting", style="dim"), text(""))


class RunDisplay:
    """The observer: JSON lines, the full stream (-v), the live view or the short log; see the module's doc."""

    def __init__(self, as_json: bool, verbose: int = 0, *, stream: TextIO | None = None,
                 live: bool | None = None) -> None:
        self.as_json, self.verbose = as_json, verbose
        self.stream = stream
        out = stream or sys.stderr
        if live is None:
            live = (not as_json and not verbose and out.isatty() and os.environ.get("TERM") != "dumb")
        self.mode = "json" if as_json else "full" if verbose else "live" if live else "lines"
        self.model = RunModel()
        self._live: Any = None
        self._planning_live = False
        self._console: Any = None
        self._closed = False
        self._lock = threading.Lock()
        if self.mode == "live":
            atexit.register(self.close)

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stderr

    def __call__(self, event: Event) -> None:
        if self.mode == "json":
            self.out.write(json.dumps(event.to_dict(), default=_json_default) + "\n")
            self.out.flush()
            return
        if self.mode == "full":
            if event.kind.endswith(".debug") and self.verbose < 1:
                return
            self.out.write(terminal_safe(f"{event.kind:<22} {event.message}") + "\n")
            self.out.flush()
            return
        lines = self.model.update(event)
        if self.mode == "lines":
            for line in lines:
                self.out.write(terminal_safe(line) + "\n")
            self.out.flush()
            return
        if self._live is not None and self._planning_live and self.model.started is not None:
            self.pause()  # the planning line goes; the run's view takes its place
        if self._live is None and not self._closed and (self.model.started is not None or self.model.planning):
            self._start(transient=self.model.started is None)
        if self._live is not None:
            from rich.text import Text

            for line in lines:
                if self._quiet_in_live(event):
                    continue
                self._live.console.print(Text(terminal_safe(line),
                                              style="red" if event.kind.endswith(".failed") else ""))
            if event.kind.startswith("step.") or (lines and progress_of(event) is not None):
                # A state change shows at once, not at the next tick (a short freeze too); so does each tenth of a
                # data copy, which a small copy can finish between two ticks.
                self._live.refresh()
        else:
            from rich.text import Text

            for line in lines:
                self._con().print(Text(terminal_safe(line)))

    @staticmethod
    def _quiet_in_live(event: Event) -> bool:
        """In the live view the step list says these already."""
        return event.kind in ("step.started", "step.done", "step.undoing", "step.undone", "step.skipped",
                              "run.started", "run.resumed", "rollback.started", "failover.window") or \
            progress_of(event) is not None

    def _con(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.out, highlight=False)
        return self._console

    def _start(self, *, transient: bool) -> None:
        from rich.live import Live

        con = self._con()
        model = self.model

        class _View:
            def __rich__(self) -> Any:
                return model.render(con.size.height, con.size.width)

        self._planning_live = transient
        self._live = Live(_View(), console=con, refresh_per_second=4, transient=transient, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.start()

    def pause(self) -> None:
        """Stop showing the planning line (the command prints the plan, or asks, next); a run starts a new view."""
        with self._lock:
            live, self._live = self._live, None
            self.model.planning = ""
        if live is not None:
            live.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            live, self._live = self._live, None
        if live is not None:
            live.refresh()
            live.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def run_display(as_json: bool, verbose: int = 0) -> RunDisplay:
    return RunDisplay(as_json, verbose)
