"""`Lab`: start, inspect, fault and stop the whole local lab from any process.

`up()` starts the detached controller (`liferaft.lab.controller`), renders its progress events and returns once
`<labdir>/lab.json` says ready. Everything else reads lab.json and talks to the running pieces directly: fault
proxies through their control ports, hosts through `ip link`, health through HTTP, SSH banners and DNS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import CheckFailed, RunFailed, UsageError
from liferaft.events import Event, Events, as_events
from liferaft.lab.hosts import (
    LabHost,
    LabHosts,
    _ssh_banner,
    kill_process,
    lab_resources,
    process_alive,
    sweep_stale,
    tail,
)

CUT_MODES = ("deny", "down", "throttle", "error")
PROVIDERS = ("aws", "objstore", "dnshost")


def default_lab_dir() -> Path:
    env = os.environ.get("LIFERAFT_LAB_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "liferaft" / "lab"


@dataclass(frozen=True)
class LabInfo:
    """Where the running lab's pieces are. JSON-safe; secrets only as file paths in `secrets_dir`."""

    directory: Path
    stack_file: Path
    secrets_dir: Path
    bridge_address: str
    hosts: dict[str, LabHost] = field(hash=False)
    known_hosts: Path
    client_key: Path
    endpoints: dict[str, str] = field(hash=False)  # provider -> fault proxy URL (what the stack file uses)
    direct: dict[str, str] = field(hash=False)  # provider -> server URL behind the proxy (for test set-up)
    dns_server: str
    zone: str
    app_fqdn: str
    app_port: int
    primary_address: str
    alternate_sites: tuple[str, ...]
    artifact: Path
    # the lab's ACME CA (pebble): {directory, ca_bundle (trust for its HTTPS), issuer_ca (the root it issues under)}
    acme: dict[str, str] | None = field(default=None, hash=False)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabInfo:
        hosts = LabHosts.from_dict(state["hosts"])
        return cls(
            directory=Path(state["directory"]), stack_file=Path(state["stack_file"]),
            secrets_dir=Path(state["secrets_dir"]), bridge_address=state["bridge_address"],
            hosts=dict(hosts.hosts), known_hosts=hosts.known_hosts, client_key=hosts.client_key,
            endpoints={n: p["url"] for n, p in state["proxies"].items()},
            direct={n: s["url"] for n, s in state["servers"].items()},
            dns_server=state["dns_server"], zone=state["zone"], app_fqdn=state["app_fqdn"],
            app_port=int(state["app_port"]), primary_address=state["primary_address"],
            alternate_sites=tuple(state["alternate_sites"]), artifact=Path(state["artifact"]),
            acme=state.get("acme"),
        )

    def secret(self, name: str) -> str:
        """The value of one lab secret (e.g. "db_password"); never log it."""
        return (self.secrets_dir / name).read_text().strip()

    @property
    def dns_address(self) -> tuple[str, int]:
        host, _, port = self.dns_server.rpartition(":")
        return host, int(port)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory), "stack_file": str(self.stack_file),
            "secrets_dir": str(self.secrets_dir), "bridge_address": self.bridge_address,
            "hosts": {n: h.to_dict() for n, h in self.hosts.items()}, "known_hosts": str(self.known_hosts),
            "client_key": str(self.client_key), "endpoints": self.endpoints, "direct": self.direct,
            "dns_server": self.dns_server, "zone": self.zone, "app_fqdn": self.app_fqdn, "app_port": self.app_port,
            "primary_address": self.primary_address, "alternate_sites": list(self.alternate_sites),
            "artifact": str(self.artifact),
        }


