"""Value objects of the configure step: which hosts, what happened per task, how the run ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liferaft.errors import RunFailed


@dataclass(frozen=True)
class TargetHost:
    """A host Ansible configures. `host_keys` pin it: "<type> <base64>" or full known_hosts lines."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    host_keys: tuple[str, ...] = ()
    private_key_file: str | None = None  # a path; never the key itself

    @classmethod
    def from_access(cls, name: str, access: Any) -> TargetHost:
        """From a `liferaft.providers.base.SshAccess` (or anything with its attributes)."""
        return cls(name=name, address=access.address, port=int(access.port), user=access.user,
                   host_keys=tuple(access.known_hosts), private_key_file=access.private_key_file)

    def known_hosts_lines(self) -> list[str]:
        """known_hosts lines for this host's address and port, whatever pattern the pinned lines carried."""
        pattern = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        lines = []
        for key in self.host_keys:
            parts = key.split()
            if len(parts) >= 3 and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
                parts = parts[1:]  # drop the host pattern of a full known_hosts line
            if len(parts) < 2:
                raise ValueError(f"host {self.name}: a pinned host key must be '<type> <base64>'")
            lines.append(f"{pattern} {parts[0]} {parts[1]}")
        return lines


@dataclass(frozen=True)
class TaskEvent:
    """One Ansible task outcome (or start) on one host, already scrubbed of secret values."""

    kind: str  # "play" | "task.start" | "task.ok" | "task.changed" | "task.failed" | "task.skipped" | "unreachable"
    play: str = ""
    task: str = ""
    host: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "play": self.play, "task": self.task, "host": self.host, "message": self.message}


def to_progress(events: Any) -> Any:
    """An `on_event` callback that forwards TaskEvents to a `liferaft.events.Events` bus as `ansible.<kind>`
    progress events (task start / ok / changed / failed / skipped per host; unreachable)."""

    def forward(ev: TaskEvent) -> None:
        label = f"{ev.host}: {ev.task}" if ev.host else (ev.task or ev.play)
        events.emit(f"ansible.{ev.kind}", label + (f": {ev.message}" if ev.message else ""),
                    play=ev.play, task=ev.task, host=ev.host, detail=ev.message)

    return forward


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class PlaybookResult:
    """How a playbook run ended: per-host recap, duration and a scrubbed summary of what failed (if anything)."""

    playbook: str
    status: str  # "successful" | "failed" | "timeout" | "canceled"
    rc: int
    duration_s: float
    stats: dict[str, HostStats] = field(default_factory=dict, hash=False)
    failures: tuple[TaskEvent, ...] = ()
    output_tail: str = ""  # scrubbed end of Ansible's output, kept only when no task event explains a failure

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.stats.values())

    def to_dict(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "status": self.status, "rc": self.rc,
                "duration_s": round(self.duration_s, 3), "changed": self.changed,
                "stats": {h: vars(s) for h, s in self.stats.items()},
                "failures": [f.to_dict() for f in self.failures]}


class PlaybookFailed(RunFailed):
    """An Ansible run failed: names the host, the task and Ansible's message (secret values removed)."""

    def __init__(self, result: PlaybookResult, message: str, *, hint: str | None = None) -> None:
        self.result = result
        first = result.failures[0] if result.failures else None
        self.host = first.host if first else ""
        self.task = first.task if first else ""
        super().__init__(message, hint=hint)

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d.update(host=self.host, task=self.task, result=self.result.to_dict())
        return d


def host_from_dict(d: dict[str, Any]) -> TargetHost:
    """A TargetHost from a step result (JSON: address, port, user, host_keys, private_key_file)."""
    return TargetHost(name=str(d["name"]), address=str(d["address"]), port=int(d.get("port", 22)),
                      user=str(d.get("user", "root")), host_keys=tuple(d.get("host_keys") or ()),
                      private_key_file=d.get("private_key_file"))


def host_to_dict(h: TargetHost) -> dict[str, Any]:
    return {"name": h.name, "address": h.address, "port": h.port, "user": h.user, "host_keys": list(h.host_keys),
            "private_key_file": h.private_key_file}
