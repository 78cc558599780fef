"""The lab Hetzner cloud's state and API logic (see `liferaft.lab.clouds.hetzner` for what it serves)."""


from __future__ import annotations

import queue
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from liferaft.lab.clouds._catalog import IMAGES, LOCATIONS, SERVER_TYPES
from liferaft.lab.clouds._machines import CloudMachines


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def matches(labels: dict[str, str], selector: str | None) -> bool:
    """Hetzner label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (all must hold)."""
    for term in (t.strip() for t in (selector or "").split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def parse_cloud_config(text: str | None) -> dict[str, Any]:
    """cloud-init user data: a `#cloud-config` YAML document (JSON is YAML too); anything else applies nothing."""
    if not text or not text.lstrip().startswith("#cloud-config"):
        return {}
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe").load(text)
    except Exception:  # noqa: BLE001 - cloud-init skips user data it cannot parse
        return {}
    return data if isinstance(data, dict) else {}


def injected_host_key(config: dict[str, Any], apply: bool) -> tuple[str, str] | None:
    """The ed25519 host key pair (private, public) cloud-init installs from the user data's `ssh_keys`, when the lab
    applies them (`apply`); None otherwise."""
    raw = config.get("ssh_keys")
    keys: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if apply and keys.get("ed25519_private") and keys.get("ed25519_public"):
        return (str(keys["ed25519_private"]), str(keys["ed25519_public"]))
    return None


class HetznerState:
    """Everything the API knows, under one lock. Host building and removal are queued for the main thread."""

    def __init__(self, machines: CloudMachines, tokens: set[str], jobs: queue.Queue[Callable[[], None]]) -> None:
        self.machines = machines
        self.tokens = tokens
        self.jobs = jobs
        self.lock = threading.RLock()
        self.servers: dict[int, dict[str, Any]] = {}
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[int, dict[str, Any]] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self.slots: dict[int, int] = {}  # server id -> machine slot
        self.server_limit = 10
        self.apply_user_data_host_keys = True
        self.hold_boot = False  # servers stay `initializing` (their hosts are not built) until released
        self.held: list[Callable[[], None]] = []
        self._next = 1000 + secrets.randbelow(1000)

    def next_id(self) -> int:
        self._next += 1
        return self._next

    # ------------------------------------------------------------------------------------------ actions
    def action(self, command: str, resources: list[tuple[int, str]], *, status: str = "running") -> dict[str, Any]:
        a: dict[str, Any] = {"id": self.next_id(), "command": command, "status": status, "progress": 100 if status == "success" else 0,
             "started": now(), "finished": now() if status != "running" else None,
             "resources": [{"id": i, "type": t} for i, t in resources], "error": None}
        self.actions[a["id"]] = a
        return a

    @staticmethod
    def finish(action: dict[str, Any], error: str | None = None) -> None:
        action.update(status="error" if error else "success", progress=100, finished=now(),
                      error={"code": "action_failed", "message": error} if error else None)

    # ------------------------------------------------------------------------------------------ ssh keys
    def create_ssh_key(self, body: dict[str, Any]) -> dict[str, Any]:
        name, public = str(body.get("name") or ""), str(body.get("public_key") or "").strip()
        if not name or len(public.split()) < 2:
            raise ApiError(400, "invalid_input", "invalid input in fields 'name', 'public_key'")
        if any(k["name"] == name for k in self.ssh_keys.values()):
            raise ApiError(409, "uniqueness_error", "SSH key with the same name already exists")
        if any(k["public_key"].split()[:2] == public.split()[:2] for k in self.ssh_keys.values()):
            raise ApiError(409, "uniqueness_error", "SSH key with the same fingerprint already exists")
        key: dict[str, Any] = {"id": self.next_id(), "name": name, "public_key": public, "fingerprint": _fingerprint(public),
               "labels": dict(body.get("labels") or {}), "created": now()}
        self.ssh_keys[key["id"]] = key
        return key

    def resolve_ssh_key(self, ref: Any) -> dict[str, Any]:
        for k in self.ssh_keys.values():
            if ref == k["id"] or str(ref) == str(k["id"]) or ref == k["name"]:
                return k
        raise ApiError(400, "invalid_input", f"ssh key {ref!r} not found", {"fields": [{"name": "ssh_keys"}]})

    # ------------------------------------------------------------------------------------------ firewalls
    def create_firewall(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("name") or "")
        if not name:
            raise ApiError(400, "invalid_input", "invalid input in field 'name'")
        if any(f["name"] == name for f in self.firewalls.values()):
            raise ApiError(409, "uniqueness_error", "firewall with the same name already exists")
        fw: dict[str, Any] = {"id": self.next_id(), "name": name, "labels": dict(body.get("labels") or {}), "created": now(),
              "rules": [firewall_rule(r) for r in body.get("rules") or []], "applied_to": []}
        self.firewalls[fw["id"]] = fw
        return fw

    # ------------------------------------------------------------------------------------------ servers
    def create_server(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body.get("name") or "")
        if not name or len(name) > 63 or not all(c.isalnum() or c in "-." for c in name):
            raise ApiError(400, "invalid_input", "invalid input in field 'name'", {"fields": [{"name": "name"}]})
        stype = next((t for t in SERVER_TYPES if body.get("server_type") in (t["name"], t["id"])), None)
        image = next((i for i in IMAGES if body.get("image") in (i["name"], i["id"])), None)
        location = next((loc for loc in LOCATIONS if body.get("location", "fsn1") in (loc["name"], loc["id"])), None)
        if stype is None or image is None or location is None:
            bad = [f for f, v in (("server_type", stype), ("image", image), ("location", location)) if v is None]
            raise ApiError(400, "invalid_input", f"invalid input in fields {', '.join(bad)}",
                           {"fields": [{"name": f} for f in bad]})
        if len(str(body.get("user_data") or "").encode()) > 32 * 1024:
            raise ApiError(400, "invalid_input", "user_data is limited to 32 KiB")
        if any(s["name"] == name for s in self.servers.values()):
            raise ApiError(409, "uniqueness_error", "server name is already used")
        if len(self.servers) >= self.server_limit:
            raise ApiError(403, "resource_limit_exceeded", "server limit exceeded",
                           {"limits": [{"name": "server_limit"}]})
        keys = [self.resolve_ssh_key(ref) for ref in body.get("ssh_keys") or []]
        fws = [self.firewalls.get(int(f.get("firewall", 0))) for f in body.get("firewalls") or []]
        if any(f is None for f in fws):
            raise ApiError(400, "invalid_input", "firewall not found", {"fields": [{"name": "firewalls"}]})
        sid = self.next_id()
        server = _server_json(sid, name, stype, image, location, dict(body.get("labels") or {}),
                              [f["id"] for f in fws if f])
        self.servers[sid] = server
        for fw in fws:
            if fw is not None:
                fw["applied_to"].append({"type": "server", "server": {"id": sid}})
        action = self.action("create_server", [(sid, "server")])
        start = self.action("start_server", [(sid, "server")])
        config = parse_cloud_config(body.get("user_data"))
        authorized = "".join(k["public_key"] + "\n" for k in keys)
        self.slots[sid] = slot = self.machines.reserve_slot()
        build = lambda: self._build(sid, slot, authorized, config, (action, start))
        if self.hold_boot:
            self.held.append(build)
        else:
            self.jobs.put(build)
        return {"server": server, "action": action, "next_actions": [start], "root_password": None}

    def _build(self, sid: int, slot: int, authorized: str, config: dict[str, Any],
               actions: tuple[dict[str, Any], ...]) -> None:
        """Main thread: make the lab host, then the server runs (or the create action fails)."""
        host_key = injected_host_key(config, self.apply_user_data_host_keys)
        with self.lock:
            server = self.servers.get(sid)
            if server is None or self.slots.get(sid) != slot:
                return  # deleted before it booted
            name = server["name"]
        try:
            host = self.machines.create(slot, name, authorized, host_key)
            self.machines.apply_firewall(slot, self.inbound_rules(sid))  # before the server counts as running
        except Exception as e:  # noqa: BLE001 - the action reports it, as Hetzner's does
            traceback.print_exc()
            with self.lock:
                for a in actions:
                    self.finish(a, f"server could not be created: {e}")
                if sid in self.servers:
                    self.servers[sid]["status"] = "off"
            return
        with self.lock:
            server = self.servers.get(sid)
            if server is not None:
                server["status"] = "running"
                server["public_net"]["ipv4"] = {"id": sid + 1, "ip": host.address, "blocked": False,
                                                "dns_ptr": f"static.{host.address}.clients.your-server.de"}
                server["lab"] = {"netns": host.netns, "address": host.address, "host_public_key": host.host_public_key,
                                 "directory": str(host.directory), "pid": host.ns_init_pid}
                for a in actions:
                    self.finish(a)
        if server is None:  # deleted while it was being built
            self.machines.remove(slot)

    def inbound_rules(self, sid: int) -> list[dict[str, Any]] | None:
        """The rules of every firewall applied to the server (None: no firewall, so nothing is filtered)."""
        with self.lock:
            server = self.servers.get(sid)
            ids = [f["id"] for f in server["public_net"]["firewalls"]] if server else []
            fws = [self.firewalls[i] for i in ids if i in self.firewalls]
            return [r for fw in fws for r in fw["rules"]] if fws else None

    def refresh_firewalls(self, server_ids: list[int]) -> None:
        """Queue re-applying the rules on these servers' hosts (after set_rules), on the main thread."""
        for sid in server_ids:
            slot = self.slots.get(sid)
            if slot is not None:
                self.jobs.put(lambda sid=sid, slot=slot: self.machines.apply_firewall(  # type: ignore[misc]
                    slot, self.inbound_rules(sid)))

    def set_hold_boot(self, hold: bool) -> None:
        self.hold_boot = hold
        if not hold:
            for build in self.held:
                self.jobs.put(build)
            self.held = []

    def delete_server(self, sid: int) -> dict[str, Any]:
        server = self.get_server(sid)
        server["status"] = "deleting"
        action = self.action("delete_server", [(sid, "server")])
        slot = self.slots.get(sid)

        def remove() -> None:
            problems = self.machines.remove(slot) if slot is not None else []
            with self.lock:
                self.servers.pop(sid, None)
                self.slots.pop(sid, None)
                for fw in self.firewalls.values():
                    fw["applied_to"] = [r for r in fw["applied_to"] if r.get("server", {}).get("id") != sid]
                self.finish(action, "; ".join(problems) if problems else None)

        self.jobs.put(remove)
        return action

    def get_server(self, sid: int) -> dict[str, Any]:
        server = self.servers.get(sid)
        if server is None:
            raise ApiError(404, "not_found", f"server with ID '{sid}' not found")
        return server


def _fingerprint(public: str) -> str:
    import base64
    import hashlib

    digest = hashlib.md5(base64.b64decode(public.split()[1]), usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def firewall_rule(r: dict[str, Any]) -> dict[str, Any]:
    if r.get("direction") not in ("in", "out") or r.get("protocol") not in ("tcp", "udp", "icmp", "esp", "gre"):
        raise ApiError(400, "invalid_input", "invalid input in field 'rules'")
    return {"direction": r["direction"], "protocol": r["protocol"], "port": r.get("port"),
            "source_ips": list(r.get("source_ips") or []), "destination_ips": list(r.get("destination_ips") or []),
            "description": r.get("description")}


def _server_json(sid: int, name: str, stype: dict[str, Any], image: dict[str, Any], location: dict[str, Any],
                 labels: dict[str, str], firewalls: list[int]) -> dict[str, Any]:
    return {
        "id": sid, "name": name, "status": "initializing", "created": now(),
        "public_net": {"ipv4": None, "ipv6": None, "floating_ips": [],
                       "firewalls": [{"id": f, "status": "applied"} for f in firewalls]},
        "private_net": [], "server_type": stype, "image": image, "iso": None, "location": location,
        "datacenter": {"id": location["id"], "name": f"{location['name']}-dc14", "description": location["description"],
                       "location": location},
        "rescue_enabled": False, "locked": False, "backup_window": None, "outgoing_traffic": 0, "ingoing_traffic": 0,
        "included_traffic": 21990232555520, "protection": {"delete": False, "rebuild": False}, "labels": labels,
        "volumes": [], "load_balancers": [], "primary_disk_size": stype["disk"], "placement_group": None,
    }


def page(items: list[dict[str, Any]], key: str, query: dict[str, list[str]]) -> dict[str, Any]:
    """A list answer with Hetzner's pagination meta (page, per_page <= 50)."""
    per_page = min(50, max(1, int(query.get("per_page", ["25"])[0])))
    number = max(1, int(query.get("page", ["1"])[0]))
    last = max(1, -(-len(items) // per_page))
    chunk = items[(number - 1) * per_page:number * per_page]
    return {key: chunk, "meta": {"pagination": {
        "page": number, "per_page": per_page, "previous_page": number - 1 if number > 1 else None,
        "next_page": number + 1 if number < last else None, "last_page": last, "total_entries": len(items)}}}
