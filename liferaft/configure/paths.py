"""Where a liferaft-deployed service keeps its files on a host: the contract between liferaft, the workload kinds
and service playbooks (liferaft/playbooks/README.md, "Where a service's files go").

Every file a service's deploy writes lives under one of its roots, named after the service:

    /etc/liferaft/<service>/      config, env files, the start command, the standby marker, TLS files (secrets: 0600)
    /opt/liferaft/<service>/      code and artifacts (also the home of a system user made for the service)
    /var/lib/liferaft/<service>/  the service's own state on the host
    /var/log/liferaft/<service>/  logs
    /run/liferaft/<service>/      pidfiles and sockets

plus the systemd unit `/etc/systemd/system/liferaft-<service>.service`. A drill's teardown and the rollback of a
deploy remove exactly these (and a system user whose home is the service's `/opt` root): nothing else, so a playbook
that writes elsewhere leaves files behind. Service names are validated by the stack model (no '/', no shell
metacharacters).
"""

from __future__ import annotations

from dataclasses import dataclass

SHARED_ROOTS = ("/etc/liferaft", "/opt/liferaft", "/var/lib/liferaft", "/var/log/liferaft", "/run/liferaft")


@dataclass(frozen=True)
class ServicePaths:
    service: str

    @property
    def etc(self) -> str:
        return f"/etc/liferaft/{self.service}"

    @property
    def app(self) -> str:
        return f"/opt/liferaft/{self.service}"

    @property
    def lib(self) -> str:
        return f"/var/lib/liferaft/{self.service}"

    @property
    def log(self) -> str:
        return f"/var/log/liferaft/{self.service}"

    @property
    def run(self) -> str:
        return f"/run/liferaft/{self.service}"

    @property
    def roots(self) -> tuple[str, ...]:
        """Every directory the service's files live under (a teardown removes them whole)."""
        return (self.etc, self.app, self.lib, self.log, self.run)

    @property
    def unit_name(self) -> str:
        return f"liferaft-{self.service}.service"

    @property
    def unit(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}"

    @property
    def pidfile(self) -> str:
        """Where start-stop-daemon keeps the service's pid where there is no systemd."""
        return f"{self.run}/{self.service}.pid"

    @property
    def legacy_pidfile(self) -> str:
        """The pidfile of deploys by liferaft before the service roots (stopped too, so a fence or rollback stops a
        service an earlier version started)."""
        return f"/run/liferaft-{self.service}.pid"

    @property
    def start(self) -> str:
        """The executable a playbook writes to start the service without systemd and without a playbook run."""
        return f"{self.etc}/start"

    @property
    def standby_marker(self) -> str:
        """Where a warm standby's host records the digest of the service it holds."""
        return f"{self.etc}/standby"

    @property
    def tls_dir(self) -> str:
        return f"{self.etc}/tls"

    def variables(self) -> dict[str, str]:
        """`liferaft_paths`, as every service playbook receives it."""
        return {"etc": self.etc, "app": self.app, "lib": self.lib, "log": self.log, "run": self.run,
                "pidfile": self.pidfile, "start": self.start, "unit": self.unit_name}


def service_paths(service: str) -> ServicePaths:
    return ServicePaths(service)
