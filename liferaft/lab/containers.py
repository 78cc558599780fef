"""Lab hosts that can run containers: podman 4.3 (Debian's) with runc, as root, inside a host's namespaces.

What a lab host needs, and why (see /work/shared/LAB.md, "Containers, registries..."):
- cgroups: `ip netns exec` mounts a fresh /sys, so /sys/fs/cgroup is empty inside a host and podman fails ("no
  cgroup mount found in mountinfo"). The host's setup mounts a tmpfs there and each cgroup v1 controller under it
  (`CGROUP_LINES`, best effort: a machine without them simply cannot run containers in the lab).
- containers.conf: runc (Debian's default crun fails with "cgroups in hybrid mode not supported"), the cgroupfs
  manager (no systemd), explicit ulimits (podman's defaults cannot be set here: "setrlimit ... not permitted"),
  file-based events (no journald).
- storage.conf: the vfs driver (a host's /var is an overlay mount: podman's overlay driver refuses to nest).
A real host needs none of this; the container workload kind only runs `podman` there.
"""

from __future__ import annotations

from pathlib import Path

CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")

# Shell (run in the host's mount namespace before sshd starts).
CGROUP_LINES = [
    "if mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup 2>/dev/null; then",
    f"  for c in {' '.join(CONTROLLERS)}; do",
    '    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2>/dev/null || true',
    "  done",
    ("  mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd "
     "2>/dev/null || true"),
    "fi",
]

CONTAINERS_CONF = """\
# Written by the liferaft lab: podman inside a lab host (liferaft.lab.containers).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

STORAGE_CONF = """\
# Written by the liferaft lab: a host's /var is an overlay mount, where podman's overlay driver cannot nest.
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


def setup_lines() -> list[str]:
    """The lines a lab host's setup script runs so podman works inside it."""
    return list(CGROUP_LINES)


def write_config(etc_upper: Path) -> None:
    """podman's configuration in a host's /etc (its overlay upper directory `etc_upper`)."""
    conf = etc_upper / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "containers.conf").write_text(CONTAINERS_CONF)
    (conf / "storage.conf").write_text(STORAGE_CONF)
