"""Lab hosts: network namespaces on a private bridge, each with its own sshd, overlay filesystem and PID namespace.

Per lab instance: a unique id (names of bridge, veths and namespaces carry it), a free 10.213.X.0/24, a bridge at
.1 and hosts at .11, .12, ... Each host runs, inside its netns:

    setpriv --pdeathsig KILL unshare --mount --propagation private --pid --fork --kill-child --uts --ipc sh -c SETUP

SETUP mounts /proc, overlays /etc /usr /var /opt /srv /home over per-host upper dirs, binds the per-host /root /run
/tmp and execs sshd. The host dies with the process that started it (pdeathsig: start hosts from a thread that lives
as long as the hosts, e.g. the main thread). Every resource is recorded in a registry file with the owner's PID
before it is created, so resources of a dead owner are swept at the next `up` of any lab.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import RunFailed, ToolMissing, UsageError

REGISTRY_DIR = Path(os.environ.get("LIFERAFT_LAB_REGISTRY", "/run/liferaft-lab"))
SUBNET_PREFIX = "10.213"
OVERLAID = ("etc", "usr", "var", "opt", "srv", "home")
BOUND = ("root", "run", "tmp")  # tmp last: the host's directory may live under /tmp
SSHD_CONFIG = "/etc/ssh/liferaft_sshd_config"  # path inside the host (written into the /etc upper dir)
SSH_PORT = 22


class LabUnavailable(UsageError):
    """This machine cannot run lab hosts (not root, no network namespaces, a tool missing)."""


# ------------------------------------------------------------------------------------------------ small helpers
def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    try:
        cp = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise ToolMissing(f"{argv[0]} is not installed", hint="install iproute2, util-linux, openssh") from e
    if check and cp.returncode != 0:
        raise RunFailed(f"{' '.join(argv)} failed (exit {cp.returncode}): {cp.stderr.strip()[-500:]}")
    return cp


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the PID, an identity."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, start_time: int | None) -> bool:
    """True if PID still names the same process (not a reused PID) and it is not a zombie."""
    st = proc_start_time(pid)
    if st is None or (start_time is not None and st != start_time):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_process(pid: int, start_time: int | None, *, timeout: float = 5.0) -> None:
    """SIGKILL a process we recorded, only if it is still the same process, and wait until it is gone."""
    if not process_alive(pid, start_time):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not process_alive(pid, start_time):
            return
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def check_lab_possible() -> None:
    """Raise LabUnavailable saying why this machine cannot run lab hosts."""
    if os.geteuid() != 0:
        raise LabUnavailable("lab hosts need root (network namespaces, bridges, mounts); running as uid "
                             f"{os.geteuid()}")
    for tool in ("ip", "unshare", "setpriv", "/usr/sbin/sshd", "ssh", "ssh-keygen", "mount"):
        if _run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            raise LabUnavailable(f"lab hosts need {tool!r}, which is not installed")
    probe = f"lrprobe{os.getpid() % 100000}"
    cp = _run(["ip", "netns", "add", probe], check=False)
    if cp.returncode != 0:
        raise LabUnavailable(f"cannot create a network namespace: {cp.stderr.strip()}")
    _run(["ip", "netns", "del", probe], check=False)


# ------------------------------------------------------------------------------------------------ the registry
@contextmanager
def _registry_lock() -> Iterator[None]:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(REGISTRY_DIR / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _registry_entries() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for p in sorted(REGISTRY_DIR.glob("*.json")):
        try:
            out.append((p, json.loads(p.read_text())))
        except (OSError, ValueError):
            continue
    return out


def _release(entry: dict[str, Any]) -> list[str]:
    """Remove every resource an entry lists. Returns what could not be removed."""
    problems: list[str] = []
    for proc in entry.get("processes", []):
        kill_process(int(proc["pid"]), proc.get("start_time"))
    for proc in entry.get("processes", []):
        if process_alive(int(proc["pid"]), proc.get("start_time")):
            problems.append(f"process {proc['pid']} survived SIGKILL")
    existing_links = _link_names()
    for link in entry.get("links", []):
        if link in existing_links:
            cp = _run(["ip", "link", "del", link], check=False)
            if cp.returncode != 0 and link in _link_names():
                problems.append(f"link {link}: {cp.stderr.strip()}")
    existing_ns = set(netns_names())
    for ns in entry.get("netns", []):
        if ns in existing_ns:
            cp = _run(["ip", "netns", "del", ns], check=False)
            if cp.returncode != 0:
                problems.append(f"netns {ns}: {cp.stderr.strip()}")
    return problems


def sweep_stale() -> list[str]:
    """Release the resources of every lab instance whose owner process is dead. Returns their ids."""
    swept = []
    with _registry_lock():
        for path, entry in _registry_entries():
            if process_alive(int(entry.get("owner_pid", 0)), entry.get("owner_start_time")):
                continue
            _release(entry)
            path.unlink(missing_ok=True)
            swept.append(str(entry.get("id")))
    return swept


def netns_names() -> list[str]:
    cp = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def _link_names() -> set[str]:
    cp = _run(["ip", "-j", "link", "show"], check=False)
    try:
        return {link["ifname"] for link in json.loads(cp.stdout or "[]")}
    except ValueError:
        return set()


def _used_subnets() -> set[int]:
    used: set[int] = set()
    cp = _run(["ip", "-j", "-4", "addr", "show"], check=False)
    for link in json.loads(cp.stdout or "[]"):
        for a in link.get("addr_info", []):
            parts = str(a.get("local", "")).split(".")
            if len(parts) == 4 and ".".join(parts[:2]) == SUBNET_PREFIX:
                used.add(int(parts[2]))
    cp = _run(["ip", "-4", "route", "show"], check=False)
    for line in cp.stdout.splitlines():
        parts = line.split()[0].split(".") if line.split() else []
        if len(parts) == 4 and ".".join(parts[:2]) == SUBNET_PREFIX:
            used.add(int(parts[2]))
    for _, entry in _registry_entries():
        if entry.get("subnet_octet") is not None:
            used.add(int(entry["subnet_octet"]))
    return used


# ------------------------------------------------------------------------------------------------ the hosts
@dataclass
class LabHost:
    """One lab host: a network namespace with its own sshd, filesystem view and PID namespace."""

    name: str
    address: str
    netns: str
    veth: str  # the bridge-side end; setting it down cuts the host off
    directory: Path
    host_public_key: str  # "ssh-ed25519 AAAA..."
    known_hosts_file: Path
    client_key: Path
    pid: int = 0  # the unshare process we started
    start_time: int | None = None
    ns_init_pid: int = 0  # PID 1 of the host's PID namespace
    ns_init_start_time: int | None = None
    port: int = SSH_PORT
    user: str = "root"

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_public_key}"

    @property
    def sshd_log(self) -> Path:
        return self.directory / "sshd.log"

    def ssh_count(self) -> int:
        """How many SSH sessions this host accepted so far ("Accepted publickey" lines in its sshd log)."""
        try:
            return self.sshd_log.read_text(errors="replace").count("Accepted publickey")
        except OSError:
            return 0

    def ssh_argv(self, *, known_hosts: Path | None = None) -> list[str]:
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.client_key), "-p", str(self.port),
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"{self.user}@{self.address}",
        ]

    def run(self, command: str, *, check: bool = True, timeout: float = 60,
            known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over SSH, host key checked against the lab's known_hosts."""
        argv = self.ssh_argv(known_hosts=known_hosts) + ["--", command]
        try:
            cp = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise RunFailed(f"host {self.name}: command timed out after {timeout} s") from e
        if check and cp.returncode != 0:
            raise RunFailed(f"host {self.name}: command failed (exit {cp.returncode}): {cp.stderr.strip()[-500:]}")
        return cp

    def cut(self) -> None:
        """Cut the host's network (its bridge port goes down): connections time out, as to a dead machine."""
        _run(["ip", "link", "set", self.veth, "down"])

    def heal(self) -> None:
        _run(["ip", "link", "set", self.veth, "up"])

    @property
    def is_cut(self) -> bool:
        cp = _run(["ip", "-j", "link", "show", self.veth], check=False)
        try:
            return "UP" not in json.loads(cp.stdout)[0].get("flags", [])
        except (ValueError, IndexError):
            return True

    def alive(self) -> bool:
        return process_alive(self.ns_init_pid or self.pid, self.ns_init_start_time or self.start_time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "address": self.address, "port": self.port, "user": self.user,
            "netns": self.netns, "veth": self.veth, "directory": str(self.directory),
            "host_public_key": self.host_public_key, "pid": self.pid, "start_time": self.start_time,
            "ns_init_pid": self.ns_init_pid, "ns_init_start_time": self.ns_init_start_time,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, known_hosts_file: Path, client_key: Path) -> LabHost:
        return cls(
            name=d["name"], address=d["address"], netns=d["netns"], veth=d["veth"], directory=Path(d["directory"]),
            host_public_key=d["host_public_key"], known_hosts_file=known_hosts_file, client_key=client_key,
            pid=d.get("pid", 0), start_time=d.get("start_time"), ns_init_pid=d.get("ns_init_pid", 0),
            ns_init_start_time=d.get("ns_init_start_time"), port=d.get("port", SSH_PORT), user=d.get("user", "root"),
        )


