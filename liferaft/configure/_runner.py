"""Run an Ansible playbook through ansible-runner, safely: host keys checked, secrets off every command line.

ansible-runner prints, reuses state left in its private data dir and turns host-key checking off unless told;
this adapter wraps it so none of that leaks into liferaft:

- a FRESH private data dir (0700) per run under the state dir (`_workspace`: never /tmp), deleted afterwards (it
  holds the secret variables); only a scrubbed `PlaybookResult` survives; leftovers of killed runs are removed by
  the next run, `resume` and `rollback` (`clean_dead_runs`);
- ansible-playbook runs under `_guard`, so it and its workers and ssh masters die with the liferaft process, and
  the guard deletes the run's folder when that happens;
- non-secret variables go to `env/extravars` (a file, passed as `-e @file`); secret variables go to a 0600 JSON file
  passed as `-e @file` too: values never appear in argv (`ps`), in events or in errors (they are scrubbed);
- `ANSIBLE_HOST_KEY_CHECKING=True`, a known_hosts file built from the pinned keys, `StrictHostKeyChecking=yes`;
- a per-run ControlPath dir; every SSH master is told `-O exit` at the end, so no `ssh [mux]` lingers;
- the running interpreter's bin dir first on PATH (ansible-playbook lives there), remote `/usr/bin/python3`;
- Ansible's events become `TaskEvent`s for the caller's `on_event`; a failure raises `PlaybookFailed`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from liferaft.configure import _guard
from liferaft.configure._types import HostStats, PlaybookFailed, PlaybookResult, TargetHost, TaskEvent
from liferaft.configure._workspace import clean_dead_runs, new_run_dirs
from liferaft.errors import ToolMissing, UsageError
from liferaft.statedir import default_state_dir

log = logging.getLogger("liferaft.configure")
PLAYBOOK_DIR = Path(__file__).resolve().parent.parent / "playbooks"
REMOTE_PYTHON = "/usr/bin/python3"
REDACTED = "********"
_EVENT_KINDS = {
    "runner_on_ok": "task.ok", "runner_on_failed": "task.failed", "runner_on_skipped": "task.skipped",
    "runner_on_unreachable": "unreachable", "runner_item_on_failed": "task.failed",
}


def resolve_playbook(name: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> Path:
    """A shipped playbook by bare name (`postgresql.yml`), else a path (relative to `base_dir` if given)."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else [Path(base_dir or ".") / p] + ([PLAYBOOK_DIR / p] if p.parent == Path(".") else [])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise UsageError(f"playbook {str(name)!r} not found",
                     hint=f"shipped playbooks: {', '.join(sorted(x.name for x in PLAYBOOK_DIR.glob('*.yml')))}")


class _Scrubber:
    """Replaces every secret value (and its str() form) in text with a fixed marker."""

    def __init__(self, secrets: Mapping[str, Any] | None) -> None:
        values: set[str] = set()

        def walk(v: Any) -> None:
            if isinstance(v, Mapping):
                for x in v.values():
                    walk(x)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    walk(x)
            elif v is not None and not isinstance(v, bool) and len(str(v)) >= 4:
                values.add(str(v))

        walk(secrets or {})
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text


def _message(res: Mapping[str, Any]) -> str:
    parts = []
    for key in ("msg", "reason", "module_stderr", "stderr", "stdout"):
        v = res.get(key)
        if isinstance(v, str) and v.strip():
            parts.append(v.strip()[-800:])
            if key in ("msg", "reason") and not res.get("stderr"):
                break
    if "rc" in res and isinstance(res.get("rc"), int) and res["rc"] != 0:
        parts.append(f"(rc {res['rc']})")
    return " ".join(parts) or "failed"


