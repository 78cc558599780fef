"""The lab DigitalOcean cloud's catalogue, state and API logic (see `liferaft.lab.clouds.digitalocean`)."""

from __future__ import annotations

import base64
import hashlib
import queue
import re
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from liferaft.lab.clouds._hetzner_api import injected_host_key, parse_cloud_config
from liferaft.lab.clouds._machines import CloudMachines

# ------------------------------------------------------------------------------------------ catalogue
# Shapes as DigitalOcean's API v2 documents them; prices are the lab's own round figures (USD), not a quote.
_REGIONS = [("fra1", "Frankfurt 1"), ("ams3", "Amsterdam 3"), ("nyc3", "New York 3")]
_SIZES = [("s-1vcpu-1gb", 1024, 1, 25, 1.0, 6.0, 0.00893), ("s-1vcpu-2gb", 2048, 1, 50, 2.0, 12.0, 0.01786),
          ("s-2vcpu-4gb", 4096, 2, 80, 4.0, 24.0, 0.03571)]
SIZES: list[dict[str, Any]] = [
    {"slug": slug, "memory": mem, "vcpus": cpus, "disk": disk, "transfer": transfer, "price_monthly": monthly,
     "price_hourly": hourly, "regions": [r for r, _ in _REGIONS], "available": True,
     "description": "Basic", "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}]}
    for slug, mem, cpus, disk, transfer, monthly, hourly in _SIZES]
REGIONS: list[dict[str, Any]] = [
    {"name": name, "slug": slug, "features": ["backups", "ipv6", "metadata", "install_agent"], "available": True,
     "sizes": [s["slug"] for s in SIZES]} for slug, name in _REGIONS]
IMAGES: list[dict[str, Any]] = [
    {"id": 153149729, "name": "12 x64", "distribution": "Debian", "slug": "debian-12-x64", "public": True,
     "regions": [r for r, _ in _REGIONS], "created_at": "2024-03-14T17:26:23Z", "min_disk_size": 15,
     "type": "base", "size_gigabytes": 0.6, "description": "Debian 12 x64", "tags": [], "status": "available"},
    {"id": 155193328, "name": "24.04 (LTS) x64", "distribution": "Ubuntu", "slug": "ubuntu-24-04-x64",
     "public": True, "regions": [r for r, _ in _REGIONS], "created_at": "2024-04-24T14:24:51Z",
     "min_disk_size": 15, "type": "base", "size_gigabytes": 0.9, "description": "Ubuntu 24.04 (LTS) x64",
     "tags": [], "status": "available"},
]
TAG_RE = re.compile(r"^[A-Za-z0-9_:-]{1,255}$")
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
PORTS_RE = re.compile(r"^(all|\d{1,5}(-\d{1,5})?)$")


class ApiError(Exception):
    """A DigitalOcean error answer: `{"id": ..., "message": ..., "request_id": ...}` with its HTTP status."""

    def __init__(self, status: int, id: str, message: str) -> None:
        super().__init__(message)
        self.status, self.id, self.message = status, id, message


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", message)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fingerprint(public: str) -> str:
    digest = hashlib.md5(base64.b64decode(public.split()[1]), usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _rule(r: Any, direction: str) -> dict[str, Any]:
    """One inbound or outbound rule, checked and normalised (`sources` / `destinations`)."""
    where = "sources" if direction == "in" else "destinations"
    if not isinstance(r, dict) or r.get("protocol") not in ("tcp", "udp", "icmp"):
        raise unprocessable("rule protocol must be one of tcp, udp, icmp")
    ports = "0" if r["protocol"] == "icmp" else str(r.get("ports") or "")
    if not PORTS_RE.match(ports):
        raise unprocessable(f"invalid ports {ports!r}: a port, a range (8000-9000), or 0 (all)")
    ports = "0" if ports == "all" else ports  # answered as "0", as DigitalOcean does
    target = r.get(where) or {}
    if not isinstance(target, dict) or not any(target.get(k) for k in ("addresses", "tags", "droplet_ids")):
        raise unprocessable(f"each rule needs {where}")
    return {"protocol": r["protocol"], "ports": ports,
            where: {k: list(target.get(k) or []) for k in ("addresses", "tags", "droplet_ids") if target.get(k)}}


def nft_ruleset(inbound: list[dict[str, Any]], outbound: list[dict[str, Any]]) -> str:
    """DigitalOcean cloud firewall semantics in nftables: with a firewall, inbound AND outbound traffic is dropped
    unless a rule allows it (replies to allowed connections pass; loopback passes). Rules carry resolved
    addresses."""
    def lines(rules: list[dict[str, Any]], where: str, field: str) -> list[str]:
        out = []
        for r in rules:
            proto, ports = r["protocol"], r.get("ports") or "0"
            if proto == "icmp":
                match = " meta l4proto { icmp, ipv6-icmp }"
            elif ports in ("all", "0"):
                match = f" meta l4proto {proto}"
            else:
                match = f" {proto} dport {ports}"
            for addr in r[where]:
                out.append(f"  {'ip6' if ':' in addr else 'ip'} {field} {addr}{match} accept")
        return out

    return "\n".join(
        ["table inet liferaft_fw {", " chain input {", "  type filter hook input priority 0; policy drop;",
         "  ct state established,related accept", '  iif "lo" accept', *lines(inbound, "sources", "saddr"), " }",
         " chain output {", "  type filter hook output priority 0; policy drop;",
         "  ct state established,related accept", '  oif "lo" accept',
         *lines(outbound, "destinations", "daddr"), " }", "}", ""])


class DigitalOceanState:
    """Everything the API knows, under one lock. Host building and removal are queued for the main thread."""

    def __init__(self, machines: CloudMachines, tokens: set[str], jobs: queue.Queue[Callable[[], None]]) -> None:
        self.machines = machines
        self.tokens = tokens
        self.jobs = jobs
        self.lock = threading.RLock()
        self.account_uuid = str(uuid.uuid4())
        self.droplets: dict[int, dict[str, Any]] = {}
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self.slots: dict[int, int] = {}  # droplet id -> machine slot
        self.droplet_limit = 10
        self.account_status, self.status_message = "active", ""  # DigitalOcean's: active, warning, locked
        self.lose_create_answers = 0  # the next N droplet creations are made but answered 500 (a lost answer)
        self.apply_user_data_host_keys = True
        self.hold_boot = False  # droplets stay `new` (their hosts are not built) until released
        self.held: list[Callable[[], None]] = []
        self._next = 300_000_000 + secrets.randbelow(1_000_000)

    def next_id(self) -> int:
        self._next += 1
        return self._next

    def account(self) -> dict[str, Any]:
        return {"droplet_limit": self.droplet_limit, "floating_ip_limit": 3, "volume_limit": 100,
                "email": "lab@example.test", "uuid": self.account_uuid, "email_verified": True,
                "status": self.account_status, "status_message": self.status_message,
                "team": {"uuid": self.account_uuid, "name": "My Team"}}

    def action(self, type_: str, droplet_id: int, region: dict[str, Any], *, done: bool = False) -> dict[str, Any]:
        a: dict[str, Any] = {"id": self.next_id(), "status": "completed" if done else "in-progress", "type": type_,
                             "started_at": now(), "completed_at": now() if done else None, "resource_id": droplet_id,
                             "resource_type": "droplet", "region": region, "region_slug": region["slug"]}
        self.actions[a["id"]] = a
        return a

    # ------------------------------------------------------------------------------------------ ssh keys, tags
    def create_ssh_key(self, body: dict[str, Any]) -> dict[str, Any]:
        name, public = str(body.get("name") or ""), str(body.get("public_key") or "").strip()
        if not name or len(public.split()) < 2:
            raise unprocessable("name and public_key are required")
        try:
            fp = fingerprint(public)
        except (ValueError, IndexError):
            raise unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519' and 'ecdsa'") from None
        if any(k["fingerprint"] == fp for k in self.ssh_keys.values()):
            raise unprocessable("SSH Key is already in use on your account")
        key: dict[str, Any] = {"id": self.next_id(), "fingerprint": fp, "public_key": public, "name": name}
        self.ssh_keys[key["id"]] = key
        return key

    def ssh_key(self, ref: Any) -> dict[str, Any]:
        for k in self.ssh_keys.values():
            if str(ref) in (str(k["id"]), k["fingerprint"]):
                return k
        raise unprocessable(f"ssh key {ref} is not a key of this account")

    def tag(self, name: str) -> dict[str, Any]:
        if not TAG_RE.match(name):
            raise unprocessable(f"tag name {name!r}: letters, numbers, colons, dashes and underscores only")
        if name not in self.tags:
            self.tags[name] = {"name": name, "resources": {"count": 0, "droplets": {"count": 0}}}
        return self.tags[name]

    # ------------------------------------------------------------------------------------------ firewalls
    def firewall_body(self, body: dict[str, Any], fid: str | None = None) -> dict[str, Any]:
        name = str(body.get("name") or "")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,254}", name):
            raise unprocessable("name must begin with an alphanumeric character; then alphanumerics, '.' or '-'")
        tags = [str(t) for t in body.get("tags") or []]
        for t in tags:
            self.tag(t)
        droplet_ids = [int(d) for d in body.get("droplet_ids") or []]
        if any(d not in self.droplets for d in droplet_ids):
            raise unprocessable("droplet_ids: a droplet does not exist")
        return {"id": fid or str(uuid.uuid4()), "name": name, "status": "succeeded", "created_at": now(),
                "pending_changes": [], "inbound_rules": [_rule(r, "in") for r in body.get("inbound_rules") or []],
                "outbound_rules": [_rule(r, "out") for r in body.get("outbound_rules") or []],
                "droplet_ids": droplet_ids, "tags": tags}

    def put_firewall(self, body: dict[str, Any], fid: str | None = None) -> dict[str, Any]:
        if fid is not None and fid not in self.firewalls:
            raise not_found()
        before: set[int] = self._targets(self.firewalls[fid]) if fid else set()
        fw = self.firewall_body(body, fid)
        if fid is not None:
            fw["created_at"] = self.firewalls[fid]["created_at"]
        self.firewalls[fw["id"]] = fw
        self.refresh(before | self._targets(fw))
        return fw

    def delete_firewall(self, fid: str) -> None:
        fw = self.firewalls.pop(fid, None)
        if fw is None:
            raise not_found()
        self.refresh(self._targets(fw))

    def _targets(self, fw: dict[str, Any]) -> set[int]:
        return {d for d, drop in self.droplets.items() if d in fw["droplet_ids"] or set(fw["tags"]) & set(drop["tags"])}

    def rules_of(self, did: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """Every firewall's rules that apply to the droplet, addresses resolved (None: no firewall, all open)."""
        with self.lock:
            fws = [f for f in self.firewalls.values() if did in self._targets(f)]
            if not fws:
                return None

            def resolve(rule: dict[str, Any], where: str) -> dict[str, Any]:
                t = rule[where]
                ids = set(t.get("droplet_ids") or []) | {d for d, drop in self.droplets.items()
                                                         if set(t.get("tags") or []) & set(drop["tags"])}
                addrs = list(t.get("addresses") or []) + [n["ip_address"] for d in sorted(ids)
                                                           for n in self.droplets[d]["networks"]["v4"]]
                return {**rule, where: addrs}

            return ([resolve(r, "sources") for f in fws for r in f["inbound_rules"]],
                    [resolve(r, "destinations") for f in fws for r in f["outbound_rules"]])

    def apply(self, did: int) -> None:
        """Main thread: enforce the droplet's firewalls on its host."""
        slot = self.slots.get(did)
        if slot is not None:
            rules = self.rules_of(did)
            self.machines.apply_nft(slot, nft_ruleset(*rules) if rules is not None else None)

    def refresh(self, droplet_ids: set[int]) -> None:
        for did in droplet_ids:
            self.jobs.put(lambda did=did: self.apply(did))  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------ droplets
    def create_droplet(self, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        name = str(body.get("name") or "")
        if not NAME_RE.match(name):
            raise unprocessable("Name Only valid hostname characters are allowed. (a-z, A-Z, 0-9, . and -)")
        size = next((s for s in SIZES if s["slug"] == body.get("size")), None)
        if size is None:
            raise unprocessable("You specified an invalid size for Droplet creation.")
        image = next((i for i in IMAGES if body.get("image") in (i["slug"], i["id"], str(i["id"]))), None)
        if image is None:
            raise unprocessable("You specified an invalid image for Droplet creation.")
        region = next((r for r in REGIONS if r["slug"] == (body.get("region") or "fra1")), None)
        if region is None:
            raise unprocessable("You specified an invalid region for Droplet creation.")
        if len(str(body.get("user_data") or "").encode()) > 64 * 1024:
            raise unprocessable("user_data is limited to 64 KiB")
        tags = [str(t) for t in body.get("tags") or []]
        if any(not TAG_RE.match(t) for t in tags):
            raise unprocessable("Tags may contain letters, numbers, colons, dashes, and underscores")
        keys = [self.ssh_key(ref) for ref in body.get("ssh_keys") or []]
        if len(self.droplets) >= self.droplet_limit:
            raise unprocessable("creating this/these droplet(s) will exceed your droplet limit")
        for t in tags:
            self.tag(t)
        did = self.next_id()
        droplet: dict[str, Any] = {
            "id": did, "name": name, "memory": size["memory"], "vcpus": size["vcpus"], "disk": size["disk"],
            "locked": False, "status": "new", "kernel": None, "created_at": now(), "features": [],
            "backup_ids": [], "next_backup_window": None, "snapshot_ids": [], "image": image, "volume_ids": [],
            "size": size, "size_slug": size["slug"], "networks": {"v4": [], "v6": []}, "region": region,
            "tags": tags, "vpc_uuid": str(uuid.uuid4())}
        self.droplets[did] = droplet
        action = self.action("create", did, region)
        config = parse_cloud_config(body.get("user_data"))
        authorized = "".join(k["public_key"] + "\n" for k in keys)
        self.slots[did] = slot = self.machines.reserve_slot()
        build = lambda: self._build(did, slot, authorized, config, action)
        if self.hold_boot:
            self.held.append(build)
        else:
            self.jobs.put(build)
        if self.lose_create_answers > 0:  # made, but the answer is lost on the way (a gateway's 500)
            self.lose_create_answers -= 1
            raise ApiError(500, "server_error", "Server was unable to give you a response.")
        return {"droplet": public(droplet),
                "links": {"actions": [{"id": action["id"], "rel": "create",
                                       "href": f"{base_url}/v2/actions/{action['id']}"}]}}

    def _build(self, did: int, slot: int, authorized: str, config: dict[str, Any], action: dict[str, Any]) -> None:
        """Main thread: make the lab host, enforce its firewalls, then the droplet is active."""
        host_key = injected_host_key(config, self.apply_user_data_host_keys)
        with self.lock:
            droplet = self.droplets.get(did)
            if droplet is None or self.slots.get(did) != slot:
                return  # deleted before it booted
            name = droplet["name"]
        try:
            host = self.machines.create(slot, name, authorized, host_key)
            with self.lock:
                droplet["networks"]["v4"] = [{"ip_address": host.address, "netmask": "255.255.255.0",
                                              "gateway": self.machines.bridge_address, "type": "public"}]
            self.apply(did)  # before the droplet counts as active
        except Exception as e:  # noqa: BLE001 - the action reports it, as DigitalOcean's does
            traceback.print_exc()
            with self.lock:
                action.update(status="errored", completed_at=now())
                droplet["status"] = "off"
                droplet["lab_error"] = str(e)[:500]
            return
        with self.lock:
            if did in self.droplets:
                droplet["status"] = "active"
                droplet["lab"] = {"netns": host.netns, "address": host.address,
                                  "host_public_key": host.host_public_key, "directory": str(host.directory),
                                  "pid": host.ns_init_pid}
                action.update(status="completed", completed_at=now())
            gone = did not in self.droplets
        if gone:  # deleted while it was being built
            self.machines.remove(slot)

    def set_hold_boot(self, hold: bool) -> None:
        self.hold_boot = hold
        if not hold:
            for build in self.held:
                self.jobs.put(build)
            self.held = []

    def get_droplet(self, did: int) -> dict[str, Any]:
        droplet = self.droplets.get(did)
        if droplet is None:
            raise not_found()
        return droplet

    def delete_droplet(self, did: int) -> None:
        """204 at once; the droplet goes `off` and is known until its host is removed (then 404), as a deletion
        takes a moment at DigitalOcean too."""
        droplet = self.get_droplet(did)
        if droplet.get("deleting"):
            return
        droplet["deleting"] = True
        droplet["status"] = "off"
        slot = self.slots.get(did)
        self.action("destroy", did, droplet["region"], done=True)

        def remove() -> None:
            if slot is not None:
                self.machines.remove(slot)
            with self.lock:
                self.droplets.pop(did, None)
                self.slots.pop(did, None)
                for fw in self.firewalls.values():
                    fw["droplet_ids"] = [d for d in fw["droplet_ids"] if d != did]

        self.jobs.put(remove)


def public(droplet: dict[str, Any]) -> dict[str, Any]:
    """A droplet as the API shows it (without the lab's own fields)."""
    return {k: v for k, v in droplet.items() if k not in ("lab", "deleting", "lab_error")}