_SETUP = r"""
set -eu
cd "$LR_DIR"
hostname "$LR_NAME"
mount -t proc proc /proc
for d in {overlaid}; do
  mount -n --no-canonicalize -t overlay overlay -o "lowerdir=/$d,upperdir=upper/$d,workdir=work/$d" "/$d"
done
for d in {bound}; do
  mount -n --no-canonicalize --bind "$d" "/$d"
done
{containers}
cd /
exec /usr/sbin/sshd -D -e -f {config}
"""


def prepare_host_dir(host: LabHost, authorized_keys: str, *, host_key: tuple[str, str] | None = None,
                     comment: str = "lab") -> None:
    """The host's directories (overlay upper/work, bound /root /run /tmp), root's authorized_keys, its host key
    (`host_key` = (private OpenSSH text, public line), else a generated one) and sshd config. Sets
    host.host_public_key."""
    d = host.directory
    for sub in OVERLAID:
        (d / "upper" / sub).mkdir(parents=True, exist_ok=True)
        (d / "work" / sub).mkdir(parents=True, exist_ok=True)
    for sub in BOUND:
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "root", 0o700)
    os.chmod(d / "tmp", 0o1777)
    (d / "run" / "sshd").mkdir(exist_ok=True)
    pg_run = d / "run" / "postgresql"
    pg_run.mkdir(exist_ok=True)
    os.chmod(pg_run, 0o2775)
    try:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(pg_run, pw.pw_uid, pw.pw_gid)
    except (KeyError, OSError):
        pass
    ssh_dir = d / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    auth.write_text(authorized_keys)
    os.chmod(auth, 0o600)
    etc_ssh = d / "upper" / "etc" / "ssh"
    etc_ssh.mkdir(parents=True, exist_ok=True)
    key = etc_ssh / "liferaft_host_ed25519_key"
    if host_key is not None:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(host_key[0].rstrip("\n") + "\n")
        Path(str(key) + ".pub").write_text(host_key[1].strip() + "\n")
    elif not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}@{comment}", "-f", str(key)])
    pub = Path(str(key) + ".pub").read_text().split()
    host.host_public_key = f"{pub[0]} {pub[1]}"
    (etc_ssh / Path(SSHD_CONFIG).name).write_text(sshd_config(host))
    from liferaft.lab.containers import write_config

    write_config(d / "upper" / "etc")  # podman works in the host (cgroups are mounted by its setup)