class _Run:
    """State of one playbook run; turns runner events into TaskEvents."""

    def __init__(self, scrub: _Scrubber, on_event: Callable[[TaskEvent], None] | None) -> None:
        self.scrub = scrub
        self.on_event = on_event
        self.failures: list[TaskEvent] = []
        self.play = ""
        self.stats: dict[str, dict[str, int]] = {}

    def emit(self, ev: TaskEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:
                log.exception("configure event observer failed")

    def handle(self, event: Mapping[str, Any]) -> bool:
        name = event.get("event", "")
        data = event.get("event_data") or {}
        if name == "playbook_on_stats":
            self.stats = {k: dict(data.get(k) or {}) for k in ("ok", "changed", "failures", "dark", "skipped")}
        elif name == "playbook_on_play_start":
            self.play = self.scrub(str(data.get("play", "")))
            self.emit(TaskEvent("play", play=self.play))
        elif name == "playbook_on_task_start":
            self.emit(TaskEvent("task.start", play=self.play, task=self.scrub(str(data.get("task", "")))))
        elif name in _EVENT_KINDS:
            res = data.get("res") or {}
            kind = _EVENT_KINDS[name]
            if kind == "task.ok" and res.get("changed"):
                kind = "task.changed"
            if name == "runner_on_failed" and data.get("ignore_errors"):
                kind = "task.ok"
            msg = self.scrub(_message(res)) if kind in ("task.failed", "unreachable") else ""
            ev = TaskEvent(kind, play=self.play, task=self.scrub(str(data.get("task", ""))),
                           host=str(data.get("host", "")), message=msg)
            if kind in ("task.failed", "unreachable"):
                self.failures.append(ev)
            self.emit(ev)
        return False  # nothing needs keeping on disk: the dir is deleted anyway


def _inventory(hosts: Sequence[TargetHost]) -> dict[str, Any]:
    hv: dict[str, Any] = {}
    for h in hosts:
        v: dict[str, Any] = {"ansible_host": h.address, "ansible_port": h.port, "ansible_user": h.user,
                             "ansible_python_interpreter": REMOTE_PYTHON}
        if h.private_key_file:
            v["ansible_ssh_private_key_file"] = str(h.private_key_file)
        hv[h.name] = v
    return {"all": {"hosts": hv}}


def _close_masters(control_dir: Path) -> None:
    for sock in control_dir.iterdir() if control_dir.exists() else ():
        subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "liferaft-mux"],
                       capture_output=True, timeout=10, stdin=subprocess.DEVNULL, check=False)


def _remove(path: Path, attempts: int = 5) -> None:
    """Delete a run's directory. An ansible process still exiting after a cancel can re-create its local temp
    dir inside it, so look again a moment later."""
    for i in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if i and not path.exists():
            return
        time.sleep(0.2)


def _unsafe(value: Any) -> Any:
    """Mark every string as Ansible "unsafe": secrets are data, never templates. Without this a password holding
    `{{ lookup('pipe', ...) }}` would run a command on the controller when the variable is used. Ansible's JSON
    decoder turns {"__ansible_unsafe": s} into an unsafe string."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, dict):
        return {k: _unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unsafe(v) for v in value]
    return value


def _write_private(path: Path, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)


def _guarded(command: list[str], run_dir: Path, control_dir: Path) -> list[str]:
    """ansible-playbook's command line, started through `_guard` (see its doc) by this process."""
    return [sys.executable, "-I", str(Path(__file__).with_name("_guard.py")), str(os.getpid()), str(run_dir), str(control_dir), "--",
            *command]