class Lab:
    """The local lab in one directory. Several labs (directories) may run at once."""

    def __init__(self, directory: str | Path | None = None,
                 events: Events | Callable[[Event], None] | None = None) -> None:
        self.directory = Path(directory) if directory else default_lab_dir()
        self.events = as_events(events)

    # ------------------------------------------------------------------ state
    @property
    def state_file(self) -> Path:
        return self.directory / "lab.json"

    def read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        except (OSError, ValueError):
            return None

    def _require_state(self) -> dict[str, Any]:
        state = self.read_state()
        if state is None or not self._controller_alive(state):
            raise UsageError(f"no lab is running in {self.directory}", hint="start one with `liferaft lab up`")
        return state

    @staticmethod
    def _controller_alive(state: dict[str, Any]) -> bool:
        c = state.get("controller", {})
        return bool(c.get("pid")) and process_alive(int(c["pid"]), c.get("start_time"))

    @property
    def running(self) -> bool:
        state = self.read_state()
        return state is not None and self._controller_alive(state)

    @property
    def info(self) -> LabInfo:
        return LabInfo.from_state(self._require_state())

    # ------------------------------------------------------------------ up / down
    def up(self, *, timeout: float = 300.0, example: bool = True, die_with_caller: bool = False) -> LabInfo:
        """Start the lab (sweeping what a dead controller left) and wait until it is ready.

        `example=False` skips deploying the example app. `die_with_caller=True` ties the controller to the calling
        thread (pdeathsig), for test sessions: a killed test run then leaves nothing running.
        """
        from liferaft.lab.hosts import check_lab_possible

        check_lab_possible()
        state = self.read_state()
        if state is not None and self._controller_alive(state) and state.get("status") == "ready":
            self.events.emit("lab.step", f"lab already running in {self.directory}")
            return LabInfo.from_state(state)
        if state is not None and self._controller_alive(state):
            raise UsageError(f"a lab controller (pid {state['controller']['pid']}) is still starting in "
                             f"{self.directory}", hint="wait, or run `liferaft lab down`")
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        swept = self._sweep(state)
        if swept:
            self.events.emit("lab.step", f"swept stale lab resources: {', '.join(swept)}")
        events_file = self.directory / "events.jsonl"
        events_file.unlink(missing_ok=True)
        log_path = self.directory / "controller.log"
        t0 = time.monotonic()
        with open(log_path, "ab") as log:
            argv = [sys.executable, "-m", "liferaft.lab.controller", "--dir", str(self.directory.resolve())]
            if not example:
                argv.append("--no-example")
            if die_with_caller:
                argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, cwd=str(self.directory))
        seen = 0
        while True:
            lines = events_file.read_text().splitlines() if events_file.exists() else []
            for line in lines[seen:]:
                seen += 1
                try:
                    ev = json.loads(line)
                except ValueError:
                    seen -= 1
                    break
                kind, message = ev.pop("kind"), ev.pop("message", "")
                ev.pop("ts", None)
                if kind == "lab.failed":
                    proc.wait(timeout=30)
                    raise RunFailed(f"{message}; controller log tail:\n{tail(log_path, 30)}")
                self.events.emit(kind, message, **ev)
                if kind == "lab.ready":
                    info = LabInfo.from_state(self._require_state())
                    self.events.emit("lab.up", f"lab up in {time.monotonic() - t0:.1f} s",
                                     seconds=round(time.monotonic() - t0, 2))
                    return info
            if proc.poll() is not None:
                raise RunFailed(f"lab controller exited with code {proc.returncode} before ready; log tail:\n"
                                f"{tail(log_path, 30)}")
            if time.monotonic() - t0 > timeout:
                self.down()
                raise RunFailed(f"lab not ready after {timeout:.0f} s; controller log tail:\n{tail(log_path, 30)}")
            time.sleep(0.1)

    def _sweep(self, state: dict[str, Any] | None) -> list[str]:
        swept: list[str] = []
        if state is not None and not self._controller_alive(state):
            for group in ("servers", "proxies"):
                for name, d in state.get(group, {}).items():
                    if d.get("pid") and process_alive(int(d["pid"]), d.get("start_time")):
                        kill_process(int(d["pid"]), d.get("start_time"))
                        swept.append(f"{group[:-1]} {name} pid {d['pid']}")
            self.state_file.unlink(missing_ok=True)
        swept += [f"hosts {i}" for i in sweep_stale()]
        return swept

    def down(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the controller (it stops everything it started), then sweep whatever is left. Idempotent."""
        t0 = time.monotonic()
        state = self.read_state()
        if state is None:
            sweep_stale()
            return {"stopped": False, "reason": f"no lab state in {self.directory}"}
        c = state.get("controller", {})
        pid, start = int(c.get("pid", 0)), c.get("start_time")
        if pid and process_alive(pid, start):
            self.events.emit("lab.step", f"stopping the lab controller (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.05)
            if process_alive(pid, start):
                self.events.emit("lab.warning", "controller did not stop in time: killing it")
                kill_process(pid, start)
        self._sweep({**state, "controller": {}})
        lab_id = state.get("hosts", {}).get("id", "")
        left = lab_resources(lab_id) if lab_id else {}
        for name in ("proxies", "servers"):
            for d in state.get(name, {}).values():
                if d.get("pid") and process_alive(int(d["pid"]), d.get("start_time")):
                    left.setdefault("processes", []).append(str(d["pid"]))
        seconds = round(time.monotonic() - t0, 2)
        self.events.emit("lab.down", f"lab down in {seconds:.1f} s", seconds=seconds)
        leftovers = {k: v for k, v in left.items() if v}
        if leftovers:
            raise RunFailed(f"lab down left resources behind: {leftovers}")
        return {"stopped": True, "seconds": seconds}

    # ------------------------------------------------------------------ faults
    def _proxy(self, state: dict[str, Any], provider: str) -> Any:
        from liferaft.lab.proxy import FaultProxy

        if provider not in state["proxies"]:
            raise UsageError(f"unknown lab provider {provider!r}; expected one of {', '.join(state['proxies'])}")
        return FaultProxy.attach(provider, state["proxies"][provider]["workdir"])

    def cut(self, provider: str, mode: str = "deny") -> None:
        """Make a provider fail: deny (403/401 as a suspended account), down (connections dropped), throttle, error."""
        if mode not in CUT_MODES:
            raise UsageError(f"unknown cut mode {mode!r}; expected one of {', '.join(CUT_MODES)}")
        state = self._require_state()
        for name in [provider, *_parts(state, provider)]:
            self._proxy(state, name).set_mode(mode)
            self._update_state(lambda s, name=name: s["modes"].__setitem__(name, mode))  # type: ignore[misc]
        self.events.emit("lab.cut", f"{provider}: {mode}", provider=provider, mode=mode)

    def cut_host(self, name: str) -> None:
        """Cut a host's network: connections to it time out."""
        state = self._require_state()
        hosts = LabHosts.from_dict(state["hosts"])
        if name not in hosts.hosts:
            raise UsageError(f"unknown lab host {name!r}; expected one of {', '.join(hosts.hosts)}")
        hosts[name].cut()
        self._update_state(lambda s: s["cut_hosts"].append(name) if name not in s["cut_hosts"] else None)
        self.events.emit("lab.cut_host", f"host {name}: network cut", host=name)

    def heal_provider(self, provider: str) -> None:
        """One provider forwards again (other cuts stay)."""
        state = self._require_state()
        for name in [provider, *_parts(state, provider)]:
            self._proxy(state, name).heal()
            self._update_state(lambda s, name=name: s["modes"].__setitem__(name, "forward"))  # type: ignore[misc]
        self.events.emit("lab.heal", f"{provider}: forward", provider=provider)

    def heal_host(self, name: str) -> None:
        """One host reachable again (other cuts stay)."""
        state = self._require_state()
        hosts = LabHosts.from_dict(state["hosts"])
        if name not in hosts.hosts:
            raise UsageError(f"unknown lab host {name!r}; expected one of {', '.join(hosts.hosts)}")
        hosts[name].heal()
        self._update_state(lambda s: s.__setitem__("cut_hosts", [h for h in s["cut_hosts"] if h != name]))
        self.events.emit("lab.heal", f"host {name}: reachable", host=name)

    def heal(self) -> None:
        """Every provider forwards again and every host is reachable again."""
        state = self._require_state()
        for provider in state["proxies"]:
            self._proxy(state, provider).heal()
        for host in LabHosts.from_dict(state["hosts"]).hosts.values():
            host.heal()

        def reset(s: dict[str, Any]) -> None:
            s["modes"] = {n: "forward" for n in s["proxies"]}
            s["cut_hosts"] = []

        self._update_state(reset)
        self.events.emit("lab.heal", "all providers forward, all hosts reachable")

    def _update_state(self, change: Callable[[dict[str, Any]], Any]) -> None:
        state = self.read_state()
        if state is None:
            return
        change(state)
        tmp = self.state_file.with_name(f"lab.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """What runs, where, and whether it is healthy. Never raises for a stopped lab: says so."""
        state = self.read_state()
        if state is None:
            return {"running": False, "healthy": False, "directory": str(self.directory),
                    "reason": "no lab state (never started, or stopped)"}
        alive = self._controller_alive(state)
        procs: list[dict[str, Any]] = [{
            "name": "controller", "kind": "controller", "pid": state["controller"]["pid"],
            "health": "healthy" if alive else "dead"}]
        if alive:
            procs += [_server_health(n, d, state) for n, d in state["servers"].items()]
            procs += [_proxy_health(self, n, state) for n in state["proxies"]]
            procs += [_host_health(h) for h in LabHosts.from_dict(state["hosts"]).hosts.values()]
        app = dict(state.get("app", {}))
        if alive and app.get("deployed"):
            app["health"] = _app_health(state)
        reason = str(app.get("reason", ""))
        deployable = app.get("deployed") or not ("missing" in reason or "skipped" in reason)
        healthy = alive and state.get("status") == "ready" and all(
            p["health"] == "healthy" for p in procs) and (app.get("health") == "healthy" or not deployable)
        return {
            "running": alive, "healthy": healthy, "status": state.get("status") if alive else "dead",
            "directory": str(self.directory), "stack_file": state["stack_file"],
            "alternate_sites": state["alternate_sites"], "primary_site": state.get("primary_site", "primary"),
            "dns_server": state["dns_server"], "zone": state["zone"], "app_fqdn": state["app_fqdn"],
            "app_port": state["app_port"], "primary_address": state["primary_address"],
            "bridge_address": state["bridge_address"], "modes": state.get("modes", {}),
            "cut_hosts": state.get("cut_hosts", []), "app": app, "timings": state.get("timings", {}),
            "acme": state.get("acme"), "registries": state.get("registries"), "image": state.get("image"),
            "processes": procs,
        }


def _parts(state: dict[str, Any], provider: str) -> list[str]:
    """The fault proxies that belong to `provider` (the "aws" registry to "aws"): cut and healed with it."""
    return sorted(n for n, d in state.get("proxies", {}).items() if d.get("part_of") == provider and n != provider)


def _server_health(name: str, d: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    from liferaft.lab._proc import http_status

    alive = process_alive(int(d["pid"]), d.get("start_time")) if d.get("pid") else False
    health = "dead"
    if alive:
        try:
            if d["kind"] == "moto":
                ok = http_status(d["url"] + "/moto-api/", timeout=2) == 200
            elif d["kind"] == "pebble":
                ok = _https_ok(d["url"], d["ca_bundle"])
            elif d["kind"] == "pdns":
                key = (Path(state["secrets_dir"]) / "pdns_api_key").read_text().strip()
                ok = http_status(d["url"] + "/api/v1/servers", headers={"X-API-Key": key}, timeout=2) == 200
                ok = ok and _dns_answers(state["dns_server"], state["app_fqdn"]) == [state["primary_address"]]
            else:
                ok = http_status(d["url"] + "/", timeout=2) == 200
            health = "healthy" if ok else "unhealthy"
        except OSError as e:
            health = f"unreachable: {e}"
    out = {"name": f"{d['kind']} ({name})", "kind": d["kind"], "pid": d["pid"], "url": d["url"], "health": health,
           "log": d.get("log_path")}
    if d["kind"] == "pdns":
        out["dns_server"] = d.get("dns_server")
    return out


def _https_ok(url: str, cafile: str) -> bool:
    import ssl
    import urllib.request

    ctx = ssl.create_default_context(cafile=cafile)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(url, timeout=2) as r:
        return bool(r.status == 200)


def _dns_answers(server: str, name: str) -> list[str]:
    """The A records a real DNS query to `server` ("host:port") returns for `name`."""
    import dns.exception
    import dns.message
    import dns.query

    host, _, port = server.rpartition(":")
    try:
        resp = dns.query.udp(dns.message.make_query(name, "A"), host, port=int(port), timeout=2)
    except (dns.exception.DNSException, OSError):
        return []
    return sorted(item.address for rrset in resp.answer for item in rrset if hasattr(item, "address"))


def _proxy_health(lab: Lab, name: str, state: dict[str, Any]) -> dict[str, Any]:
    d = state["proxies"][name]
    alive = process_alive(int(d["pid"]), d.get("start_time")) if d.get("pid") else False
    mode = None
    health = "dead"
    if alive:
        try:
            mode = lab._proxy(state, name).mode
            health = "healthy"
        except Exception as e:  # noqa: BLE001 - a status shows the failure, it does not raise it
            health = f"unhealthy: {e}"
    return {"name": f"proxy {name}", "kind": "proxy", "pid": d["pid"], "url": d["url"],
            "upstream": d["upstream"], "mode": mode, "health": health}


def _host_health(h: LabHost) -> dict[str, Any]:
    if not h.alive():
        health = "dead"
    elif h.is_cut:
        health = "healthy"  # cut on purpose: the namespace and sshd run; its network is down
    else:
        health = "healthy" if _ssh_banner(h.address, h.port) else "unreachable"
    return {"name": f"host {h.name}", "kind": "host", "pid": h.ns_init_pid or h.pid, "address": h.address,
            "cut": h.is_cut, "ssh_sessions": h.ssh_count(), "health": health}


def _app_health(state: dict[str, Any]) -> str:
    from liferaft.lab._proc import http_status

    try:
        code = http_status(f"http://{state['primary_address']}:{state['app_port']}/healthz", timeout=3)
    except OSError as e:
        return f"unreachable: {e}"
    return "healthy" if code == 200 else f"unhealthy: HTTP {code}"


def require_healthy(lab: Lab) -> dict[str, Any]:
    """The lab's status, or CheckFailed naming what is not healthy."""
    st = lab.status()
    if not st["healthy"]:
        bad = [f"{p['name']}: {p['health']}" for p in st.get("processes", []) if p["health"] != "healthy"]
        raise CheckFailed("lab is not healthy: " + ("; ".join(bad) or st.get("reason", st.get("status", "?"))))
    return st