def sshd_config(host: LabHost) -> str:
    """The sshd configuration of a lab host (written to SSHD_CONFIG inside it); host key at the fixed path."""
    return "\n".join([
        f"Port {host.port}", f"ListenAddress {host.address}", "ListenAddress 127.0.0.1",
        "HostKey /etc/ssh/liferaft_host_ed25519_key", "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "LogLevel VERBOSE", "PidFile /run/sshd.pid", "MaxStartups 100:30:200",
        "MaxSessions 100", "AcceptEnv LANG LC_*", "Subsystem sftp /usr/lib/openssh/sftp-server", "",
    ])


def spawn_host(host: LabHost) -> subprocess.Popen[bytes]:
    """Start a prepared host (its netns, directory and sshd config exist): its own mount, PID, UTS and IPC
    namespaces, sshd in the foreground. Dies with the calling THREAD (pdeathsig): call from a long-lived one."""
    from liferaft.lab.containers import setup_lines

    script = _SETUP.format(overlaid=" ".join(OVERLAID), bound=" ".join(BOUND), config=SSHD_CONFIG,
                           containers="\n".join(setup_lines()))
    argv = ["ip", "netns", "exec", host.netns, "setpriv", "--pdeathsig", "KILL", "unshare", "--mount",
            "--propagation", "private", "--pid", "--fork", "--kill-child", "--uts", "--ipc",
            "sh", "-c", script]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LR_DIR": str(host.directory), "LR_NAME": host.name,
           "LANG": "C.UTF-8"}
    with open(host.sshd_log, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True)
    host.pid = proc.pid
    host.start_time = proc_start_time(proc.pid)
    return proc


