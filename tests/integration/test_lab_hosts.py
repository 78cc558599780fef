"""Lab hosts: real network namespaces with sshd, host keys checked, own filesystems, cut and heal, clean teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from liferaft.lab.hosts import LabHosts, lab_resources

pytestmark = pytest.mark.lab


def test_ssh_with_host_key_checking_works(lab_hosts) -> None:
    """Each host answers over SSH with StrictHostKeyChecking=yes, and under its own hostname."""
    for name, host in lab_hosts.hosts.items():
        assert host.run("hostname").stdout.strip() == name
        assert host.host_public_key.startswith("ssh-ed25519 AAAA")
        assert host.known_hosts_line in lab_hosts.known_hosts.read_text()
    assert oct(lab_hosts.client_key.stat().st_mode & 0o777) == "0o600"


def test_swapped_host_key_is_refused(lab_hosts, tmp_path: Path) -> None:
    """A known_hosts entry with another host's key makes ssh refuse: checking is really on."""
    a, b = lab_hosts["a"], lab_hosts["b"]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{a.address} {b.host_public_key}\n")
    cp = a.run("true", check=False, known_hosts=wrong)
    assert cp.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in cp.stderr or "Host key verification failed" in cp.stderr
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    cp = a.run("true", check=False, known_hosts=unknown)
    assert cp.returncode == 255 and "Host key verification failed" in cp.stderr


def test_each_host_has_its_own_filesystem(lab_hosts) -> None:
    """A file written under /etc, /root, /tmp or /srv of host a is not visible on b nor on the controller."""
    token = uuid.uuid4().hex
    paths = [f"/etc/lr-{token}", f"/root/lr-{token}", f"/tmp/lr-{token}", f"/srv/lr-{token}"]
    lab_hosts["a"].run(" && ".join(f"echo {token} > {p}" for p in paths))
    for p in paths:
        assert lab_hosts["a"].run(f"cat {p}").stdout.strip() == token
        assert lab_hosts["b"].run(f"test -e {p}", check=False).returncode == 1
        assert not Path(p).exists()


def test_host_has_own_pid_namespace_and_sshd_as_init(lab_hosts) -> None:
    """PID 1 inside a host is its sshd; the controller's processes are invisible."""
    out = lab_hosts["b"].run("cat /proc/1/comm; ps -e -o comm= | wc -l").stdout.split()
    assert out[0] == "sshd"
    assert int(out[1]) < 15


def test_postgres_and_system_python_run_on_a_host(lab_hosts) -> None:
    """PostgreSQL 15 initdb works as the postgres user, and /usr/bin/python3 has psycopg2 and boto3."""
    c = lab_hosts["c"]
    c.run("rm -rf /tmp/pgtest && su postgres -c '/usr/lib/postgresql/15/bin/initdb -D /tmp/pgtest' >/dev/null",
          timeout=120)
    c.run("su postgres -c '/usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pgtest -o \"-k /tmp -c listen_addresses=\" "
          "-w start' >/dev/null", timeout=60)
    try:
        out = c.run("su postgres -c \"psql -h /tmp -Atc 'select 40+2'\"").stdout.strip()
        assert out == "42"
    finally:
        c.run("su postgres -c '/usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pgtest -m immediate stop'", check=False)
    assert c.run("/usr/bin/python3 -c 'import psycopg2, boto3; print(\"ok\")'").stdout.strip() == "ok"


def test_ssh_count_counts_sessions(lab_hosts) -> None:
    """ssh_count() grows by one per SSH session."""
    c = lab_hosts["c"]
    before = c.ssh_count()
    c.run("true")
    c.run("true")
    deadline = time.monotonic() + 5
    while c.ssh_count() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.ssh_count() == before + 2


def test_hosts_reach_the_bridge_and_each_other(lab_hosts) -> None:
    """Hosts reach each other and a service bound on the bridge address of the controller."""
    a, b = lab_hosts["a"], lab_hosts["b"]
    cp = a.run(f"/usr/bin/python3 -c \"import socket; socket.create_connection(('{b.address}', 22), 3).recv(4)\"",
               check=False)
    assert cp.returncode == 0, cp.stderr


def test_cut_and_heal_a_host(lab_hosts) -> None:
    """cut() makes the host unreachable (ssh fails), heal() brings it back."""
    b = lab_hosts["b"]
    b.cut()
    try:
        assert b.is_cut
        t = time.monotonic()
        cp = b.run("true", check=False, timeout=30)
        assert cp.returncode == 255
        assert time.monotonic() - t < 15
    finally:
        b.heal()
    assert not b.is_cut
    assert b.run("echo back").stdout.strip() == "back"


def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    """down() leaves no process, network namespace, link or netns mount behind (listed before and after)."""
    from liferaft.lab.hosts import check_lab_possible

    check_lab_possible()
    hosts = LabHosts(directory=tmp_path / "h", names=("x", "y"))
    hosts.up()
    pids = [h.pid for h in hosts.hosts.values()] + [h.ns_init_pid for h in hosts.hosts.values()]
    mine = hosts.id
    during = lab_resources(mine)
    assert len(during["netns"]) == 2 and len(during["links"]) == 3 and len(during["mounts"]) == 2
    assert all(p and Path(f"/proc/{p}").exists() for p in pids)
    assert not hosts.down()
    assert lab_resources(mine) == {"links": [], "netns": [], "mounts": []}
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    assert not hosts.registry_file.exists()


_OWNER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from liferaft.lab.hosts import LabHosts
    h = LabHosts(directory=Path(sys.argv[1]), names=("s",)).up()
    print(h.id, h.hosts["s"].ns_init_pid, flush=True)
    time.sleep(600)
""")


def test_stale_hosts_of_a_killed_owner_are_swept(tmp_path: Path) -> None:
    """SIGKILL the owner: its hosts die with it (pdeathsig); the next up() sweeps its netns and links."""
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path / "owner")], stdout=subprocess.PIPE,
                            text=True, cwd=str(Path(__file__).parents[2]))
    try:
        line = proc.stdout.readline().split()  # type: ignore[union-attr]
        assert line, "owner process did not start hosts"
        lab_id, ns_pid = line[0], int(line[1])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{ns_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{ns_pid}").exists(), "host outlived its owner"
    # Its netns and links stay until an up() sweeps them (any lab's: other sessions on this machine may be first).
    hosts = LabHosts(directory=tmp_path / "next", names=("t",))
    try:
        hosts.up()
        assert lab_resources(lab_id) == {"links": [], "netns": [], "mounts": []}
        assert hosts["t"].run("hostname").stdout.strip() == "t"
    finally:
        assert not hosts.down()