def run_playbook(playbook: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 hosts: Sequence[TargetHost], *, variables: Mapping[str, Any] | None = None,
                 secret_variables: Mapping[str, Any] | None = None,
                 on_event: Callable[[TaskEvent], None] | None = None, timeout: float | None = 600,
                 base_dir: str | os.PathLike[str] | None = None, forks: int = 10,
                 check_failed: bool = True, keep_dir: Callable[[Path], None] | None = None,
                 tmp_root: str | None = None, state_dir: str | os.PathLike[str] | None = None) -> PlaybookResult:
    """Run one playbook (or several in order, as one run) against `hosts`; raise PlaybookFailed on failure.

    The per-run private data dir (secret variables included) is made under `<state_dir>/ansible/` (default: the
    default state dir); `tmp_root` is where the SSH control dir is made (default: the system temp dir; keep it
    short, SSH control socket paths are limited to ~100 bytes). `keep_dir`, for tests only, is called with the
    private data dir just before it is deleted.
    """
    try:
        from ansible_runner.interface import init_runner
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ToolMissing("ansible-runner is not installed", hint="pip install ansible-runner") from e
    if not hosts:
        raise UsageError("no hosts to configure")
    books = [playbook] if isinstance(playbook, (str, os.PathLike)) else list(playbook)
    paths = [resolve_playbook(b, base_dir) for b in books]
    bindir = Path(sys.executable).parent
    if not (bindir / "ansible-playbook").exists() and shutil.which("ansible-playbook") is None:
        raise ToolMissing("ansible-playbook is not installed", hint="pip install ansible-core")
    scrub = _Scrubber(secret_variables)
    state = _Run(scrub, on_event)
    label = ",".join(p.name for p in paths)
    state_dir = state_dir if state_dir is not None else default_state_dir()
    cleaned = clean_dead_runs(state_dir)
    if cleaned:
        log.warning("%s", cleaned.describe())
    dirs = new_run_dirs(state_dir, tmp_root)
    pdd, control_dir = dirs.private, dirs.control
    t0 = time.monotonic()
    try:
        for sub in ("env", "inventory", "project", "tmp", "home"):
            (pdd / sub).mkdir(mode=0o700)
        known_hosts = pdd / "known_hosts"
        known_hosts.write_text("".join(line + "\n" for h in hosts for line in h.known_hosts_lines()))
        (pdd / "ansible.cfg").write_text("[defaults]\n")
        inventory = pdd / "inventory" / "hosts.json"
        _write_private(inventory, _inventory(hosts))
        _write_private(pdd / "env" / "extravars", dict(variables or {}))
        secrets_file = pdd / "secret_vars.json"
        _write_private(secrets_file, _unsafe(dict(secret_variables or {})))
        if len(paths) == 1:
            project_dir, book = paths[0].parent, paths[0].name
        else:
            project_dir, book = pdd / "project", "site.yml"
            (project_dir / book).write_text("".join(f"- import_playbook: {json.dumps(str(p))}\n" for p in paths))
        ssh_args = " ".join([
            "-o ControlMaster=auto", "-o ControlPersist=60s", f"-o UserKnownHostsFile={known_hosts}",
            "-o GlobalKnownHostsFile=/dev/null", "-o StrictHostKeyChecking=yes", "-o IdentitiesOnly=yes",
            "-o PasswordAuthentication=no", "-o KbdInteractiveAuthentication=no", "-o ConnectTimeout=10",
            "-o ServerAliveInterval=15",
        ])
        envvars = {
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_CONFIG": str(pdd / "ansible.cfg"),  # never a stray ansible.cfg from the cwd
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
            "ANSIBLE_HOME": str(pdd / "home"),
            "ANSIBLE_LIBRARY": str(PLAYBOOK_DIR / "library"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_TIMEOUT": "15",
            _guard.MARK: str(pdd),  # every process of the run inherits it: how the guard and clean_dead_runs find them
        }
        cancel = threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        runner = init_runner(
            private_data_dir=str(pdd), project_dir=str(project_dir), playbook=book, inventory=str(inventory),
            envvars=envvars, cmdline=f"-e @{secrets_file}", forks=forks, quiet=True, rotate_artifacts=0,
            event_handler=state.handle,
            cancel_callback=lambda: cancel.is_set() or (deadline is not None and time.monotonic() > deadline),
            ident="run",
        )
        runner.config.command = _guarded(runner.config.command, pdd, control_dir)
        runner.run()
        stats_raw = state.stats or runner.stats or {}
        names = {h.name for h in hosts}
        stats = {
            n: HostStats(ok=stats_raw.get("ok", {}).get(n, 0), changed=stats_raw.get("changed", {}).get(n, 0),
                         failed=stats_raw.get("failures", {}).get(n, 0),
                         unreachable=stats_raw.get("dark", {}).get(n, 0),
                         skipped=stats_raw.get("skipped", {}).get(n, 0))
            for n in sorted(names)
        }
        status = runner.status
        if status == "canceled" and deadline is not None and time.monotonic() > deadline:
            status = "timeout"
        tail = ""
        if status != "successful" and not state.failures:
            try:
                tail = scrub(runner.stdout.read()[-1500:]).strip()
            except (OSError, AttributeError):
                tail = ""
        result = PlaybookResult(playbook=label, status=status, rc=int(runner.rc if runner.rc is not None else -1),
                                duration_s=time.monotonic() - t0, stats=stats, failures=tuple(state.failures),
                                output_tail=tail)
        if keep_dir is not None:
            keep_dir(pdd)
    finally:
        _close_masters(control_dir)
        _remove(control_dir)
        _remove(pdd)
    if check_failed and not result.ok:
        raise _failure(result, runner_stdout_hint=status)
    return result


def _failure(result: PlaybookResult, runner_stdout_hint: str) -> PlaybookFailed:
    if result.failures:
        f = result.failures[0]
        what = "unreachable" if f.kind == "unreachable" else f"task {f.task!r} failed"
        msg = f"{result.playbook}: host {f.host}: {what}: {f.message}"
        hint = None
        if "Host key verification failed" in f.message or "REMOTE HOST IDENTIFICATION HAS CHANGED" in f.message:
            hint = "the host's SSH key does not match the key pinned in the stack file: check the host before trusting it"
        elif f.kind == "unreachable":
            hint = "check the host's address, port, that sshd runs and the private key"
        return PlaybookFailed(result, msg, hint=hint)
    if result.status == "timeout":
        return PlaybookFailed(result, f"{result.playbook}: timed out after {result.duration_s:.0f} s")
    tail = f": {result.output_tail[-600:]}" if result.output_tail else ""
    return PlaybookFailed(result, f"{result.playbook}: ansible-playbook ended {runner_stdout_hint} (rc {result.rc}){tail}",
                          hint="a syntax or variable error in the playbook; run it with --syntax-check")


def syntax_check(playbook: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> None:
    """`ansible-playbook --syntax-check` on a playbook (no hosts contacted); raise UsageError with its message."""
    path = resolve_playbook(playbook, base_dir)
    exe = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(exe) if exe.exists() else "ansible-playbook", "--syntax-check", "-i", "localhost,", str(path)]
    with tempfile.TemporaryDirectory(prefix="liferaft-syntax-") as tmp:
        (Path(tmp) / "ansible.cfg").write_text("[defaults]\n")
        env = {**os.environ, "ANSIBLE_LIBRARY": str(PLAYBOOK_DIR / "library"), "ANSIBLE_NOCOLOR": "True",
               "ANSIBLE_CONFIG": str(Path(tmp) / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "False",
               "ANSIBLE_HOME": tmp, "ANSIBLE_LOCAL_TEMP": tmp}
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False,
                                stdin=subprocess.DEVNULL)
        except FileNotFoundError as e:
            raise ToolMissing("ansible-playbook is not installed", hint="pip install ansible-core") from e
    if cp.returncode != 0:
        raise UsageError(f"playbook {path.name}: syntax check failed: {(cp.stderr or cp.stdout).strip()[-1500:]}")


def ansible_events(ctx: Any, *, changes: bool = True) -> Callable[[Any], None]:
    """Ansible's progress as run events (`ansible.task.start`, ...) through `ctx.emit`: the step's observers see what
    a playbook does. With `changes` (the default) each changed task too, with the event's fields (a deploy counts
    them); without, task starts and failures with the host only."""
    kinds = ("task.start", "task.failed", "unreachable") + (("task.changed",) if changes else ())

    def on_event(ev: Any) -> None:
        if ev.kind in kinds:
            # The event's own kind and message are the emitted event's: passing them twice raised a TypeError that
            # the observer guard swallowed, and no Ansible progress reached the user.
            data = ({k: v for k, v in ev.to_dict().items() if k not in ("kind", "message")} if changes
                    else {"host": ev.host})
            ctx.emit(f"ansible.{ev.kind}", f"{ev.host}: {ev.task} {ev.message}".strip(), **data)
    return on_event