def ns_init(host: LabHost) -> None:
    """Learn PID 1 of the host's PID namespace (the child of the unshare process), once it exists."""
    if not host.ns_init_pid:
        kids = _children(host.pid)
        if kids:
            host.ns_init_pid, host.ns_init_start_time = kids[0], proc_start_time(kids[0])


def record_resources(entry: dict[str, Any]) -> None:
    """Record (or update) a registry entry -- id, owner_pid, owner_start_time, links, netns, processes -- so
    the resources it lists are swept when its owner dies. Record BEFORE creating what it lists."""
    with _registry_lock():
        _write_json(REGISTRY_DIR / f"{entry['id']}.json", entry)


def release_resources(entry: dict[str, Any]) -> list[str]:
    """Remove what a registry entry lists and forget it (when nothing is left). Returns what could not be removed."""
    with _registry_lock():
        problems = _release(entry)
        if not problems:
            (REGISTRY_DIR / f"{entry['id']}.json").unlink(missing_ok=True)
    return problems


@dataclass
class LabHosts:
    """A bridge and N hosts. `up()` builds them, `down()` removes everything they made."""

    directory: Path
    names: tuple[str, ...] = ("a", "b", "c")
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, LabHost] = field(default_factory=dict)
    subnet_octet: int | None = None
    owner_pid: int = field(default_factory=os.getpid)

    # ---- names and paths
    @property
    def bridge(self) -> str:
        return f"lr{self.id}br"

    @property
    def bridge_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet_octet}.1"

    @property
    def subnet(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet_octet}.0/24"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def registry_file(self) -> Path:
        return REGISTRY_DIR / f"{self.id}.json"

    def __getitem__(self, name: str) -> LabHost:
        return self.hosts[name]

    def _netns(self, name: str) -> str:
        return f"lr-{self.id}-{name}"

    def _veth(self, i: int) -> tuple[str, str]:
        return f"lr{self.id}v{i}", f"lr{self.id}p{i}"

    def _registry_entry(self) -> dict[str, Any]:
        procs = []
        for h in self.hosts.values():
            if h.ns_init_pid:
                procs.append({"pid": h.ns_init_pid, "start_time": h.ns_init_start_time})
            if h.pid:
                procs.append({"pid": h.pid, "start_time": h.start_time})
        return {
            "id": self.id, "owner_pid": self.owner_pid, "owner_start_time": proc_start_time(self.owner_pid),
            "directory": str(self.directory), "subnet_octet": self.subnet_octet,
            "links": [self.bridge] + [self._veth(i)[0] for i in range(len(self.names))],
            "netns": [self._netns(n) for n in self.names], "processes": procs,
        }

    # ---- up
    def up(self, *, timeout: float = 30.0) -> LabHosts:
        check_lab_possible()
        for n in self.names:
            if not n.isalnum() or len(n) > 8:
                raise UsageError(f"host name {n!r}: use up to 8 letters or digits")
        sweep_stale()
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        with _registry_lock():
            used = _used_subnets()
            free = [x for x in range(1, 255) if x not in used]
            if not free:
                raise RunFailed(f"no free {SUBNET_PREFIX}.X.0/24 subnet for a lab bridge")
            self.subnet_octet = free[int.from_bytes(os.urandom(2), "big") % min(len(free), 64)]
            _write_json(self.registry_file, self._registry_entry())  # recorded before anything is created
        try:
            self._make_keys()
            self._make_network()
            for i, name in enumerate(self.names):
                self._start_host(i, name)
            _write_json(self.registry_file, self._registry_entry())
            self._wait_ready(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _make_keys(self) -> None:
        if not self.client_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"liferaft-lab-{self.id}",
                  "-f", str(self.client_key)])
        os.chmod(self.client_key, 0o600)

    def _make_network(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i, name in enumerate(self.names):
            ns, (veth, peer) = self._netns(name), self._veth(i)
            address = f"{SUBNET_PREFIX}.{self.subnet_octet}.{11 + i}"
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
            _run(["ip", "link", "set", veth, "master", self.bridge])
            _run(["ip", "link", "set", veth, "up"])
            _run(["ip", "link", "set", peer, "netns", ns])
            batch = (f"link set lo up\nlink set {peer} name eth0\naddr add {address}/24 dev eth0\n"
                     f"link set eth0 up\nroute add default via {self.bridge_address}\n")
            cp = subprocess.run(["ip", "-n", ns, "-batch", "-"], check=False, input=batch, capture_output=True, text=True)
            if cp.returncode != 0:
                raise RunFailed(f"configuring {ns} failed: {cp.stderr.strip()}")
            self.hosts[name] = LabHost(
                name=name, address=address, netns=ns, veth=veth, directory=self.directory / "hosts" / name,
                host_public_key="", known_hosts_file=self.known_hosts, client_key=self.client_key)

    def _prepare_host_dir(self, host: LabHost) -> None:
        prepare_host_dir(host, Path(str(self.client_key) + ".pub").read_text(), comment=f"lab-{self.id}")

    def _start_host(self, i: int, name: str) -> None:
        host = self.hosts[name]
        self._prepare_host_dir(host)
        proc = spawn_host(host)
        self._popen = getattr(self, "_popen", {})
        self._popen[name] = proc

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.hosts)
        while pending:
            for name, host in list(pending.items()):
                if not host.ns_init_pid:
                    kids = _children(host.pid)
                    if kids:
                        host.ns_init_pid, host.ns_init_start_time = kids[0], proc_start_time(kids[0])
                if _ssh_banner(host.address, host.port):
                    del pending[name]
                elif self._popen[name].poll() is not None:
                    raise RunFailed(f"lab host {name} exited (code {self._popen[name].returncode}); log tail:\n"
                                    + tail(host.sshd_log))
            if pending and time.monotonic() > deadline:
                raise RunFailed(f"lab hosts {sorted(pending)} not ready after {timeout:.0f} s; log tail:\n"
                                + "\n".join(tail(h.sshd_log) for h in pending.values()))
            if pending:
                time.sleep(0.05)
        self.known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in self.hosts.values()))
        with _registry_lock():
            _write_json(self.registry_file, self._registry_entry())

    # ---- down
    def down(self) -> list[str]:
        """Kill every host (SIGKILL the namespace's PID 1), delete links and namespaces. Returns problems."""
        with _registry_lock():
            problems = _release(self._registry_entry())
            for proc in getattr(self, "_popen", {}).values():
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    problems.append(f"process {proc.pid} did not exit")
            if not problems:
                self.registry_file.unlink(missing_ok=True)
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "directory": str(self.directory), "bridge": self.bridge,
            "bridge_address": self.bridge_address, "subnet": self.subnet, "known_hosts": str(self.known_hosts),
            "client_key": str(self.client_key), "hosts": {n: h.to_dict() for n, h in self.hosts.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabHosts:
        """A view of running hosts (for `cut-host`, status and tests in another process). down() is the owner's."""
        self = cls(directory=Path(d["directory"]), id=d["id"])
        self.subnet_octet = int(str(d["bridge_address"]).split(".")[2])
        self.hosts = {n: LabHost.from_dict(h, known_hosts_file=self.known_hosts, client_key=self.client_key)
                      for n, h in d["hosts"].items()}
        self.names = tuple(self.hosts)
        return self


def _ssh_banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def lab_resources(lab_id: str = "") -> dict[str, list[str]]:
    """Lab resources that exist on this machine now (all labs, or one lab id): netns, links, netns mounts."""
    link_prefix, ns_prefix = f"lr{lab_id}", (f"lr-{lab_id}-" if lab_id else "lr-")
    links = sorted(n for n in _link_names() if n.startswith(link_prefix))
    ns = sorted(n for n in netns_names() if n.startswith(ns_prefix))
    mounts = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4]
            if mp.startswith("/run/netns/" + ns_prefix):
                mounts.append(mp)
    except OSError:
        pass
    return {"links": links, "netns": ns, "mounts": sorted(mounts)}
