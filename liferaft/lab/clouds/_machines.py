"""Lab hosts made on demand on an existing lab bridge: one per server a lab cloud creates.

Names carry the lab's id (the Hetzner cloud's: netns `lr-<id>-s<n>`, veths `lr<id>s<n>`/`lr<id>t<n>`; the
DigitalOcean cloud's: `d`/`e`), so `Lab.down()` sees leftovers.
Every resource is recorded in the lab registry under `<id>c` (`<id>d`) with this process as owner before it is created: if the
cloud process dies, the next `up`/`down` of any lab sweeps what it made. Create and remove from ONE long-lived
thread: a host dies with the thread that started it (pdeathsig).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from liferaft.errors import RunFailed
from liferaft.lab.hosts import (
    LabHost,
    _ssh_banner,
    kill_process,
    ns_init,
    prepare_host_dir,
    proc_start_time,
    record_resources,
    release_resources,
    spawn_host,
    tail,
)

FIRST_HOST = 100  # the Hetzner cloud's servers get .100 ... .199 of the lab's /24 (pool hosts use .11 ...)
MAX_HOSTS = 100


def _ip(*argv: str, stdin: str | None = None) -> None:
    cp = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True, check=False, timeout=30)
    if cp.returncode != 0:
        raise RunFailed(f"ip {' '.join(argv)} failed: {cp.stderr.strip()}")


class CloudMachines:
    """Hosts on `bridge` (whose address is `bridge_address`, .1 of a /24), for the lab with id `lab_id`."""

    def __init__(self, directory: Path, *, bridge: str, bridge_address: str, lab_id: str,
                 letters: tuple[str, str, str] = ("s", "t", "c"), first_host: int = FIRST_HOST,
                 max_hosts: int = MAX_HOSTS) -> None:
        """`letters`: (netns and host-side veth, namespace-side veth, registry id suffix), distinct per lab cloud, as
        are the addresses .`first_host` ... .`first_host + max_hosts - 1`: two clouds share one lab bridge."""
        self.directory = directory
        self.bridge = bridge
        self.bridge_address = bridge_address
        self.lab_id = lab_id
        self.letters = letters
        self.first_host, self.max_hosts = first_host, max_hosts
        self.id = f"{lab_id}{letters[2]}"
        self.hosts: dict[int, LabHost] = {}  # slot -> host
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._pending: set[int] = set()  # slots recorded but not yet built
        self._last = -1

    def _names(self, slot: int) -> tuple[str, str, str]:
        own, peer, _ = self.letters
        return f"lr-{self.lab_id}-{own}{slot}", f"lr{self.lab_id}{own}{slot}", f"lr{self.lab_id}{peer}{slot}"

    def _entry(self) -> dict[str, Any]:
        slots = sorted(set(self.hosts) | self._pending)
        procs = [{"pid": p, "start_time": s} for h in self.hosts.values()
                 for p, s in ((h.ns_init_pid, h.ns_init_start_time), (h.pid, h.start_time)) if p]
        return {"id": self.id, "owner_pid": os.getpid(), "owner_start_time": proc_start_time(os.getpid()),
                "directory": str(self.directory), "links": [self._names(s)[1] for s in slots],
                "netns": [self._names(s)[0] for s in slots], "processes": procs}

    def reserve_slot(self) -> int:
        """A free slot (address), reserved until `create` or `remove` of it. Slots go round: an address comes back
        only after all others, as neighbours (the controller, other hosts) may still cache its old MAC for ~30 s."""
        used = set(self.hosts) | self._pending
        for i in range(self.max_hosts):
            slot = (self._last + 1 + i) % self.max_hosts
            if slot not in used:
                self._pending.add(slot)
                self._last = slot
                return slot
        raise RunFailed(f"the lab cloud has no free address left ({self.max_hosts} servers)")

    def create(self, slot: int, name: str, authorized_keys: str, host_key: tuple[str, str] | None,
               *, timeout: float = 20.0) -> LabHost:
        """Build, start and wait for one host; its address is .(first_host + slot)."""
        ns, veth, peer = self._names(slot)
        address = f"{self.bridge_address.rsplit('.', 1)[0]}.{self.first_host + slot}"
        self._pending.add(slot)
        record_resources(self._entry())
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("link", "set", peer, "netns", ns)
        subprocess.run(["ip", "neigh", "flush", "to", address], capture_output=True, check=False, timeout=10)
        _ip("-n", ns, "-batch", "-", stdin=(f"link set lo up\nlink set {peer} name eth0\naddr add {address}/24 dev "
                                           f"eth0\nlink set eth0 up\nroute add default via {self.bridge_address}\n"))
        host = LabHost(name=name, address=address, netns=ns, veth=veth, directory=self.directory / f"s{slot}",
                       host_public_key="", known_hosts_file=self.directory / "known_hosts",
                       client_key=self.directory / "none")
        shutil.rmtree(host.directory, ignore_errors=True)  # a new server starts from a fresh disk
        prepare_host_dir(host, authorized_keys, host_key=host_key, comment=f"cloud-{self.lab_id}")
        self._procs[slot] = spawn_host(host)
        self.hosts[slot] = host
        self._pending.discard(slot)
        record_resources(self._entry())
        self._wait(slot, host, timeout)
        return host

    def _wait(self, slot: int, host: LabHost, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ns_init(host)
            if host.ns_init_pid and _ssh_banner(host.address, host.port):
                record_resources(self._entry())
                return
            if self._procs[slot].poll() is not None:
                raise RunFailed(f"cloud host {host.name} exited; log tail:\n{tail(host.sshd_log)}")
            if time.monotonic() > deadline:
                raise RunFailed(f"cloud host {host.name} not ready after {timeout:.0f} s:\n{tail(host.sshd_log)}")
            time.sleep(0.05)

    def apply_firewall(self, slot: int, rules: list[dict[str, Any]] | None) -> None:
        """Enforce a server's inbound firewall rules (Hetzner semantics: with a firewall, inbound is dropped unless a
        rule allows it; outbound stays open) with nftables inside its namespace. None: no firewall, all open."""
        self.apply_nft(slot, nft_ruleset(rules) if rules is not None else None)

    def apply_nft(self, slot: int, ruleset: str | None) -> None:
        """Replace the host's `inet liferaft_fw` nftables table with `ruleset` (None: no table, all open)."""
        host = self.hosts.get(slot)
        if host is None:
            return
        script = "add table inet liferaft_fw\ndelete table inet liferaft_fw\n" + (ruleset or "")
        cp = subprocess.run(["ip", "netns", "exec", host.netns, "nft", "-f", "-"], input=script, capture_output=True,
                            text=True, check=False, timeout=30)
        if cp.returncode != 0:
            raise RunFailed(f"nft in {host.netns} failed: {cp.stderr.strip()[-500:]}")

    def remove(self, slot: int) -> list[str]:
        """Kill the host (its namespace's PID 1 first), delete its veth and netns. Returns problems."""
        self._pending.discard(slot)
        host = self.hosts.pop(slot, None)
        if host is None:
            return []
        for pid, start in ((host.ns_init_pid, host.ns_init_start_time), (host.pid, host.start_time)):
            if pid:
                kill_process(pid, start)
        proc = self._procs.pop(slot, None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        ns, veth, _ = self._names(slot)
        shutil.rmtree(host.directory, ignore_errors=True)  # the server's disk goes with it
        problems = release_resources({"id": f"{self.id}-gone", "links": [veth], "netns": [ns], "processes": []})
        record_resources(self._entry())
        return problems

    def down(self) -> list[str]:
        problems: list[str] = []
        for slot in list(self.hosts):
            problems += self.remove(slot)
        problems += release_resources(self._entry())
        return problems


def nft_ruleset(rules: list[dict[str, Any]]) -> str:
    """Hetzner inbound firewall rules as an nftables table: established traffic, loopback and ICMP pass; each
    tcp/udp rule opens its port (or range) to its source networks; everything else inbound is dropped."""
    lines = ["table inet liferaft_fw {", " chain input {", "  type filter hook input priority 0; policy drop;",
             "  ct state established,related accept", '  iif "lo" accept',
             "  meta l4proto { icmp, ipv6-icmp } accept"]
    for r in rules:
        if r.get("direction") != "in":
            continue
        proto = r.get("protocol")
        if proto in ("icmp", "esp", "gre"):
            lines.append(f"  meta l4proto {proto} accept")
            continue
        port = f" {proto} dport {r['port']}" if r.get("port") else f" meta l4proto {proto}"
        for src in r.get("source_ips") or []:
            family = "ip6" if ":" in src else "ip"
            lines.append(f"  {family} saddr {src}{port} accept")
    return "\n".join(lines + [" }", "}", ""])
